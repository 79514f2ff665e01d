"""The relay client against the real simulator over HTTP: each failure has its own kind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from app.eagle.client import Credentials, EagleCloudClient, new_session
from app.errors import (
    DeviceAuthError,
    DeviceBadReply,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
)
from tests.conftest import Sim, free_port, running_sim


@pytest.fixture(scope="module")
def module_sim() -> Iterator[Sim]:
    with running_sim(4, "--seed", "3", "--timeout-hold-s", "3") as sim:
        yield sim


@pytest.fixture
def sim(module_sim: Sim) -> Sim:
    module_sim.set_faults({})
    return module_sim


def creds_of(sim: Sim, index: int = 0, password: str | None = None) -> Credentials:
    user = sim.users()[index]
    return Credentials(str(user["cloud_id"]), str(user["user_email"]), password or str(user["user_pw"]))


@pytest.fixture
async def client(sim: Sim) -> AsyncIterator[EagleCloudClient]:
    session = new_session(10)
    yield EagleCloudClient(session, sim.url, timeout_s=0.5)
    await session.close()


async def test_every_command_answers(sim: Sim, client: EagleCloudClient) -> None:
    creds = creds_of(sim)
    demand = await client.get_instantaneous_demand(creds)
    assert demand.device_mac_id & 0xFFFFFF == int(creds.cloud_id, 16)
    summation = await client.get_current_summation(creds)
    assert summation.delivered_kwh > 0
    price = await client.get_price(creds)
    assert price.currency == 840
    info = await client.get_network_info(creds)
    assert info.model_id == "Z109-EAGLE"


async def test_wrong_password_is_an_auth_error(sim: Sim, client: EagleCloudClient) -> None:
    with pytest.raises(DeviceAuthError) as info:
        await client.get_instantaneous_demand(creds_of(sim, password="wrong"))
    assert info.value.cloud_id == creds_of(sim).cloud_id
    assert "wrong" not in str(info.value)


@pytest.mark.parametrize(
    ("error", "kind"),
    [("timeout", DeviceTimeout), ("http_503", DeviceUnavailable), ("http_500", DeviceUnavailable),
     ("malformed", DeviceBadReply), ("offline", DeviceUnavailable), ("bad_credentials", DeviceAuthError)],
)  # fmt: skip
async def test_each_fault_maps_to_its_kind(
    sim: Sim, client: EagleCloudClient, error: str, kind: type[DeviceError]
) -> None:
    creds = creds_of(sim, 1)
    sim.set_faults({"devices": {creds.cloud_id: {"error": error}}})
    with pytest.raises(kind) as info:
        await client.get_instantaneous_demand(creds)
    assert info.value.kind == kind.kind and info.value.cloud_id == creds.cloud_id
    # the other devices are untouched
    assert (await client.get_instantaneous_demand(creds_of(sim, 2))).timestamp > 0


async def test_latency_below_the_timeout_still_reads(sim: Sim, client: EagleCloudClient) -> None:
    sim.set_faults({"fleet": {"latency_ms": 150}})
    assert (await client.get_instantaneous_demand(creds_of(sim))).timestamp > 0


async def test_refused_connection_is_unavailable() -> None:
    session = new_session(2)
    try:
        client = EagleCloudClient(session, f"http://127.0.0.1:{free_port()}/cgi-bin/post_manager", 0.5)
        with pytest.raises(DeviceUnavailable):
            await client.get_instantaneous_demand(Credentials("00ce69", "a@b.c", "pw"))
    finally:
        await session.close()
