"""Readings into lines: each distinct reading written once, counters queued for Redis.

A demand reading is written once, by the rule of `app.lines`: not when a line with its identity is
in the device's file of this hour or the hour before (the device's `Seen` answers for the readings
it remembers; an older one is looked up in the files). A summation or price line is written only
when its time or value changed (`capture.line_key`). After a restart the last lines on disk are
read back first, so files ahead of Redis never get a line twice.
"""

from __future__ import annotations

import logging

import orjson

import app.pinger.capture as capture
from app import lines
from app.completeness import Tally
from app.eagle.readings import Demand, Price, Summation
from app.errors import WriteError
from app.hourly import HourlyWriter
from app.hours import Hour
from app.pinger.fleet import DeviceState
from app.pinger.ledger import Ledger, Unwritten, WriteBacklog
from app.store import PollUpdate

log = logging.getLogger(__name__)


class Recorder:
    """Writes a device's readings through the backlog (so none is lost while the disk fails)."""

    def __init__(self, writer: HourlyWriter, backlog: WriteBacklog, ledger: Ledger, tally: Tally) -> None:
        self.writer = writer
        self.backlog = backlog
        self.ledger = ledger
        self.tally = tally

    def demand(self, cid: str, state: DeviceState, reading: Demand, polled_at: float) -> bool:
        """A demand line, unless this reading (its device time) was written already; True if new."""
        device_time = reading.device_time
        record = reading.record(cid, polled_at, state.gateway.protocol)
        ident, hour = lines.identity(record), Hour.at(polled_at).number
        known = state.seen.has(ident, hour)
        if known is None:
            known = self._in_files(cid, ident, polled_at)
        if known:
            self.ledger.add(PollUpdate(cid, last_success_at=polled_at))
            return False
        state.seen.add(ident, hour)
        previous = state.last_demand
        # a reading without a time is written, but says nothing of whether the meter moved on
        newer = device_time is not None and (previous is None or device_time > previous)
        if newer and device_time is not None:
            state.last_demand, state.last_kw = device_time, reading.demand_kw
        gap = device_time - previous if newer and device_time is not None and previous is not None else None
        self.tally.reading(cid, polled_at, gap)
        line = orjson.dumps(record)
        update = PollUpdate(
            cid,
            events=1,
            first_timestamp=None if state.first_recorded else device_time,
            last_timestamp=device_time,
            last_success_at=polled_at,
            last_reading=line.decode(),
        )
        state.first_recorded = True  # HSETNX keeps the earliest; no need to send it again
        return self.backlog.write(Unwritten(cid, polled_at, line + b"\n", update))

    def extra(self, cid: str, state: DeviceState, reading: Summation | Price, polled_at: float) -> bool:
        """A summation or price line, only when its time or value changed; True if written."""
        record = reading.record(cid, polled_at, state.gateway.protocol)
        if reading.kind == "summation":
            mark_summation(state, record)
        key = capture.line_key(record)
        if state.last_keys.get(reading.kind) == key:
            return False
        state.last_keys[reading.kind] = key
        self.backlog.write(Unwritten(cid, polled_at, orjson.dumps(record) + b"\n", None))
        return True

    def _in_files(self, cid: str, ident: lines.Identity, at: float) -> bool:
        """Whether a line with this identity is in the device's file of `at`'s hour or the hour
        before (the rule's window): the rare, exact check for a reading older than the newest."""
        for hour in range(lines.WINDOW_HOURS + 1):
            path = self.writer.path(cid, (Hour.at(at) - hour).start)
            try:
                found = lines.identities(path.read_bytes()).records
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning(
                    "cannot read a file to check a reading", extra={"cloud_id": cid, "reason": str(exc)}
                )
                continue
            if any(lines.identity(r) == ident for r in found):
                return True
        return False

    def recover(self, cid: str, state: DeviceState, now: float) -> None:
        """After a restart the files may be ahead of Redis: never write a reading twice."""
        try:
            found = self.writer.last_records(cid, now)
        except WriteError as exc:
            log.warning(
                "cannot check the last reading on disk yet", extra={"cloud_id": cid, "reason": str(exc)}
            )
            return  # try again at the next reading; the in-memory state still dedups
        demand = found.get("demand")
        if demand is not None and isinstance(demand.get("device_time"), int):
            state.last_demand = int(demand["device_time"])  # type: ignore[call-overload]
        if state.last_demand is not None:  # from the files, or from Redis when they are gone
            state.seen.add(("demand", state.last_demand), Hour.at(now).number)
        for kind in capture.EXTRA_KINDS:
            if kind in found:
                state.last_keys.setdefault(kind, capture.line_key(found[kind]))
        state.recovered = True


def mark_summation(state: DeviceState, record: dict[str, object]) -> None:
    """Registers only rise: a total lower than the last one from the same meter is a meter reset
    (`meter_reset`), from another meter a change of meter (`meter_changed`), never a reset."""
    meter, delivered = record.get("MeterMacId"), record.get("delivered_kwh")
    if not isinstance(meter, int) or not isinstance(delivered, int | float):
        return
    last = state.last_summation
    if last is not None and last[0] != meter:
        record["meter_changed"] = True
    elif last is not None and delivered < last[1]:
        record["meter_reset"] = True
    state.last_summation = (meter, float(delivered))
