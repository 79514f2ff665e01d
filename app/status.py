"""`rainforest status`: what is running, how the fleet is doing, the archive and the carts."""

from __future__ import annotations

import time
from typing import Any

from app import health
from app.carts.model import STATES
from app.carts.registry import CartRegistry
from app.heartbeat import KINDS, STALE_S
from app.leases import Leases, PingerLease
from app.settings import Settings
from app.store import Store

FORGET_S = 300.0  # a pinger whose lease lapsed this long ago, holding nothing, is no longer shown


async def gather(settings: Settings, now: float | None = None) -> dict[str, Any]:
    """Everything `status` shows, as data. `healthy` is False when a process kind has no live one."""
    now = time.time() if now is None else now
    store = Store.for_settings(settings, max_connections=4)
    try:
        processes = {
            kind: [
                {"id": pid, "last_beat_s_ago": round(now - beat, 1), **info}
                for pid, beat, info in await store.processes.live_processes(kind, now - STALE_S)
            ]
            for kind in KINDS
        }
        devices = await store.devices.all_devices()
        leases = Leases(store.redis)
        held, thresholds = await leases.held(), health.Thresholds.from_settings(settings)
        by_state = dict.fromkeys(health.STATES, 0)
        for device in devices:
            by_state[health.view(device, now, thresholds, held).state] += 1
        pingers = [p for p in await leases.pingers(now) if p.devices or p.expires_in_s > -FORGET_S]
        polled = len(await store.devices.active_ids())
        last_pass = await store.archive.rotate_last_pass()
        carts = dict.fromkeys(STATES, 0)
        for cart in await CartRegistry(store.redis).all():
            carts[cart.status] = carts.get(cart.status, 0) + 1
    finally:
        await store.close()
    return {
        "healthy": all(processes[k] for k in KINDS),
        "processes": processes,
        "devices": {
            "active": len(devices) - by_state["inactive"],
            "polled": polled,  # active and not push: what the pingers share
            **by_state,  # by health state (app.health), inactive among them
        },
        "pingers": [_pinger(p) for p in pingers],
        "archive": {
            "last_pass_s_ago": round(now - float(last_pass["ended_at"]), 1)
            if last_pass.get("ended_at")
            else None,
            **last_pass,
        },
        "carts": carts,
    }


def render(report: dict[str, Any]) -> str:
    lines = ["processes"]
    for kind, found in report["processes"].items():
        if not found:
            lines.append(f"  {kind:<7} DOWN (no heartbeat in the last {STALE_S:.0f} s)")
        for p in found:
            extra = " ".join(f"{k}={p[k]}" for k in ("devices", "port", "jobs") if k in p)
            lines.append(
                f"  {kind:<7} up    {p['id']:<28} last beat {p['last_beat_s_ago']:>5.1f} s ago  {extra}"
            )
    lines.extend(_pingers(report["pingers"], report["devices"]["polled"]))
    d = report["devices"]
    troubled = [f"{state} {d[state]}" for state in health.STATES if state not in health.QUIET and d[state]]
    lines.append(
        f"devices   {d['active']} active: ok {d['ok']}, never read {d['never']}; "
        f"{', '.join(troubled) or 'none in trouble'} ({d['inactive']} inactive)"
    )
    a = report["archive"]
    if a.get("ended_at"):
        outcome = "ok" if a.get("ok") == "1" else f"trouble: {a.get('archive_error', 'files failed')}"
        lines.append(
            f"archive   last pass {a['last_pass_s_ago']:.0f} s ago to {a.get('archive')}: "
            f"stored {a.get('stored')}, already {a.get('already')}, busy {a.get('busy')}, "
            f"left {a.get('left')}; {outcome}"
        )
    else:
        lines.append("archive   no rotate pass yet")
    c = report["carts"]
    lines.append("carts     " + ", ".join(f"{state} {n}" for state, n in c.items()))
    return "\n".join(lines)


def _pinger(p: PingerLease) -> dict[str, Any]:
    return {
        "id": p.pinger_id,
        "devices": p.devices,
        "lease": "ok" if p.expires_in_s >= 0 else "lapsed",
        "lease_expires_in_s": p.expires_in_s,
        "renewed_s_ago": p.renewed_s_ago,
    }


def _pingers(pingers: list[dict[str, Any]], polled: int) -> list[str]:
    """Each pinger with the devices it holds and the health of its lease."""
    live = [p for p in pingers if p["lease"] == "ok"]
    held = sum(p["devices"] for p in live)
    lines = [f"pingers   {len(live)} live, holding {held} of {polled} polled devices"]
    for p in pingers:
        if p["lease"] == "ok":
            health = (
                f"lease ok, renewed {p['renewed_s_ago']:.1f} s ago, runs {p['lease_expires_in_s']:.1f} s more"
            )
        else:
            health = f"lease LAPSED {-p['lease_expires_in_s']:.0f} s ago (dead or cut off from Redis)"
        lines.append(f"  {p['id']:<28} {p['devices']:>6} devices  {health}")
    if live and held < polled:
        lines.append(f"  {polled - held} polled devices not held yet (claimed at the pingers' next round)")
    return lines
