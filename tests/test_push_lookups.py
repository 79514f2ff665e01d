"""Push key look-ups in Redis: uploads arriving together share one round trip, each answered
with its own device's digest, and one upload given up does not take another's answer with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.credentials import Vault
from app.db.push import Credentials
from app.devices import DeviceInput
from app.pinger.ledger import Ledger
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
