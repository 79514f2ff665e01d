"""Every Redis key and channel name, built in one place.

On one Redis server (or a Sentinel group) the names are plain (`rf:device:<cloud_id>`). On a
Redis Cluster (`configure(cluster=True)`, done by the store) every name carries a hash tag so that
each script and transaction touches one hash slot: a device's keys, and the fleet-wide indexes of
its *slot group* (`group(cloud_id)`, one of `SLOT_GROUPS`), share the tag `{d<group>}`; each
other domain (leases, tokens, alerts, studies, carts, compaction, processes) has a tag of its own.
Fleet-wide indexes are therefore one key per slot group (`devices_active(group)`), read across
`groups()`, and no script mixes one domain's keys with another's."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

PREFIX = "rf"
SLOT_GROUPS = 64  # slot groups on a cluster: fixed once data is written (names carry it)

_cluster = False


def configure(cluster: bool) -> None:
    """Name keys for a Redis Cluster (hash tags) or for one server (plain, as always)."""
    global _cluster
    _cluster = cluster


def clustered() -> bool:
    """True when names carry hash tags for a Redis Cluster."""
    return _cluster


def groups() -> range:
    """Every slot group: one on a single server, SLOT_GROUPS on a cluster."""
    return range(SLOT_GROUPS if _cluster else 1)


def group(cloud_id: str) -> int:
    """The slot group a device's keys and index entries live in."""
    return zlib.crc32(cloud_id.encode()) % SLOT_GROUPS if _cluster else 0


def grouped(cloud_ids: Iterable[str]) -> dict[int, list[str]]:
    """`cloud_ids` by slot group, in the order given within each."""
    found: dict[int, list[str]] = {}
    for cid in cloud_ids:
        found.setdefault(group(cid), []).append(cid)
    return found


def _dev(cloud_id: str) -> str:
    return _in_group(group(cloud_id))


def _in_group(g: int) -> str:
    """The prefix of a slot group's keys: `rf:{d<g>}:` on a cluster, `rf:` on one server."""
    return f"{PREFIX}:{{d{g}}}:" if _cluster else f"{PREFIX}:"


def _in(domain: str) -> str:
    """The prefix of one domain's keys: `rf:{<domain>}:` on a cluster, `rf:` on one server."""
    return f"{PREFIX}:{{{domain}}}:" if _cluster else f"{PREFIX}:"


def device(cloud_id: str) -> str:
    """Hash holding one device's record and counters."""
    return f"{_dev(cloud_id)}device:{cloud_id}"


def devices_all(g: int) -> str:
    """Set of every cloud_id ever registered (active or not) in slot group `g`."""
    return f"{_in_group(g)}devices"


def devices_active(g: int) -> str:
    """Set of cloud_ids the pingers should poll, in slot group `g`."""
    return f"{_in_group(g)}devices:active"


def devices_push(g: int) -> str:
    """Set of active push devices in slot group `g`: the server watches them for silence."""
    return f"{_in_group(g)}devices:push"


def devices_changed(g: int) -> str:
    """Channel of slot group `g`: a cloud_id is published whenever its record changes (sharded
    pub/sub on a cluster)."""
    return f"{_in_group(g)}devices:changed"


def token(digest: str) -> str:
    """Hash describing one API token, keyed by the SHA-256 of the token (never the token)."""
    return f"{_in('tokens')}token:{digest}"


def tokens() -> str:
    """Hash from token name to its digest: names are unique, for `tokens list|revoke`."""
    return f"{_in('tokens')}tokens"


def processes(kind: str) -> str:
    """Sorted set of live process ids of one kind (pinger, server, rotate, cartd) by last heartbeat."""
    return f"{_in('procs')}procs:{kind}"


def process(kind: str, process_id: str) -> str:
    """Hash describing one running process (host, pid, started_at, and what it reports)."""
    return f"{_in('procs')}proc:{kind}:{process_id}"


def rotate_last_pass() -> str:
    """Hash describing the last rotate pass (when, outcome, counts), for `rainforest status`."""
    return f"{PREFIX}:rotate:last_pass"


def cart(cart_id: str) -> str:
    """Hash holding one cart: owner, request, status, progress, times."""
    return f"{_in('carts')}cart:{cart_id}"


def carts() -> str:
    """Sorted set of cart ids scored by last access (creation or download): the LRU order."""
    return f"{_in('carts')}carts"


def carts_space() -> str:
    """Hash cart id → bytes: reserved while a cart builds, then what it holds on disk."""
    return f"{_in('carts')}carts:space"


def cart_queue() -> str:
    """The saq queue cart jobs go through."""
    return f"{PREFIX}:{{cartjobs}}" if _cluster else f"{PREFIX}:cartjobs"


def cart_job(name: str) -> str:
    """A saq job's key on the cart queue (`<cart_id>:<attempt>`, or a cron job's name): saq names
    a job's abort flag from the key alone, so on a cluster the key carries the queue's hash tag."""
    return f"{{cartjobs}}{name}" if _cluster else name


def completeness(cloud_id: str, hour: int) -> str:
    """Hash of one device-hour's counts (scheduled, ok, readings, longest_gap_s, duplicates); hour =
    `Hour.number`."""
    return f"{_dev(cloud_id)}comp:{cloud_id}:{hour}"


def completeness_hour(g: int, hour: int) -> str:
    """Set of slot group `g`'s cloud_ids that have counts for one hour (so reports never scan keys)."""
    return f"{_in_group(g)}comp:hour:{hour}"


def completeness_day(g: int, day: str) -> str:
    """Hash of one UTC day's counts for slot group `g`'s devices: fields `<cloud_id>:s|o|r`
    (scheduled, ok, readings), so the fleet page reads a day's completeness in one command a group."""
    return f"{_in_group(g)}comp:day:{day}"


def session(digest: str) -> str:
    """Hash of one page session (keyed by the SHA-256 of its cookie): the token's digest."""
    return f"{_in('tokens')}session:{digest}"


def crawls(cloud_id: str) -> str:
    """List of a device's crawls, newest first (JSON: at, fields, changed), kept to CRAWL_HISTORY."""
    return f"{_dev(cloud_id)}crawls:{cloud_id}"


def crawl_wanted() -> str:
    """Set of cloud_ids someone asked to crawl now (the pages' "crawl now"); pingers take them."""
    return f"{PREFIX}:crawl:wanted"


def failures(cloud_id: str) -> str:
    """List of a device's recent failures, newest first (JSON: at, reason), each change of kind."""
    return f"{_dev(cloud_id)}failures:{cloud_id}"


def fleet_demand(day: str) -> str:
    """Hash minute-of-day → the fleet's demand (kW, summed over the pingers' last readings) and
    `<minute>:n` → how many devices it covers."""
    return f"{PREFIX}:fleet:demand:{day}"


def pingers() -> str:
    """Sorted set of pinger ids scored by when their lease runs out (Redis time, Unix s)."""
    return f"{_in('leases')}pingers"


def pinger(pinger_id: str) -> str:
    """Hash describing one pinger's membership: joined_at (since its lease last lapsed), renewed_at."""
    return f"{_in('leases')}pinger:{pinger_id}"


def owners() -> str:
    """Hash cloud_id → the pinger holding its lease (valid while that pinger's lease runs)."""
    return f"{_in('leases')}owners"


def released() -> str:
    """Hash cloud_id → when its last owner released it (handover time is measured from here)."""
    return f"{_in('leases')}owners:released"


def ownership_changed() -> str:
    """Pub/sub channel: a pinger released devices or left, so the others renew at once."""
    return f"{_in('leases')}owners:changed"


def compaction_due() -> str:
    """Set of UTC days (YYYY-MM-DD) with hourly objects newer than their compacted Parquet."""
    return f"{_in('compact')}compact:due"


def applied_batch(g: int, token: str) -> str:
    """A counter batch of slot group `g` already applied (kept a day): a retried batch is applied
    at most once."""
    return f"{_in_group(g)}applied:{token}"


def compaction_noted() -> str:
    """Hash: UTC day → how many times rotate noted it for compaction (a late part while it is
    being compacted keeps it due)."""
    return f"{_in('compact')}compact:noted"


def compaction_claim(day: str) -> str:
    """The rotate host compacting a day right now (a lease: holder, expiry)."""
    return f"{_in('compact')}compact:claim:{day}"


def alert(alert_id: str) -> str:
    """Hash holding one alert: device, cause, since, action, state, acknowledgement, resolution."""
    return f"{_in('alerts')}alert:{alert_id}"


def alerts() -> str:
    """Sorted set of every alert id kept, by when it opened."""
    return f"{_in('alerts')}alerts"


def alerts_open() -> str:
    """Hash cloud_id → its open alert's id: one open alert per device (per outage)."""
    return f"{_in('alerts')}alerts:open"


def snoozed() -> str:
    """Hash cloud_id → until when (Unix seconds) it opens no alert (a household away)."""
    return f"{_in('alerts')}alerts:snoozed"


def incident(incident_id: str) -> str:
    """Hash holding one fleet-wide incident: its path, since, members, state."""
    return f"{_in('alerts')}incident:{incident_id}"


def incident_members(incident_id: str) -> str:
    """Set of the cloud_ids an incident stands for."""
    return f"{_in('alerts')}incident:{incident_id}:members"


def incidents() -> str:
    """Sorted set of every incident id kept, by when it opened."""
    return f"{_in('alerts')}incidents"


def incidents_open() -> str:
    """Hash path → its open incident's id."""
    return f"{_in('alerts')}incidents:open"


def message(message_id: str) -> str:
    """Hash holding one notification: subject, text, CSV attachment, and each route's delivery."""
    return f"{_in('alerts')}message:{message_id}"


def outbox(route: str) -> str:
    """Sorted set of message ids a route still has to deliver, by when to try next."""
    return f"{_in('alerts')}outbox:{route}"


def alerts_evaluator() -> str:
    """Lease: the process evaluating alerts this round (one at a time; the scripts are atomic too)."""
    return f"{_in('alerts')}alerts:evaluator"


def digest_sent(day: str) -> str:
    """Set once a day's digest is queued (by whichever process got there first)."""
    return f"{_in('alerts')}alerts:digest:{day}"


def study(study_id: str) -> str:
    """Hash holding one study: id, name, time zone, contacts."""
    return f"{_in('studies')}study:{study_id}"


def studies() -> str:
    """Set of every study id."""
    return f"{_in('studies')}studies"


def study_devices(study_id: str) -> str:
    """Set of the cloud_ids enrolled in a study (any state)."""
    return f"{_in('studies')}study:{study_id}:devices"


def study_participants(study_id: str) -> str:
    """Hash participant_id → cloud_id: a participant id is unique in its study."""
    return f"{_in('studies')}study:{study_id}:participants"


def enrolments_past(cloud_id: str) -> str:
    """List of a device's ended enrolments (JSON), newest first."""
    return f"{_dev(cloud_id)}device:{cloud_id}:enrolments"


def erasure(study_id: str, participant_id: str) -> str:
    """Hash: a withdrawn household's tombstone (pseudonymous: what was erased, where, by whom)."""
    return f"{_in('studies')}erasure:{study_id}:{participant_id}"


def erasures() -> str:
    """Sorted set of every tombstone (`<study>/<participant_id>`), by when the erasure was asked."""
    return f"{_in('studies')}erasures"


def erased() -> str:
    """Hash: keyed digest of an erased household's cloud_id → JSON {cutoff, tombstone}: what every
    host, rotate, compaction and carts check so that its readings before the cutoff never return."""
    return f"{_in('studies')}erased"
