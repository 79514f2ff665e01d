"""/api/studies: studies and their participants. An operator (a deployment-wide admin token)
creates studies; a study's admin token enrols, completes and lists its own households; a study's
token sees only its own study, and another study answers as an unknown one does."""

from __future__ import annotations

import time
from dataclasses import replace

from app.erasure.run import begin_withdrawal
from app.erasure.tombstone import RUNNING
from app.errors import ValidationError
from app.studies import Enrolment, Study, study_id
from app.web.base import ApiError, BaseHandler
from app.web.devices import cloud_id_from_path


def _sid(raw: str) -> str:
    try:
        return study_id(raw)
    except ValidationError as exc:
        raise ApiError(400, "invalid_study", str(exc)) from None


class _StudyBase(BaseHandler):
    async def study(self, sid: str) -> Study:
        found = await self.ctx.store.studies.get(sid)
        if found is None or self.token is None or not self.token.sees(sid):
            raise ApiError(404, "unknown_study", f"no study {sid!r}; an operator creates it first.")
        return found

    async def enrolled(self, cloud_id: str, sid: str) -> Enrolment:
        """The device's enrolment in this study; 404 as an unknown device when it has none here."""
        record = await self.device(cloud_id)
        if record is None or record.enrolment is None or record.enrolment.study != sid:
            raise ApiError(404, "unknown_device", f"no device {cloud_id} is registered.")
        return record.enrolment


class StudiesApiHandler(_StudyBase):
    route = "/api/studies/"

    async def get(self) -> None:
        self.query(set())
        studies = [
            s for s in await self.ctx.store.studies.all() if self.token is not None and self.token.sees(s.id)
        ]
        self.send_json({"studies": [s.public() for s in studies]})


class StudyApiHandler(_StudyBase):
    route = "/api/studies/{id}"

    async def get(self, raw: str) -> None:
        self.query(set())
        study = await self.study(_sid(raw))
        devices = await self.ctx.store.studies.device_ids(study.id)
        self.send_json({**study.public(), "devices": len(devices)})

    async def post(self, raw: str) -> None:
        sid = _sid(raw)
        self.query(set())
        if self.token is None or not self.token.deployment_wide:
            raise ApiError(403, "forbidden", "an operator (a deployment-wide admin token) creates studies.")
        study = Study.from_mapping(self.json_body(), sid)
        existing = await self.ctx.store.studies.get(sid)
        created_at = existing.created_at if existing is not None else time.time()
        new = await self.ctx.store.studies.save(replace(study, created_at=created_at), self.ctx.vault)
        self.send_json({**(await self.study(sid)).public(), "outcome": "created" if new else "updated"},
                       status=201 if new else 200)  # fmt: skip


class ParticipantsApiHandler(_StudyBase):
    route = "/api/studies/{id}/participants"

    async def get(self, raw: str) -> None:
        self.query(set())
        study = await self.study(_sid(raw))
        ids = sorted(await self.ctx.store.studies.device_ids(study.id))
        records = await self.ctx.store.devices.load_devices(ids)
        found = [{**r.enrolment.public(), "cloud_id": r.cloud_id} for r in records if r.enrolment is not None]
        self.send_json({"participants": found})


class ParticipantApiHandler(_StudyBase):
    route = "/api/studies/{id}/participants/{cloud_id}"

    async def post(self, raw: str, raw_cid: str) -> None:
        """Enrol a household (or change its enrolment in this study)."""
        study = await self.study(_sid(raw))
        cloud_id = cloud_id_from_path(raw_cid)
        self.query(set())
        record = await self.ctx.store.devices.get_device(cloud_id)
        if record is None or (record.enrolment is None and not self._operator()) or not self.sees(record):
            raise ApiError(404, "unknown_device", f"no device {cloud_id} is registered.")
        enrolment = Enrolment.from_mapping(self.json_body(), study, cloud_id, record.enrolment)
        await self.ctx.store.studies.enrol(cloud_id, enrolment)
        self.send_json({**enrolment.public(), "cloud_id": cloud_id}, status=201)

    async def delete(self, raw: str, raw_cid: str) -> None:
        """End a household's enrolment in this study (it keeps its data; it may join another)."""
        study = await self.study(_sid(raw))
        cloud_id = cloud_id_from_path(raw_cid)
        self.query(set())
        enrolment = await self.enrolled(cloud_id, study.id)
        await self.ctx.store.studies.end(cloud_id, enrolment, time.time())
        self.send_json({"cloud_id": cloud_id, "study": study.id, "ended": True})

    def _operator(self) -> bool:
        return self.token is not None and self.token.deployment_wide


class CompleteApiHandler(_StudyBase):
    route = "/api/studies/{id}/participants/{cloud_id}/complete"

    async def post(self, raw: str, raw_cid: str) -> None:
        """The household finished the study: its window ends now (or when it was to end)."""
        study = await self.study(_sid(raw))
        cloud_id = cloud_id_from_path(raw_cid)
        self.query(set())
        done = (await self.enrolled(cloud_id, study.id)).completed(time.time())
        await self.ctx.store.studies.enrol(cloud_id, done)
        self.send_json({**done.public(), "cloud_id": cloud_id})


class WithdrawApiHandler(_StudyBase):
    route = "/api/studies/{id}/participants/{cloud_id}/withdraw"

    async def post(self, raw: str, raw_cid: str) -> None:
        """The household withdraws: no longer polled, pushes refused, at once. With `"erase": true`
        its readings are erased everywhere by the rotate process (202; the tombstone says how far)."""
        study = await self.study(_sid(raw))
        cloud_id = cloud_id_from_path(raw_cid)
        self.query(set())
        body = self.json_body()
        if (
            not isinstance(body, dict)
            or set(body) - {"erase"}
            or not isinstance(body.get("erase", False), bool)
        ):
            raise ApiError(400, "invalid_body", 'the body is {"erase": true} or {"erase": false}.')
        enrolment = await self.enrolled(cloud_id, study.id)
        assert self.token is not None
        by, erase = f"token {self.token.name}", bool(body.get("erase"))
        tomb = await begin_withdrawal(
            self.ctx.settings, self.ctx.store, study.id, enrolment.participant_id, by, erase, time.time()
        )
        self.send_json(tomb.public(), status=202 if tomb.erase and tomb.state == RUNNING else 200)


class ErasureApiHandler(_StudyBase):
    route = "/api/studies/{id}/erasures/{participant_id}"

    async def get(self, raw: str, raw_pid: str) -> None:
        """The tombstone of a withdrawn participant: what was erased where, and what is left to do."""
        study = await self.study(_sid(raw))
        self.query(set())
        tomb = await self.ctx.store.erasures.get(study.id, raw_pid[:40])
        if tomb is None:
            raise ApiError(404, "unknown_participant", f"no withdrawal of {raw_pid[:40]!r} is recorded.")
        self.send_json(tomb.public())
