"""BaseHandler: bearer-token auth, JSON in and out, one error shape, metrics per request."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import tornado.web

from app.devices import DeviceRecord, normalize_cloud_id
from app.errors import ArchiveError, StoreError, ValidationError
from app.leases import owner_view
from app.tokens import Token
from app.web.context import Context
from app.web.heavy import TooMany
from app.web.sessions import COOKIE

log = logging.getLogger(__name__)
SERVER_MAX_BODY_BYTES = 1024 * 1024  # no route takes more; routes refuse beyond their own limit
DRAIN_MAX_BYTES = 16 * SERVER_MAX_BODY_BYTES  # a chunked body read (and dropped) to answer its 413


class ApiError(tornado.web.HTTPError):
    """An error answer: HTTP status, a short code and one sentence a person can act on."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status)
        self.code, self.message = code, message


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 416: "bad_range",
                 405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
                 429: "too_many_requests",
                 500: "internal_error", 503: "unavailable"}  # fmt: skip


# query parameters (their decoded names) a caller might put an API token in: refused outright
_TOKEN_PARAMETERS = frozenset({"token", "access_token", "api_token", "bearer"})


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Every route but /healthz needs `Authorization: Bearer <token>`; writes need admin scope."""

    ctx: Context
    route = "unknown"  # the route pattern, for metrics
    public = False  # True: no token needed
    token: Token | None = None
    read_only_may: frozenset[str] = frozenset()  # methods beyond GET/HEAD a read-only token may use here
    preload_device = False  # GET: read the device named in the path with the token, in one round trip
    preloaded: DeviceRecord | None = None
    preloaded_owner: dict[str, Any] | None = None  # the pinger holding its lease, read with it
    deployment_only = False  # True: a study-scoped token is refused (metrics, processes)

    def initialize(self, ctx: Context) -> None:
        self.ctx = ctx
        self._started = time.perf_counter()
        self._body = bytearray()
        self._over = False

    def body_limit(self) -> int:
        """The largest body this route takes; a larger one is a JSON 413 before it is read."""
        return self.ctx.settings.max_body_bytes

    def data_received(self, chunk: bytes) -> None:
        """The body as it arrives (prepare has passed): kept whole up to the route's limit; past
        it (a chunked body declares no length) the rest is dropped and the route answers 413."""
        if self._over:
            return
        self._body += chunk
        if len(self._body) > self.body_limit():
            self._over, self._body = True, bytearray()
        self.request.body = bytes(self._body)

    def refuse_oversized(self) -> None:
        """A JSON 413 for a body that outgrew the route's limit while it arrived."""
        if self._over:
            raise ApiError(413, "too_large", f"the body is over {self.body_limit()} bytes.")

    async def prepare(self) -> None:
        self.set_header("Cache-Control", "no-store")
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.body_limit():
            # refused before reading it: headers only, so a body of any size gets this answer
            raise ApiError(413, "too_large", f"the body is over {self.body_limit()} bytes.")
        # a chunked body declares no length: read (and past the limit, dropped) up to this much,
        # so it too gets the JSON 413 rather than Tornado's bare 400
        self.request.connection.set_max_body_size(DRAIN_MAX_BYTES)  # type: ignore[union-attr]
        if _TOKEN_PARAMETERS & self.request.query_arguments.keys():
            raise ApiError(
                400,
                "token_in_url",
                "send API tokens as 'Authorization: Bearer <token>', never in the URL (URLs are logged).",
            )
        if self.public:
            return
        header = self.request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        session = self.get_cookie(COOKIE) if self.request.method in ("GET", "HEAD") and not header else None
        if not session and (scheme.lower() != "bearer" or not presented.strip()):
            raise ApiError(401, "unauthorized", "send an API token as 'Authorization: Bearer <token>'.")
        try:
            # the pages read their data with their session cookie (reads only: writes need a token)
            if session:
                self.token = await self.ctx.sessions.resolve(session)
            elif cloud_id := self._preload_id():
                self.token, found, owner = await self.ctx.tokens.verify_and_read_device(
                    presented.strip(), cloud_id
                )
                self.preloaded = DeviceRecord.from_hash(found) if found else None
                self.preloaded_owner = owner_view(owner)
            else:
                self.token = await self.ctx.tokens.verify(presented.strip())
        except StoreError as exc:
            raise ApiError(
                503, "unavailable", "the token store (Redis) is unreachable; try again shortly."
            ) from exc
        if self.token is None:
            raise ApiError(401, "unauthorized", "this API token is not valid (unknown or revoked).")
        method = self.request.method or "GET"
        if (
            method not in ("GET", "HEAD", "OPTIONS")
            and method not in self.read_only_may
            and not self.token.can_write
        ):
            raise ApiError(403, "forbidden", "this token is read-only; use an admin token to change things.")
        if self.deployment_only and not self.token.deployment_wide:
            raise ApiError(403, "forbidden", "this route needs a deployment-wide token, not a study's.")
        if self.preloaded is not None and not self.token.sees(self.preloaded.study):
            self.preloaded, self.preloaded_owner = None, None  # another study's: as if unknown

    async def device(self, cloud_id: str) -> DeviceRecord | None:
        """A device's record, or None when it is unknown or of a study this token may not see
        (a device of another study answers exactly as an unknown one does)."""
        record = await self.ctx.store.devices.get_device(cloud_id)
        if record is None or self.token is None or not self.token.sees(record.study):
            return None
        return record

    def sees(self, record: DeviceRecord) -> bool:
        return self.token is not None and self.token.sees(record.study)

    def _preload_id(self) -> str | None:
        if not self.preload_device or self.request.method != "GET" or not self.path_args:
            return None
        try:
            return normalize_cloud_id(self.path_args[0])
        except ValidationError:
            return None  # the handler answers the bad id with its 400

    @contextlib.asynccontextmanager
    async def heavy_slot(self) -> AsyncIterator[None]:
        """One of this token's few slots for a request that reads much; a 429 when none is free."""
        name = self.token.name if self.token is not None else "(public)"
        try:
            async with self.ctx.heavy.slot(name):
                yield
        except TooMany:
            raise ApiError(
                429,
                "too_many_requests",
                f"this token already has {self.ctx.heavy.per_token} long requests (readings, downloads) "
                "running; wait for one to end (HEAVY_REQUESTS_PER_TOKEN).",
            ) from None

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object, or a 4xx saying what is wrong with it."""
        self.refuse_oversized()
        if len(self.request.body) > self.ctx.settings.max_body_bytes:
            raise ApiError(413, "too_large", f"the body is over {self.ctx.settings.max_body_bytes} bytes.")
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(
                415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json."
            )
        try:
            body = orjson.loads(self.request.body or b"null")
        except orjson.JSONDecodeError:
            raise ApiError(400, "invalid_json", "the body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "the body must be a JSON object.")
        return body

    def query(self, allowed: set[str]) -> dict[str, str]:
        """Query arguments, refusing unknown or repeated ones by name."""
        args: dict[str, str] = {}
        for name, values in self.request.query_arguments.items():
            if name not in allowed:
                raise ApiError(
                    400,
                    "unknown_parameter",
                    f"unknown query parameter {name!r}; allowed: {', '.join(sorted(allowed)) or 'none'}.",
                )
            if len(values) != 1:
                raise ApiError(400, "bad_parameter", f"give the query parameter {name!r} once.")
            args[name] = values[0].decode("utf-8", "replace")
        return args

    def compute_etag(self) -> str | None:
        """None: every answer here is `Cache-Control: no-store`, so no cache holds one to revalidate,
        and Tornado's default hashes every body (a twentieth of a device's GET) for nothing."""
        return None

    def send_json(self, body: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            code, message = exc.code, exc.message
        elif isinstance(exc, ValidationError):
            code, message = "invalid_field", str(exc)
            self.set_status(400)
        elif isinstance(exc, StoreError):
            code, message = "unavailable", "Redis is unreachable; try again shortly."
            self.set_status(503)
        elif isinstance(exc, ArchiveError) and exc.kind == "integrity":  # an object, not the archive
            code, message = "archive_damaged", f"an archived object cannot be read: {exc}"
        elif isinstance(exc, ArchiveError):
            code, message = "archive_unavailable", f"the archive cannot be read now; try again shortly: {exc}"
            self.set_status(503)
        elif status_code == 405:
            code = "method_not_allowed"
            method = self.request.method
            message = f"{method} is not allowed here; GET /api/openapi.json lists each route's methods."
        elif status_code < 500:
            code = _STATUS_CODES.get(status_code, "error")
            message = (
                f"{self._reason}: {exc.log_message}."
                if getattr(exc, "log_message", None)
                else f"{self._reason}."
            )
        else:
            code, message = "internal_error", "the server failed on this request; the error is logged."
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps({"error": code, "message": message}))

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        if isinstance(value, ApiError | ValidationError):
            return  # the caller's mistake, answered; not a server problem
        if isinstance(value, StoreError):
            log.error("request failed: Redis unreachable", extra={"route": self.route, "reason": str(value)})
            return
        if isinstance(value, ArchiveError):  # one line: which object or why, no traceback
            extra = {"route": self.route, "kind": value.kind, "reason": str(value)}
            log.error("request failed: the archive", extra=extra)
            return
        super().log_exception(typ, value, tb)

    def on_finish(self) -> None:
        elapsed = time.perf_counter() - self._started
        self.ctx.metrics.count(self.route, self.request.method or "GET", self.get_status(), elapsed)


class NotFoundHandler(BaseHandler):
    """Unknown paths: a JSON 404 for anyone (what is not a route reveals nothing: the routes are
    public in GET /api/openapi.json)."""

    public = True
    route = "(unmatched)"

    def prepare(self) -> None:  # type: ignore[override]
        raise ApiError(404, "not_found", f"no route {self.request.path}; see GET /api/openapi.json.")
