"""Where notifications go, configured per deployment: e-mail through SMTP (aiosmtplib: STARTTLS
when the server offers it, or implicit TLS with smtps://, and auth) and any apprise URL (json://
for a plain JSON webhook, slack://, msteams://, ntfy://, tgram://, ...). A route's id names it in
Redis and in logs; it never holds the URL's secrets (webhook routes are named by a digest)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
import apprise
from apprise.attachment.memory import AttachMemory

from app.settings import Settings

TIMEOUT_S = 30.0
ROUTE_ID_CHARS = 10  # hex digits of a webhook URL's digest that name its route
logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)  # it may name a URL, secrets and all


class RouteError(Exception):
    """A route did not take a message: one sentence, no secret."""


class Route(Protocol):
    @property
    def id(self) -> str: ...

    async def send(self, subject: str, text: str, attachment: tuple[str, str] | None) -> None: ...


@dataclass(frozen=True)
class EmailRoute:
    url: str = field(repr=False)
    sender: str
    to: tuple[str, ...]
    id: str = "email"

    async def send(self, subject: str, text: str, attachment: tuple[str, str] | None) -> None:
        parts = urlsplit(self.url)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, ", ".join(self.to), subject
        message.set_content(text)
        if attachment is not None:
            name, body = attachment
            message.add_attachment(body.encode(), maintype="text", subtype="csv", filename=name)
        implicit = parts.scheme == "smtps"
        try:
            await aiosmtplib.send(
                message,
                hostname=parts.hostname or "localhost",
                port=parts.port or (465 if implicit else 25),
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                use_tls=implicit,
                start_tls=None if not implicit else False,  # None: STARTTLS when the server offers it
                timeout=TIMEOUT_S,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            where = f"{parts.hostname}:{parts.port or (465 if implicit else 25)}"
            raise RouteError(f"the mail server at {where} did not take the message ({type(exc).__name__}: "
                             f"{_short(exc)})") from None  # fmt: skip


@dataclass(frozen=True)
class AppriseRoute:
    url: str = field(repr=False)
    id: str = ""

    async def send(self, subject: str, text: str, attachment: tuple[str, str] | None) -> None:
        notifier = apprise.Apprise()
        if not notifier.add(self.url):
            raise RouteError(f"route {self.id}: apprise does not understand its URL")
        attach = None
        if attachment is not None:
            attach = apprise.AppriseAttachment()
            attach.add(
                AttachMemory(  # type: ignore[no-untyped-call]
                    content=attachment[1], name=attachment[0], mimetype="text/csv"
                )
            )
        if not await notifier.async_notify(body=text, title=subject, attach=attach):
            raise RouteError(f"route {self.id} refused the message (or could not be reached)")


def understood(url: str) -> bool:
    """Whether apprise knows what to do with this URL (without sending anything)."""
    return len(url) <= 2000 and apprise.Apprise().add(url)


def webhook_id(url: str) -> str:
    return "hook-" + hashlib.sha256(url.encode()).hexdigest()[:ROUTE_ID_CHARS]


def routes_from(settings: Settings) -> list[Route]:
    """Every route this deployment configures (none: alerts are kept and shown, not sent)."""
    routes: list[Route] = []
    if settings.smtp_url:
        to = tuple(a.strip() for a in settings.alert_email_to.split(",") if a.strip())
        routes.append(EmailRoute(settings.smtp_url, settings.alert_email_from, to))
    for url in settings.alert_apprise_urls.split():
        routes.append(AppriseRoute(url, webhook_id(url)))
    return routes


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else "no detail"
