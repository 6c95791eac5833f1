"""Config: every mistake names the file, the field and the reason; secrets never leak."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from engine.config import Config, ConfigError, ListenerConfig, redact_uri

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lbtui.toml"
TOKEN = "s3cret-token-0123456789"


def write(tmp_path: Path, text: str, name: str = "lbtui.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert str(path) in str(info.value), "the message names the file"
    return info.value


def test_example_config_loads_and_says_what_it_configures() -> None:
    config = Config.load(EXAMPLE)
    assert config.source == EXAMPLE
    assert [s.name for s in config.servers] == ["app-1", "app-2"]
    assert config.servers[1].weight == 2
    assert config.balancer.algorithm == "consistent_hash"
    assert config.balancer.hash_key == "header:x-user"
    assert config.health.http_path == "/health"
    assert config.health.expect_status == (200, 399)
    assert config.proxy.overrides()["header_timeout"] == 10.0
    assert config.aws.autoscale.enabled is False
    # Relative paths are relative to the file, not the working directory.
    assert Path(config.store.path) == EXAMPLE.parent / "lbtui-state.db"


def test_no_file_means_defaults() -> None:
    config = Config.load(None)
    assert config.source is None
    assert config.listeners == (ListenerConfig(),)
    assert config.admin.host == "127.0.0.1" and config.admin.token is None
    assert config.servers == ()
    assert config.balancer.algorithm == "round_robin"


def test_a_minimal_file_fills_in_defaults(tmp_path: Path) -> None:
    config = Config.load(write(tmp_path, '[[servers]]\nhost = "10.0.0.5"\nport = 80\n'))
    (server,) = config.servers
    assert (server.name, server.weight, server.state) == ("10.0.0.5:80", 1, "ready")
    assert config.listeners[0].port == 8080


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (
            "".join(f'[[servers]]\nhost = "h{i}"\nport = {p}\n' for i, p in enumerate((1, 2, 70000))),
            "servers[2].port",
            "65535",
        ),
        ('[[servers]]\nhost = "a"\nport = "http"\n', "servers[0].port", "whole number"),
        ('[[servers]]\nhost = "a"\nport = true\n', "servers[0].port", "boolean"),
        ("[[servers]]\nport = 80\n", "servers[0].host", "required"),
        ('[[servers]]\nhost = "a"\n', "servers[0].port", "required"),
        ('[[servers]]\nhost = "a"\nport = 80\nweight = -1\n', "servers[0].weight", "from 0 to 1000"),
        (
            '[[servers]]\nhost = "a"\nport = 80\nstate = "sleeping"\n',
            "servers[0].state",
            "ready, drain, maint",
        ),
        ('[[servers]]\nhost = "a"\nport = 80\nwieght = 3\n', "servers[0].wieght", "unknown key"),
        (
            (
                '[[servers]]\nname = "x"\nhost = "a"\nport = 80\n'
                '[[servers]]\nname = "x"\nhost = "b"\nport = 81\n'
            ),
            "servers[1].name",
            "duplicate server name 'x'",
        ),
        ('[balancer]\nalgorithm = "fastest"\n', "balancer.algorithm", "unknown algorithm 'fastest'"),
        ('[balancer]\nhash_key = "header"\n', "balancer.hash_key", "needs a name"),
        ('[balancer]\nsticky = "forever"\n', "balancer.sticky", '"cookie", "ip" or false'),
        ("[balancer]\npanic_threshold = 2\n", "balancer.panic_threshold", "from 0.0 to 1.0"),
        ("[balancer]\nbalance_factor = 0.5\n", "balancer.balance_factor", "at least 1.0"),
        ("[health]\ninterval = 0\n", "health.interval", "greater than 0"),
        ('[health]\nhttp_path = "health"\n', "health.http_path", "start with '/'"),
        ("[health]\nexpect_status = [500, 200]\n", "health.expect_status", "low first"),
        (
            "[outlier]\nbase_ejection = 60\nmax_ejection = 10\n",
            "outlier.max_ejection",
            "at least base_ejection",
        ),
        ('[proxy]\nretries = "many"\n', "proxy.retries", "whole number"),
        ("[proxy]\nheader_timeot = 3\n", "proxy.header_timeot", "unknown key"),
        ('[[listeners]]\nport = 8080\nmode = "udp"\n', "listeners[0].mode", "http, tcp"),
        ("[[listeners]]\nport = -1\n", "listeners[0].port", "from 0 to 65535"),
        (
            '[[listeners]]\nport = 8080\ntls_cert = "missing.pem"\ntls_key = "missing.pem"\n',
            "listeners[0].tls_cert",
            "no such file",
        ),
        (
            '[[listeners]]\nname = "a"\nport = 8080\n[[listeners]]\nname = "b"\nport = 8080\n',
            "listeners[1].port",
            "already used by listener 'a'",
        ),
        ("listeners = []\n", "listeners", "at least one"),
        ("[admin]\nport = 8080\n", "admin.port", "already used by listener 'web'"),
        ('[admin]\nhost = "0.0.0.0"\n', "admin.token", "required when the admin API listens beyond loopback"),
        ('[admin]\ntoken = "short"\n', "admin.token", "at least 16 characters"),
        ('[store]\nmongodb_uri = "http://x"\n', "store.mongodb_uri", "mongodb://"),
        ("[aws]\nmin_weight = 50\nmax_weight = 10\n", "aws.min_weight", "must not exceed max_weight"),
        ('[aws]\nendpoint_url = "localhost:5000"\n', "aws.endpoint_url", "http://"),
        ('[aws.autoscale]\nschedule_start = "25:00"\n', "aws.autoscale.schedule_start", "HH:MM"),
        ("[aws.autoscale]\nmin = 5\nmax = 2\n", "aws.autoscale.min", "must not exceed max"),
        ("[aws.autoscale]\nenabled = true\n", "aws.autoscale.image_id", "required"),
        ('[balancers]\nalgorithm = "random"\n', "balancers", "unknown key"),
        ('servers = "all of them"\n', "servers", "array of tables"),
        ("balancer = 3\n", "balancer", "must be a table"),
    ],
)
def test_each_mistake_names_file_field_and_reason(tmp_path: Path, text: str, field: str, reason: str) -> None:
    error = error_of(tmp_path, text)
    assert error.path == field
    assert reason in error.reason
    assert f": {field}: " in str(error)
    assert "\n" not in str(error)


def test_toml_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[balancer\nalgorithm = 1\n")
    assert "invalid TOML" in error.reason and "line 1" in error.reason


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        Config.load(tmp_path / "nope.toml")


def test_values_are_frozen(tmp_path: Path) -> None:
    config = Config.load(EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.servers[0].weight = 5  # type: ignore[misc]


def test_aliases_become_canonical_names(tmp_path: Path) -> None:
    config = Config.load(write(tmp_path, '[balancer]\nalgorithm = "leastconn"\nhash_key = "header:X-User"\n'))
    assert config.balancer.algorithm == "least_connections"
    assert config.balancer.hash_key == "header:x-user"


def test_tls_paths_resolve_and_must_come_in_pairs(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    config = Config.load(
        write(tmp_path, '[[listeners]]\nport = 8443\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n')
    )
    assert config.listeners[0].tls_cert == str(tmp_path / "cert.pem")
    error = error_of(tmp_path, '[[listeners]]\nport = 8443\ntls_cert = "cert.pem"\n')
    assert error.path == "listeners[0].tls_key" and "together" in error.reason


# -- command line over file ------------------------------------------------------------
def test_flags_override_the_file(tmp_path: Path) -> None:
    config = Config.load(EXAMPLE).with_overrides(
        port=9999, admin_port=9998, mongodb_uri="mongodb://u:p@127.0.0.1:27017"
    )
    assert config.listeners[0].port == 9999
    assert config.admin.port == 9998
    assert config.store.mongodb_uri == "mongodb://u:p@127.0.0.1:27017"
    assert config.servers == Config.load(EXAMPLE).servers


def test_flags_work_without_a_file() -> None:
    config = Config.load(None).with_overrides(port=0, admin_port=0)
    assert config.listeners[0].port == 0 and config.admin.port == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"port": 70000}, "--port"),
        ({"admin_port": -2}, "--admin-port"),
        ({"mongodb_uri": "redis://x:pw@h"}, "--mongodb-uri"),
    ],
)
def test_bad_flags_are_config_errors(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(None).with_overrides(**overrides)  # type: ignore[arg-type]
    assert info.value.path == field and info.value.source == "command line"
    assert "pw" not in str(info.value)


# -- secrets ---------------------------------------------------------------------------
def test_secrets_stay_out_of_repr_str_and_redacted_view(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[admin]\ntoken = "{TOKEN}"\n[store]\nmongodb_uri = "mongodb://alice:hunter2pass@db.local:27017/x"\n'
        '[aws]\naccess_key_id = "AKIAEXAMPLEKEY"\nsecret_access_key = "wJalrXUtnFEMIsecret"\n',
    )
    config = Config.load(path)
    assert config.admin.token == TOKEN
    shown = repr(config) + str(config) + str(config.redacted()) + repr(config.admin) + repr(config.store)
    for secret in (TOKEN, "hunter2pass", "AKIAEXAMPLEKEY", "wJalrXUtnFEMIsecret"):
        assert secret not in shown
    assert config.store.mongodb_uri_redacted == "mongodb://alice:***@db.local:27017/x"
    assert config.redacted()["admin"]["token"] == "***"


def test_wrong_typed_secret_is_not_echoed(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[admin]\ntoken = 12345678901234567890\n")
    assert error.path == "admin.token"
    assert "12345678901234567890" not in str(error)


def test_bad_mongodb_uri_is_not_echoed(tmp_path: Path) -> None:
    error = error_of(tmp_path, '[store]\nmongodb_uri = "mongo://bob:topsecretpw@h"\n')
    assert "topsecretpw" not in str(error)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://u:pw@h1:1,h2:2/db?replicaSet=r", "mongodb://u:***@h1:1,h2:2/db?replicaSet=r"),
        ("mongodb+srv://u:pw@cluster.example.net", "mongodb+srv://u:***@cluster.example.net"),
        ("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017"),
        ("mongodb://onlyuser@h", "mongodb://onlyuser:***@h"),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_cli_load_config_turns_errors_into_user_errors(tmp_path: Path) -> None:
    from lbtui.cli import UserError
    from lbtui.commands.run import load_config

    path = write(tmp_path, '[[servers]]\nhost = "a"\nport = 0\n')
    args = argparse.Namespace(config=path, port=None, admin_port=None, mongodb_uri=None)
    with pytest.raises(UserError, match=r"servers\[0\]\.port"):
        load_config(args)


def test_admin_token_may_come_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[admin]\nhost = "0.0.0.0"\nport = 9000\n')
    config = Config.load(path, environ={"LBTUI_ADMIN_TOKEN": TOKEN})
    assert config.admin.token == TOKEN and TOKEN not in repr(config)
    assert Config.load(None, environ={"LBTUI_ADMIN_TOKEN": TOKEN}).admin.token == TOKEN
    with pytest.raises(ConfigError) as info:
        Config.load(path, environ={})
    assert info.value.path == "admin.token"
    with pytest.raises(ConfigError) as info:
        Config.load(path, environ={"LBTUI_ADMIN_TOKEN": "short"})
    assert "LBTUI_ADMIN_TOKEN" in info.value.path and "short" not in str(info.value)


def test_file_token_wins_over_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, f'[admin]\ntoken = "{TOKEN}"\n')
    assert Config.load(path, environ={"LBTUI_ADMIN_TOKEN": "x" * 20}).admin.token == TOKEN
