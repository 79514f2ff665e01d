"""Studies and enrolments in Redis: each study's record, its devices and participants, and the
enrolment kept on each device's record (so every reader of a record knows its study and window).

Enrolling is a script on the study's keys, then one on the device's (two hash slots on a
cluster): the participant id must be free in the study and the device in no other study (moving a
device is an end, then a new enrolment), and the change is published so pingers pick up the new
window at once.
"""

from __future__ import annotations

from typing import NoReturn, cast

import orjson
import redis.asyncio as aioredis

from app import keys
from app.credentials import Vault
from app.db.common import aw, hash_fields, publish, translated
from app.errors import ConfigError, ValidationError
from app.studies import Enrolment, Study

ENROLMENT_FIELDS = ("study", "participant_id", "tz", "enrolled_from", "enrolled_until", "enrol_state")

# Enrolling touches two hash slots on a cluster (the study's, the device's), so it is two scripts,
# the study's first: it reserves the participant id, and the device's then takes the enrolment
# (undone when the device has gone or joined another study meanwhile).
#
# The study's. KEYS: the study's participants, its devices, the participant id's tombstone. ARGV:
# cloud_id, participant_id, the device's old participant id in this study (or ''), a holder found
# stale (its record no longer says it holds the id; or ''). Returns 1, 'taken' or 'erased'.
_RESERVE = """
if redis.call('HGET', KEYS[3], 'erase') == '1' then return 'erased' end
local holder = redis.call('HGET', KEYS[1], ARGV[2])
if holder and holder ~= ARGV[1] and holder ~= ARGV[4] then return 'taken' end
if ARGV[3] ~= '' and ARGV[3] ~= ARGV[2] and redis.call('HGET', KEYS[1], ARGV[3]) == ARGV[1] then
  redis.call('HDEL', KEYS[1], ARGV[3])
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# The device's. KEYS: its hash. ARGV: study, then the enrolment's field/value pairs. Returns 1,
# 'unknown' (no such device) or 'elsewhere' (in another study).
_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
local current = redis.call('HGET', KEYS[1], 'study')
if current and current ~= '' and current ~= ARGV[1] then return 'elsewhere' end
redis.call('HSET', KEYS[1], unpack(ARGV, 2, #ARGV))
return 1
"""

# Undo a reservation the device did not take. KEYS: the study's participants, its devices. ARGV:
# cloud_id, participant_id.
_UNRESERVE = """
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[1], ARGV[2]) end
local left = false
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do if v == ARGV[1] then left = true end end
if not left then redis.call('SREM', KEYS[2], ARGV[1]) end
return 1
"""

_REFUSED = {
    "unknown": "no device {cid} is registered; register it first.",
    "elsewhere": "device {cid} is enrolled in another study; end that enrolment first.",
    "taken": "participant_id {pid} already names another household in this study.",
    "erased": "participant_id {pid} named a household whose readings were erased; a new enrolment "
    "takes a new participant_id.",
}


def _refuse(outcome: object, cloud_id: str, pid: str) -> NoReturn:
    word = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
    raise ValidationError(_REFUSED[word].format(cid=cloud_id, pid=pid))


class Studies:
    """Studies, and who is enrolled in each."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._reserve = redis.register_script(_RESERVE)
        self._take = redis.register_script(_TAKE)
        self._unreserve = redis.register_script(_UNRESERVE)

    async def save(self, study: Study, vault: Vault | None = None) -> bool:
        """Create or update a study (its creation time kept; its routes kept unless given, then
        stored encrypted with the vault); True when new."""
        if study.routes and vault is None:
            raise ConfigError("a study's routes are kept encrypted: SECRET_KEY must be set.")
        async with translated(f"save study {study.id}"), self.redis.pipeline(transaction=True) as pipe:
            fields = study.fields()
            created = fields.pop("created_at")
            pipe.hsetnx(keys.study(study.id), "created_at", created)
            if study.routes is None:
                fields.pop("route_ids")
            elif study.routes and vault is not None:
                fields["routes_secret"] = vault.encrypt(orjson.dumps(list(study.routes)).decode())
            else:
                pipe.hdel(keys.study(study.id), "routes_secret")
            pipe.hset(keys.study(study.id), mapping=hash_fields(fields))
            pipe.sadd(keys.studies(), study.id)
            new, *_ = await pipe.execute()
        return bool(new)

    async def routes(self, study_id: str, vault: Vault) -> list[str]:
        """A study's notification URLs, decrypted (for the process that sends, nothing else)."""
        async with translated(f"read the routes of study {study_id}"):
            sealed = cast(str | None, await aw(self.redis.hget(keys.study(study_id), "routes_secret")))
        return [str(u) for u in orjson.loads(vault.decrypt(sealed))] if sealed else []

    async def get(self, study_id: str) -> Study | None:
        async with translated(f"read study {study_id}"):
            h = cast(dict[str, str], await aw(self.redis.hgetall(keys.study(study_id))))
        return Study.from_hash(h) if h else None

    async def all(self) -> list[Study]:
        async with translated("list studies"):
            ids = sorted(cast(set[str], await aw(self.redis.smembers(keys.studies()))))
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid in ids:
                    pipe.hgetall(keys.study(sid))
                found = await pipe.execute()
        return [Study.from_hash(h) for h in found if h]

    async def participant(self, study_id: str, participant_id: str) -> str | None:
        """The cloud_id a participant id names in a study, or None."""
        async with translated(f"look up participant {participant_id} of {study_id}"):
            return cast(
                str | None, await aw(self.redis.hget(keys.study_participants(study_id), participant_id))
            )

    async def device_ids(self, study_id: str) -> set[str]:
        async with translated(f"list the devices of study {study_id}"):
            return cast(set[str], await aw(self.redis.smembers(keys.study_devices(study_id))))

    async def enrol(self, cloud_id: str, enrolment: Enrolment) -> None:
        """Enrol a device (or change its enrolment in the same study); ValidationError when it is
        unknown, in another study, or the participant id is another household's."""
        flat = [v for pair in enrolment.fields().items() for v in pair]
        study, pid = enrolment.study, enrolment.participant_id
        index = [keys.study_participants(study), keys.study_devices(study)]
        async with translated(f"enrol {cloud_id}"):
            device = await self._enrolment_of(cloud_id)
            if device is None or device[0] not in ("", study):
                _refuse("unknown" if device is None else "elsewhere", cloud_id, pid)
            old = device[1] if device and device[0] == study else ""
            holder = await aw(self.redis.hget(keys.study_participants(study), pid))
            stale = "" if holder in (None, cloud_id) else await self._stale(str(holder), study, pid)
            outcome = await self._reserve(
                keys=[*index, keys.erasure(study, pid)], args=[cloud_id, pid, old, stale]
            )
            if outcome == 1:
                outcome = await self._take(keys=[keys.device(cloud_id)], args=[study, *flat])
                if outcome != 1:
                    await self._unreserve(keys=index, args=[cloud_id, pid])
            if outcome == 1:
                await aw(publish(self.redis, keys.devices_changed(keys.group(cloud_id)), cloud_id))
        if outcome != 1:
            _refuse(outcome, cloud_id, pid)

    async def _enrolment_of(self, cloud_id: str) -> tuple[str, str] | None:
        """(study, participant_id) on a device's record ('' when not enrolled), None when unknown."""
        found = cast(
            list[str | None],
            await aw(self.redis.hmget(keys.device(cloud_id), ["cloud_id", "study", "participant_id"])),
        )
        return None if found[0] is None else (found[1] or "", found[2] or "")

    async def _stale(self, holder: str, study: str, pid: str) -> str:
        """`holder` when its record no longer holds `pid` in `study` (an enrolment cut short
        between its two steps), else ''."""
        return "" if await self._enrolment_of(holder) == (study, pid) else holder

    async def end(self, cloud_id: str, enrolment: Enrolment, at: float) -> None:
        """End a device's enrolment (it may then join another study); its past is kept."""
        past = {**enrolment.public(), "ended_at": at}
        async with translated(f"end the enrolment of {cloud_id}"):
            async with self.redis.pipeline(transaction=True) as pipe:  # the device's slot, then the study's
                pipe.lpush(keys.enrolments_past(cloud_id), orjson.dumps(past))
                pipe.hdel(keys.device(cloud_id), *ENROLMENT_FIELDS)
                publish(pipe, keys.devices_changed(keys.group(cloud_id)), cloud_id)
                await pipe.execute()
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.study_participants(enrolment.study), enrolment.participant_id)
                pipe.srem(keys.study_devices(enrolment.study), cloud_id)
                await pipe.execute()

    async def past(self, cloud_id: str) -> list[dict[str, object]]:
        async with translated(f"read the past enrolments of {cloud_id}"):
            found = cast(list[str], await aw(self.redis.lrange(keys.enrolments_past(cloud_id), 0, 99)))
        return [orjson.loads(x) for x in found]
