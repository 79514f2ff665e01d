"""The HTTP API (Tornado): `make_app(settings, store)` builds it; handlers stay thin."""

from app.web.app import make_app

__all__ = ["make_app"]
