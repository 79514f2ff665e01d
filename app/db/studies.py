"""Studies and enrolments in Redis: each study's record, its devices and participants, and the
enrolment kept on each device's record (so every reader of a record knows its study and window).

Enrolling is one script: the participant id must be free in the study and the device in no other
study (moving a device is an end, then a new enrolment), and the change is published so pingers
pick up the new window at once.
"""

from __future__ import annotations

from typing import cast

import orjson
import redis.asyncio as aioredis

from app import keys
from app.credentials import Vault
from app.db.common import aw, translated
from app.errors import ConfigError, ValidationError
from app.studies import Enrolment, Study

ENROLMENT_FIELDS = ("study", "participant_id", "tz", "enrolled_from", "enrolled_until", "enrol_state")

# KEYS: the device's hash, the study's participants, the study's devices, the change channel, the
# participant id's tombstone. ARGV: cloud_id, study, participant_id, then the enrolment's
# field/value pairs. Returns 1, or an error word: unknown (no such device), elsewhere (in another
# study), taken (the participant id names another device), erased (it named a household erased).
_ENROL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
if redis.call('HGET', KEYS[5], 'erase') == '1' then return 'erased' end
local current = redis.call('HGET', KEYS[1], 'study')
if current and current ~= '' and current ~= ARGV[2] then return 'elsewhere' end
local holder = redis.call('HGET', KEYS[2], ARGV[3])
if holder and holder ~= ARGV[1] then return 'taken' end
local old = redis.call('HGET', KEYS[1], 'participant_id')
if old and old ~= ARGV[3] and current == ARGV[2] then redis.call('HDEL', KEYS[2], old) end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4, #ARGV))
redis.call('PUBLISH', KEYS[4], ARGV[1])
return 1
"""

_REFUSED = {
    "unknown": "no device {cid} is registered; register it first.",
    "elsewhere": "device {cid} is enrolled in another study; end that enrolment first.",
    "taken": "participant_id {pid} already names another household in this study.",
    "erased": "participant_id {pid} named a household whose readings were erased; a new enrolment "
    "takes a new participant_id.",
}


class Studies:
    """Studies, and who is enrolled in each."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._enrol = redis.register_script(_ENROL)

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
            pipe.hset(keys.study(study.id), mapping=fields)
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
        async with translated(f"enrol {cloud_id}"):
            outcome = await self._enrol(
                keys=[
                    keys.device(cloud_id),
                    keys.study_participants(enrolment.study),
                    keys.study_devices(enrolment.study),
                    keys.devices_changed(),
                    keys.erasure(enrolment.study, enrolment.participant_id),
                ],
                args=[cloud_id, enrolment.study, enrolment.participant_id, *flat],
            )
        if outcome != 1:
            word = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
            raise ValidationError(_REFUSED[word].format(cid=cloud_id, pid=enrolment.participant_id))

    async def end(self, cloud_id: str, enrolment: Enrolment, at: float) -> None:
        """End a device's enrolment (it may then join another study); its past is kept."""
        past = {**enrolment.public(), "ended_at": at}
        async with (
            translated(f"end the enrolment of {cloud_id}"),
            self.redis.pipeline(transaction=True) as pipe,
        ):
            pipe.lpush(keys.enrolments_past(cloud_id), orjson.dumps(past))
            pipe.hdel(keys.device(cloud_id), *ENROLMENT_FIELDS)
            pipe.hdel(keys.study_participants(enrolment.study), enrolment.participant_id)
            pipe.srem(keys.study_devices(enrolment.study), cloud_id)
            pipe.publish(keys.devices_changed(), cloud_id)
            await pipe.execute()

    async def past(self, cloud_id: str) -> list[dict[str, object]]:
        async with translated(f"read the past enrolments of {cloud_id}"):
            found = cast(list[str], await aw(self.redis.lrange(keys.enrolments_past(cloud_id), 0, 99)))
        return [orjson.loads(x) for x in found]
