"""Logging: JSON lines to DATA_DIR/logs/<process>/<process>.log (rolled by size) and
readable `key=value` lines to stderr. One logger per module; extras become fields."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import logging.handlers
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote_plus

from pythonjsonlogger.json import JsonFormatter

from app.settings import Settings

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class ReadableFormatter(logging.Formatter):
    """`2026-11-24T03:10:00Z INFO  pinger  poll cycle  ok=50 failed=0` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        line = f"{stamp} {record.levelname:<7} {record.name}  {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return line


_action: contextvars.ContextVar[tuple[str, str, str | None] | None] = contextvars.ContextVar(
    "rainforest_action", default=None
)


@contextlib.contextmanager
def action(name: str) -> Iterator[str]:
    """Every line logged inside (in this task, tasks it starts, and threads it hands work to)
    carries `action=name` and the same `action_id`; a nested action also carries `parent_id`.
    `rainforest logs --tree` renders an action with its lines as children."""
    current = _action.get()
    action_id = uuid.uuid4().hex[:12]
    token = _action.set((name, action_id, current[1] if current else None))
    try:
        yield action_id
    finally:
        _action.reset(token)


# Query parameters whose values are secrets, matched on the decoded name (`?%6Bey=` is `key`).
SECRET_PARAMETERS = frozenset({"key", "token", "access_token", "api_key", "apikey", "password", "user_pw"})
_QUERY_PAIR = re.compile(r"([?&;])([^=&?#\s'\"<>]+)=([^&#\s'\"<>]*)")


def redact_url(text: str) -> str:
    """`text` with the value of every secret query parameter in it replaced by ***."""
    if "=" not in text:
        return text

    def hide(m: re.Match[str]) -> str:
        name = unquote_plus(m.group(2)).strip().lower()
        return f"{m.group(1)}{m.group(2)}=***" if name in SECRET_PARAMETERS else m.group(0)

    return _QUERY_PAIR.sub(hide, text)


class RedactFilter(logging.Filter):
    """No secret from a URL reaches a log file: Tornado's own lines (an uncaught exception logs
    the request's whole URI) and ours are redacted by the decoded parameter name."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # formatters fall back to exc_text when exc_info is gone: the redacted text is shown
            record.exc_text, record.exc_info = redact_url(record.exc_text), None
        return True


class ActionFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        current = _action.get()
        if current is not None and not hasattr(record, "action_id"):
            record.action, record.action_id = current[0], current[1]
            if current[2]:
                record.parent_id = current[2]
        return True


def setup(process: str, settings: Settings, *, to_file: bool = True) -> Path | None:
    """Configure the root logger for one process; returns the JSON log file's path."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(settings.log_level.upper())
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(ReadableFormatter())
    stderr.addFilter(ActionFilter())
    stderr.addFilter(RedactFilter())
    root.addHandler(stderr)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    saq = logging.getLogger("saq")
    saq.setLevel(logging.WARNING)  # cartd logs one `cart build` line per job itself
    saq.addFilter(_not_saq_shutdown)
    saq.addFilter(RedisOutageFilter())
    logging.getLogger("tornado.access").setLevel(logging.WARNING)  # 4xx/5xx only; /metrics counts the rest
    if not to_file:
        return None
    folder = settings.logs_dir / process
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{process}.log"
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=settings.log_max_bytes, backupCount=settings.log_backups, encoding="utf-8"
    )
    handler.addFilter(ActionFilter())
    handler.addFilter(RedactFilter())
    handler.setFormatter(
        JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"process": process},
            timestamp=True,
        )
    )
    root.addHandler(handler)
    return path


def _not_saq_shutdown(record: logging.LogRecord) -> bool:
    """saq warns at every stop that its own polling tasks outlived a grace period of 0 s: they
    always do, so the line says nothing (a cart being built logs its own hand-back)."""
    return not record.getMessage().startswith("Some tasks did not finish within the shutdown grace period")


class RedisOutageFilter(logging.Filter):
    """saq logs a traceback each time one of its loops meets a Redis it cannot reach (several a
    second): say it in one sentence instead, once a minute while it lasts; saq retries by itself."""

    EVERY_S = 60.0

    def __init__(self) -> None:
        super().__init__()
        self._said_at = -1e9

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not _is_unreachable(exc):
            return True
        now = time.monotonic()
        if now - self._said_at < self.EVERY_S:
            return False
        self._said_at = now
        record.msg, record.args = "Redis unreachable: the cart queue retries on its own (%s)", (exc,)
        record.exc_info, record.exc_text = None, None
        return True


def _is_unreachable(exc: BaseException | None) -> bool:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    while exc is not None:
        if isinstance(exc, RedisConnectionError | RedisTimeoutError | ConnectionRefusedError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
