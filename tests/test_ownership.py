"""Ownership: rendezvous hashing (pure) and device leases (the round script on a real Redis)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from app.leases import Leases
from app.pinger.ownership import Ownership, rendezvous, share
from app.store import Store

DEVICES = [f"{n:06x}" for n in range(3000)]


def test_rendezvous_balances_and_every_member_agrees_on_one_owner() -> None:
    members = ["host-a:11", "host-b:12", "host-c:13"]
    owners = Counter(rendezvous(cid, members) for cid in DEVICES)
    assert set(owners) == set(members)
    assert all(800 <= n <= 1200 for n in owners.values()), owners
    shares = [share(m, members, DEVICES) for m in members]
    assert sum(len(s) for s in shares) == len(DEVICES) and set().union(*shares) == set(DEVICES)
    assert rendezvous("000001", []) is None


def test_a_member_joining_takes_about_a_quarter_and_nothing_moves_between_others() -> None:
    three = ["host-a:11", "host-b:12", "host-c:13"]
    four = [*three, "host-d:14"]
    before = {cid: rendezvous(cid, three) for cid in DEVICES}
    after = {cid: rendezvous(cid, four) for cid in DEVICES}
    moved = [cid for cid in DEVICES if before[cid] != after[cid]]
    assert all(after[cid] == "host-d:14" for cid in moved)
    assert 0.2 <= len(moved) / len(DEVICES) <= 0.3


def test_a_member_leaving_moves_only_its_own_devices() -> None:
    three = ["host-a:11", "host-b:12", "host-c:13"]
    before = {cid: rendezvous(cid, three) for cid in DEVICES}
    after = {cid: rendezvous(cid, three[1:]) for cid in DEVICES}
    assert all(before[cid] == after[cid] for cid in DEVICES if before[cid] != "host-a:11")


@pytest.fixture
async def leases(redis_url: str) -> AsyncIterator[Leases]:
    store = Store.from_url(redis_url)
    yield Leases(store.redis)
    await store.close()


async def test_a_free_device_is_granted_and_a_live_owner_keeps_it(leases: Leases) -> None:
    first = await leases.round("a", 5.0, 0.0, [], ["000001", "000002"])
    assert set(first.granted) == {"000001", "000002"} and first.lapsed and first.members == ("a",)
    taken = await leases.round("b", 5.0, 0.0, [], ["000001"])
    assert taken.granted == {} and taken.refused == 1 and taken.members == ("a", "b")
    again = await leases.round("a", 5.0, 0.0, [], ["000001"])
    assert not again.lapsed and set(again.granted) == {"000001"}
    assert (await leases.owner("000001")) == {"pinger": "a", "lease": "held", "lease_expires_in_s": 5.0}


async def test_an_expired_lease_goes_only_to_a_settled_member_with_its_handover_time(leases: Leases) -> None:
    await leases.round("a", 0.3, 0.0, [], ["000001"])
    await leases.round("b", 5.0, 0.2, [], [])  # b joins
    await asyncio.sleep(0.4)  # a's lease runs out (Redis's clock)
    assert (await leases.owner("000001") or {})["lease"] == "lapsed"
    # b has not been a live member for settle_s yet (it just joined): it may not take a's devices
    early = await leases.round("b", 5.0, 10.0, [], ["000001"])
    assert early.granted == {}
    late = await leases.round("b", 5.0, 0.2, [], ["000001"])
    assert list(late.granted) == ["000001"]
    assert late.granted["000001"] is not None and 0.0 < late.granted["000001"] < 1.0
    back = await leases.round("a", 0.3, 0.0, [], [])  # a comes back: it learns what it still holds
    assert back.lapsed and back.held == frozenset()


async def test_a_release_hands_over_and_leave_releases_everything(leases: Leases) -> None:
    await leases.round("a", 5.0, 0.0, [], ["000001", "000002", "000003"])
    released = await leases.round("a", 5.0, 0.0, ["000001", "000009"], [])  # 000009 was never a's
    assert released.released == 1
    got = await leases.round("b", 5.0, 0.0, [], ["000001"])
    assert list(got.granted) == ["000001"] and got.granted["000001"] is not None
    assert await leases.leave("a") == 2
    assert (await leases.round("b", 5.0, 0.0, [], ["000002", "000003"])).granted.keys() == {
        "000002",
        "000003",
    }
    views = {p.pinger_id: p for p in await leases.pingers(0.0)}
    assert set(views) == {"b"} and views["b"].devices == 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_ownership_drops_at_once_and_releases_an_interval_later(leases: Leases) -> None:
    clock = Clock()
    a = Ownership(leases, "a", 1.0, 3.0, monotonic=clock)
    await a.sync(DEVICES[:100])
    assert all(a.owns(cid) for cid in DEVICES[:100])
    b = Ownership(leases, "b", 1.0, 3.0, monotonic=clock)
    await b.sync(DEVICES[:100])  # b joins: its share is still a's
    assert not any(b.owns(cid) for cid in DEVICES[:100]) and b.claims_waiting()
    dropped = await a.renew()  # a sees b: stops polling b's share at once...
    assert dropped == b.wanted and not any(a.owns(cid) for cid in dropped)
    assert not a.releasing()
    clock.now += 1.0  # ...and releases it an interval later, when no poll of it can be in flight
    assert a.releasing()
    await a.renew()
    gained = await b.renew()
    assert gained == b.wanted and 20 <= len(gained) <= 80
    assert all(a.owns(cid) != b.owns(cid) for cid in DEVICES[:100])
    assert not b.claims_waiting()
