"""The registry against a real redis-server: encryption at rest, idempotency, counters."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis as syncredis

from app import keys
from app.credentials import Vault
from app.devices import DeviceInput
from app.errors import ValidationError
from app.store import PollUpdate, Store


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
    assert await store.save_device(device(), vault) == "created"
    with syncredis.Redis.from_url(redis_url, decode_responses=True) as client:
        raw = client.hgetall(keys.device("002738"))
    assert "plaintext123" not in str(raw)
    record = await store.get_device("002738")
    assert record is not None and vault.decrypt(record.password_token) == "plaintext123"
    assert "plaintext123" not in str(record.public()) and "password" not in str(record.public())


async def test_save_is_idempotent_and_updates_keep_counters(store: Store, vault: Vault) -> None:
    assert await store.save_device(device(), vault) == "created"
    assert await store.save_device(device(), vault) == "unchanged"
    await store.record_polls([PollUpdate("002738", events=3, first_timestamp=10.0, last_timestamp=20.0)])
    assert await store.save_device(device(user_pw="new-password"), vault) == "updated"
    record = await store.get_device("002738")
    assert record is not None and record.total_events_logged == 3 and record.first_timestamp == 10.0


async def test_deactivate_keeps_the_record(store: Store, vault: Vault) -> None:
    await store.save_device(device(), vault)
    assert await store.deactivate_device("002738")
    assert await store.active_ids() == set()
    record = await store.get_device("002738")
    assert record is not None and not record.active
    assert not await store.deactivate_device("abcdef")


async def test_counters_batch_and_status(store: Store, vault: Vault) -> None:
    for cid in ("000001", "000002", "000003"):
        await store.save_device(device(cid), vault)
    await store.record_polls(
        [
            PollUpdate("000001", events=2, first_timestamp=1.0, last_timestamp=2.0, last_success_at=5.0),
            PollUpdate("000002", consecutive_failures=4, last_error="timeout: no reply"),
        ]
    )
    await store.record_polls([PollUpdate("000001", events=1, first_timestamp=3.0, last_timestamp=3.0)])
    one, two, three = await store.load_devices(["000001", "000002", "000003"])
    assert (one.total_events_logged, one.first_timestamp, one.last_timestamp) == (3, 1.0, 3.0)
    assert one.status == "ok" and two.status == "failing" and three.status == "never"
    assert two.last_error == "timeout: no reply"


async def test_list_paginates_and_filters(store: Store, vault: Vault) -> None:
    ids = [f"{i:06x}" for i in range(1, 26)]
    for cid in ids:
        await store.save_device(device(cid, active=cid != "000005"), vault)
    seen, after = [], ""
    while True:
        page, cursor = await store.list_devices(after=after, limit=10)
        seen.extend(r.cloud_id for r in page)
        if cursor is None:
            break
        after = cursor
    assert seen == ids
    inactive, _ = await store.list_devices(active=False)
    assert [r.cloud_id for r in inactive] == ["000005"]
    never, _ = await store.list_devices(status="never", limit=1000)
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
