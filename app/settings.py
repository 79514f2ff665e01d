"""Settings: the only module that reads the environment (and the `.env` file).

Every process builds one `Settings` with `Settings.from_env()` at start and passes it down.
A missing or malformed value stops the process with one line naming the setting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from app.errors import ConfigError

RAINFOREST_RELAY_URL = "https://rainforestcloud.com:9445/cgi-bin/post_manager"
SECRET_FIELDS = frozenset(
    {"secret_key", "api_tokens", "aws_secret_access_key", "smtp_url", "alert_apprise_urls"}
)
_DERIVED = Path("\0derived")  # a path no one can give: "made from DATA_DIR" (see __post_init__)
GIB = 1024**3


@dataclass(frozen=True)
class Settings:
    """Typed, immutable configuration. Secrets are masked in `repr`."""

    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)  # may hold an ACL password
    redis_ca_file: str = ""  # PEM bundle of the CA that signed a rediss:// server's certificate
    redis_sentinels: str = ""  # host:port,... of Redis Sentinels: the primary is asked of them
    redis_sentinel_service: str = "mymaster"  # the name the sentinels monitor the primary by
    redis_cluster: bool = False  # REDIS_URL names a node of a Redis Cluster (or use redis+cluster://)
    data_dir: Path = Path("data")
    archive_url: str = ""
    s3_endpoint_url: str | None = None
    eagle_cloud_url: str = RAINFOREST_RELAY_URL
    eagle_tls_verify: bool = True
    poll_interval_s: float = 6.0
    poll_timeout_s: float = 0.0  # 0: derived as 80% of the interval, at most 5 s
    max_concurrency: int = 1000
    max_open_files: int = 16384
    resync_interval_s: float = 60.0
    pinger_lease_s: float = 0.0  # a pinger's device leases run this long unrenewed; 0: 2 intervals + 1 s
    summation_interval_s: float = 60.0  # energy totals captured this often per device
    price_interval_s: float = 900.0  # the tariff captured this often per device
    gateway_allow_networks: str = ""  # loopback/link-local networks gateways may be at (e.g. 127.0.0.0/8)
    local_request_gap_s: float = 1.0  # at least this long between two requests to one local gateway
    backfill_after_s: float = 120.0  # an EAGLE-100 silent this long is refilled from its history
    backfill_max_s: float = 86400.0  # how far back a refill reaches
    crawl_interval_s: float = 21_600.0  # 6 h: each pinger asks its gateways what they are; 0: never
    crawl_history: int = 50  # crawls kept per device
    completeness_days: float = 35.0  # device-hour completeness counts are kept this long in Redis
    auth_backoff_s: float = 600.0
    backoff_max_s: float = 300.0
    file_prefix: str = "iseif-rainforest"
    secret_key: str = field(default="", repr=False)
    api_tokens: str = field(default="", repr=False)  # comma-separated admin tokens (bootstrap)
    max_body_bytes: int = 64 * 1024
    heavy_requests_per_token: int = 4  # readings and cart downloads one token may run at once (429 beyond)
    heavy_threads: int = 4  # threads a server gives those requests' reads (the rest stay free)
    max_push_bytes: int = 64 * 1024  # largest body a gateway may push (413 beyond)
    push_stale_s: float = 60.0  # a push device with no upload for this long is push_silent
    frozen_after_s: float = 900.0  # a gateway answering with a reading that has not moved is frozen
    silent_after_s: float = 600.0  # a gateway failing to answer this long is unreachable
    meter_offline_after_s: float = 300.0  # a gateway without a connected meter this long: meter_offline
    auth_after_s: float = 120.0  # credentials refused this long: auth
    bad_reply_after_s: float = 300.0  # unreadable replies this long: bad_reply
    unpolled_after_s: float = 120.0  # an active device no live pinger held this long: unpolled
    alert_eval_s: float = 15.0  # how often a server evaluates alerts and sends what is queued; 0: never
    smtp_url: str = field(default="", repr=False)  # smtp://user:pass@host:587 (STARTTLS) or smtps://…
    alert_email_from: str = "rainforest-logger@localhost"
    alert_email_to: str = ""  # comma-separated addresses alerts and the digest are mailed to
    alert_apprise_urls: str = field(
        default="", repr=False
    )  # space-separated apprise URLs (json://, slack://, …)
    alert_digest_at: str = "08:00"  # the daily digest's local time (HH:MM); "off" for none
    alert_timezone: str = "UTC"  # the IANA zone of the digest's time and of the times in messages
    incident_share: float = 0.2  # this share of one path's devices in trouble together is one incident
    incident_min_devices: int = 10  # … when the path has at least this many devices
    incident_window_s: float = 300.0  # … and their trouble began within this many seconds
    alerts_keep_days: float = 90.0  # resolved alerts and incidents are kept this long
    rotate_grace_s: float = 300.0  # an hour is shipped once it ended this long ago
    rotate_concurrency: int = 8  # files compressed and uploaded at once
    rotate_readback: bool = False  # also HEAD each object after S3 confirmed it in its reply
    compact_archive: bool = True  # the rotate loop compacts each closed day to Parquet in the archive
    archive_timeout_s: float = 30.0  # one archive request's read timeout
    cart_ttl_s: float = 7 * 86400.0  # a cart is removed this long after its last download or creation
    cart_deadline_s: float = 3600.0  # a cart still building after this fails with TIMEOUT
    carts_dir: Path = _DERIVED  # where carts are staged and bundled; default DATA_DIR/carts
    carts_max_bytes: int = 20 * GIB  # disk budget for all carts together; 0: only the reserve limits them
    carts_disk_reserve_bytes: int = 5 * GIB  # free space on the carts' disk no cart may take (and 10 %)
    cart_max_device_days: int = 100_000  # the most device-days one cart request may span
    carts_building_per_token: int = 4  # carts one token may have waiting or building at once
    cart_jobs: int = 2  # carts one cartd process builds at once
    archive_retries: int = 4  # attempts per archive request in a cart build before ARCHIVE_UNAVAILABLE
    aws_access_key_id: str = ""  # empty: boto3's usual chain (environment, ~/.aws, instance role)
    aws_secret_access_key: str = field(default="", repr=False)
    aws_region: str = ""
    log_level: str = "INFO"
    log_max_bytes: int = 20 * 1024 * 1024  # a process log rolls to .1, .2, ... at this size
    log_backups: int = 5  # rolled files kept per process
    server_host: str = "127.0.0.1"  # where `rainforest server` listens, nginx in front; --host wins
    server_port: int = 8000  # --port wins
    metrics_host: str = "127.0.0.1"  # where pinger, rotate and cartd serve their metrics; 0.0.0.0 opens them
    pinger_metrics_port: int = 0  # Prometheus metrics of the pinger; 0: off; --metrics-port wins
    rotate_metrics_port: int = 0  # of the rotate loop
    cartd_metrics_port: int = 0  # of cartd (several cartd on one host need their own, by flag)

    def __post_init__(self) -> None:
        if not self.archive_url:
            object.__setattr__(self, "archive_url", f"file://{self.data_dir.resolve()}/archive")
        if self.carts_dir == _DERIVED:
            object.__setattr__(self, "carts_dir", self.data_dir / "carts")
        if self.poll_timeout_s <= 0:
            object.__setattr__(self, "poll_timeout_s", min(5.0, self.poll_interval_s * 0.8))
        self._validate()

    def _validate(self) -> None:
        if urlsplit(self.redis_url).scheme not in (
            "redis",
            "rediss",
            "unix",
            "redis+cluster",
            "rediss+cluster",
        ):
            raise ConfigError(
                "REDIS_URL must start with redis://, rediss://, unix:// or (a cluster) redis+cluster://, "
                f"got {self.redis_where!r}."
            )
        if self.clustered and self.redis_sentinels:
            raise ConfigError(
                "REDIS_SENTINELS and a Redis Cluster exclude each other: a cluster fails over by itself."
            )
        if self.clustered and urlsplit(self.redis_url).path.strip("/") not in ("", "0"):
            raise ConfigError(f"a Redis Cluster has database 0 only, got {self.redis_where!r}.")
        for address in filter(None, (a.strip() for a in self.redis_sentinels.split(","))):
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"REDIS_SENTINELS is host:port,host:port..., got {address!r}.")
        if self.redis_ca_file and not Path(self.redis_ca_file).is_file():
            raise ConfigError(f"REDIS_CA_FILE names no file: {self.redis_ca_file!r}.")
        if urlsplit(self.eagle_cloud_url).scheme not in ("http", "https"):
            raise ConfigError(f"EAGLE_CLOUD_URL must be an http(s) URL, got {self.eagle_cloud_url!r}.")
        if urlsplit(self.archive_url).scheme not in ("file", "s3"):
            raise ConfigError(f"ARCHIVE_URL must start with file:// or s3://, got {self.archive_url!r}.")
        if self.poll_interval_s <= 0:
            raise ConfigError("POLL_INTERVAL_S must be a positive number of seconds.")
        if self.poll_timeout_s >= self.poll_interval_s:
            raise ConfigError("POLL_TIMEOUT_S must be shorter than POLL_INTERVAL_S, so polls cannot pile up.")
        if self.lease_s <= self.poll_interval_s:
            raise ConfigError(
                "PINGER_LEASE_S must be longer than POLL_INTERVAL_S (leases are renewed once a cycle)."
            )
        if self.crawl_interval_s < 0 or self.crawl_history < 1:
            raise ConfigError("CRAWL_INTERVAL_S must be 0 (never) or more, CRAWL_HISTORY at least 1.")
        if self.completeness_days <= 0:
            raise ConfigError("COMPLETENESS_DAYS must be a positive number of days.")
        if self.max_push_bytes < 1024 or self.push_stale_s <= 0:
            raise ConfigError(
                "MAX_PUSH_BYTES must be at least 1024 and PUSH_STALE_S a positive number of seconds."
            )
        self._validate_alerts()
        thresholds = ("frozen_after_s", "silent_after_s", "meter_offline_after_s", "auth_after_s",
                      "bad_reply_after_s", "unpolled_after_s")  # fmt: skip
        for name in thresholds:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.upper()} must be a positive number of seconds.")
        if min(self.summation_interval_s, self.price_interval_s) <= 0:
            raise ConfigError(
                "SUMMATION_INTERVAL_S and PRICE_INTERVAL_S must be positive numbers of seconds."
            )
        if self.local_request_gap_s < 0 or self.backfill_after_s < 0 or self.backfill_max_s <= 0:
            raise ConfigError(
                "LOCAL_REQUEST_GAP_S and BACKFILL_AFTER_S must be 0 or more, BACKFILL_MAX_S positive."
            )
        if self.heavy_requests_per_token < 1 or self.heavy_threads < 1:
            raise ConfigError("HEAVY_REQUESTS_PER_TOKEN and HEAVY_THREADS must be at least 1.")
        if self.max_concurrency < 1 or self.max_open_files < 1:
            raise ConfigError("MAX_CONCURRENCY and MAX_OPEN_FILES must be at least 1.")
        if self.rotate_grace_s < 0 or self.rotate_concurrency < 1 or self.archive_timeout_s <= 0:
            raise ConfigError(
                "ROTATE_GRACE_S must be 0 or more, ROTATE_CONCURRENCY at least 1, ARCHIVE_TIMEOUT_S positive."
            )
        if (
            self.cart_ttl_s <= 0
            or self.cart_deadline_s <= 0
            or self.cart_jobs < 1
            or self.archive_retries < 1
        ):
            raise ConfigError(
                "CART_TTL_S and CART_DEADLINE_S must be positive; CART_JOBS and ARCHIVE_RETRIES at least 1."
            )
        if (
            min(self.carts_max_bytes, self.carts_disk_reserve_bytes) < 0
            or self.cart_max_device_days < 1
            or self.carts_building_per_token < 1
        ):
            raise ConfigError(
                "CARTS_MAX_BYTES and CARTS_DISK_RESERVE_BYTES must be 0 or more; CART_MAX_DEVICE_DAYS "
                "and CARTS_BUILDING_PER_TOKEN at least 1."
            )
        if not 1 <= self.server_port <= 65535:
            raise ConfigError(f"SERVER_PORT must be a port number from 1 to 65535, got {self.server_port}.")
        for name in ("pinger", "rotate", "cartd"):
            port = getattr(self, f"{name}_metrics_port")
            if not 0 <= port <= 65535:
                label = f"{name.upper()}_METRICS_PORT"
                raise ConfigError(f"{label} must be a port number from 1 to 65535, or 0 for off; got {port}.")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}.")

    def _validate_alerts(self) -> None:
        if self.alert_eval_s < 0 or self.alerts_keep_days <= 0 or self.incident_window_s <= 0:
            raise ConfigError(
                "ALERT_EVAL_S must be 0 or more; ALERTS_KEEP_DAYS and INCIDENT_WINDOW_S positive."
            )
        if not 0 < self.incident_share <= 1 or self.incident_min_devices < 1:
            raise ConfigError(
                "INCIDENT_SHARE must be above 0 and at most 1; INCIDENT_MIN_DEVICES at least 1."
            )
        at = self.alert_digest_at
        if at not in ("", "off") and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", at):
            raise ConfigError(f"ALERT_DIGEST_AT must be a time such as 08:00, or off; got {at!r}.")
        try:
            ZoneInfo(self.alert_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"ALERT_TIMEZONE must be an IANA zone such as Europe/Paris, got {self.alert_timezone!r}."
            ) from None
        if self.smtp_url and urlsplit(self.smtp_url).scheme not in ("smtp", "smtps"):
            raise ConfigError("SMTP_URL must start with smtp:// (STARTTLS when offered) or smtps:// (TLS).")
        if self.smtp_url and not self.alert_email_to:
            raise ConfigError("SMTP_URL is set but ALERT_EMAIL_TO names no one to mail.")

    @property
    def lease_s(self) -> float:
        """How long a pinger's device leases run unrenewed (PINGER_LEASE_S; 0: 2 intervals + 1 s)."""
        return self.pinger_lease_s if self.pinger_lease_s > 0 else 2 * self.poll_interval_s + 1.0

    @property
    def logs_dir(self) -> Path:
        """DATA_DIR/logs: hourly `.jl` files in YYYY-MM-DD-HH/ folders, process logs in <process>/."""
        return self.data_dir / "logs"

    @property
    def redis_where(self) -> str:
        """REDIS_URL without its password, for messages."""
        parts = urlsplit(self.redis_url)
        if parts.password is None:
            return self.redis_url
        user = f"{parts.username}:***@" if parts.username else ":***@"
        netloc = user + (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @property
    def clustered(self) -> bool:
        """REDIS_CLUSTER set, or a redis+cluster:// URL."""
        return self.redis_cluster or urlsplit(self.redis_url).scheme.endswith("+cluster")

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        found = []
        for address in filter(None, (a.strip() for a in self.redis_sentinels.split(","))):
            host, _, port = address.rpartition(":")
            found.append((host.strip("[]"), int(port)))
        return found

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests and subcommands' flags use this)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        if "data_dir" in changes and "archive_url" not in changes:
            values["archive_url"] = ""
        if "data_dir" in changes and "carts_dir" not in changes and self.carts_dir == self.data_dir / "carts":
            values["carts_dir"] = _DERIVED
        return Settings(**values)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
    ) -> Settings:
        """Build settings from `.env` overlaid by the process environment."""
        env: dict[str, str] = {}
        if dotenv_path is not None and Path(dotenv_path).is_file():
            env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
        env.update(os.environ if environ is None else environ)
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw.strip() == "":
                continue
            kwargs[f.name] = _convert(f.name, f.type, raw.strip())
        return cls(**kwargs)  # type: ignore[arg-type]


def _convert(name: str, type_name: object, raw: str) -> object:
    label = name.upper()
    kind = str(type_name)
    try:
        if kind == "bool":
            lowered = raw.lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes", "on")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
    except ValueError:
        raise ConfigError(f"{label} must be a {kind}, got {raw!r}.") from None
    return raw
