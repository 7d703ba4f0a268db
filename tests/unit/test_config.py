"""Settings: precedence of flags, environment, DATABASE_URL, pgcast.toml and defaults."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import pytest

from pgcast.config import Settings, find_config_file, load_settings, redact_url
from pgcast.exceptions import ConfigError

NO_ENV: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _no_pgcast_toml_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # load_settings looks for ./pgcast.toml; run every test in an empty directory.
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pgcast.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults and precedence ---


def test_defaults_without_any_source() -> None:
    settings = load_settings(env=NO_ENV)
    assert settings == Settings()
    assert settings.database_url is None
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.channels == ("query_results_*", "table_updates_*", "system_notifications")
    assert settings.retention == datetime.timedelta(days=7)
    assert settings.max_frame_bytes == 1_048_576
    assert settings.outbox_limit == 1000
    assert settings.max_subscriptions == 100
    assert settings.probe_interval == 5.0
    assert settings.poll_interval == 1.0
    assert settings.log_level == "info"


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_flag_beats_env_beats_toml_beats_default(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "[pgcast]\nport = 7001\nhost = '0.0.0.0'\nlog_level = 'debug'\n")
    env = {"PGCAST_PORT": "7002", "PGCAST_HOST": "10.0.0.1"}
    settings = load_settings({"port": 7003, "host": None}, env=env, config_file=toml)
    assert settings.port == 7003  # flag
    assert settings.host == "10.0.0.1"  # env; the None flag means "not given"
    assert settings.log_level == "debug"  # toml
    assert settings.outbox_limit == 1000  # default


def test_database_url_precedence(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "[pgcast]\ndatabase_url = 'postgresql://toml/db'\n")
    assert load_settings(env=NO_ENV, config_file=toml).database_url == "postgresql://toml/db"
    env = {"DATABASE_URL": "postgresql://plain/db"}
    assert load_settings(env=env, config_file=toml).database_url == "postgresql://plain/db"
    env["PGCAST_DATABASE_URL"] = "postgresql://pgcast/db"
    assert load_settings(env=env, config_file=toml).database_url == "postgresql://pgcast/db"
    flags = {"database_url": "postgres://flag/db"}
    assert load_settings(flags, env=env, config_file=toml).database_url == "postgres://flag/db"


def test_empty_environment_variable_counts_as_unset() -> None:
    settings = load_settings(env={"PGCAST_PORT": "", "DATABASE_URL": ""})
    assert settings.port == 8000
    assert settings.database_url is None


@pytest.mark.parametrize(
    ("var", "raw", "field", "expected"),
    [
        ("PGCAST_DATABASE_URL", "postgresql://u:p@db:5432/app", "database_url", None),
        ("PGCAST_HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("PGCAST_PORT", "9000", "port", 9000),
        ("PGCAST_CHANNELS", " a_* , b ,a_*,", "channels", ("a_*", "b")),
        ("PGCAST_RETENTION", "12h", "retention", datetime.timedelta(hours=12)),
        ("PGCAST_MAX_FRAME_BYTES", "65536", "max_frame_bytes", 65536),
        ("PGCAST_OUTBOX_LIMIT", "50", "outbox_limit", 50),
        ("PGCAST_MAX_SUBSCRIPTIONS", "7", "max_subscriptions", 7),
        ("PGCAST_PROBE_INTERVAL", "0.5", "probe_interval", 0.5),
        ("PGCAST_POLL_INTERVAL", "2", "poll_interval", 2.0),
        ("PGCAST_HEAD_TIMEOUT", "2.5", "head_timeout", 2.5),
        ("PGCAST_BODY_TIMEOUT", "60", "body_timeout", 60.0),
        ("PGCAST_MAX_PENDING_PER_IP", "25", "max_pending_per_ip", 25),
        ("PGCAST_FAST_POLL_INTERVAL", "0.005", "fast_poll_interval", 0.005),
        ("PGCAST_LOG_LEVEL", "WARNING", "log_level", "warning"),
    ],
)
def test_each_environment_variable(var: str, raw: str, field: str, expected: object) -> None:
    settings = load_settings(env={var: raw})
    assert getattr(settings, field) == (raw if expected is None else expected)


def test_database_url_environment_variable() -> None:
    settings = load_settings(env={"DATABASE_URL": "postgres://app@db/app"})
    assert settings.database_url == "postgres://app@db/app"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7d", datetime.timedelta(days=7)),
        ("30m", datetime.timedelta(minutes=30)),
        ("3600s", datetime.timedelta(hours=1)),
        ("1d12h", datetime.timedelta(days=1, hours=12)),
        (" 2H ", datetime.timedelta(hours=2)),
    ],
)
def test_retention_durations(raw: str, expected: datetime.timedelta) -> None:
    assert load_settings({"retention": raw}, env=NO_ENV).retention == expected


def test_flags_accept_typed_values() -> None:
    settings = load_settings(
        {
            "retention": datetime.timedelta(hours=1),
            "channels": ["x_*"],
            "probe_interval": 1,
            "port": "8080",
        },
        env=NO_ENV,
    )
    assert settings.retention == datetime.timedelta(hours=1)
    assert settings.channels == ("x_*",)
    assert settings.probe_interval == 1.0
    assert settings.port == 8080


# --- TOML file ---


def test_toml_file_sets_every_field(tmp_path: Path) -> None:
    toml = write_toml(
        tmp_path,
        """
[pgcast]
database_url = "postgresql://app:secret@db:5432/app"
host = "0.0.0.0"
port = 9001
channels = ["orders_*", "alerts"]
retention = "36h"
max_frame_bytes = 2048
outbox_limit = 10
max_subscriptions = 5
probe_interval = 2.5
poll_interval = 0.25
head_timeout = 3
body_timeout = 4.5
max_pending_per_ip = 9
log_level = "error"

[auth]  # other tables belong to other parts of pgcast
secret = "x"
""",
    )
    settings = load_settings(env=NO_ENV, config_file=toml)
    assert settings == Settings(
        database_url="postgresql://app:secret@db:5432/app",
        host="0.0.0.0",
        port=9001,
        channels=("orders_*", "alerts"),
        retention=datetime.timedelta(hours=36),
        max_frame_bytes=2048,
        outbox_limit=10,
        max_subscriptions=5,
        probe_interval=2.5,
        poll_interval=0.25,
        head_timeout=3.0,
        body_timeout=4.5,
        max_pending_per_ip=9,
        log_level="error",
    )


def test_toml_found_through_pgcast_config_env(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "[pgcast]\nport = 7777\n")
    assert load_settings(env={"PGCAST_CONFIG": str(toml)}).port == 7777


def test_toml_found_in_current_directory() -> None:
    Path("pgcast.toml").write_text("[pgcast]\nport = 7778\n", encoding="utf-8")
    assert load_settings(env=NO_ENV).port == 7778


def test_config_file_argument_beats_pgcast_config_env(tmp_path: Path) -> None:
    chosen = write_toml(tmp_path, "[pgcast]\nport = 1111\n")
    other = tmp_path / "other.toml"
    other.write_text("[pgcast]\nport = 2222\n", encoding="utf-8")
    assert find_config_file(chosen, env={"PGCAST_CONFIG": str(other)}) == chosen


def test_missing_named_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"PGCAST_CONFIG .*missing\.toml.* does not exist"):
        load_settings(env={"PGCAST_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env=NO_ENV, config_file=tmp_path / "missing.toml")


# --- hostile and invalid values ---


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PGCAST_PORT": "abc"}, "PGCAST_PORT='abc' is not a valid port (0-65535)"),
        ({"PGCAST_PORT": "-1"}, "PGCAST_PORT='-1' is not a valid port (0-65535)"),
        ({"PGCAST_PORT": "65536"}, "PGCAST_PORT='65536' is not a valid port"),
        ({"PGCAST_PORT": "65536"}, "PGCAST_PORT='65536' is not a valid port"),
        ({"PGCAST_PORT": "80.5"}, "PGCAST_PORT='80.5' is not a valid port"),
        ({"PGCAST_RETENTION": "forever"}, "PGCAST_RETENTION='forever' is not a valid retention"),
        ({"PGCAST_RETENTION": "0"}, "PGCAST_RETENTION='0' is not a valid retention: it must be"),
        ({"PGCAST_RETENTION": "0d"}, "PGCAST_RETENTION='0d' is not a valid retention: it must"),
        ({"PGCAST_RETENTION": "-1d"}, "PGCAST_RETENTION='-1d' is not a valid retention"),
        ({"PGCAST_RETENTION": "3600"}, "the number needs a unit"),
        ({"PGCAST_RETENTION": "99999999999d"}, "at most 36500 days"),
        ({"PGCAST_MAX_FRAME_BYTES": "10"}, "PGCAST_MAX_FRAME_BYTES='10' is not a valid frame"),
        ({"PGCAST_OUTBOX_LIMIT": "0"}, "PGCAST_OUTBOX_LIMIT='0' is not a valid outbox limit"),
        ({"PGCAST_MAX_SUBSCRIPTIONS": "-5"}, "PGCAST_MAX_SUBSCRIPTIONS='-5' is not a valid"),
        ({"PGCAST_PROBE_INTERVAL": "0"}, "PGCAST_PROBE_INTERVAL='0' is not a valid interval"),
        ({"PGCAST_POLL_INTERVAL": "nan"}, "PGCAST_POLL_INTERVAL='nan' is not a valid interval"),
        ({"PGCAST_POLL_INTERVAL": "inf"}, "PGCAST_POLL_INTERVAL='inf' is not a valid interval"),
        ({"PGCAST_LOG_LEVEL": "verbose"}, "PGCAST_LOG_LEVEL='verbose' is not a log level"),
        ({"PGCAST_HOST": "local host"}, "PGCAST_HOST='local host' is not a valid host"),
        ({"PGCAST_DATABASE_URL": "mysql://x/y"}, "PGCAST_DATABASE_URL='mysql://x/y' is not a"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL='not a url' is not a PostgreSQL URL"),
    ],
)
def test_invalid_environment_value_names_source_and_value(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    assert message in str(caught.value)


def test_log_level_typo_gets_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="did you mean 'warning'"):
        load_settings(env={"PGCAST_LOG_LEVEL": "warnig"})


@pytest.mark.parametrize(
    "channels",
    [
        "orders'; DROP TABLE x; --",
        "orders updates",
        "orders\ttab",
        "a-b",
        'quote"d',
        "semi;colon",
        "new\nline",
        "x" * 64,
    ],
)
def test_hostile_channel_pattern_is_rejected(channels: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"PGCAST_CHANNELS": f"ok_*,{channels}"})
    assert "PGCAST_CHANNELS=" in str(caught.value)


def test_channel_list_with_non_string_in_toml_is_rejected(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "[pgcast]\nchannels = ['a', 1]\n")
    with pytest.raises(ConfigError, match="invalid channel pattern 1"):
        load_settings(env=NO_ENV, config_file=toml)


def test_wrong_toml_types_are_rejected(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "[pgcast]\nport = true\n")
    with pytest.raises(ConfigError, match=r"pgcast\.toml: port=True is not a valid port"):
        load_settings(env=NO_ENV, config_file=toml)
    toml = write_toml(tmp_path, "[pgcast]\nretention = 3600\n")
    with pytest.raises(ConfigError, match=r"pgcast\.toml: retention=3600 is not a valid retention"):
        load_settings(env=NO_ENV, config_file=toml)


def test_invalid_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--max-frame-bytes=-3 is not a valid frame size"):
        load_settings({"max_frame_bytes": -3}, env=NO_ENV)


def test_unknown_flag_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'prot' in flags.*did you mean 'port'"):
        load_settings({"prot": 1}, env=NO_ENV)


def test_unknown_toml_key_suggests_the_closest_setting(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "[pgcast]\nretension = '7d'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env=NO_ENV, config_file=toml)
    assert "unknown setting 'retension'" in str(caught.value)
    assert str(toml) in str(caught.value)
    assert caught.value.hint == "did you mean 'retention'?"


def test_setting_outside_the_pgcast_table_is_an_error(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "port = 9000\n")
    with pytest.raises(ConfigError, match=r"top-level key 'port'.*put 'port' under a \[pgcast\]"):
        load_settings(env=NO_ENV, config_file=toml)


def test_pgcast_key_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "pgcast = 1\n")
    with pytest.raises(ConfigError, match="must be a table"):
        load_settings(env=NO_ENV, config_file=toml)


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "[pgcast]\nport = 8000\nhost = \n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env=NO_ENV, config_file=toml)
    assert str(toml) in str(caught.value)
    assert "line 3" in str(caught.value)


def test_non_utf8_toml_is_an_error(tmp_path: Path) -> None:
    toml = tmp_path / "pgcast.toml"
    toml.write_bytes(b"[pgcast]\nhost = '\xff'\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(env=NO_ENV, config_file=toml)


def test_bad_toml_value_is_reported_even_when_overridden_later(tmp_path: Path) -> None:
    # A broken file is broken whatever overrides it: the error is not hidden by a flag.
    toml = write_toml(tmp_path, "[pgcast]\nport = 'abc'\n")
    with pytest.raises(ConfigError, match="port='abc' is not a valid port"):
        load_settings(env=NO_ENV, config_file=toml)


def test_direct_construction_is_validated_and_normalised() -> None:
    with pytest.raises(ConfigError, match=r"Settings\.port=70000 is not a valid port"):
        Settings(port=70000)
    assert Settings(port=0).port == 0  # 0: let the OS pick a free port
    settings = Settings(channels=["a", "b"], log_level="DEBUG")  # type: ignore[arg-type]
    assert settings.channels == ("a", "b")
    assert settings.log_level == "debug"


# --- redaction and channel matching ---


def test_redacted_hides_the_database_password() -> None:
    settings = Settings(database_url="postgresql://app:s3cret@db:5432/app?sslmode=require")
    redacted = settings.redacted()
    assert redacted["database_url"] == "postgresql://app:***@db:5432/app?sslmode=require"
    assert "s3cret" not in repr(settings)
    assert redacted["port"] == 8000


def test_invalid_database_url_error_does_not_leak_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"DATABASE_URL": "mysql://app:s3cret@db/app"})
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p%40x@h:1/db", "postgresql://u:***@h:1/db"),
        ("postgresql://h/db?user=u&password=p", "postgresql://h/db?user=u&password=***"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("channel", "allowed"),
    [
        ("query_results_42", True),
        ("table_updates_", True),
        ("system_notifications", True),
        ("system_notifications_x", False),
        ("Query_results_1", False),
        ("other", False),
    ],
)
def test_allows_channel_matches_default_patterns(channel: str, allowed: bool) -> None:
    assert Settings().allows_channel(channel) is allowed


# --- admin_token (the operator console) ---


def test_admin_token_is_off_by_default_and_read_from_the_environment() -> None:
    assert load_settings(env=NO_ENV).admin_token is None
    token = "a-long-random-admin-token"
    settings = load_settings(env={"PGCAST_ADMIN_TOKEN": f" {token} "})
    assert settings.admin_token == token


def test_admin_token_is_never_shown() -> None:
    token = "a-long-random-admin-token"
    settings = Settings(admin_token=token)
    assert settings.redacted()["admin_token"] == "***"
    assert token not in repr(settings)


@pytest.mark.parametrize(
    "value",
    ["short-token", "x" * 513, "has a space in the token", "tab\tin-the-token-xx", "é" * 20, 12],
    ids=["short", "long", "space", "tab", "non-ascii", "not-a-string"],
)
def test_a_weak_or_garbled_admin_token_is_refused_without_echoing_it(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(admin_token=value)  # type: ignore[arg-type]
    assert "admin_token" in str(caught.value)
    if isinstance(value, str):
        assert value not in str(caught.value)
