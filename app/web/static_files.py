"""The pages' static files, served by Tornado's handler with hostile paths refused first."""

from __future__ import annotations

from typing import Any

import tornado.web


class StaticFiles(tornado.web.StaticFileHandler):
    """Tornado's StaticFileHandler, but a path with a NUL or other control character is a 404:
    the operating system refuses such a name with a ValueError, which Tornado answers with a 500
    and a logged traceback."""

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if any(ord(c) < 0x20 or c == "\x7f" for c in absolute_path):
            raise tornado.web.HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")
