"""The exceptions Rainforest Logger raises, all under one root.

    RainforestError
    ├── ConfigError            a setting is missing or malformed (the process stops at start)
    ├── ValidationError        input from a person or a file is not acceptable
    ├── StoreError             Redis is unreachable or answered in a way we cannot use
    ├── CredentialError        a stored device secret does not decrypt with SECRET_KEY
    ├── WriteError             a reading could not be appended to its hourly file
    │   └── FileBusy           another process holds the file's lock (try again shortly)
    ├── ArchiveError           the archive (S3 or a folder) is down, refuses us, or lies
    ├── Interrupted            long work stopped part-way because the process is stopping
    └── DeviceError            a gateway (or the relay in front of it) did not give a reading
        ├── DeviceTimeout      no complete reply within the timeout
        ├── DeviceAuthError    the credentials were refused
        │   └── DeviceTLSError the gateway's certificate failed verification (or its pin)
        ├── DeviceUnavailable  unreachable, offline, or HTTP 5xx
        ├── DeviceBadReply     a reply we cannot parse (malformed, oversized, wrong shape)
        └── DeviceReplyError   the device answered with an <Error> of its own

Lower-level exceptions (aiohttp, redis, XML, OS) are translated at one boundary each,
with ``raise ... from exc``, so callers only ever catch these.
"""

from __future__ import annotations


class RainforestError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(RainforestError):
    """A setting is missing or malformed."""


class ValidationError(RainforestError):
    """Input from a person or a file is not acceptable; the message says how to fix it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StoreError(RainforestError):
    """Redis could not be reached or gave an unusable answer."""


class CredentialError(RainforestError):
    """A stored device secret does not decrypt with SECRET_KEY (the key changed): not a Redis
    problem, so never reported as one."""


class WriteError(RainforestError):
    """A reading could not be appended to its hourly file."""


class FileBusy(WriteError):
    """Another process holds the hourly file's lock right now (rotate shipping it, a pinger that
    has not yet let a device go); nothing was written, and a retry shortly after may succeed."""


class Interrupted(RainforestError):
    """Long work (a compaction) stopped part-way because the process is stopping; nothing
    half-done was published, and the work is done again later."""


class ArchiveError(RainforestError):
    """The archive could not be used; `kind` says why, for logs and metrics.

    Kinds: unreachable, timeout, credentials, no_bucket, integrity, error.
    """

    def __init__(self, message: str, *, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class DeviceError(RainforestError):
    """A gateway did not give a usable reading."""

    kind = "device_error"

    def __init__(self, message: str, *, cloud_id: str | None = None) -> None:
        super().__init__(message)
        self.cloud_id = cloud_id

    @property
    def reason(self) -> str:
        """`kind: message`, the form stored as a device's last_error."""
        return f"{self.kind}: {self}"


class DeviceTimeout(DeviceError):
    kind = "timeout"


class DeviceAuthError(DeviceError):
    kind = "auth"


class DeviceTLSError(DeviceAuthError):
    """A certificate problem does not fix itself: it waits as long as refused credentials."""

    kind = "tls"


class DeviceUnavailable(DeviceError):
    kind = "unavailable"


class DeviceBadReply(DeviceError):
    kind = "bad_reply"
    reply = ""  # the start of the reply that could not be read, secrets masked (set by the client)


class DeviceMeterOffline(DeviceError):
    """The gateway answers, but no meter is connected to it ("Not joined", "Rejoining")."""

    kind = "meter_offline"


class DeviceReplyError(DeviceError):
    kind = "device_error"
