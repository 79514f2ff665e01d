"""The pages: /login, /logout, /fleet (the list), /fleet/{cloud_id} (one device), /stats.

Server-rendered with Tornado templates, usable without JavaScript except for the charts (uPlot,
served by this server: no CDN). Every page needs a session (an API token exchanged at /login);
read-only tokens see everything, admin tokens may also act, and every action is a form POST
carrying Tornado's XSRF token.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import tornado.web

from app import health
from app.completeness import hour_label
from app.devices import PROTOCOLS, normalize_cloud_id
from app.errors import StoreError, ValidationError
from app.hours import Day
from app.tokens import Token
from app.web.context import Context
from app.web.fleet_view import COLUMNS, PER_PAGE, STATUSES, View
from app.web.sessions import COOKIE, SESSION_TTL_S

# no script but our own files; uPlot sets style attributes on the elements it draws
CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
CSV_HEADER = ("cloud_id", "email", "protocol", "status", "last_reading_age_s", "complete_today_pct",
              "readings_today", "last_error", "model", "firmware", "pinger")  # fmt: skip


class PageHandler(tornado.web.RequestHandler):
    """Session required (else to /login); errors as a page with one sentence."""

    ctx: Context
    token: Token | None = None
    needs_session = True

    def initialize(self, ctx: Context) -> None:
        self.ctx = ctx

    async def prepare(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy", CSP)
        if self.request.method == "POST":
            self.check_xsrf_cookie()
        if not self.needs_session:
            return
        try:
            self.token = await self.ctx.sessions.resolve(self.get_cookie(COOKIE) or "")
        except StoreError as exc:
            raise tornado.web.HTTPError(503, reason="Redis is unreachable; try again shortly.") from exc
        if self.token is None:
            self.redirect("/login?" + urlencode({"next": self.request.uri or "/fleet"}))
            return

    def render_page(self, template: str, **kwargs: Any) -> None:
        self.render(template, token=self.token, now=time.time(), hour_label=hour_label, when=_when, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        reason = getattr(exc, "reason", None) or self._reason
        message = reason if reason and reason.endswith(".") else f"{reason}."
        self.render("error.html", token=self.token, status=status_code, message=message)


class LoginHandler(PageHandler):
    needs_session = False

    def get(self) -> None:
        self.render("login.html", token=None, error="", next=self._next())

    async def post(self) -> None:
        presented = self.get_body_argument("token", "").strip()
        token = await self.ctx.tokens.verify(presented) if presented else None
        if token is None:
            self.set_status(401)
            self.render("login.html", token=None, error="That token is not valid (unknown or revoked).",
                        next=self._next())  # fmt: skip
            return
        sid = await self.ctx.sessions.create(presented)
        self.set_cookie(
            COOKIE, sid, httponly=True, samesite="Strict", secure=self.request.protocol == "https",
            expires_days=SESSION_TTL_S / 86400,
        )  # fmt: skip
        self.redirect(self._next())

    def _next(self) -> str:
        return safe_next(self.get_argument("next", "/fleet"))


def spreadsheet_safe(value: object) -> object:
    """A CSV cell a spreadsheet shows as text, never runs: a gateway's model or error, or an
    e-mail, that starts with = + - @ or a tab or CR gets a leading apostrophe (OWASP's advice)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def safe_next(target: str) -> str:
    """Where to go after logging in: a path on this site, never another site. Browsers read
    `/\\evil.com` and `//evil.com` as another host, so a backslash, a control character or a
    scheme or host of any kind sends the user to /fleet instead."""
    parts = urlsplit(target)
    if (
        not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x20 or c == "\x7f" for c in target)
        or parts.scheme
        or parts.netloc
    ):
        return "/fleet"
    return target


class LogoutHandler(PageHandler):
    needs_session = False

    async def post(self) -> None:
        sid = self.get_cookie(COOKIE)
        if sid:
            await self.ctx.sessions.end(sid)
        self.clear_cookie(COOKIE)
        self.redirect("/login")


class FleetHandler(PageHandler):
    async def get(self) -> None:
        view = self._view()
        _, everything = await self.ctx.fleet.get()
        if self.token is not None and not self.token.deployment_wide:
            everything = [row for row in everything if row.study == self.token.study]
        if self.get_argument("format", "") == "csv":
            self._csv(view.matching(everything))
            return
        page, total = view.apply(everything)
        studies = sorted({row.study for row in everything})
        self.render_page("fleet.html", view=view, page=page, total=total, per=PER_PAGE, statuses=STATUSES,
                         protocols=PROTOCOLS, columns=COLUMNS, link=self._link, studies=studies)  # fmt: skip

    def _view(self) -> View:
        status, protocol = self.get_argument("status", ""), self.get_argument("protocol", "")
        sort, page = self.get_argument("sort", "status"), self.get_argument("page", "1")
        if status not in ("", *STATUSES) or protocol not in ("", *PROTOCOLS) or sort not in COLUMNS:
            raise tornado.web.HTTPError(400, reason="Unknown status, protocol or sort column")
        if not (page.isascii() and page.isdigit()) or int(page) < 1:
            raise tornado.web.HTTPError(400, reason="page must be a whole number from 1")
        q = self.get_argument("q", "")[:64]
        study = self.get_argument("study", "")[:40]
        return View(status, protocol, q, sort, self.get_argument("dir", "asc") == "desc", int(page), study)

    def _link(self, view: View, **changes: Any) -> str:
        values = {"status": view.status, "protocol": view.protocol, "q": view.q, "study": view.study,
                  "sort": view.sort, "dir": "desc" if view.desc else "asc", "page": view.page,
                  **changes}  # fmt: skip
        return "/fleet?" + urlencode({k: v for k, v in values.items() if v not in ("", None)})

    def _csv(self, found: list[Any]) -> None:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        now = time.time()
        writer.writerows([spreadsheet_safe(v) for v in row.csv(now)] for row in found)
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", 'attachment; filename="fleet.csv"')
        self.finish(out.getvalue())


class DeviceHandler(PageHandler):
    async def get(self, raw_id: str) -> None:
        cloud_id = cloud_id_of(raw_id)
        record = await self.ctx.store.devices.get_device(cloud_id)
        if record is None or self.token is None or not self.token.sees(record.study):
            raise tornado.web.HTTPError(404, reason=f"No device {cloud_id} is registered")
        today = Day.at(time.time())  # the strip: seven whole UTC days, today last
        hours = [h.number for back in range(6, -1, -1) for h in (today - back).hours()]
        counts = {r["hour"]: r for r in await self.ctx.store.completeness.completeness([cloud_id], hours)}
        owner = await self.ctx.leases.owner(cloud_id)
        now = time.time()
        held = {cloud_id: now + owner["lease_expires_in_s"]} if owner else {}
        state = health.view(record, now, self.ctx.thresholds, held).public()
        self.render_page("device.html", record=record.public(), owner=owner, hours=hours, counts=counts,
                         health=state,
                         crawls=await self.ctx.store.crawls.crawl_history(cloud_id),
                         failures=await self.ctx.store.devices.recent_failures(cloud_id))  # fmt: skip


class ActionHandler(PageHandler):
    """Admin actions from the pages: activate, deactivate, crawl now (form POSTs with the XSRF token)."""

    async def post(self, raw_id: str, action: str) -> None:
        cloud_id = cloud_id_of(raw_id)
        if self.token is None:
            return
        if not self.token.can_write:
            raise tornado.web.HTTPError(
                403, reason="This session's token is read-only; log in with an admin token"
            )
        record = await self.ctx.store.devices.get_device(cloud_id)
        if record is None or self.token is None or not self.token.sees(record.study):
            raise tornado.web.HTTPError(404, reason=f"No device {cloud_id} is registered")
        if action == "deactivate":
            await self.ctx.store.devices.deactivate_device(cloud_id)
        elif action == "activate":
            await self.ctx.store.devices.activate_device(cloud_id)
        else:  # the pinger that polls it crawls it within seconds: never inside this request
            await self.ctx.store.crawls.want_crawl(cloud_id)
        self.redirect(f"/fleet/{cloud_id}")


class StatsPageHandler(PageHandler):
    async def get(self) -> None:
        study = (
            self.token.study
            if self.token is not None and self.token.study
            else self.get_argument("study", "")
        )
        self.render_page("stats.html", stats=await fleet_stats(self.ctx, study[:40]), study=study[:40])


async def fleet_stats(ctx: Context, study: str = "") -> dict[str, Any]:
    """What /stats and GET /api/stats show: the fleet (or one study's households) counted several
    ways. The fleet's total demand is the whole fleet's, so a study's figures leave it out."""
    records, everything = await ctx.fleet.get()
    if study:
        records = [r for r in records if r.study == study]
        everything = [row for row in everything if row.study == study]
    now = time.time()

    def count(values: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in values:
            out[v or "unknown"] = out.get(v or "unknown", 0) + 1
        return dict(sorted(out.items()))

    buckets = [0] * 11  # 0-9 %, 10-19 %, ... 90-99 %, 100 %
    for row in everything:
        if row.complete is not None:
            buckets[min(10, int(row.complete // 10))] += 1
    week = await _completeness_days(ctx, now, 7)
    if study:
        mine = {r.cloud_id for r in records}
        week = [{cid: counts for cid, counts in day.items() if cid in mine} for day in week]
    added = sorted(r.created_at for r in records)
    days: dict[str, int] = {}
    for n, at in enumerate(added, start=1):
        days[Day.at(at).key] = n
    demand = [] if study else await ctx.store.fleet.fleet_demand(now - 86400, now)
    exporting = [r for r in records if r.last_kw is not None and r.last_kw < 0]
    reporting = [r for r in records if r.last_kw is not None]
    return {
        "devices": len(records),
        "by_status": count([row.status for row in everything]),
        "by_protocol": count([row.protocol for row in everything]),
        "by_model": count([row.model for row in everything]),
        "by_firmware": count([row.firmware for row in everything]),
        "completeness_today": {"buckets": LABELS, "devices": buckets},
        "completeness_24h": {"buckets": LABELS, "devices": _histogram(week[-2:])},
        "completeness_7d": {"buckets": LABELS, "devices": _histogram(week)},
        "exporting_share": round(len(exporting) / len(reporting), 3) if reporting else None,
        "fleet_demand_kw": round(sum(r.last_kw or 0.0 for r in reporting), 3),
        "devices_added": {"day": list(days), "total": list(days.values())},
        "fleet_demand_24h": {
            "t": [m[0] for m in demand],
            "kw": [m[1] for m in demand],
            "devices": [m[2] for m in demand],
        },
    }


LABELS = [f"{10 * i}%" if i < 10 else "100%" for i in range(11)]


async def _completeness_days(ctx: Context, now: float, days: int) -> list[dict[str, tuple[int, int, int]]]:
    """Each of the last `days` UTC days' counts per device, oldest first (one command a day)."""
    found = []
    for back in range(days - 1, -1, -1):
        found.append(await ctx.store.completeness.completeness_day((Day.at(now) - back).key))
    return found


def _histogram(days: list[dict[str, tuple[int, int, int]]]) -> list[int]:
    """Devices by share of polls that worked over these days, in ten-point buckets (100 % apart)."""
    totals: dict[str, list[int]] = {}
    for day in days:
        for cid, (scheduled, ok, _) in day.items():
            t = totals.setdefault(cid, [0, 0])
            t[0] += scheduled
            t[1] += ok
    buckets = [0] * 11
    for scheduled, ok in totals.values():
        if scheduled:
            buckets[min(10, 10 * ok // scheduled)] += 1
    return buckets


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def cloud_id_of(raw: str) -> str:
    try:
        return normalize_cloud_id(raw)
    except ValidationError:
        raise tornado.web.HTTPError(
            400, reason=f"A cloud_id is 6 hex digits such as 002738, not {raw[:20]!r}"
        ) from None
