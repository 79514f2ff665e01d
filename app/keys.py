"""Every Redis key and channel name, built in one place."""

from __future__ import annotations

PREFIX = "rf"


def device(cloud_id: str) -> str:
    """Hash holding one device's record and counters."""
    return f"{PREFIX}:device:{cloud_id}"


def devices_all() -> str:
    """Set of every cloud_id ever registered (active or not)."""
    return f"{PREFIX}:devices"


def devices_active() -> str:
    """Set of cloud_ids the pingers should poll."""
    return f"{PREFIX}:devices:active"


def devices_push() -> str:
    """Set of active push devices: the server watches them for silence."""
    return f"{PREFIX}:devices:push"


def devices_changed() -> str:
    """Pub/sub channel: a cloud_id is published whenever its record changes."""
    return f"{PREFIX}:devices:changed"


def token(digest: str) -> str:
    """Hash describing one API token, keyed by the SHA-256 of the token (never the token)."""
    return f"{PREFIX}:token:{digest}"


def tokens() -> str:
    """Hash from token name to its digest: names are unique, for `tokens list|revoke`."""
    return f"{PREFIX}:tokens"


def processes(kind: str) -> str:
    """Sorted set of live process ids of one kind (pinger, server, rotate, cartd) by last heartbeat."""
    return f"{PREFIX}:procs:{kind}"


def process(kind: str, process_id: str) -> str:
    """Hash describing one running process (host, pid, started_at, and what it reports)."""
    return f"{PREFIX}:proc:{kind}:{process_id}"


def rotate_last_pass() -> str:
    """Hash describing the last rotate pass (when, outcome, counts), for `rainforest status`."""
    return f"{PREFIX}:rotate:last_pass"


def cart(cart_id: str) -> str:
    """Hash holding one cart: owner, request, status, progress, times."""
    return f"{PREFIX}:cart:{cart_id}"


def carts() -> str:
    """Sorted set of cart ids scored by last access (creation or download): the LRU order."""
    return f"{PREFIX}:carts"


def carts_space() -> str:
    """Hash cart id → bytes: reserved while a cart builds, then what it holds on disk."""
    return f"{PREFIX}:carts:space"


def cart_queue() -> str:
    """The arq queue cart jobs go through."""
    return f"{PREFIX}:cartjobs"


def completeness(cloud_id: str, hour: int) -> str:
    """Hash of one device-hour's counts (scheduled, ok, readings, longest_gap_s, duplicates); hour =
    `Hour.number`."""
    return f"{PREFIX}:comp:{cloud_id}:{hour}"


def completeness_hour(hour: int) -> str:
    """Set of the cloud_ids that have counts for one hour (so reports never scan keys)."""
    return f"{PREFIX}:comp:hour:{hour}"


def completeness_day(day: str) -> str:
    """Hash of one UTC day's counts for every device: fields `<cloud_id>:s|o|r` (scheduled, ok,
    readings), so the fleet page reads a day's completeness in one command."""
    return f"{PREFIX}:comp:day:{day}"


def session(digest: str) -> str:
    """Hash of one page session (keyed by the SHA-256 of its cookie): the token's digest."""
    return f"{PREFIX}:session:{digest}"


def crawls(cloud_id: str) -> str:
    """List of a device's crawls, newest first (JSON: at, fields, changed), kept to CRAWL_HISTORY."""
    return f"{PREFIX}:crawls:{cloud_id}"


def crawl_wanted() -> str:
    """Set of cloud_ids someone asked to crawl now (the pages' "crawl now"); pingers take them."""
    return f"{PREFIX}:crawl:wanted"


def failures(cloud_id: str) -> str:
    """List of a device's recent failures, newest first (JSON: at, reason), each change of kind."""
    return f"{PREFIX}:failures:{cloud_id}"


def fleet_demand(day: str) -> str:
    """Hash minute-of-day → the fleet's demand (kW, summed over the pingers' last readings) and
    `<minute>:n` → how many devices it covers."""
    return f"{PREFIX}:fleet:demand:{day}"


def pingers() -> str:
    """Sorted set of pinger ids scored by when their lease runs out (Redis time, Unix s)."""
    return f"{PREFIX}:pingers"


def pinger(pinger_id: str) -> str:
    """Hash describing one pinger's membership: joined_at (since its lease last lapsed), renewed_at."""
    return f"{PREFIX}:pinger:{pinger_id}"


def owners() -> str:
    """Hash cloud_id → the pinger holding its lease (valid while that pinger's lease runs)."""
    return f"{PREFIX}:owners"


def released() -> str:
    """Hash cloud_id → when its last owner released it (handover time is measured from here)."""
    return f"{PREFIX}:owners:released"


def ownership_changed() -> str:
    """Pub/sub channel: a pinger released devices or left, so the others renew at once."""
    return f"{PREFIX}:owners:changed"


def compaction_due() -> str:
    """Set of UTC days (YYYY-MM-DD) with hourly objects newer than their compacted Parquet."""
    return f"{PREFIX}:compact:due"


def applied_batch(token: str) -> str:
    """A counter batch already applied (kept a day): a retried batch is applied at most once."""
    return f"rf:applied:{token}"


def compaction_noted() -> str:
    """Hash: UTC day → how many times rotate noted it for compaction (a late part while it is
    being compacted keeps it due)."""
    return f"{PREFIX}:compact:noted"


def compaction_claim(day: str) -> str:
    """The rotate host compacting a day right now (a lease: holder, expiry)."""
    return f"{PREFIX}:compact:claim:{day}"


def alert(alert_id: str) -> str:
    """Hash holding one alert: device, cause, since, action, state, acknowledgement, resolution."""
    return f"{PREFIX}:alert:{alert_id}"


def alerts() -> str:
    """Sorted set of every alert id kept, by when it opened."""
    return f"{PREFIX}:alerts"


def alerts_open() -> str:
    """Hash cloud_id → its open alert's id: one open alert per device (per outage)."""
    return f"{PREFIX}:alerts:open"


def snoozed() -> str:
    """Hash cloud_id → until when (Unix seconds) it opens no alert (a household away)."""
    return f"{PREFIX}:alerts:snoozed"


def incident(incident_id: str) -> str:
    """Hash holding one fleet-wide incident: its path, since, members, state."""
    return f"{PREFIX}:incident:{incident_id}"


def incident_members(incident_id: str) -> str:
    """Set of the cloud_ids an incident stands for."""
    return f"{PREFIX}:incident:{incident_id}:members"


def incidents() -> str:
    """Sorted set of every incident id kept, by when it opened."""
    return f"{PREFIX}:incidents"


def incidents_open() -> str:
    """Hash path → its open incident's id."""
    return f"{PREFIX}:incidents:open"


def message(message_id: str) -> str:
    """Hash holding one notification: subject, text, CSV attachment, and each route's delivery."""
    return f"{PREFIX}:message:{message_id}"


def outbox(route: str) -> str:
    """Sorted set of message ids a route still has to deliver, by when to try next."""
    return f"{PREFIX}:outbox:{route}"


def alerts_evaluator() -> str:
    """Lease: the process evaluating alerts this round (one at a time; the scripts are atomic too)."""
    return f"{PREFIX}:alerts:evaluator"


def digest_sent(day: str) -> str:
    """Set once a day's digest is queued (by whichever process got there first)."""
    return f"{PREFIX}:alerts:digest:{day}"


def study(study_id: str) -> str:
    """Hash holding one study: id, name, time zone, contacts."""
    return f"{PREFIX}:study:{study_id}"


def studies() -> str:
    """Set of every study id."""
    return f"{PREFIX}:studies"


def study_devices(study_id: str) -> str:
    """Set of the cloud_ids enrolled in a study (any state)."""
    return f"{PREFIX}:study:{study_id}:devices"


def study_participants(study_id: str) -> str:
    """Hash participant_id → cloud_id: a participant id is unique in its study."""
    return f"{PREFIX}:study:{study_id}:participants"


def enrolments_past(cloud_id: str) -> str:
    """List of a device's ended enrolments (JSON), newest first."""
    return f"{PREFIX}:device:{cloud_id}:enrolments"


def erasure(study_id: str, participant_id: str) -> str:
    """Hash: a withdrawn household's tombstone (pseudonymous: what was erased, where, by whom)."""
    return f"{PREFIX}:erasure:{study_id}:{participant_id}"


def erasures() -> str:
    """Sorted set of every tombstone (`<study>/<participant_id>`), by when the erasure was asked."""
    return f"{PREFIX}:erasures"


def erased() -> str:
    """Hash: keyed digest of an erased household's cloud_id → JSON {cutoff, tombstone}: what every
    host, rotate, compaction and carts check so that its readings before the cutoff never return."""
    return f"{PREFIX}:erased"
