"""`rainforest studies create|list|show` and `rainforest participants enrol|list|complete|end`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import click
import orjson

from app.commands.common import CLOUD_ID, vault_for, with_store
from app.errors import ValidationError


def _with_store(action: Callable[[Any], Awaitable[Any]]) -> Any:
    return with_store(lambda store, _: action(store))


@click.group()
def studies() -> None:
    """Studies: households grouped for a research team, with a time zone and contacts.

    Example: rainforest studies create heat-pump-2027 --name "Heat pump trial" --timezone America/Chicago
    """


@studies.command("create")
@click.argument("study_id")
@click.option("--name", help="What people call it (default: its id).")
@click.option("--timezone", "tz", default="UTC", show_default=True, help="The households' default IANA zone.")
@click.option(
    "--contact", "contacts", multiple=True, help="An e-mail for its alerts and digests (repeatable)."
)
@click.option(
    "--route",
    "routes",
    multiple=True,
    help="A notification URL for its alerts and digests, such as slack://... or json://... (repeatable; "
    "kept encrypted; given once, it replaces the study's routes).",
)
@click.option("--no-routes", is_flag=True, help="Remove the study's notification routes.")
def studies_create(
    study_id: str,
    name: str | None,
    tz: str,
    contacts: tuple[str, ...],
    routes: tuple[str, ...],
    no_routes: bool,
) -> None:
    """Create (or update) the study STUDY_ID.

    Example: rainforest studies create city-pilot --timezone Europe/London --contact lead@uni.example
    """
    from dataclasses import replace

    from app.studies import Study

    asked: dict[str, Any] = {"name": name or study_id, "timezone": tz, "contacts": list(contacts)}
    if routes or no_routes:
        asked["routes"] = [] if no_routes else list(routes)
    study = Study.from_mapping(asked, study_id)

    async def save(store: Any, settings: Any) -> bool:
        existing = await store.studies.get(study.id)
        at = existing.created_at if existing is not None else time.time()
        vault = vault_for(settings) if study.routes else None
        return bool(await store.studies.save(replace(study, created_at=at), vault))

    new = with_store(save)
    click.echo(f"{'created' if new else 'updated'} study {study.id} ({study.timezone})")


@studies.command("list")
def studies_list() -> None:
    """Every study, with its zone and how many households it has.

    Example: rainforest studies list
    """

    async def go(store: Any) -> list[tuple[Any, int]]:
        return [(s, len(await store.studies.device_ids(s.id))) for s in await store.studies.all()]

    found = _with_store(go)
    for study, n in found:
        click.echo(f"{study.id:<24} {n:>6} households  {study.timezone:<20} {study.name}")
    click.echo(f"{len(found)} studies")


@studies.command("show")
@click.argument("study_id")
def studies_show(study_id: str) -> None:
    """A study as JSON, with its participants.

    Example: rainforest studies show heat-pump-2027
    """

    async def go(store: Any) -> dict[str, Any] | None:
        study = await store.studies.get(study_id)
        if study is None:
            return None
        records = await store.devices.load_devices(sorted(await store.studies.device_ids(study_id)))
        people = [{**r.enrolment.public(), "cloud_id": r.cloud_id} for r in records if r.enrolment]
        return {**study.public(), "participants": people}

    found = _with_store(go)
    if found is None:
        raise click.ClickException(f"no study {study_id!r}; `rainforest studies list` shows them.")
    click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


@click.group()
def participants() -> None:
    """Households in a study: enrol one for a consent window, list them, complete or end one.

    Example: rainforest participants enrol heat-pump-2027 00ab12 --from 2027-01-15 --until 2027-06-30
    """


@participants.command("enrol")
@click.argument("study_id")
@click.argument("cid", metavar="CLOUD_ID", type=CLOUD_ID)
@click.option(
    "--from", "start", required=True, help="The window's start: a date (in the household's zone) or time."
)
@click.option("--until", "end", help="The window's end (none: open-ended).")
@click.option("--participant-id", help="Its pseudonym in the study (default: made, p-xxxxxxxx).")
@click.option("--timezone", "tz", help="The household's IANA zone (default: the study's).")
def participants_enrol(
    study_id: str, cid: str, start: str, end: str | None, participant_id: str | None, tz: str | None
) -> None:
    """Enrol the device CLOUD_ID in STUDY_ID: polled, and its data served, only inside the window.

    Example: rainforest participants enrol heat-pump-2027 00ab12 --from 2027-01-15 --participant-id hp-001
    """
    from app.studies import Enrolment

    body: dict[str, Any] = {"enrolled_from": start, "enrolled_until": end}
    if participant_id:
        body["participant_id"] = participant_id
    if tz:
        body["timezone"] = tz

    async def go(store: Any) -> Enrolment:
        study = await store.studies.get(study_id)
        if study is None:
            raise ValidationError(f"no study {study_id!r}; `rainforest studies create` makes it.")
        enrolment = Enrolment.from_mapping(body, study, cid)
        await store.studies.enrol(cid, enrolment)
        return enrolment

    done = _with_store(go)
    until = done.public()["enrolled_until_local"] or "open-ended"
    click.echo(f"enrolled {cid} in {study_id} as {done.participant_id}, "
               f"from {done.public()['enrolled_from_local']} until {until} ({done.timezone})")  # fmt: skip


@participants.command("list")
@click.argument("study_id")
def participants_list(study_id: str) -> None:
    """The households of STUDY_ID: participant, device, window and state.

    Example: rainforest participants list heat-pump-2027
    """

    async def go(store: Any) -> list[Any]:
        return list(await store.devices.load_devices(sorted(await store.studies.device_ids(study_id))))

    records = _with_store(go)
    for r in records:
        e = r.enrolment.public()
        click.echo(f"{e['participant_id']:<20} {r.cloud_id}  {e['state']:<10} {e['enrolled_from_local']} → "
                   f"{e['enrolled_until_local'] or 'open'}  {e['timezone']}")  # fmt: skip
    click.echo(f"{len(records)} participants")


@participants.command("complete")
@click.argument("study_id")
@click.argument("cid", metavar="CLOUD_ID", type=CLOUD_ID)
def participants_complete(study_id: str, cid: str) -> None:
    """CLOUD_ID finished STUDY_ID: its window ends now (or when it was to end, if earlier).

    Example: rainforest participants complete heat-pump-2027 00ab12
    """

    async def go(store: Any) -> Any:
        done = (await _enrolled(store, cid, study_id)).completed(time.time())
        await store.studies.enrol(cid, done)
        return done

    done = _with_store(go)
    click.echo(f"{cid} completed {study_id}; its window ended {done.public()['enrolled_until_local']}")


@participants.command("end")
@click.argument("study_id")
@click.argument("cid", metavar="CLOUD_ID", type=CLOUD_ID)
def participants_end(study_id: str, cid: str) -> None:
    """End CLOUD_ID's enrolment in STUDY_ID (kept in its history), so it may join another study.

    Example: rainforest participants end heat-pump-2027 00ab12
    """

    async def go(store: Any) -> None:
        await store.studies.end(cid, await _enrolled(store, cid, study_id), time.time())

    _with_store(go)
    click.echo(f"{cid} left {study_id}")


async def _enrolled(store: Any, cloud_id: str, study_id: str) -> Any:
    """The device's enrolment in this study, or a one-sentence error."""
    record = await store.devices.get_device(cloud_id)
    if record is None or record.enrolment is None or record.enrolment.study != study_id:
        raise ValidationError(f"{cloud_id} is not enrolled in {study_id}.")
    return record.enrolment
