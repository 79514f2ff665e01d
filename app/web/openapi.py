"""The OpenAPI 3 description of every route, served at GET /api/openapi.json."""

from __future__ import annotations

from typing import Any

from app import __version__, health
from app.devices import CLOUD, LOCAL_PROTOCOLS, PROTOCOLS

CLOUD_ID = {"type": "string", "pattern": "^[0-9a-fA-F]{6}$", "example": "002738"}
NULLABLE_NUMBER = {"type": "number", "nullable": True}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Bad input (the message names the problem)", 401: "Missing or invalid token",
            403: "Token lacks the scope", 404: "Unknown device or route", 409: "A push device cannot be asked now", 413: "Body too large",
            415: "Body is not JSON", 500: "The device's stored password does not decrypt with SECRET_KEY", 502: "The device refused or answered badly",
            429: "Too many requests of this kind from this token at once",
            503: "Redis unreachable", 504: "The device did not answer in time"}  # fmt: skip
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


CART_ID = [
    {"name": "cart_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
]
PATH_ID = [{"name": "cloud_id", "in": "path", "required": True, "schema": CLOUD_ID}]
STUDY_ID = [{"name": "id", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,39}$"}}]  # fmt: skip

ENROLMENT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["study", "participant_id", "timezone", "enrolled_from", "enrolled_until", "state"],
    "properties": {
        "study": {"type": "string"},
        "participant_id": {"type": "string"},
        "timezone": {"type": "string"},
        "enrolled_from": {"type": "number"},
        "enrolled_until": NULLABLE_NUMBER,
        "state": {"type": "string", "enum": ["enrolled", "completed", "withdrawn"]},
        "enrolled_from_local": {"type": "string"},
        "enrolled_until_local": {"type": "string", "nullable": True},
        "cloud_id": {"type": "string"},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error", "message"], "additionalProperties": False,
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    },
    "UserInput": {
        "description": "A gateway reached through the Rainforest relay (user_email and user_pw) or on the household's network (address and install_code). See docs/devices.md.",
        "oneOf": [_ref("CloudDeviceInput"), _ref("LocalDeviceInput"), _ref("PushDeviceInput")],
    },
    "PushDeviceInput": {
        "type": "object", "required": ["protocol"], "additionalProperties": False,
        "properties": {
            "cloud_id": CLOUD_ID,
            "protocol": {"type": "string", "enum": ["push"]},
            "push_key": {"type": "string", "pattern": "^[A-Za-z0-9_\\-.~]{16,128}$", "writeOnly": True, "description": "the key the gateway's uploader sends; leave it out and one is made and returned once"},
            "user_email": {"type": "string", "format": "email"},
            "active": {"type": "boolean"},
        },
    },
    "Completeness": {
        "type": "object", "required": ["cloud_id", "hours"], "additionalProperties": False,
        "properties": {"cloud_id": CLOUD_ID, "hours": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["hour", "start", "scheduled", "ok", "percent", "readings", "longest_gap_s"],
            "properties": {
                "hour": {"type": "string", "description": "YYYY-MM-DD-HH (UTC), as the hourly files"},
                "start": {"type": "integer"}, "scheduled": {"type": "integer"}, "ok": {"type": "integer"},
                "percent": {"type": "number", "nullable": True, "description": "ok ÷ scheduled; null when nothing was scheduled (push devices)"},
                "readings": {"type": "integer"}, "longest_gap_s": {"type": "number"},
                "duplicates": {"type": "integer", "description": "readings a further archived part repeats (two pingers wrote this device-hour); carts drop them"},
            }}}},
    },
    "Series": {
        "type": "object", "required": ["cloud_id", "kind", "start", "end", "resolution", "count", "t"],
        "properties": {
            "cloud_id": CLOUD_ID, "kind": {"type": "string"}, "start": {"type": "number"}, "end": {"type": "number"},
            "resolution": {"type": "integer", "description": "0: every reading; else bucket seconds"},
            "count": {"type": "integer", "description": "readings in the range"},
            "t": {"type": "array", "items": {"type": "integer"}},
            "value": {"type": "array", "items": {"type": "number", "nullable": True}},
            "min": {"type": "array", "items": {"type": "number", "nullable": True}},
            "max": {"type": "array", "items": {"type": "number", "nullable": True}},
            "mean": {"type": "array", "items": {"type": "number", "nullable": True}},
        },
    },
    "PushReceipt": {
        "type": "object", "required": ["count", "written", "duplicates", "ignored"], "additionalProperties": False,
        "properties": {
            "count": {"type": "integer", "description": "readings written by this upload"},
            "written": {"type": "integer"}, "duplicates": {"type": "integer", "description": "readings already stored (a re-send)"},
            "ignored": {"type": "integer", "description": "readings set aside, e.g. at an implausible time"},
            "reasons": {"type": "array", "items": {"type": "string"}},
        },
    },
    "PushBatch": {
        "type": "object", "required": ["body"],
        "description": "EAGLE-200 JSON: reports of dataType InstantaneousDemand, CurrentSummation, Price, Message",
        "properties": {"timestamp": {"type": "string"}, "deviceGuid": {"type": "string"},
                       "body": {"type": "array", "items": {"type": "object"}}},
    },
    "CloudDeviceInput": {
        "type": "object", "required": ["user_email", "user_pw"], "additionalProperties": False,
        "properties": {
            "cloud_id": CLOUD_ID,
            "protocol": {"type": "string", "enum": [CLOUD]},
            "user_email": {"type": "string", "format": "email"},
            "user_pw": {"type": "string", "minLength": 1, "writeOnly": True, "description": "the rainforestcloud.com password"},
            "address": {"type": "string"},
            "tls_verify": {"type": "boolean", "description": "verify the relay's certificate (default: EAGLE_TLS_VERIFY)"},
            "active": {"type": "boolean"},
        },
    },
    "LocalDeviceInput": {
        "type": "object", "required": ["protocol", "address", "install_code"], "additionalProperties": False,
        "properties": {
            "cloud_id": CLOUD_ID,
            "protocol": {"type": "string", "enum": list(LOCAL_PROTOCOLS)},
            "address": {"type": "string", "description": "host, host:port, or http(s):// URL on the household's network", "example": "192.168.1.20"},
            "install_code": {"type": "string", "pattern": "^[0-9A-Fa-f]{16}$", "writeOnly": True, "description": "the 16 hex digits on the gateway's label"},
            "user_email": {"type": "string", "format": "email", "description": "optional contact for the household"},
            "tls_verify": {"type": "boolean", "description": "verify an https:// gateway's certificate against the CA store (default false: EAGLE-3s are self-signed)"},
            "tls_fingerprint": {"type": "string", "description": "SHA-256 of the gateway's certificate, 64 hex digits: pins a self-signed certificate"},
            "api": {"type": "string", "enum": ["post_manager", "cgi_manager"], "description": "eagle100-local only: the EAGLE-100's local API (default post_manager)"},
            "check": {"type": "boolean", "description": "ask the gateway once after saving it (the answer's check); an eagle100-local gateway without a REST API is found on cgi_manager"},
            "active": {"type": "boolean"},
        },
    },
    "User": {
        "type": "object", "additionalProperties": False,
        "required": ["cloud_id", "user_email", "protocol", "active", "status", "total_events_logged"],
        "properties": {
            "cloud_id": CLOUD_ID, "user_email": {"type": "string"}, "protocol": {"type": "string"},
            "address": {"type": "string"}, "active": {"type": "boolean"}, "created_at": {"type": "number"},
            "tls_verify": {"type": "boolean", "nullable": True}, "tls_fingerprint": {"type": "string", "nullable": True},
            "api": {"type": "string", "nullable": True, "enum": ["post_manager", "cgi_manager", None]},
            "push_key": {"type": "string", "description": "a push device's key, made now: shown only in this answer"},
            "last_backfill": {"type": "object", "nullable": True, "description": "the last gap refilled from the gateway's history: start, end, lines, received, through, at"},
            "status": {"type": "string", "enum": ["ok", "failing", "never"], "description": "how the last poll (or upload) went; `health` says what state the household is in"},
            "health": {"$ref": "#/components/schemas/DeviceHealth"},
            "study": {"type": "string", "description": "the study it belongs to (`default` when enrolled in none)"},
            "enrolment": {**ENROLMENT, "nullable": True},
            "total_events_logged": {"type": "integer"}, "first_timestamp": NULLABLE_NUMBER,
            "last_timestamp": NULLABLE_NUMBER, "consecutive_failures": {"type": "integer"},
            "last_error": {"type": "string"}, "last_success_at": NULLABLE_NUMBER,
            "clock_offset_s": {**NULLABLE_NUMBER, "description": "how far the gateway's clock is behind ours (negative: ahead), by its last reading"},
            "archived_hours": {"type": "integer"}, "last_archived_hour": {"type": "string", "nullable": True},
            "outcome": {"type": "string", "enum": ["created", "updated", "unchanged"]},
            "check": {"type": "object", "required": ["ok", "sentence"], "description": "asked for on create: what the gateway said (POST .../check)"},
            "owner": {"type": "object", "nullable": True, "additionalProperties": False,
                      "description": "the pinger holding this device's lease (null: none holds it, or a push device)",
                      "required": ["pinger", "lease", "lease_expires_in_s"],
                      "properties": {"pinger": {"type": "string", "description": "host:pid of the pinger"},
                                     "lease": {"type": "string", "enum": ["held", "lapsed"], "description": "lapsed: that pinger stopped renewing (dead or cut off from Redis); another takes the device soon"},
                                     "lease_expires_in_s": {"type": "number"}}},
        },
    },
    "Study": {
        "type": "object", "additionalProperties": False, "required": ["id", "name", "timezone", "contacts"],
        "properties": {"id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,39}$"}, "name": {"type": "string"},
                       "timezone": {"type": "string", "description": "IANA time zone, the households' default"},
                       "contacts": {"type": "array", "items": {"type": "string"}},
                       "routes": {"type": "array", "items": {"type": "string", "pattern": "^hook-[0-9a-f]{10}$"},
                                  "description": "the study's notification routes, by digest (their URLs are kept encrypted)"},
                       "created_at": {"type": "number"}, "outcome": {"type": "string", "enum": ["created", "updated"]},
                       "devices": {"type": "integer"}},
    },
    "StudyInput": {
        "type": "object", "additionalProperties": False, "required": ["name"],
        "properties": {"id": {"type": "string"}, "name": {"type": "string", "maxLength": 200},
                       "timezone": {"type": "string"}, "contacts": {"type": "array", "items": {"type": "string", "format": "email"}},
                       "routes": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 2000},
                                  "description": "apprise URLs (slack://, json://, ...) replacing the study's routes; left out, they are kept"}},
    },
    "Enrolment": ENROLMENT,
    "Tombstone": {
        "type": "object", "additionalProperties": False,
        "required": ["study", "participant_id", "state", "erase", "requested_at", "by", "erased", "left", "hosts"],
        "properties": {"study": {"type": "string"}, "participant_id": {"type": "string"},
                       "state": {"type": "string", "enum": ["withdrawn", "running", "done"]},
                       "erase": {"type": "boolean"}, "requested_at": {"type": "string"}, "by": {"type": "string"},
                       "finished_at": {"type": ["string", "null"]},
                       "erased": {"type": "object", "description": "place → what was removed there (counts, bytes, versions)"},
                       "left": {"type": "array", "items": {"type": "string"}},
                       "hosts": {"type": "object", "description": "host:DATA_DIR → its local files removed"}},
    },
    "EnrolmentInput": {
        "type": "object", "additionalProperties": False, "required": ["enrolled_from"],
        "properties": {
            "participant_id": {"type": "string", "description": "a pseudonym, unique in the study; made when absent"},
            "timezone": {"type": "string", "description": "the household's IANA zone (default the study's)"},
            "enrolled_from": {"description": "a date (its start in the household's zone), an ISO 8601 time or Unix seconds"},
            "enrolled_until": {"description": "the same, or null for open-ended"},
        },
    },
    "DeviceHealth": {
        "type": "object", "additionalProperties": False,
        "required": ["state", "since", "action", "condition", "condition_since", "detail"],
        "description": "the device's health state (docs/alerts.md): what is wrong, since when, and what to do",
        "properties": {
            "state": {"type": "string", "enum": list(health.STATES)},
            "since": {**NULLABLE_NUMBER, "description": "when the trouble (or for ok, the recovery) began, Unix seconds"},
            "action": {"type": "string", "description": "what to do about it, one sentence"},
            "condition": {"type": "string", "description": "what its latest polls show; a trouble shows here before it has lasted its threshold"},
            "condition_since": NULLABLE_NUMBER,
            "detail": {"type": "string", "description": "the last error, or an unreadable reply's start (secrets masked)"},
        },
    },
    "Alert": {
        "type": "object", "additionalProperties": False,
        "required": ["id", "cloud_id", "state", "cause", "since", "action"],
        "properties": {
            "id": {"type": "string"}, "cloud_id": CLOUD_ID, "study": {"type": "string"},
            "state": {"type": "string", "enum": ["open", "acknowledged", "resolved"]},
            "cause": {"type": "string", "enum": list(health.STATES)},
            "causes": {"type": "array", "items": {"type": "string"}, "description": "every cause the outage had, first to last"},
            "since": NULLABLE_NUMBER, "action": {"type": "string"}, "detail": {"type": "string"},
            "contact_email": {"type": "string"}, "opened_at": NULLABLE_NUMBER, "in_incident": {"type": "boolean"},
            "acknowledged": {"type": "object", "nullable": True, "properties": {
                "by": {"type": "string"}, "at": NULLABLE_NUMBER, "note": {"type": "string"}}},
            "resolved_at": NULLABLE_NUMBER, "outage_s": NULLABLE_NUMBER,
            "readings_missed": {"type": "integer", "nullable": True, "description": "estimated: polls in the outage"},
            "readings_refilled": {"type": "integer", "nullable": True},
        },
    },
    "Alerts": {
        "type": "object", "required": ["alerts", "open_incidents"], "additionalProperties": False,
        "properties": {
            "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
            "open_incidents": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"}, "path": {"type": "string"}, "cause": {"type": "string"},
                "since": {"type": "number"}, "devices": {"type": "integer"}}}},
        },
    },
    "Snooze": {
        "type": "object", "required": ["cloud_id", "snoozed_until"], "additionalProperties": False,
        "properties": {"cloud_id": CLOUD_ID, "snoozed_until": NULLABLE_NUMBER},
    },
    "UserList": {
        "type": "object", "required": ["users", "next"], "additionalProperties": False,
        "properties": {"users": {"type": "array", "items": _ref("User")},
                       "next": {"type": "string", "nullable": True}},
    },
    "Reading": {
        "type": "object", "required": ["cloud_id", "polled_at", "device_time", "demand_kw", "source"],
        "properties": {
            "cloud_id": CLOUD_ID, "polled_at": {"type": "number"}, "device_time": {"type": ["integer", "null"]},
            "demand_kw": {"type": "number"}, "DeviceMacId": {"type": "integer"}, "MeterMacId": {"type": "integer"},
            "TimeStamp": {"type": "integer"}, "Demand": {"type": "integer"}, "Multiplier": {"type": "integer"},
            "Divisor": {"type": "integer"}, "DigitsRight": {"type": "integer"}, "DigitsLeft": {"type": "integer"},
            "SuppressLeadingZero": {"type": "string"}, "source": {"type": "string", "enum": ["device", "latest"]},
            "kind": {"type": "string", "enum": ["demand"]}, "protocol": {"type": "string", "enum": list(PROTOCOLS)},
        },
    },
    "CartRequest": {
        "type": "object", "required": ["start", "end"], "additionalProperties": False,
        "properties": {
            "devices": {"oneOf": [{"type": "array", "minItems": 1, "items": CLOUD_ID},
                                  {"type": "string", "enum": ["all"]}]},
            "start": {"oneOf": [{"type": "string", "example": "2026-11-01T00:00:00Z"}, {"type": "number"}]},
            "end": {"oneOf": [{"type": "string", "example": "2026-12-01T00:00:00Z"}, {"type": "number"}]},
            "format": {"type": "string", "enum": ["jl", "csv", "parquet"], "description": "jl: the hourly files as written; csv: a file of demand readings per device; parquet: typed columns per device and kind"},
            "study": {"type": "string", "description": "a whole study's households (instead of devices); a plain date in start or end is then that day's local midnight in the study's zone"},
            "pseudonymize": {"type": "boolean", "description": "name households by participant_id, with no cloud_id, e-mail or MAC address anywhere, and add participants.csv (always so for a study's token)"},
        },
    },
    "Cart": {
        "type": "object", "required": ["id", "status", "message", "progress", "status_url"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": ["waiting", "staging", "bundling", "ready", "error", "erased"]},
            "reason": {"type": "string", "nullable": True,
                       "enum": ["NO_SPACE", "ARCHIVE_UNAVAILABLE", "HASH_MISMATCH", "CANCELLED", "TIMEOUT",
                                "EMPTY", "FAILED", None]},
            "message": {"type": "string"},
            "progress": {"type": "object", "properties": {
                "files_done": {"type": "integer"}, "files_total": {"type": "integer"},
                "bytes_done": {"type": "integer"}, "bytes_total": {"type": "integer"}}},
            "size": {"type": "integer", "nullable": True}, "request": {"type": "object"},
            "owner": {"type": "string"}, "created_at": {"type": "string"}, "last_access": {"type": "string"},
            "status_url": {"type": "string"},
        },
    },
    "CartFailed": {
        "type": "object", "required": ["error", "reason", "message"],
        "properties": {"error": {"type": "string"}, "reason": {"type": "string"}, "message": {"type": "string"}},
    },
    "CartDeleted": {
        "type": "object", "required": ["id", "deleted", "was"],
        "properties": {"id": {"type": "string"}, "deleted": {"type": "boolean"}, "was": {"type": "string"}},
    },
    "Health": {
        "type": "object", "required": ["ok", "redis"],
        "properties": {"ok": {"type": "boolean"}, "redis": {"type": "string"}},
    },
}  # fmt: skip


def document() -> dict[str, Any]:
    users_list_params = [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
        {
            "name": "after",
            "in": "query",
            "description": "cursor: the `next` of the previous page",
            "schema": CLOUD_ID,
        },
        {"name": "active", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]}},
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["ok", "failing", "never"]}},
        {"name": "health", "in": "query", "schema": {"type": "string", "enum": list(health.STATES)}},
    ]
    return {
        "openapi": "3.0.3",
        "info": {"title": "Rainforest Logger", "version": __version__,
                 "description": "Manage a fleet of EAGLE gateways and read their energy data."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "pushBasic": {"type": "http", "scheme": "basic", "description": "cloud_id : push key"},
                                "pushKey": {"type": "apiKey", "in": "query", "name": "key"}},
            "schemas": SCHEMAS,
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {
                "summary": "Liveness, with Redis reachability", "security": [],
                "responses": {"200": _json(_ref("Health"), "Healthy"), "503": _json(_ref("Health"), "Redis unreachable")},
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Prometheus text format",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              **_errors(400, 401, 503)},
            }},
            "/api/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document"), **_errors(401, 503)},
            }},
            "/api/event/{cloud_id}": {"get": {
                "summary": "A reading from the device now, or the last logged one with ?source=latest",
                "parameters": [*PATH_ID, {"name": "source", "in": "query",
                                          "schema": {"type": "string", "enum": ["device", "latest"]}}],
                "responses": {"200": _json(_ref("Reading"), "A reading"), **_errors(400, 401, 404, 409, 500, 502, 503, 504)},
            }},
            "/api/users/{cloud_id}/completeness": {"get": {
                "summary": "The device's data hour by hour (default the last 24 h): polls scheduled and ok, distinct readings, longest gap",
                "parameters": [*PATH_ID,
                               {"name": "start", "in": "query", "schema": {"type": "number", "minimum": 946684800, "maximum": 4102444800}},
                               {"name": "end", "in": "query", "schema": {"type": "number", "minimum": 946684800, "maximum": 4102444800}}],
                "responses": {"200": _json(_ref("Completeness"), "Every hour in the range"), **_errors(400, 401, 404, 503)},
            }},
            "/api/users/{cloud_id}/readings": {"get": {
                "summary": "The device's readings over a range (default the last 24 h, at most 31 days), from the hourly files and the archive; a gap is a null",
                "parameters": [*PATH_ID,
                               {"name": "start", "in": "query", "schema": {"type": "number", "minimum": 946684800, "maximum": 4102444800}},
                               {"name": "end", "in": "query", "schema": {"type": "number", "minimum": 946684800, "maximum": 4102444800}},
                               {"name": "kind", "in": "query", "schema": {"type": "string", "enum": ["demand", "summation", "price"]}},
                               {"name": "resolution", "in": "query", "description": "auto, 0 (every reading) or 10 to 86400 s buckets", "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("Series"), "t with value (every reading) or min, max, mean per bucket"), **_errors(400, 401, 404, 429),
                              "500": _json(_ref("Error"), "archive_damaged: an archived hourly object is not readable gzip (its key named)"),
                              "503": _json(_ref("Error"), "Redis unreachable, or archive_unavailable: the archive cannot be reached now")},
            }},
            "/api/alerts": {"get": {
                "summary": "Alerts, newest first (one per outage of a household: opened when its health state has lasted its threshold, resolved when it is ok again), and the open fleet-wide incidents",
                "parameters": [{"name": "state", "in": "query", "schema": {"type": "string", "enum": ["open", "acknowledged", "resolved"]}},
                               {"name": "cause", "in": "query", "schema": {"type": "string", "enum": list(health.STATES)}},
                               {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                "responses": {"200": _json(_ref("Alerts"), "The alerts that match"), **_errors(400, 401, 503)},
            }},
            "/api/alerts/{id}/ack": {"post": {
                "summary": "Acknowledge an alert: who (the token's name), when, and a note (admin)",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 80}}],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"note": {"type": "string", "maxLength": 500}}}}}},
                "responses": {"200": _json(_ref("Alert"), "The alert, acknowledged"), **_errors(400, 401, 403, 404, 415, 503)},
            }},
            "/api/users/{cloud_id}/snooze": {
                "post": {
                    "summary": "Open no alert for this household until a date (a household away), admin",
                    "parameters": PATH_ID,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["until"], "additionalProperties": False,
                        "properties": {"until": {"description": "a date (the end of that UTC day), an ISO 8601 time or Unix seconds, in the future"}}}}}},
                    "responses": {"200": _json(_ref("Snooze"), "Snoozed"), **_errors(400, 401, 403, 404, 415, 503)},
                },
                "delete": {
                    "summary": "End a household's snooze (admin)",
                    "parameters": PATH_ID,
                    "responses": {"200": _json(_ref("Snooze"), "Not snoozed"), **_errors(400, 401, 403, 404, 503)},
                },
            },
            "/api/studies/": {"get": {
                "summary": "Studies this token may see (a study's token: its own)",
                "responses": {"200": _json({"type": "object", "required": ["studies"], "properties": {"studies": {"type": "array", "items": _ref("Study")}}}, "The studies"), **_errors(401, 503)},
            }},
            "/api/studies/{id}": {
                "get": {"summary": "One study, with how many households it has",
                        "parameters": STUDY_ID,
                        "responses": {"200": _json(_ref("Study"), "The study"), **_errors(400, 401, 404, 503)}},
                "post": {"summary": "Create or update a study (an operator: a deployment-wide admin token)",
                         "parameters": STUDY_ID,
                         "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("StudyInput")}}},
                         "responses": {"201": _json(_ref("Study"), "Created"), "200": _json(_ref("Study"), "Updated"), **_errors(400, 401, 403, 404, 415, 503)}},
            },
            "/api/studies/{id}/participants": {"get": {
                "summary": "The study's households: participant, zone, window, state (and cloud_id)",
                "parameters": STUDY_ID,
                "responses": {"200": _json({"type": "object", "required": ["participants"], "properties": {"participants": {"type": "array", "items": _ref("Enrolment")}}}, "Its participants"), **_errors(400, 401, 404, 503)},
            }},
            "/api/studies/{id}/participants/{cloud_id}": {
                "post": {"summary": "Enrol a household (or change its enrolment): a pseudonymous participant_id (made when absent), its zone, its consent window",
                         "parameters": [*STUDY_ID, *PATH_ID],
                         "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("EnrolmentInput")}}},
                         "responses": {"201": _json(_ref("Enrolment"), "Enrolled"), **_errors(400, 401, 403, 404, 415, 503)}},
                "delete": {"summary": "End a household's enrolment (its data stays; it may join another study)",
                           "parameters": [*STUDY_ID, *PATH_ID],
                           "responses": {"200": _json({"type": "object"}, "Ended"), **_errors(400, 401, 403, 404, 503)}},
            },
            "/api/studies/{id}/participants/{cloud_id}/complete": {"post": {
                "summary": "The household completed the study: its window ends now (or earlier, when it was to)",
                "parameters": [*STUDY_ID, *PATH_ID],
                "responses": {"200": _json(_ref("Enrolment"), "Completed"), **_errors(400, 401, 403, 404, 503)},
            }},
            "/api/studies/{id}/participants/{cloud_id}/withdraw": {"post": {
                "summary": "The household withdraws: not polled, pushes refused, at once; with erase, its readings are erased everywhere by the rotate process",
                "parameters": [*STUDY_ID, *PATH_ID],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False, "properties": {"erase": {"type": "boolean"}}}}}},
                "responses": {"200": _json(_ref("Tombstone"), "Withdrawn (readings kept), or erased already"),
                              "202": _json(_ref("Tombstone"), "Withdrawn; the erasure runs"),
                              **_errors(400, 401, 403, 404, 503)},
            }},
            "/api/studies/{id}/erasures/{participant_id}": {"get": {
                "summary": "A withdrawn participant's tombstone: what was erased where, by whom, what is left to do",
                "parameters": [*STUDY_ID, {"name": "participant_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("Tombstone"), "The tombstone"), **_errors(401, 404, 503)},
            }},
            "/api/stats": {"get": {
                "summary": "The fleet counted: by status, protocol, model, firmware; completeness distributions; demand; devices added",
                "responses": {"200": _json({"type": "object"}, "The figures /stats draws"), **_errors(401, 503)},
            }},
            "/api/push/{cloud_id}": {"post": {
                "summary": "A gateway's upload: EAGLE-100 RFA XML, EAGLE-200 RFA XML or EAGLE-200 JSON (whatever the Content-Type says); 2xx means the readings are stored",
                "security": [{"pushBasic": []}, {"pushKey": []}],
                "parameters": [*PATH_ID, {"name": "key", "in": "query", "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("PushBatch")},
                    "text/xml": {"schema": {"type": "string"}}}},
                "responses": {"200": _json(_ref("PushReceipt"), "Taken (count 0 when nothing in it was usable)"),
                              **_errors(400, 401, 403, 413, 503)},
            }},
            "/api/users/": {"get": {
                "summary": "Devices, paginated by cursor, filterable by active, status and health",
                "parameters": users_list_params,
                "responses": {"200": _json(_ref("UserList"), "A page of devices"), **_errors(400, 401, 503)},
            }},
            "/api/users/{cloud_id}": {
                "parameters": PATH_ID,
                "get": {"summary": "One device (credentials never returned)",
                        "responses": {"200": _json(_ref("User"), "The device"), **_errors(400, 401, 404, 503)}},
                "post": {
                    "summary": "Create (201) or update (200) a device",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("UserInput")}}},
                    "responses": {"200": _json(_ref("User"), "Updated or unchanged"),
                                  "201": _json(_ref("User"), "Created"),
                                  **_errors(400, 401, 403, 404, 413, 415, 503)},
                },
                "delete": {"summary": "Stop polling the device; its data is kept",
                           "responses": {"200": _json(_ref("User"), "Deactivated"),
                                         **_errors(400, 401, 403, 404, 503)}},
            },
            "/api/users/{cloud_id}/check": {"post": {
                "summary": "Ask the gateway once with its stored credentials: reachable, credentials accepted, model, firmware, API, meter, link, a reading, in one sentence",
                "parameters": PATH_ID,
                "responses": {"200": _json({"type": "object", "required": ["ok", "sentence"],
                                            "properties": {"ok": {"type": "boolean"}, "sentence": {"type": "string"}}},
                                           "What the gateway said (ok false: what went wrong)"),
                              **_errors(400, 401, 403, 404, 503)},
            }},
            "/api/carts/": {"post": {
                "summary": "Ask for a bundle with a server-chosen id (201; poll the status_url)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("CartRequest")}}},
                "responses": {"201": _json(_ref("Cart"), "Queued"), **_errors(400, 401, 413, 415, 429, 503)},
            }},
            "/api/carts/{cart_id}": {
                "parameters": CART_ID,
                "post": {
                    "summary": "Ask for a bundle under a client-chosen UUID (201; 200 for a retried identical request)",
                    "requestBody": {"required": True,
                                    "content": {"application/json": {"schema": _ref("CartRequest")}}},
                    "responses": {"201": _json(_ref("Cart"), "Queued"), "200": _json(_ref("Cart"), "Already asked"),
                                  "409": _json(_ref("Error"), "The id is taken"),
                                  **_errors(400, 401, 409, 413, 415, 429, 503)},
                },
                "head": {
                    "summary": "Status in headers: X-Cart-Status, X-Cart-Message, X-Cart-Progress",
                    "responses": {"200": {"description": "The cart's status in headers"},
                                  "400": {"description": "Not a cart id"}, "401": {"description": "No valid token"},
                                  "403": {"description": "Another token's cart"},
                                  "404": {"description": "No such cart"}, "503": {"description": "Redis unreachable"}},
                },
                "get": {
                    "summary": "Download the tar when ready (Range, Content-Disposition); 202 with the status before",
                    "parameters": [{"name": "filename", "in": "query", "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "The tar", "content": {"application/x-tar": {
                            "schema": {"type": "string", "format": "binary"}}}},
                        "206": {"description": "The requested byte range", "content": {"application/x-tar": {
                            "schema": {"type": "string", "format": "binary"}}}},
                        "202": _json(_ref("Cart"), "Not ready yet"),
                        "409": _json(_ref("CartFailed"), "The cart failed (reason and message)"),
                        "410": _json(_ref("CartFailed"), "The cart held a household whose readings were erased"),
                        "416": _json(_ref("Error"), "The Range is outside the tar"),
                        **_errors(400, 401, 403, 404, 429, 503),
                    },
                },
                "delete": {"summary": "Cancel a cart being built, or remove a finished one",
                           "responses": {"200": _json(_ref("CartDeleted"), "Cancelled or removed"),
                                         **_errors(400, 401, 403, 404, 503)}},
            },
        },
    }  # fmt: skip
