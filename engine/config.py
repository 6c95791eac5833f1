"""lbtui's configuration: a TOML file read into validated, frozen values.

Every mistake an operator can make in the file becomes a ``ConfigError`` naming the
file, the field (``servers[2].port``) and the reason, so a typo never surfaces as a
traceback or, worse, as a silently ignored key. Secrets (the admin token, the MongoDB
URI's password, AWS keys) are kept out of ``repr``, ``str`` and every error message;
``Config.redacted()`` is the view that may be shown or logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from engine.balancer import HashKey, canonical_algorithm
from engine.server import AdminState, server_name_problem

T = TypeVar("T")
_MISSING: Any = object()
TOKEN_ENV = "LBTUI_ADMIN_TOKEN"
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")


class ConfigError(ValueError):
    """A configuration the operator must fix; the message is one readable line."""

    def __init__(self, source: str, path: str, reason: str) -> None:
        self.source, self.path, self.reason = source, path, reason
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {reason}")


# -- values ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One address the proxy accepts traffic on."""

    name: str = "web"
    host: str = "127.0.0.1"
    port: int = 8080
    mode: str = "http"  # "http" or "tcp"
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    algorithm: str = "round_robin"
    hash_key: str = "client_ip"
    balance_factor: float | None = None
    sticky: str | None = None  # None, "cookie" or "ip"
    session_ttl: int = 3600
    panic_threshold: float = 0.0
    slow_start: float = 0.0
    rate_limit: int | None = None  # per server, requests per second
    client_rate_limit: int | None = None  # per client, requests per minute


@dataclass(frozen=True, slots=True)
class ServerConfig:
    name: str
    host: str
    port: int
    weight: int = 1
    state: str = "ready"


@dataclass(frozen=True, slots=True)
class HealthConfig:
    enabled: bool = True
    interval: float = 5.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    http_path: str | None = None  # None: a TCP connect check
    expect_status: tuple[int, int] = (200, 399)


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    enabled: bool = True
    consecutive_errors: int = 5
    base_ejection: float = 30.0
    max_ejection: float = 300.0
    max_ejection_percent: float = 50.0
    count_5xx: bool = True


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Overrides for the proxy's settings; None keeps the proxy's own default."""

    connect_timeout: float | None = None
    header_timeout: float | None = None
    idle_timeout: float | None = None
    upstream_timeout: float | None = None
    body_timeout: float | None = None
    max_request_line: int | None = None
    max_headers: int | None = None
    max_header_bytes: int | None = None
    max_body_bytes: int | None = None
    retries: int | None = None
    trust_forwarded: bool | None = None
    pool_size: int | None = None

    def overrides(self) -> dict[str, Any]:
        """Only the fields the operator set, as keyword arguments for ProxySettings."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    path: str | None = None  # None: no access log
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 3


@dataclass(frozen=True, slots=True)
class AdminConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8404
    token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        token = "'***'" if self.token else "None"
        return f"AdminConfig(enabled={self.enabled}, host={self.host!r}, port={self.port}, token={token})"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    mongodb_uri: str | None = field(default=None, repr=False)
    database: str = "lbtui"
    path: str = "lbtui-state.db"
    sync_interval: float = 1.0

    @property
    def mongodb_uri_redacted(self) -> str | None:
        return redact_uri(self.mongodb_uri) if self.mongodb_uri else None

    def __repr__(self) -> str:
        return (
            f"StoreConfig(mongodb_uri={self.mongodb_uri_redacted!r}, database={self.database!r}, "
            f"path={self.path!r}, sync_interval={self.sync_interval})"
        )


@dataclass(frozen=True, slots=True)
class AutoscaleConfig:
    enabled: bool = False
    min: int = 1
    max: int = 4
    scale_up_rps: float = 100.0
    scale_down_rps: float = 20.0
    cooldown: float = 300.0
    image_id: str = ""
    instance_type: str = "t3.micro"
    schedule_start: str = ""
    schedule_stop: str = ""


@dataclass(frozen=True, slots=True)
class AwsConfig:
    enabled: bool = False
    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    poll_interval: float = 60.0
    period: int = 60
    lookback: int = 300
    min_weight: int = 1
    max_weight: int = 100
    hysteresis: float = 0.1
    smoothing: float = 0.5
    tag_key: str = "lbtui:pool"
    tag_value: str = ""
    port: int | None = None
    discovery: bool = False
    autoscale: AutoscaleConfig = AutoscaleConfig()

    def __repr__(self) -> str:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown = ", ".join(
            f"{name}={'***' if name in _AWS_SECRETS and value else repr(value)}"
            for name, value in values.items()
        )
        return f"AwsConfig({shown})"


_AWS_SECRETS = frozenset({"access_key_id", "secret_access_key"})


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; ``source`` is the file it came from (None: defaults)."""

    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    balancer: BalancerConfig = BalancerConfig()
    servers: tuple[ServerConfig, ...] = ()
    health: HealthConfig = HealthConfig()
    outlier: OutlierConfig = OutlierConfig()
    proxy: ProxyConfig = ProxyConfig()
    access_log: AccessLogConfig = AccessLogConfig()
    admin: AdminConfig = AdminConfig()
    store: StoreConfig = StoreConfig()
    aws: AwsConfig = AwsConfig()
    source: Path | None = None
    # The command line's overrides, kept so a reload re-applies them over the new file.
    # Not shown and not compared: it may hold a MongoDB URI with a password.
    overrides: tuple[tuple[str, Any], ...] = field(default=(), repr=False, compare=False)

    # -- building -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None, *, environ: Mapping[str, str] | None = None) -> Config:
        """Read and validate a TOML file; ``None`` gives the defaults.

        ``environ`` (default: the process environment) may carry the admin token as
        ``LBTUI_ADMIN_TOKEN``, so it need not be written in the file.
        """
        env = os.environ if environ is None else environ
        if path is None:
            return cls.from_dict({}, environ=env)
        file = Path(path)
        label = str(file)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            raise ConfigError(label, "", "no such file") from None
        except OSError as exc:
            raise ConfigError(label, "", f"cannot read: {exc.strerror or exc}") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(label, "", "not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(label, "", f"invalid TOML: {exc}") from None
        return cls.from_dict(data, source=file, environ=env)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Validate an already parsed document (the TOML tables as dicts)."""
        label = str(source) if source else "<config>"
        parser = _Parser(label, source.parent if source else Path.cwd(), environ or {})
        return parser.config(data, source)

    def with_overrides(
        self,
        *,
        port: int | None = None,
        admin_port: int | None = None,
        mongodb_uri: str | None = None,
        admin_token: str | None = None,
    ) -> Config:
        """Command-line flags win over the file: ``--port`` moves the first listener."""
        label = "command line"
        config = self
        if port is not None:
            _check_port(label, "--port", port, allow_zero=True)
            first, *rest = config.listeners or (ListenerConfig(),)
            config = dataclasses.replace(config, listeners=(dataclasses.replace(first, port=port), *rest))
        if admin_port is not None:
            _check_port(label, "--admin-port", admin_port, allow_zero=True)
            config = dataclasses.replace(config, admin=dataclasses.replace(config.admin, port=admin_port))
        if admin_token is not None:
            config = dataclasses.replace(
                config, admin=dataclasses.replace(config.admin, token=admin_token or None)
            )
        if mongodb_uri is not None:
            _check_mongodb_uri(label, "--mongodb-uri", mongodb_uri)
            config = dataclasses.replace(
                config, store=dataclasses.replace(config.store, mongodb_uri=mongodb_uri)
            )
        _check_admin_exposure(label, config.admin)
        given = dict(self.overrides)
        given.update(
            (name, value)
            for name, value in (
                ("port", port), ("admin_port", admin_port), ("mongodb_uri", mongodb_uri), ("admin_token", admin_token)
            )
            if value is not None
        )
        return dataclasses.replace(config, overrides=tuple(given.items()))

    def reread(self) -> Config:
        """The source file read again, with the same command-line overrides on top."""
        return Config.load(self.source).with_overrides(**dict(self.overrides))

    def redacted(self) -> dict[str, Any]:
        """Everything, as plain data, with secrets masked: safe to show or log."""
        data = _plain(self)
        data["source"] = str(self.source) if self.source else None
        data["overrides"] = sorted(name for name, _ in self.overrides)  # names only: values may be secret
        if self.admin.token:
            data["admin"]["token"] = "***"
        data["store"]["mongodb_uri"] = self.store.mongodb_uri_redacted
        for name in _AWS_SECRETS:
            if data["aws"][name]:
                data["aws"][name] = "***"
        return data


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def redact_uri(uri: str) -> str:
    """``mongodb://user:secret@host/db`` -> ``mongodb://user:***@host/db``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "***"
    if parts.password is None and "@" not in parts.netloc:
        return uri
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}" if user else f"***@{hosts}"))


def host_problem(host: str) -> str | None:
    """Why ``host`` is not a host name or IP address, or None when it is.

    Checked up front so a name no resolver accepts (a label over 63 characters raises
    UnicodeError, not OSError, in getaddrinfo) never reaches the proxy or the prober.
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(bare)
        return None
    if len(host) <= 253 and _HOSTNAME.match(host):
        return None
    return f"{host[:40]!r} is not a host name or IP address"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses no other machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- checks shared by the file and the command line ------------------------------------
def _check_port(source: str, path: str, value: Any, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(source, path, f"must be a whole number (a port), not {_show(value)}")
    if not low <= value <= 65535:
        raise ConfigError(source, path, f"port must be from {low} to 65535, not {value}")
    return value


def mongodb_uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not a MongoDB URI, or None. Never echoes it: it may hold a password."""
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        return "must start with mongodb:// or mongodb+srv://"
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        return "is not a valid URI"
    if not parts.netloc.rpartition("@")[2]:
        return "names no host, e.g. mongodb://127.0.0.1:27017"
    return None


def _check_mongodb_uri(source: str, path: str, uri: str) -> None:
    if problem := mongodb_uri_problem(uri):
        raise ConfigError(source, path, problem)


def _check_admin_exposure(source: str, admin: AdminConfig) -> None:
    if admin.enabled and not admin.token and not is_loopback(admin.host):
        raise ConfigError(
            source,
            "admin.token",
            f"required when the admin API listens beyond loopback (admin.host={admin.host})",
        )


def _show(value: Any) -> str:
    """A short description of a wrong value, for error messages."""
    kind = {
        bool: "a boolean",
        int: "a whole number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) and len(repr(value)) <= 40:
        return f"{kind} ({value!r})"
    return kind


# -- the parser ------------------------------------------------------------------------
class _Table:
    """One TOML table being read: typed getters that remember which keys were used."""

    def __init__(self, source: str, path: str, data: Any, secrets: frozenset[str] = frozenset()) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(source, path, f"must be a table, not {_show(data)}")
        self.source, self.path, self.data = source, path, data
        self.used: set[str] = set()
        self.secrets = secrets

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.source, self.where(key), reason)

    def _raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key, _MISSING)

    def _wrong(self, key: str, expected: str, value: Any) -> ConfigError:
        shown = "a value that was not accepted" if key in self.secrets else _show(value)
        return self.fail(key, f"must be {expected}, not {shown}")

    def integer(self, key: str, default: Any, low: int | None = None, high: int | None = None) -> Any:
        value = self._raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong(key, "a whole number", value)
        self._bounds(key, value, low, high)
        return value

    def number(
        self,
        key: str,
        default: Any,
        low: float | None = None,
        high: float | None = None,
        *,
        positive: bool = False,
    ) -> Any:
        value = self._raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self._wrong(key, "a number", value)
        if positive and value <= 0:
            raise self.fail(key, f"must be greater than 0, not {value}")
        self._bounds(key, value, low, high)
        return float(value)

    def _bounds(self, key: str, value: float, low: float | None, high: float | None) -> None:
        if low is not None and high is not None and not low <= value <= high:
            raise self.fail(key, f"must be from {low} to {high}, not {value}")
        if low is not None and value < low:
            raise self.fail(key, f"must be at least {low}, not {value}")
        if high is not None and value > high:
            raise self.fail(key, f"must be at most {high}, not {value}")

    def string(self, key: str, default: Any, *, choices: tuple[str, ...] = (), empty: bool = True) -> Any:
        value = self._raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        if not empty and not value.strip():
            raise self.fail(key, "must not be empty")
        if choices and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def boolean(self, key: str, default: Any) -> Any:
        value = self._raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false", value)
        return value

    def port(self, key: str, default: Any, *, allow_zero: bool = False) -> Any:
        value = self._raw(key)
        if value is _MISSING:
            return default
        return _check_port(self.source, self.where(key), value, allow_zero=allow_zero)

    def table(self, key: str, secrets: frozenset[str] = frozenset()) -> _Table:
        value = self._raw(key)
        return _Table(self.source, self.where(key), {} if value is _MISSING else value, secrets)

    def array_of_tables(self, key: str) -> list[_Table] | None:
        value = self._raw(key)
        if value is _MISSING:
            return None
        if not isinstance(value, list):
            raise self._wrong(key, f"an array of tables ([[{key}]])", value)
        return [_Table(self.source, f"{self.where(key)}[{i}]", item) for i, item in enumerate(value)]

    def custom(self, key: str, default: T, convert: Callable[[Any], T]) -> T:
        """Apply ``convert``; its ValueError becomes this field's ConfigError."""
        value = self._raw(key)
        if value is _MISSING:
            return default
        try:
            return convert(value)
        except (ValueError, TypeError) as exc:
            raise self.fail(key, str(exc)) from None

    def done(self) -> None:
        """Reject keys nobody read: a typo must not be silently ignored."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], f"unknown key; expected one of {', '.join(sorted(self.used))}")


class _Parser:
    def __init__(self, source: str, base: Path, environ: Mapping[str, str]) -> None:
        self.source = source
        self.base = base
        self.environ = environ

    def config(self, data: Mapping[str, Any], source: Path | None) -> Config:
        root = _Table(self.source, "", data)
        listeners = self.listeners(root.array_of_tables("listeners"))
        balancer = self.balancer(root.table("balancer"))
        servers = self.servers(root.array_of_tables("servers") or [])
        health = self.health(root.table("health"))
        outlier = self.outlier(root.table("outlier"))
        proxy = self.proxy(root.table("proxy"))
        access_log = self.access_log(root.table("access_log"))
        admin = self.admin(root.table("admin", frozenset({"token"})))
        store = self.store(root.table("store", frozenset({"mongodb_uri"})))
        aws = self.aws(root.table("aws", _AWS_SECRETS))
        root.done()
        self.cross_checks(listeners, admin)
        return Config(
            listeners, balancer, servers, health, outlier, proxy, access_log, admin, store, aws, source
        )

    def file(self, table: _Table, key: str) -> str | None:
        value = table.string(key, None, empty=False)
        if value is None:
            return None
        path = Path(value).expanduser()
        path = path if path.is_absolute() else self.base / path
        if not path.is_file():
            raise table.fail(key, f"no such file: {path}")
        return str(path)

    def listeners(self, tables: list[_Table] | None) -> tuple[ListenerConfig, ...]:
        if tables is None:
            return (ListenerConfig(),)
        if not tables:
            raise ConfigError(self.source, "listeners", "needs at least one [[listeners]] table")
        result: list[ListenerConfig] = []
        names: set[str] = set()
        for index, t in enumerate(tables):
            name = t.string("name", "web" if index == 0 else f"listener{index}", empty=False)
            if name in names:
                raise t.fail("name", f"duplicate listener name {name!r}")
            names.add(name)
            cert, key = self.file(t, "tls_cert"), self.file(t, "tls_key")
            if (cert is None) != (key is None):
                raise t.fail(
                    "tls_key" if key is None else "tls_cert", "tls_cert and tls_key must be given together"
                )
            listener = ListenerConfig(
                name=name,
                host=t.string("host", "127.0.0.1", empty=False),
                port=t.port("port", 8080, allow_zero=True),
                mode=t.string("mode", "http", choices=("http", "tcp")),
                tls_cert=cert,
                tls_key=key,
            )
            t.done()
            clash = next(
                (r for r in result if r.port and (r.host, r.port) == (listener.host, listener.port)), None
            )
            if clash is not None:
                raise t.fail(
                    "port", f"{listener.host}:{listener.port} is already used by listener {clash.name!r}"
                )
            result.append(listener)
        return tuple(result)

    def balancer(self, t: _Table) -> BalancerConfig:
        d = BalancerConfig()
        algorithm = t.custom("algorithm", d.algorithm, lambda v: canonical_algorithm(_require_str(v)))
        hash_key = t.custom("hash_key", d.hash_key, lambda v: str(HashKey.parse(_require_str(v))))
        sticky = t.custom("sticky", d.sticky, _sticky)
        config = BalancerConfig(
            algorithm=algorithm,
            hash_key=hash_key,
            balance_factor=t.number("balance_factor", None, low=1.0),
            sticky=sticky,
            session_ttl=t.integer("session_ttl", d.session_ttl, low=1),
            panic_threshold=t.number("panic_threshold", d.panic_threshold, 0.0, 1.0),
            slow_start=t.number("slow_start", d.slow_start, low=0.0),
            rate_limit=t.integer("rate_limit", None, low=1),
            client_rate_limit=t.integer("client_rate_limit", None, low=1),
        )
        t.done()
        return config

    def servers(self, tables: list[_Table]) -> tuple[ServerConfig, ...]:
        result: list[ServerConfig] = []
        seen: dict[str, str] = {}
        for t in tables:
            host = t.string("host", _MISSING, empty=False)
            if host is _MISSING:
                raise t.fail("host", "is required")
            if problem := host_problem(host):
                raise t.fail("host", problem)
            port = t.port("port", _MISSING)
            if port is _MISSING:
                raise t.fail("port", "is required")
            name = t.string("name", None, empty=False)
            if name is None:
                name = f"{host}:{port}"  # host is checked above; "::1:80" is a fine default
            elif problem := server_name_problem(name):
                raise t.fail("name", problem)
            if name in seen:
                raise t.fail("name", f"duplicate server name {name!r} (first at {seen[name]})")
            seen[name] = t.path
            server = ServerConfig(
                name=name,
                host=host,
                port=port,
                weight=t.integer("weight", 1, 0, 1000),
                state=t.string("state", "ready", choices=tuple(s.value for s in AdminState)),
            )
            t.done()
            result.append(server)
        return tuple(result)

    def health(self, t: _Table) -> HealthConfig:
        d = HealthConfig()
        path = t.string("http_path", d.http_path)
        if path is not None and not path.startswith("/"):
            raise t.fail("http_path", f"must start with '/', not {path!r}")
        config = HealthConfig(
            enabled=t.boolean("enabled", d.enabled),
            interval=t.number("interval", d.interval, positive=True),
            timeout=t.number("timeout", d.timeout, positive=True),
            rise=t.integer("rise", d.rise, low=1),
            fall=t.integer("fall", d.fall, low=1),
            http_path=path or None,
            expect_status=t.custom("expect_status", d.expect_status, _status_range),
        )
        t.done()
        return config

    def outlier(self, t: _Table) -> OutlierConfig:
        d = OutlierConfig()
        config = OutlierConfig(
            enabled=t.boolean("enabled", d.enabled),
            consecutive_errors=t.integer("consecutive_errors", d.consecutive_errors, low=1),
            base_ejection=t.number("base_ejection", d.base_ejection, positive=True),
            max_ejection=t.number("max_ejection", d.max_ejection, positive=True),
            max_ejection_percent=t.number("max_ejection_percent", d.max_ejection_percent, 0.0, 100.0),
            count_5xx=t.boolean("count_5xx", d.count_5xx),
        )
        if config.max_ejection < config.base_ejection:
            raise t.fail("max_ejection", f"must be at least base_ejection ({config.base_ejection:g})")
        t.done()
        return config

    def proxy(self, t: _Table) -> ProxyConfig:
        config = ProxyConfig(
            connect_timeout=t.number("connect_timeout", None, positive=True),
            header_timeout=t.number("header_timeout", None, positive=True),
            idle_timeout=t.number("idle_timeout", None, positive=True),
            upstream_timeout=t.number("upstream_timeout", None, positive=True),
            body_timeout=t.number("body_timeout", None, positive=True),
            max_request_line=t.integer("max_request_line", None, low=64),
            max_headers=t.integer("max_headers", None, low=1),
            max_header_bytes=t.integer("max_header_bytes", None, low=256),
            max_body_bytes=t.integer("max_body_bytes", None, low=0),
            retries=t.integer("retries", None, 0, 10),
            trust_forwarded=t.boolean("trust_forwarded", None),
            pool_size=t.integer("pool_size", None, low=0),
        )
        t.done()
        return config

    def access_log(self, t: _Table) -> AccessLogConfig:
        d = AccessLogConfig()
        path = t.string("path", None)
        if path:
            resolved = Path(path).expanduser()
            path = str(resolved if resolved.is_absolute() else self.base / resolved)
        config = AccessLogConfig(
            path=path or None,
            max_bytes=t.integer("max_bytes", d.max_bytes, low=1024),
            backups=t.integer("backups", d.backups, 0, 100),
        )
        t.done()
        return config

    def admin(self, t: _Table) -> AdminConfig:
        d = AdminConfig()
        config = AdminConfig(
            enabled=t.boolean("enabled", d.enabled),
            host=t.string("host", d.host, empty=False),
            port=t.port("port", d.port, allow_zero=True),
            token=t.string("token", None) or self.environ.get(TOKEN_ENV) or None,
        )
        if config.token is not None and len(config.token) < 16:
            where = "token" if t.data.get("token") else f"token (from ${TOKEN_ENV})"
            raise t.fail(where, "must be at least 16 characters")
        t.done()
        return config

    def store(self, t: _Table) -> StoreConfig:
        d = StoreConfig()
        uri = t.string("mongodb_uri", None) or None
        if uri is not None:
            _check_mongodb_uri(self.source, t.where("mongodb_uri"), uri)
        path = t.string("path", d.path, empty=False)
        resolved = Path(path).expanduser()
        config = StoreConfig(
            mongodb_uri=uri,
            database=t.string("database", d.database, empty=False),
            path=str(resolved if resolved.is_absolute() else self.base / resolved),
            sync_interval=t.number("sync_interval", d.sync_interval, positive=True),
        )
        t.done()
        return config

    def aws(self, t: _Table) -> AwsConfig:
        d = AwsConfig()
        endpoint = t.string("endpoint_url", None) or None
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise t.fail("endpoint_url", f"must be an http:// or https:// URL, not {endpoint!r}")
        config = AwsConfig(
            enabled=t.boolean("enabled", d.enabled),
            region=t.string("region", d.region, empty=False),
            endpoint_url=endpoint,
            access_key_id=t.string("access_key_id", None) or None,
            secret_access_key=t.string("secret_access_key", None) or None,
            poll_interval=t.number("poll_interval", d.poll_interval, positive=True),
            period=t.integer("period", d.period, low=1),
            lookback=t.integer("lookback", d.lookback, low=1),
            min_weight=t.integer("min_weight", d.min_weight, 0, 1000),
            max_weight=t.integer("max_weight", d.max_weight, 1, 1000),
            hysteresis=t.number("hysteresis", d.hysteresis, 0.0, 1.0),
            smoothing=t.number("smoothing", d.smoothing, 0.0, 1.0),
            tag_key=t.string("tag_key", d.tag_key, empty=False),
            tag_value=t.string("tag_value", d.tag_value),
            port=t.port("port", None),
            discovery=t.boolean("discovery", d.discovery),
            autoscale=self.autoscale(t.table("autoscale")),
        )
        if config.min_weight > config.max_weight:
            raise t.fail("min_weight", f"must not exceed max_weight ({config.max_weight})")
        if config.lookback < config.period:
            raise t.fail("lookback", f"must be at least period ({config.period})")
        if (config.access_key_id is None) != (config.secret_access_key is None):
            raise t.fail("secret_access_key", "access_key_id and secret_access_key must be given together")
        t.done()
        return config

    def autoscale(self, t: _Table) -> AutoscaleConfig:
        d = AutoscaleConfig()
        config = AutoscaleConfig(
            enabled=t.boolean("enabled", d.enabled),
            min=t.integer("min", d.min, 0, 1000),
            max=t.integer("max", d.max, 1, 1000),
            scale_up_rps=t.number("scale_up_rps", d.scale_up_rps, positive=True),
            scale_down_rps=t.number("scale_down_rps", d.scale_down_rps, low=0.0),
            cooldown=t.number("cooldown", d.cooldown, low=0.0),
            image_id=t.string("image_id", d.image_id),
            instance_type=t.string("instance_type", d.instance_type, empty=False),
            schedule_start=t.custom("schedule_start", d.schedule_start, _hhmm),
            schedule_stop=t.custom("schedule_stop", d.schedule_stop, _hhmm),
        )
        if config.min > config.max:
            raise t.fail("min", f"must not exceed max ({config.max})")
        if config.scale_down_rps >= config.scale_up_rps:
            raise t.fail("scale_down_rps", f"must be below scale_up_rps ({config.scale_up_rps:g})")
        if config.enabled and not config.image_id:
            raise t.fail("image_id", "is required when autoscale is enabled")
        t.done()
        return config

    def cross_checks(self, listeners: tuple[ListenerConfig, ...], admin: AdminConfig) -> None:
        _check_admin_exposure(self.source, admin)
        if admin.enabled and admin.port:
            for listener in listeners:
                if listener.port == admin.port and (
                    listener.host == admin.host or "0.0.0.0" in (listener.host, admin.host)
                ):
                    raise ConfigError(
                        self.source,
                        "admin.port",
                        f"{admin.port} is already used by listener {listener.name!r}",
                    )


def _require_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be a string, not {_show(value)}")
    return value


def _sticky(value: Any) -> str | None:
    if value is False:
        return None
    if value in ("cookie", "ip"):
        return str(value)
    raise ValueError(f'must be "cookie", "ip" or false, not {_show(value)}')


def _status_range(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        low, high = value
    else:
        raise ValueError(f"must be a status code or [low, high], not {_show(value)}")
    if not 100 <= low <= high <= 599:
        raise ValueError(f"must be HTTP status codes from 100 to 599, low first, not {value}")
    return (low, high)


def _hhmm(value: Any) -> str:
    if not isinstance(value, str) or (value and not _HHMM.match(value)):
        raise ValueError(f'must be a time "HH:MM" (24 h) or "", not {_show(value)}')
    return value
