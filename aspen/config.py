"""The node's configuration: one typed object built from four layers.

Layers, lowest to highest: embedded defaults < TOML file (`--config`) < environment (`ASPEN_*`) <
command-line flags. Unlike the Rust Aspen, whose merge copies a value only when it differs from
the default (so a flag can never set a value *back* to its default), a value present in a higher
layer always wins, whatever it is. Every value remembers its source, for `aspen config show` and
for error messages, which name the key, the bad value and where it came from.

Names follow the Rust Aspen where the concept is the same (reference/aspen-rust-inventory.md §1):
flags `--node-id`, `--data-dir`, `--http-addr`, `--cookie`, `--peers`, `--ticket`,
`--heartbeat-interval-ms`, ...; env `ASPEN_NODE_ID`, ...; TOML keys `node_id`, ... and the
`[iroh]` table. Resetting an optional value: an empty string (`--ticket ""`, `ASPEN_PEERS=`)
means "unset / empty list".

Plugins add options through the `aspen_config_options` hook; they are set as TOML
`[plugin.NAME] key = ...`, env `ASPEN_<NAME>_<KEY>` and flag `--<name>-<key>`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from aspen.addr import MAX_RELAY_URLS
from aspen.errors import ConfigError
from aspen.plugin_api import ConfigOption, OptionValue

# Rust Aspen §1 defaults, kept so that its users' expectations hold.
DEFAULT_NODE_ID = 1  # the Rust node refuses 0 and has no default; a lone node is node 1
DEFAULT_HTTP_ADDR = "127.0.0.1:8080"  # loopback unless told otherwise (DESIGN.md, secure by default)
DEFAULT_COOKIE = "aspen-cookie"
DEFAULT_HEARTBEAT_INTERVAL_MS = 500
DEFAULT_ELECTION_TIMEOUT_MIN_MS = 1500
DEFAULT_ELECTION_TIMEOUT_MAX_MS = 3000
DEFAULT_BIND_HOST = "0.0.0.0"  # QUIC peers are key-authenticated, so all interfaces is safe
MAX_TIMEOUT_MS = 600_000  # 10 minutes: anything longer is a typo, not a setting
MAX_PEER_SPECS = 1024  # = aspen.peers.MAX_PEERS
MAX_COOKIE_SIZE = 1024
MAX_NODE_ID = 2**64 - 1  # NodeId is u64 in the Rust Aspen

Source = str  # "default" | "file" | "env" | "flag" (plus the file path in messages)


def _parse_int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError("not an integer") from None


def _parse_float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError("not a number") from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("not a boolean (use true/false)")


def split_peer_list(text: str) -> list[str]:
    """Split a comma-separated peer list, keeping commas inside JSON braces.

    The Rust Aspen splits `ASPEN_PEERS` on every comma, which breaks the JSON EndpointAddr form.
    """
    items: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _check_socket_addr(value: object) -> None:
    text = str(value)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("want HOST:PORT with a port 0-65535")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"{host!r} is not an IP address") from None


def _check_host(value: object) -> None:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        raise ValueError("not an IP address") from None


def _check_url(value: object) -> None:
    text = str(value)
    if not (text.startswith("http://") or text.startswith("https://")):
        raise ValueError("want an http:// or https:// URL")


@dataclass(frozen=True)
class OptionSpec:
    """One setting: its key, type, default, and its names in each layer."""

    key: str
    type: str  # "int" | "float" | "str" | "bool" | "list" | "optstr" | "path"
    default: OptionValue | None
    help: str
    flags: tuple[str, ...] = ()
    negative_flags: tuple[str, ...] = ()  # for bools: flags that set False
    env: tuple[str, ...] = ()
    toml: tuple[str, ...] = ()  # dotted paths, e.g. "iroh.secret_key"
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)  # value aliases, e.g. "memory"->"inmemory"
    check: Callable[[object], None] | None = None
    secret: bool = False  # never printed in clear
    max_items: int | None = None


def _core_options() -> list[OptionSpec]:
    return [
        OptionSpec("node_id", "int", DEFAULT_NODE_ID, "Raft node id (u64, non-zero)",
                   flags=("--node-id",), env=("ASPEN_NODE_ID",), toml=("node_id",),
                   min_value=1, max_value=MAX_NODE_ID),
        OptionSpec("data_dir", "path", None, "data directory (default ./data/node-{node_id})",
                   flags=("--data-dir",), env=("ASPEN_DATA_DIR",), toml=("data_dir",)),
        OptionSpec("http_addr", "str", DEFAULT_HTTP_ADDR, "control-plane HTTP listen address",
                   flags=("--http-addr",), env=("ASPEN_HTTP_ADDR",), toml=("http_addr",),
                   check=_check_socket_addr),
        OptionSpec("http_token", "optstr", None, "bearer token required on mutating HTTP routes",
                   flags=("--http-token",), env=("ASPEN_HTTP_TOKEN",), toml=("http_token",), secret=True),
        OptionSpec("cookie", "str", DEFAULT_COOKIE, "cluster secret: gossip topic and join key derive from it",
                   flags=("--cookie",), env=("ASPEN_COOKIE",), toml=("cookie",), secret=True),
        OptionSpec("heartbeat_interval_ms", "int", DEFAULT_HEARTBEAT_INTERVAL_MS, "Raft heartbeat interval",
                   flags=("--heartbeat-interval-ms",), env=("ASPEN_HEARTBEAT_INTERVAL_MS",),
                   toml=("heartbeat_interval_ms",), min_value=1, max_value=MAX_TIMEOUT_MS),
        OptionSpec("election_timeout_min_ms", "int", DEFAULT_ELECTION_TIMEOUT_MIN_MS, "Raft election timeout, lower bound",
                   flags=("--election-timeout-min-ms",), env=("ASPEN_ELECTION_TIMEOUT_MIN_MS",),
                   toml=("election_timeout_min_ms",), min_value=1, max_value=MAX_TIMEOUT_MS),
        OptionSpec("election_timeout_max_ms", "int", DEFAULT_ELECTION_TIMEOUT_MAX_MS, "Raft election timeout, upper bound",
                   flags=("--election-timeout-max-ms",), env=("ASPEN_ELECTION_TIMEOUT_MAX_MS",),
                   toml=("election_timeout_max_ms",), min_value=1, max_value=MAX_TIMEOUT_MS),
        OptionSpec("secret_key", "optstr", None, "Ed25519 secret key, 64 hex chars (fixes the EndpointId)",
                   flags=("--secret-key", "--iroh-secret-key"), env=("ASPEN_SECRET_KEY", "ASPEN_IROH_SECRET_KEY"),
                   toml=("secret_key", "iroh.secret_key"), secret=True, check=_check_secret_key_hex),
        OptionSpec("secret_key_file", "path", None, "file holding the secret key (see `aspen keygen`)",
                   flags=("--secret-key-file",), env=("ASPEN_SECRET_KEY_FILE",), toml=("secret_key_file",)),
        OptionSpec("relay_urls", "list", [], f"home relay URLs (at most {MAX_RELAY_URLS})",
                   flags=("--relay-url", "--iroh-relay-url"), env=("ASPEN_RELAY_URLS", "ASPEN_IROH_RELAY_URL"),
                   toml=("relay_urls", "iroh.relay_urls", "iroh.relay_url"), max_items=MAX_RELAY_URLS,
                   check=_check_url),
        OptionSpec("enable_gossip", "bool", True, "gossip discovery",
                   flags=("--enable-gossip",), negative_flags=("--disable-gossip",),
                   env=("ASPEN_ENABLE_GOSSIP", "ASPEN_IROH_ENABLE_GOSSIP"), toml=("enable_gossip", "iroh.enable_gossip")),
        OptionSpec("ticket", "optstr", None, "cluster ticket (aspen...) to join with",
                   flags=("--ticket",), env=("ASPEN_TICKET", "ASPEN_IROH_GOSSIP_TICKET"),
                   toml=("ticket", "iroh.gossip_ticket"), check=_check_ticket),
        OptionSpec("enable_mdns", "bool", True, "mDNS discovery",
                   flags=("--enable-mdns",), negative_flags=("--disable-mdns",),
                   env=("ASPEN_ENABLE_MDNS", "ASPEN_IROH_ENABLE_MDNS"), toml=("enable_mdns", "iroh.enable_mdns")),
        OptionSpec("enable_dns_discovery", "bool", False, "DNS discovery",
                   flags=("--enable-dns-discovery",), negative_flags=("--disable-dns-discovery",),
                   env=("ASPEN_ENABLE_DNS_DISCOVERY", "ASPEN_IROH_ENABLE_DNS_DISCOVERY"),
                   toml=("enable_dns_discovery", "iroh.enable_dns_discovery")),
        OptionSpec("dns_discovery_url", "optstr", None, "DNS discovery server URL",
                   flags=("--dns-discovery-url",), env=("ASPEN_DNS_DISCOVERY_URL", "ASPEN_IROH_DNS_DISCOVERY_URL"),
                   toml=("dns_discovery_url", "iroh.dns_discovery_url"), check=_check_url),
        OptionSpec("enable_pkarr", "bool", False, "publish signed address records to a pkarr relay",
                   flags=("--enable-pkarr",), negative_flags=("--disable-pkarr",),
                   env=("ASPEN_ENABLE_PKARR", "ASPEN_IROH_ENABLE_PKARR"), toml=("enable_pkarr", "iroh.enable_pkarr")),
        OptionSpec("pkarr_relay_url", "optstr", None, "pkarr relay URL",
                   flags=("--pkarr-relay-url",), env=("ASPEN_PKARR_RELAY_URL", "ASPEN_IROH_PKARR_RELAY_URL"),
                   toml=("pkarr_relay_url", "iroh.pkarr_relay_url"), check=_check_url),
        OptionSpec("peers", "list", [], "static peers: NODE_ID@ENDPOINT_ID or NODE_ID@{EndpointAddr JSON}",
                   flags=("--peers",), env=("ASPEN_PEERS",), toml=("peers",), max_items=MAX_PEER_SPECS,
                   check=_check_peer_spec),
        OptionSpec("bind_host", "str", DEFAULT_BIND_HOST, "UDP (QUIC) bind address",
                   flags=("--bind-host", "--host"), env=("ASPEN_BIND_HOST", "ASPEN_HOST"), toml=("bind_host", "host"),
                   check=_check_host),
        OptionSpec("bind_port", "int", 0, "UDP (QUIC) bind port, 0 = OS-assigned",
                   flags=("--bind-port", "--port", "--ractor-port"), env=("ASPEN_BIND_PORT", "ASPEN_RACTOR_PORT"),
                   toml=("bind_port", "ractor_port"), min_value=0, max_value=65535),
        OptionSpec("storage_backend", "str", "disk", "Raft storage: disk (durable, fsync) or inmemory",
                   flags=("--storage-backend",), env=("ASPEN_STORAGE_BACKEND",), toml=("storage_backend",),
                   choices=("disk", "inmemory"),
                   aliases={"redb": "disk", "persistent": "disk", "in-memory": "inmemory", "memory": "inmemory"}),
        OptionSpec("snapshot_every_entries", "int", 10_000, "take a snapshot after this many applied entries",
                   flags=("--snapshot-every-entries",), env=("ASPEN_SNAPSHOT_EVERY_ENTRIES",),
                   toml=("snapshot_every_entries",), min_value=1, max_value=10**9),
        OptionSpec("snapshot_keep_entries", "int", 1000,
                   "log entries kept behind a snapshot, so slightly lagging followers get entries (openraft's "
                   "max_in_snapshot_log_to_keep)",
                   flags=("--snapshot-keep-entries",), env=("ASPEN_SNAPSHOT_KEEP_ENTRIES",),
                   toml=("snapshot_keep_entries",), min_value=0, max_value=10**9),
        OptionSpec("log_level", "str", "info", "logging level",
                   flags=("--log-level",), env=("ASPEN_LOG_LEVEL",), toml=("log_level",),
                   choices=("debug", "info", "warning", "error")),
    ]


def _check_secret_key_hex(value: object) -> None:
    text = str(value)
    if len(text) != 64:
        raise ValueError(f"want 64 hex characters, got {len(text)}")
    try:
        bytes.fromhex(text)
    except ValueError:
        raise ValueError("not hex") from None


def _check_ticket(value: object) -> None:
    """A ticket must decode (prefix, base32, checksum, version, peers); the reason is named."""
    from aspen.ticket import ClusterTicket, TicketError  # local: ticket imports errors/addr only

    try:
        ClusterTicket.decode(str(value))
    except TicketError as exc:
        raise ValueError(f"bad ticket ({exc.reason}): {exc}") from None


def _check_peer_spec(value: object) -> None:
    from aspen.peer_spec import parse_peer_spec  # local: peer_spec imports addr/identity only

    parse_peer_spec(str(value))


class NodeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The effective configuration of a node (every layer merged and validated)."""

    node_id: int = DEFAULT_NODE_ID
    data_dir: str | None = None
    http_addr: str = DEFAULT_HTTP_ADDR
    http_token: str | None = None
    cookie: str = DEFAULT_COOKIE
    heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_INTERVAL_MS
    election_timeout_min_ms: int = DEFAULT_ELECTION_TIMEOUT_MIN_MS
    election_timeout_max_ms: int = DEFAULT_ELECTION_TIMEOUT_MAX_MS
    secret_key: str | None = None
    secret_key_file: str | None = None
    relay_urls: list[str] = []
    enable_gossip: bool = True
    ticket: str | None = None
    enable_mdns: bool = True
    enable_dns_discovery: bool = False
    dns_discovery_url: str | None = None
    enable_pkarr: bool = False
    pkarr_relay_url: str | None = None
    peers: list[str] = []
    bind_host: str = DEFAULT_BIND_HOST
    bind_port: int = 0
    storage_backend: str = "disk"
    snapshot_every_entries: int = 10_000
    snapshot_keep_entries: int = 1000
    log_level: str = "info"
    plugins: list[str] | None = None
    plugin_options: dict[str, dict[str, str | int | float | bool | list[str]]] = {}

    def effective_data_dir(self) -> Path:
        """`data_dir`, or `./data/node-{node_id}` as the Rust Aspen does."""
        return Path(self.data_dir) if self.data_dir else Path("data") / f"node-{self.node_id}"


@dataclass
class LoadedConfig:
    """A validated config plus where each value came from."""

    config: NodeConfig
    sources: dict[str, Source]
    specs: dict[str, OptionSpec]

    def show_rows(self) -> list[tuple[str, str, str]]:
        """(key, value as text, source) for every setting; secrets masked."""
        rows = []
        for key, spec in self.specs.items():
            value = _lookup(self.config, key)
            if spec.secret and value not in (None, ""):
                text = "<set>"
            elif isinstance(value, list):
                text = ",".join(str(v) for v in value) if value else "[]"
            else:
                text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            rows.append((key, text, self.sources.get(key, "default")))
        return rows


def _lookup(config: NodeConfig, key: str) -> object:
    if key.startswith("plugin."):
        _, plugin, opt = key.split(".", 2)
        return config.plugin_options.get(plugin, {}).get(opt)
    return getattr(config, key)


def plugin_option_specs(plugin_name: str, options: list[ConfigOption]) -> list[OptionSpec]:
    """Turn a plugin's ConfigOptions into OptionSpecs with their derived flag/env/TOML names."""
    specs = []
    for opt in options:
        flag_name = f"--{plugin_name}-{opt.key}".replace("_", "-")
        env_name = f"ASPEN_{plugin_name}_{opt.key}".upper().replace("-", "_")
        kind = {"str": "str", "int": "int", "float": "float", "bool": "bool", "list": "list"}[opt.type]
        specs.append(OptionSpec(
            key=f"plugin.{plugin_name}.{opt.key}", type=kind, default=opt.default, help=opt.help,
            flags=(flag_name,), env=(env_name,), toml=(f"plugin.{plugin_name}.{opt.key}",),
            min_value=opt.min_value, max_value=opt.max_value))
    return specs


def all_specs(plugin_specs: list[OptionSpec] | None = None) -> dict[str, OptionSpec]:
    specs = {s.key: s for s in _core_options()}
    for spec in plugin_specs or []:
        specs[spec.key] = spec
    return specs


def _convert(spec: OptionSpec, raw: Any, source: Source) -> OptionValue | None:
    """Parse and check one raw value (text from env/flags, or a TOML value) for `spec`."""

    def fail(reason: str) -> ConfigError:
        return ConfigError(f"{spec.key}={raw!r} (from {source}): {reason}", key=spec.key, value=raw, source=source)

    try:
        value: OptionValue | None
        if spec.type == "list":
            if isinstance(raw, str):
                items = split_peer_list(raw) if spec.key == "peers" else [p.strip() for p in raw.split(",") if p.strip()]
            elif isinstance(raw, list):
                items = []
                for item in raw:
                    if not isinstance(item, str):
                        raise ValueError("list items must be strings")
                    if item.strip():
                        items.append(item.strip())
            else:
                raise ValueError("want a list of strings")
            if spec.max_items is not None and len(items) > spec.max_items:
                raise ValueError(f"at most {spec.max_items} items, got {len(items)}")
            if spec.check:
                for item in items:
                    spec.check(item)
            return items
        if spec.type in ("optstr", "path"):
            if not isinstance(raw, str):
                raise ValueError("want a string")
            value = raw if raw != "" else None
        elif spec.type == "str":
            if not isinstance(raw, str):
                raise ValueError("want a string")
            value = spec.aliases.get(raw.lower(), raw.lower()) if spec.choices else raw
            if spec.choices and value not in spec.choices:
                raise ValueError(f"must be one of {', '.join(spec.choices)}")
        elif spec.type == "int":
            if isinstance(raw, bool) or not isinstance(raw, (int, str)):
                raise ValueError("not an integer")
            value = raw if isinstance(raw, int) else _parse_int(raw)
        elif spec.type == "float":
            if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                raise ValueError("not a number")
            value = float(raw) if not isinstance(raw, str) else _parse_float(raw)
        elif spec.type == "bool":
            if isinstance(raw, bool):
                value = raw
            elif isinstance(raw, str):
                value = _parse_bool(raw)
            else:
                raise ValueError("not a boolean")
        else:  # pragma: no cover - the table above is closed
            raise AssertionError(spec.type)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if spec.min_value is not None and value < spec.min_value:
                raise ValueError(f"must be >= {spec.min_value:g}")
            if spec.max_value is not None and value > spec.max_value:
                raise ValueError(f"must be <= {spec.max_value:g}")
        if value is not None and spec.check:
            spec.check(value)
        return value
    except ValueError as exc:
        raise fail(str(exc)) from None


def _flatten_toml(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten_toml(value, path + "."))
        else:
            flat[path] = value
    return flat


def read_toml_layer(path: Path, specs: Mapping[str, OptionSpec]) -> dict[str, tuple[Any, Source]]:
    """Raw values from a TOML file, keyed by option key. Unknown keys are an error."""
    source = f"file {path}"
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}", key="config", value=str(path),
                          source="flag") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", key="config", value=str(path),
                          source="flag") from None
    by_toml = {name: spec for spec in specs.values() for name in spec.toml}
    layer: dict[str, tuple[Any, Source]] = {}
    for name, value in _flatten_toml(data).items():
        if name == "plugins":
            layer["plugins"] = (value, source)
            continue
        spec = by_toml.get(name)
        if spec is None:
            if name.startswith("plugin."):
                # Options of plugins that are not loaded are checked when those plugins load;
                # keep them so `[plugin.x]` in a shared file is not an error for other nodes.
                continue
            raise ConfigError(f"unknown key {name!r} in {path}", key=name, value=value, source=source)
        layer[spec.key] = (value, source)
    return layer


def read_env_layer(environ: Mapping[str, str], specs: Mapping[str, OptionSpec]) -> dict[str, tuple[Any, Source]]:
    """Raw values from `ASPEN_*` variables. Unknown `ASPEN_*` names are an error (typos fail)."""
    by_env = {name: spec for spec in specs.values() for name in spec.env}
    layer: dict[str, tuple[Any, Source]] = {}
    for name, value in environ.items():
        if not name.startswith("ASPEN_") or name in ENV_NOT_CONFIG:
            continue
        if name == "ASPEN_PLUGINS":
            layer["plugins"] = (value, f"env {name}")
            continue
        spec = by_env.get(name)
        if spec is None:
            if _looks_like_plugin_env(name, specs):
                continue
            raise ConfigError(f"unknown environment variable {name}", key=name, value=value, source="env")
        layer[spec.key] = (value, f"env {name}")
    return layer


# Variables that configure tools rather than the node (tests, the CLI client).
ENV_NOT_CONFIG = frozenset({"ASPEN_CONFIG", "ASPEN_URL", "ASPEN_TOKEN"})


def _looks_like_plugin_env(name: str, specs: Mapping[str, OptionSpec]) -> bool:
    """True for `ASPEN_<PLUGIN>_*` of an installed plugin that is not loaded in this run: its
    options are only known once it loads, and a shared environment must not fail other runs."""
    loaded = {key.split(".")[1] for key in specs if key.startswith("plugin.")}
    return any(name.startswith(f"ASPEN_{plugin.upper()}_")
               for plugin in _installed_plugin_names() if plugin not in loaded)


def _installed_plugin_names() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="aspen.plugins")}


def build_config(
    *,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None,
    plugin_specs: list[OptionSpec] | None = None,
) -> LoadedConfig:
    """Merge the layers and validate. `flags` maps option keys to raw flag values (only those given).

    Raises ConfigError naming the key, the value and its source.
    """
    specs = all_specs(plugin_specs)
    layers: list[dict[str, tuple[Any, Source]]] = []
    if config_file is not None:
        layers.append(read_toml_layer(config_file, specs))
    layers.append(read_env_layer(environ, specs))
    layers.append({key: (value, "flag") for key, value in flags.items()})

    values: dict[str, OptionValue | None] = {key: spec.default for key, spec in specs.items()}
    sources: dict[str, Source] = {key: "default" for key in specs}
    plugins: list[str] | None = None
    plugins_source = "default"
    for layer in layers:
        for key, (raw, source) in layer.items():
            if key == "plugins":
                plugins = _parse_plugin_list(raw, source)
                plugins_source = source
                continue
            spec = specs.get(key)
            if spec is None:
                raise ConfigError(f"unknown option {key!r} (from {source})", key=key, value=raw, source=source)
            values[key] = _convert(spec, raw, source)
            sources[key] = source
    _validate_together(values, sources)

    core = {k: v for k, v in values.items() if not k.startswith("plugin.")}
    plugin_options: dict[str, dict[str, OptionValue]] = {}
    for key, value in values.items():
        if key.startswith("plugin.") and value is not None:
            _, plugin, opt = key.split(".", 2)
            plugin_options.setdefault(plugin, {})[opt] = value
    core["plugins"] = plugins
    core["plugin_options"] = plugin_options  # type: ignore[assignment]
    sources["plugins"] = plugins_source
    config = msgspec.convert(core, NodeConfig)
    return LoadedConfig(config, sources, specs)


def _parse_plugin_list(raw: Any, source: Source) -> list[str]:
    if isinstance(raw, str):
        return [p.strip() for p in raw.split(",") if p.strip()]
    if isinstance(raw, list) and all(isinstance(p, str) for p in raw):
        return [p.strip() for p in raw if p.strip()]
    raise ConfigError(f"plugins={raw!r} (from {source}): want a list of plugin names", key="plugins", value=raw,
                      source=source)


def _validate_together(values: Mapping[str, OptionValue | None], sources: Mapping[str, Source]) -> None:
    """Checks that involve several settings (the Rust Aspen's validate(), made errors)."""
    lo, hi, hb = values["election_timeout_min_ms"], values["election_timeout_max_ms"], values["heartbeat_interval_ms"]
    assert isinstance(lo, int) and isinstance(hi, int) and isinstance(hb, int)
    if hi <= lo:
        raise ConfigError(
            f"election_timeout_max_ms={hi} (from {sources['election_timeout_max_ms']}) must be greater than "
            f"election_timeout_min_ms={lo} (from {sources['election_timeout_min_ms']})",
            key="election_timeout_max_ms", value=hi, source=sources["election_timeout_max_ms"])
    if hb >= lo:
        # openraft rejects this later at start-up; we reject it where the user can see why.
        raise ConfigError(
            f"heartbeat_interval_ms={hb} (from {sources['heartbeat_interval_ms']}) must be less than "
            f"election_timeout_min_ms={lo} (from {sources['election_timeout_min_ms']})",
            key="heartbeat_interval_ms", value=hb, source=sources["heartbeat_interval_ms"])
    cookie = values["cookie"]
    if not isinstance(cookie, str) or not cookie or len(cookie) > MAX_COOKIE_SIZE:
        raise ConfigError(f"cookie (from {sources['cookie']}) must be 1..{MAX_COOKIE_SIZE} characters",
                          key="cookie", value="<secret>", source=sources["cookie"])
    if values["secret_key"] is not None and values["secret_key_file"] is not None:
        raise ConfigError(
            f"secret_key (from {sources['secret_key']}) and secret_key_file (from {sources['secret_key_file']}) "
            "are both set; give one", key="secret_key_file", value=values["secret_key_file"],
            source=sources["secret_key_file"])


def default_environ() -> Mapping[str, str]:
    return os.environ


__all__ = [
    "NodeConfig", "LoadedConfig", "OptionSpec", "build_config", "plugin_option_specs", "all_specs",
    "split_peer_list", "read_toml_layer", "read_env_layer",
]
