"""The registry against a real redis-server: encryption at rest, idempotency, counters."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis as syncredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app import keys
from app.credentials import Vault
from app.devices import DeviceInput
from app.errors import StoreError, ValidationError
from app.settings import Settings
from app.store import PollUpdate, Store, queue_client
from tests.conftest import wait_until
from tests.redis_cluster import async_client, node_urls, sync_client


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(redis_url)
    yield s
    await s.close()


@pytest.fixture
def vault(secret_key: str) -> Vault:
    return Vault(secret_key)


def device(cid: str = "002738", **kw: object) -> DeviceInput:
    data: dict[str, object] = {"cloud_id": cid, "user_email": "a@example.com", "user_pw": "plaintext123"}
    data.update(kw)
    return DeviceInput.from_mapping(data)


async def test_password_is_encrypted_at_rest(store: Store, vault: Vault, redis_url: str) -> None:
    assert await store.devices.save_device(device(), vault) == "created"
    with sync_client(redis_url, decode_responses=True) as client:
        raw = client.hgetall(keys.device("002738"))
    assert "plaintext123" not in str(raw)
    record = await store.devices.get_device("002738")
    assert record is not None and vault.decrypt(record.encrypted_secret) == "plaintext123"
    assert "plaintext123" not in str(record.public()) and "password" not in str(record.public())


async def test_save_is_idempotent_and_updates_keep_counters(store: Store, vault: Vault) -> None:
    assert await store.devices.save_device(device(), vault) == "created"
    assert await store.devices.save_device(device(), vault) == "unchanged"
    await store.devices.record_polls(
        [PollUpdate("002738", events=3, first_timestamp=10.0, last_timestamp=20.0)]
    )
    assert await store.devices.save_device(device(user_pw="new-password"), vault) == "updated"
    record = await store.devices.get_device("002738")
    assert record is not None and record.total_events_logged == 3 and record.first_timestamp == 10.0


async def test_deactivate_keeps_the_record(store: Store, vault: Vault) -> None:
    await store.devices.save_device(device(), vault)
    assert await store.devices.deactivate_device("002738")
    assert await store.devices.active_ids() == set()
    record = await store.devices.get_device("002738")
    assert record is not None and not record.active
    assert not await store.devices.deactivate_device("abcdef")


async def test_counters_batch_and_status(store: Store, vault: Vault) -> None:
    for cid in ("000001", "000002", "000003"):
        await store.devices.save_device(device(cid), vault)
    await store.devices.record_polls(
        [
            PollUpdate("000001", events=2, first_timestamp=1.0, last_timestamp=2.0, last_success_at=5.0),
            PollUpdate("000002", consecutive_failures=4, last_error="timeout: no reply"),
        ]
    )
    await store.devices.record_polls(
        [PollUpdate("000001", events=1, first_timestamp=3.0, last_timestamp=3.0)]
    )
    one, two, three = await store.devices.load_devices(["000001", "000002", "000003"])
    assert (one.total_events_logged, one.first_timestamp, one.last_timestamp) == (3, 1.0, 3.0)
    assert one.status == "ok" and two.status == "failing" and three.status == "never"
    assert two.last_error == "timeout: no reply"


async def test_list_paginates_and_filters(store: Store, vault: Vault) -> None:
    ids = [f"{i:06x}" for i in range(1, 26)]
    for cid in ids:
        await store.devices.save_device(device(cid, active=cid != "000005"), vault)
    seen, after = [], ""
    while True:
        page, cursor = await store.devices.list_devices(after=after, limit=10)
        seen.extend(r.cloud_id for r in page)
        if cursor is None:
            break
        after = cursor
    assert seen == ids
    inactive, _ = await store.devices.list_devices(active=False)
    assert [r.cloud_id for r in inactive] == ["000005"]
    never, _ = await store.devices.list_devices(status="never", limit=1000)
    assert len(never) == 25


@pytest.mark.parametrize(
    ("data", "field"),
    [({"cloud_id": "2738"}, "cloud_id"), ({"cloud_id": "00273g"}, "cloud_id"),
     ({"user_email": "nope"}, "user_email"), ({"user_pw": ""}, "user_pw"),
     ({"protocol": "zigbee"}, "protocol"), ({"active": "yes"}, "active"), ({"pw": "x"}, "pw")],
)  # fmt: skip
def test_input_validation_names_the_field(data: dict[str, object], field: str) -> None:
    base: dict[str, object] = {"cloud_id": "002738", "user_email": "a@example.com", "user_pw": "pw"}
    base.update(data)
    with pytest.raises(ValidationError) as info:
        DeviceInput.from_mapping(base)
    assert info.value.field == field


def test_cloud_id_keeps_leading_zeros_and_lowercases() -> None:
    assert device("00CE69").cloud_id == "00ce69"
    assert "secretpw" not in repr(device(user_pw="secretpw"))


BUSY_S = 4.0  # well beyond an impatient client's own retries of a timed-out command (under 2 s)


def _impatient(redis_url: str) -> Any:
    """A client whose read times out after 0.3 s, retried twice at once: a command gives up in
    about a second while Redis is held (redis-py's default backoff with jitter can take longer
    than the hold itself, and the command then lands as if nothing had happened)."""
    return async_client(redis_url, socket_timeout=0.3, decode_responses=True, retry=Retry(NoBackoff(), 2))


_BUSY = """
local s = redis.call('TIME')
repeat local n = redis.call('TIME') until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > tonumber(ARGV[1])
return 1
"""


async def _redis_busy_while(redis_url: str, seconds: float, write: Callable[[], Awaitable[object]]) -> None:
    """Run `write` while Redis is held busy by another client: the write is queued behind the
    busy script, the writer's short read timeout fires, and Redis applies the write after all:
    a reply lost, as when a connection drops after Redis took a command."""
    urls = node_urls(redis_url)  # every primary of a cluster
    blockers = [syncredis.Redis.from_url(url) for url in urls]
    busy = [threading.Thread(target=lambda b=b: b.eval(_BUSY, 0, int(seconds * 1e6))) for b in blockers]
    for thread in busy:
        thread.start()
    wait_until(lambda: all(_held(url) for url in urls), timeout_s=seconds / 2, what="Redis to be held busy")
    with pytest.raises(StoreError):
        await write()
    for thread, blocker in zip(busy, blockers, strict=True):
        thread.join(30)
        blocker.close()


def _held(url: str) -> bool:
    """Whether a busy script holds this Redis: a PING goes unanswered for 50 ms."""
    with syncredis.Redis.from_url(url, socket_timeout=0.05) as probe:
        try:
            probe.ping()
        except syncredis.TimeoutError:
            return True
    return False


async def test_counters_sent_again_after_a_lost_reply_are_counted_once(redis_url: str) -> None:
    """A flush whose reply was lost may have landed: sent again, it must not count twice (the
    pinger's counters and the completeness of an hour)."""
    from app.completeness import Tally
    from app.pinger.ledger import Ledger, flush_tally

    store = Store(_impatient(redis_url))
    try:
        await store.redis.hset(keys.device("0f0001"), mapping={"cloud_id": "0f0001", "active": "1"})
        ledger = Ledger(store)
        ledger.add(PollUpdate("0f0001", events=5, first_timestamp=10.0, last_timestamp=20.0))
        await _redis_busy_while(redis_url, BUSY_S, lambda: _must_fail(ledger.flush(100.0)))
        ledger.add(PollUpdate("0f0001", events=2, last_timestamp=30.0))
        assert await ledger.flush(101.0)
        (record,) = await store.devices.load_devices(["0f0001"])
        assert record.total_events_logged == 7, "the batch whose reply was lost was counted twice"

        tally = Tally()
        for _ in range(3):
            tally.ok("0f0001", 3600 * 500)
        await _redis_busy_while(redis_url, BUSY_S, lambda: flush_tally(store, tally, 3600))
        tally.ok("0f0001", 3600 * 500)
        await flush_tally(store, tally, 3600)
        (row,) = await store.completeness.completeness(["0f0001"], [500])
        assert row["ok"] == 4, "completeness whose reply was lost was added twice"
    finally:
        await store.close()


async def test_a_store_closed_after_a_timeout_leaves_no_connection_open(redis_url: str) -> None:
    """A command that timed out makes a cluster client learn the slots again; closing the store
    must still close every connection it opened after that. (redis-py before 8.0 routed through
    fresh node objects after a refresh and closed only the old ones: a socket left open each time.)"""
    ports = {urlsplit(url).port for url in node_urls(redis_url)}
    store = Store(_impatient(redis_url))
    ids = [f"{n:06x}" for n in range(0x0E0000, 0x0E0000 + 64)]  # keys on every primary
    try:
        await store.devices.load_devices(ids)
        await _redis_busy_while(redis_url, BUSY_S, lambda: store.devices.load_devices(ids))
        for cid in ids:  # one at a time: each primary is asked again after the refresh
            await store.devices.load_devices([cid])
    finally:
        await store.close()
    await asyncio.sleep(0.1)  # a closed transport lets its socket go on the loop's next turn
    gc.collect()
    sockets = [o for o in gc.get_objects() if isinstance(o, socket.socket) and o.fileno() != -1]
    left = [s for s in sockets if _peer(s) in ports]
    assert not left, f"{len(left)} connection(s) to Redis left open by a closed store: {left}"


async def test_the_cart_queue_waits_on_redis_longer_than_a_read_timeout(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    """saq's workers wait on BLMOVE (and on pub/sub) for as long as no job comes: the queue's
    client must not cut a wait at redis-py's default read timeout (5 s since redis-py 8)."""
    client = queue_client(make_settings(redis_url))
    try:
        waited = await client.blmove(f"{keys.cart_queue()}:none", f"{keys.cart_queue()}:taken", 6.0)
        assert waited is None  # nothing came in 6 s, and the wait was not cut short
    finally:
        await client.aclose()


def _peer(sock: socket.socket) -> int | None:
    try:
        return int(sock.getpeername()[1])
    except (OSError, IndexError, TypeError):
        return None


async def _must_fail(flushed: Awaitable[bool]) -> None:
    if not await flushed:
        raise StoreError("the flush failed, as it should while Redis is busy")


async def test_a_flush_that_fails_after_some_of_its_chunks_counts_none_twice(redis_url: str) -> None:
    """1,001 devices go to Redis in two chunks; the second fails (its first device's key is of the
    wrong type). Once mended, the retry must not count the first chunk's devices again."""
    from app.pinger.ledger import Ledger

    store = Store.from_url(redis_url)
    try:
        ids = [f"{n:06x}" for n in range(0x100000, 0x100000 + 1001)]
        async with store.redis.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hset(keys.device(cid), mapping={"cloud_id": cid, "active": "1"})
            await pipe.execute()
        await store.redis.delete(keys.device(ids[1000]))
        await store.redis.set(keys.device(ids[1000]), "not a hash")  # the second chunk fails on it
        ledger = Ledger(store)
        for cid in ids:
            ledger.add(PollUpdate(cid, events=1, last_timestamp=20.0))
        assert not await ledger.flush(100.0)
        await store.redis.delete(keys.device(ids[1000]))  # mended
        assert await ledger.flush(101.0)
        counted = [r.total_events_logged for r in await store.devices.load_devices(ids[:1000])]
        assert counted == [1] * 1000, f"counted twice: {sum(c > 1 for c in counted)} devices"
    finally:
        await store.close()


async def test_an_hour_without_a_reading_was_one_long_gap(store: Store) -> None:
    """A device-hour polled but silent reports the whole hour as its longest gap (it was 0), the
    current hour as much of it as has passed; an hour with readings keeps its measured gap."""
    from app.completeness import HourCounts

    past = int(time.time() // 3600) - 5
    now_hour = int(time.time() // 3600)
    await store.completeness.add_completeness(
        {
            ("0f0002", past): HourCounts(scheduled=600, ok=0, readings=0),
            ("0f0002", past + 1): HourCounts(scheduled=600, ok=600, readings=450, longest_gap_s=42.0),
            ("0f0002", now_hour): HourCounts(scheduled=10, ok=0, readings=0),
        },
        86400,
    )
    rows = {
        r["hour"]: r for r in await store.completeness.completeness(["0f0002"], [past, past + 1, now_hour])
    }
    assert rows[past]["longest_gap_s"] == 3600.0
    assert rows[past + 1]["longest_gap_s"] == 42.0
    assert 0 <= rows[now_hour]["longest_gap_s"] <= time.time() - now_hour * 3600 + 1
