"""Each protocol's client against the real simulator over HTTP: each failure has its own kind,
and a failure of one device never touches another."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import AsyncIterator, Iterator

import pytest

from app.eagle.client import Clients, new_session
from app.eagle.eagle100 import Eagle100Client
from app.eagle.gateway import Gateway, cloud_gateway, local_gateway
from app.errors import (
    DeviceAuthError,
    DeviceBadReply,
    DeviceError,
    DeviceTimeout,
    DeviceTLSError,
    DeviceUnavailable,
)
from tests.conftest import Sim, free_port, running_sim

MIX = "eagle100-cloud=1,eagle100-local=1,eagle200-local=1"
DEMAND = frozenset(["demand"])


HTTPS_PORT = free_port()


@pytest.fixture(scope="module")
def module_sim() -> Iterator[Sim]:
    args = ("--seed", "3", "--timeout-hold-s", "3", "--protocols", MIX, "--https-port", str(HTTPS_PORT))
    with running_sim(9, *args) as sim:
        yield sim


@pytest.fixture
def sim(module_sim: Sim) -> Sim:
    module_sim.set_faults({})
    return module_sim


def gateway_of(
    sim: Sim, protocol: str = "eagle100-cloud", nth: int = 0, secret: str | None = None
) -> Gateway:
    user = [u for u in sim.users() if u["protocol"] == protocol][nth]
    cid = str(user["cloud_id"])
    if protocol == "eagle100-cloud":
        return cloud_gateway(cid, str(user["user_email"]), secret or str(user["user_pw"]), sim.url)
    return local_gateway(cid, protocol, str(user["address"]), secret or str(user["install_code"]))


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    session = new_session(10)
    yield Clients(session, timeout_s=0.5, local_gap_s=0.0)
    await session.close()


@pytest.fixture
async def client(clients: Clients) -> Eagle100Client:
    found = clients.for_protocol("eagle100-cloud")
    assert isinstance(found, Eagle100Client)
    return found


async def test_every_command_answers(sim: Sim, client: Eagle100Client) -> None:
    gw = gateway_of(sim)
    demand = await client.demand(gw)
    assert demand.device_mac_id & 0xFFFFFF == int(gw.cloud_id, 16)
    summation = await client.summation(gw)
    assert summation.delivered_kwh > 0
    price = await client.price(gw)
    assert price.currency == 840
    info = await client.network_info(gw)
    assert info.model_id == "Z109-EAGLE"
    history = await client.history(gw, int(demand.device_time) - 600, int(demand.device_time), 60)
    assert len(history) >= 10 and all(h.delivered_kwh > 0 for h in history)
    assert [h.delivered_kwh for h in history] == sorted(h.delivered_kwh for h in history)


@pytest.mark.parametrize("protocol", ["eagle100-cloud", "eagle100-local", "eagle200-local"])
async def test_each_protocol_reads_demand_summation_and_price(
    sim: Sim, clients: Clients, protocol: str
) -> None:
    gw = gateway_of(sim, protocol)
    client = clients.for_protocol(protocol)
    readings = await client.poll(gw, frozenset(["demand", "summation", "price"]))
    if client.separate_commands:
        readings = readings.merged(await client.extra(gw, "summation", 0.5))
    assert readings.demand is not None and readings.demand.device_time > 1_700_000_000
    assert readings.summation is not None and readings.summation.delivered_kwh > 0


@pytest.mark.parametrize("protocol", ["eagle100-cloud", "eagle100-local", "eagle200-local"])
async def test_wrong_secret_is_an_auth_error(sim: Sim, clients: Clients, protocol: str) -> None:
    gw = gateway_of(sim, protocol, secret="0123456789ABCDEF")
    with pytest.raises(DeviceAuthError) as info:
        await clients.for_protocol(protocol).poll(gw, DEMAND)
    assert info.value.cloud_id == gw.cloud_id and info.value.kind == "auth"
    assert "0123456789ABCDEF" not in str(info.value)


@pytest.mark.parametrize("protocol", ["eagle100-cloud", "eagle100-local", "eagle200-local"])
@pytest.mark.parametrize(
    ("error", "kind"),
    [("timeout", DeviceTimeout), ("http_503", DeviceUnavailable), ("http_500", DeviceUnavailable),
     ("malformed", DeviceBadReply), ("offline", DeviceUnavailable), ("bad_credentials", DeviceAuthError)],
)  # fmt: skip
async def test_each_fault_maps_to_its_kind(
    sim: Sim, clients: Clients, protocol: str, error: str, kind: type[DeviceError]
) -> None:
    client = clients.for_protocol(protocol)
    gw = gateway_of(sim, protocol, 1)
    sim.set_faults({"devices": {gw.cloud_id: {"error": error}}})
    with pytest.raises(kind) as info:
        await client.poll(gw, DEMAND)
    assert info.value.kind == kind.kind and info.value.cloud_id == gw.cloud_id
    # the other devices are untouched
    readings = await client.poll(gateway_of(sim, protocol, 2), DEMAND)
    assert readings.demand is not None and readings.demand.device_time > 0


async def test_latency_below_the_timeout_still_reads(sim: Sim, client: Eagle100Client) -> None:
    sim.set_faults({"fleet": {"latency_ms": 150}})
    assert (await client.demand(gateway_of(sim))).timestamp > 0


async def test_refused_connection_is_unavailable() -> None:
    session = new_session(2)
    try:
        client = Eagle100Client(session, 0.5)
        gw = cloud_gateway("00ce69", "a@b.c", "pw", f"http://127.0.0.1:{free_port()}/cgi-bin/post_manager")
        with pytest.raises(DeviceUnavailable):
            await client.demand(gw)
    finally:
        await session.close()


async def test_an_address_that_does_not_resolve_is_unavailable_with_a_reason(clients: Clients) -> None:
    gw = local_gateway("00ce69", "eagle200-local", "eagle-00ce69.invalid", "0123456789ABCDEF")
    with pytest.raises(DeviceUnavailable) as info:
        await clients.for_protocol("eagle200-local").poll(gw, DEMAND)
    assert "resolve" in str(info.value) or "eagle-00ce69.invalid" in str(info.value)


async def test_a_stored_address_no_resolver_can_encode_is_unavailable_with_a_reason(clients: Clients) -> None:
    """A record from before addresses' host names were checked: its poll fails as the device's, not
    as the process's (the resolver raises UnicodeError for an empty label)."""
    gw = local_gateway("00ce69", "eagle200-local", "eagle..lan", "0123456789ABCDEF")
    with pytest.raises(DeviceUnavailable) as info:
        await clients.for_protocol("eagle200-local").poll(gw, DEMAND)
    assert "no host name that can be looked up" in str(info.value)


async def test_a_certificate_that_fails_verification_names_the_settings(sim: Sim, clients: Clients) -> None:
    """An EAGLE-3 behind HTTPS with a self-signed certificate: verified → tls (naming the
    settings); not verified, or pinned by its fingerprint → reads."""
    user = next(u for u in sim.users() if u["protocol"] == "eagle200-local")
    cid, code = str(user["cloud_id"]), str(user["install_code"])
    client = clients.for_protocol("eagle200-local")
    address = f"https://127.0.0.1:{HTTPS_PORT}"
    with pytest.raises(DeviceTLSError) as info:
        await client.poll(local_gateway(cid, "eagle200-local", address, code, tls_verify=True), DEMAND)
    assert "tls_verify" in str(info.value) and "tls_fingerprint" in str(info.value)
    plain = await client.poll(local_gateway(cid, "eagle200-local", address, code), DEMAND)
    assert plain.demand is not None
    wrong = local_gateway(cid, "eagle200-local", address, code, tls_fingerprint="ab" * 32)
    with pytest.raises(DeviceTLSError):
        await client.poll(wrong, DEMAND)
    pem = ssl.get_server_certificate(("127.0.0.1", HTTPS_PORT))
    pin = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    pinned = await client.poll(
        local_gateway(cid, "eagle200-local", address, code, tls_fingerprint=pin), DEMAND
    )
    assert pinned.demand is not None
