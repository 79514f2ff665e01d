"""Push keys as a server process knows them (app.push.keycache): uploads arriving together share
one round trip, each answered with its own device's digest; one upload given up does not take
another's answer with it; a change to a device takes effect as soon as the feed says so."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from app.credentials import Vault
from app.db.push import Credentials
from app.devices import DeviceInput, push_key_digest
from app.pinger.ledger import Ledger
from app.push.keycache import CREDENTIALS_TTL_S, KeyCache
from app.push.receiver import PushReceiver, UploadRefused
from app.push.writer import PushWriter
from app.store import Store

DEVICES = [f"{0x300000 + i:06x}" for i in range(40)]


def key_of(cloud_id: str) -> str:
    return f"push-key-of-{cloud_id}-for-tests"


async def receiver_for(redis_url: str, secret_key: str, tmp_path: Path) -> tuple[Store, PushReceiver]:
    store, vault = Store.from_url(redis_url), Vault(secret_key)
    await asyncio.gather(*(
        store.devices.upsert_device(DeviceInput(cid, protocol="push", push_key=key_of(cid)), vault)
        for cid in DEVICES
    ))  # fmt: skip
    return store, PushReceiver(store, PushWriter(tmp_path, "p"), Ledger(store), 65536)


async def test_uploads_arriving_together_share_one_round_trip_each_with_its_own_answer(
    redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    store, receiver = await receiver_for(redis_url, secret_key, tmp_path)
    asked: list[list[str]] = []
    read = store.push.push_credentials

    async def counted(cloud_ids: list[str]) -> dict[str, Credentials | None]:  # the real read, counted
        asked.append(list(cloud_ids))
        return await read(cloud_ids)

    store.push.push_credentials = counted  # type: ignore[method-assign]
    try:
        wrong = DEVICES[7]
        outcomes = await asyncio.gather(
            *(
                receiver.authenticate(cid, key_of(cid) if cid != wrong else key_of(DEVICES[8]))
                for cid in DEVICES
            ),
            receiver.authenticate("3fffff", key_of(DEVICES[0])),  # unknown, with another device's key
            return_exceptions=True,
        )
    finally:
        await store.close()
    refused = {cid for cid, out in zip([*DEVICES, "3fffff"], outcomes, strict=True) if out is not None}
    assert refused == {wrong, "3fffff"}
    assert all(isinstance(out, UploadRefused) and out.status == 401 for out in outcomes if out is not None)
    assert len(asked) <= 2 and sorted(cid for ids in asked for cid in ids) == sorted([*DEVICES, "3fffff"])


async def test_an_upload_given_up_while_waiting_does_not_cancel_another_of_the_same_device(
    redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    store, receiver = await receiver_for(redis_url, secret_key, tmp_path)
    try:
        cid = DEVICES[3]
        given_up = asyncio.create_task(receiver.authenticate(cid, key_of(cid)))
        waiting = asyncio.create_task(receiver.authenticate(cid, key_of(cid)))  # a re-send, at once
        await asyncio.sleep(0)  # both are waiting for the same read
        given_up.cancel()
        await asyncio.wait_for(waiting, 30)  # answered: passes, raises nothing
        with pytest.raises(asyncio.CancelledError):
            await given_up
        await receiver.authenticate(DEVICES[4], key_of(DEVICES[4]))  # and later look-ups still run
    finally:
        await store.close()


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.01)
    assert await check(), what


async def test_a_new_key_or_a_deactivation_takes_effect_as_soon_as_the_change_is_published(
    redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    """The clock never moves here: only the change feed can make the cache read a device again."""
    store, _ = await receiver_for(redis_url, secret_key, tmp_path)
    cache, stop = KeyCache(store, clock=lambda: 1000.0), asyncio.Event()
    following = asyncio.create_task(cache.follow(stop))
    cid = DEVICES[5]
    try:
        await asyncio.wait_for(cache.following.wait(), 30)
        assert await cache.digest(cid) == push_key_digest(key_of(cid))
        await store.devices.upsert_device(
            DeviceInput(cid, protocol="push", push_key="a-new-key-0001"), Vault(secret_key)
        )

        async def new_key() -> bool:
            return await cache.digest(cid) == push_key_digest("a-new-key-0001")

        await _until(new_key, "the new key to be taken")
        await store.devices.deactivate_device(cid)

        async def refused() -> bool:
            return await cache.digest(cid) is None

        await _until(refused, "the deactivated device's key to be refused")
    finally:
        stop.set()
        await asyncio.wait_for(following, 30)
        await store.close()


async def test_a_read_that_crossed_a_change_is_kept_only_briefly(
    redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    """Redis answered with the old key, and the change's message arrived before the answer was
    kept: the answer stands for CREDENTIALS_TTL_S, not FOLLOWED_TTL_S."""
    store, _ = await receiver_for(redis_url, secret_key, tmp_path)
    now = [1000.0]
    cache, stop = KeyCache(store, clock=lambda: now[0]), asyncio.Event()
    following = asyncio.create_task(cache.follow(stop))
    cid, read = DEVICES[6], store.push.push_credentials

    async def read_then_change(cloud_ids: list[str]) -> dict[str, Credentials | None]:
        found = await read(cloud_ids)  # the old key
        seen = cache.changes_seen
        await store.devices.upsert_device(
            DeviceInput(cid, protocol="push", push_key="a-new-key-0002"), Vault(secret_key)
        )
        async with asyncio.timeout(30):
            while cache.changes_seen == seen:  # the feed delivered the change
                await asyncio.sleep(0.01)
        return found

    try:
        await asyncio.wait_for(cache.following.wait(), 30)
        store.push.push_credentials = read_then_change  # type: ignore[method-assign]
        assert await cache.digest(cid) == push_key_digest(key_of(cid))
        store.push.push_credentials = read  # type: ignore[method-assign]
        now[0] += CREDENTIALS_TTL_S + 0.1
        assert await cache.digest(cid) == push_key_digest("a-new-key-0002")
    finally:
        stop.set()
        await asyncio.wait_for(following, 30)
        await store.close()
