from __future__ import annotations

from pathlib import Path

import pytest

from app.credentials import Vault, new_key
from app.errors import ConfigError, CredentialError
from app.settings import RAINFOREST_RELAY_URL, Settings


def test_defaults_follow_the_design(tmp_path: Path) -> None:
    s = Settings.from_env({}, dotenv_path=None)
    assert s.poll_interval_s == 6 and s.data_dir == Path("data")
    assert s.eagle_cloud_url == RAINFOREST_RELAY_URL
    assert s.archive_url.startswith("file://") and s.archive_url.endswith("/data/archive")
    assert s.poll_timeout_s == pytest.approx(4.8)


def test_environment_overrides_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("POLL_INTERVAL_S=10\nLOG_LEVEL=DEBUG\n")
    s = Settings.from_env({"POLL_INTERVAL_S": "3"}, dotenv_path=dotenv)
    assert s.poll_interval_s == 3.0 and s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("env", "named"),
    [({"POLL_INTERVAL_S": "fast"}, "POLL_INTERVAL_S"), ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
     ({"ARCHIVE_URL": "ftp://x"}, "ARCHIVE_URL"), ({"EAGLE_TLS_VERIFY": "maybe"}, "EAGLE_TLS_VERIFY"),
     ({"POLL_INTERVAL_S": "2", "POLL_TIMEOUT_S": "3"}, "POLL_TIMEOUT_S"),
     ({"SERVER_PORT": "0"}, "SERVER_PORT"), ({"PINGER_METRICS_PORT": "70000"}, "PINGER_METRICS_PORT"),
     ({"CARTD_METRICS_PORT": "x"}, "CARTD_METRICS_PORT"),
     ({"REDIS_CA_FILE": "/no/such/ca.pem"}, "REDIS_CA_FILE"),
     ({"REDIS_SENTINELS": "10.0.0.5"}, "REDIS_SENTINELS"),
     ({"REDIS_URL": "redis+cluster://10.0.0.5:7000", "REDIS_SENTINELS": "10.0.0.6:26379"}, "REDIS_SENTINELS"),
     ({"REDIS_CLUSTER": "1", "REDIS_URL": "redis://10.0.0.5:7000/2"}, "database 0"),
     ({"REDIS_CLUSTER": "perhaps"}, "REDIS_CLUSTER")],
)  # fmt: skip
def test_malformed_settings_stop_with_one_line_naming_them(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named) as info:
        Settings.from_env(env, dotenv_path=None)
    assert "\n" not in str(info.value)


def test_secret_key_is_masked_in_repr() -> None:
    key = new_key()
    s = Settings.from_env({"SECRET_KEY": key}, dotenv_path=None)
    assert key not in repr(s) and s.secret_key == key


def test_vault_round_trip_rotation_and_clear_errors() -> None:
    old, new = new_key(), new_key()
    token = Vault(old).encrypt("hunter2")
    assert "hunter2" not in token
    assert Vault(f"{new},{old}").decrypt(token) == "hunter2"
    with pytest.raises(CredentialError, match="SECRET_KEY"):
        Vault(new).decrypt(token)
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        Vault("")
    with pytest.raises(ConfigError, match="not a valid Fernet key"):
        Vault("plaintext123")


def test_a_redis_password_is_in_no_message_and_no_repr() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"REDIS_URL": "http://rf-app:s3cret-pw@redis.example.org:6380/0"}, dotenv_path=None)
    assert "s3cret-pw" not in str(info.value) and "rf-app:***@redis.example.org:6380" in str(info.value)
    fine = Settings.from_env(
        {"REDIS_URL": "rediss://rf-app:s3cret-pw@redis.example.org:6380/0"}, dotenv_path=None
    )
    assert "s3cret-pw" not in repr(fine)


def test_a_cluster_is_named_by_its_url_or_by_redis_cluster() -> None:
    def clustered(env: dict[str, str]) -> bool:
        return Settings.from_env(env, dotenv_path=None).clustered

    assert clustered({"REDIS_URL": "rediss+cluster://u:pw@10.0.0.5:7000/0"})
    assert clustered({"REDIS_URL": "redis://10.0.0.5:7000", "REDIS_CLUSTER": "1"})
    assert not clustered({"REDIS_URL": "redis://10.0.0.5:7000/0"})
