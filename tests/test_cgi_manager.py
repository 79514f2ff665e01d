"""An EAGLE-100 spoken to through `/cgi-bin/cgi_manager` (`api: "cgi_manager"`): the recorded
replies in tests/fixtures/cgi/ through the pure parser, and a fleet of such gateways in the
simulator polled by the real pinger, every served reading written once at its UTC time."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from app.devices import DeviceInput
from app.eagle import parse_cgi
from app.errors import DeviceMeterOffline, ValidationError
from app.lines import read as read_lines
from app.pinger.loop import Pinger
from app.settings import Settings
from tests.conftest import FIXTURES, Sim
from tests.test_pinger import register, run_for, served

CGI = FIXTURES / "cgi"
ALL = frozenset({"demand", "summation", "price"})


def test_the_cgi_replies_become_readings_at_their_utc_time() -> None:
    mac = parse_cgi.meter_mac((CGI / "get_device_list.json").read_bytes())
    offset = parse_cgi.utc_offset((CGI / "get_timezone.json").read_bytes())
    assert (mac, offset) == ("0x00135003007a1234", 18000)
    got = parse_cgi.usage((CGI / "get_usage_data.json").read_bytes(), offset, mac, ALL)
    assert got.demand is not None and got.summation is not None and got.price is not None
    line = got.demand.record("00ce69", 1.0, "eagle100-local")
    assert (line["device_time"], line["demand_kw"], line["MeterMacId"]) == (
        1471315512,
        4.191,
        0x00135003007A1234,
    )
    assert (got.summation.delivered_kwh, got.price.price, got.price.currency) == (52777.889, 0.1342, "USD")
    quiet = parse_cgi.usage((CGI / "get_usage_data_nan.json").read_bytes(), offset, mac, ALL)
    assert quiet.demand is None and quiet.price is None and quiet.summation is not None, "nan and -1: none"
    gone = (CGI / "get_usage_data.json").read_bytes().replace(b'"Connected"', b'"Rejoining"')
    with pytest.raises(DeviceMeterOffline):
        parse_cgi.usage(gone, offset, mac, ALL)


def test_api_is_for_eagle100_local_gateways_only() -> None:
    base = {"cloud_id": "00ce69", "address": "192.168.1.20", "install_code": "1a2b3c4d5e6f7a8b"}
    made = DeviceInput.from_mapping({**base, "protocol": "eagle100-local", "api": "cgi_manager"})
    assert made.api == "cgi_manager" and made.stored_fields()["api"] == "cgi_manager"
    with pytest.raises(ValidationError, match="api is an eagle100-local gateway's local API"):
        DeviceInput.from_mapping({**base, "protocol": "eagle200-local", "api": "cgi_manager"})
    with pytest.raises(ValidationError, match="api is"):
        DeviceInput.from_mapping({**base, "protocol": "eagle100-local", "api": "soap"})


async def test_a_fleet_of_cgi_manager_gateways_is_polled_through_the_simulator(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    sim = start_sim(12, "--protocols", "eagle100-cgi=2,eagle100-local=1")
    users = {str(u["cloud_id"]): u for u in sim.users()}
    cgi = {cid for cid, u in users.items() if u.get("api") == "cgi_manager"}
    assert len(cgi) == 8
    settings = make_settings(redis_url, sim.url).replace(poll_interval_s=1.0, poll_timeout_s=0.9)
    await register(sim, settings)
    await run_for(Pinger.create(settings), 4.5)
    lines: dict[tuple[str, int], list[dict[str, object]]] = {}
    for path in settings.logs_dir.glob("????-??-??-??/*.jl"):
        for r in read_lines(path).records:
            if r["kind"] == "demand":
                lines.setdefault((str(r["cloud_id"]), int(r["device_time"]) - 946684800), []).append(r)
    truth = served(sim)
    assert {cid for cid, _ in truth} >= cgi, "every cgi_manager gateway was asked for its usage"
    assert set(lines) == set(truth), "every served reading, at its UTC time, and nothing else"
    assert all(len(v) == 1 for v in lines.values()), "each once"
    for (cid, _), (line,) in lines.items():
        assert line["demand_kw"] == truth[(cid, int(line["device_time"]) - 946684800)]["demand_w"] / 1000  # type: ignore[call-overload, operator]
    assert orjson.loads(sim.get("/control/stats")).get("wrong_api", 0) == 0, "each asked on its own API"
