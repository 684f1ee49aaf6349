"""Config layering: CLI > env > file > defaults, reset-to-default, and every error path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aspen.cluster_secret import ClusterSecret
from aspen.config import DEFAULT_HTTP_ADDR, build_config, split_peer_list
from aspen.errors import ConfigError
from aspen.ticket import ClusterTicket

EID = "ab" * 32
# a well-formed ticket (the ticket option is decoded at config time; see test_ticket.py)
TICKET = ClusterTicket.from_secret(ClusterSecret.from_cookie("config test")).encode()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aspen.toml"
    path.write_text(text)
    return path


def test_defaults_follow_the_rust_aspen() -> None:
    loaded = build_config(flags={}, environ={}, config_file=None)
    c = loaded.config
    assert (c.node_id, c.http_addr, c.cookie) == (1, "127.0.0.1:8080", "aspen-cookie")
    assert (c.heartbeat_interval_ms, c.election_timeout_min_ms, c.election_timeout_max_ms) == (500, 1500, 3000)
    assert c.enable_gossip and c.enable_mdns and not c.enable_dns_discovery and not c.enable_pkarr
    assert all(source == "default" for source in loaded.sources.values())


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'node_id = 2\nhttp_addr = "127.0.0.1:9002"\ncookie = "file-cookie"\n'
                          "heartbeat_interval_ms = 200\n")
    loaded = build_config(flags={"node_id": "4"},
                          environ={"ASPEN_NODE_ID": "3", "ASPEN_HTTP_ADDR": "127.0.0.1:9003"},
                          config_file=cfg)
    c = loaded.config
    assert c.node_id == 4 and loaded.sources["node_id"] == "flag"
    assert c.http_addr == "127.0.0.1:9003" and loaded.sources["http_addr"] == "env ASPEN_HTTP_ADDR"
    assert c.cookie == "file-cookie" and loaded.sources["cookie"] == f"file {cfg}"
    assert c.heartbeat_interval_ms == 200
    assert c.election_timeout_min_ms == 1500 and loaded.sources["election_timeout_min_ms"] == "default"


def test_a_higher_layer_can_set_a_value_back_to_its_default(tmp_path: Path) -> None:
    # The Rust Aspen cannot: its merge ignores a flag equal to the default (reference §1).
    cfg = write(tmp_path, 'http_addr = "0.0.0.0:9000"\nenable_gossip = false\nticket = "' + TICKET + '"\n'
                          'peers = ["1@' + EID + '"]\n')
    loaded = build_config(flags={"http_addr": DEFAULT_HTTP_ADDR, "enable_gossip": "true", "ticket": "",
                                 "peers": [""]}, environ={}, config_file=cfg)
    c = loaded.config
    assert c.http_addr == DEFAULT_HTTP_ADDR and loaded.sources["http_addr"] == "flag"
    assert c.enable_gossip is True
    assert c.ticket is None
    assert c.peers == []


def test_env_resets_file_value_to_default(tmp_path: Path) -> None:
    cfg = write(tmp_path, "enable_mdns = false\n")
    loaded = build_config(flags={}, environ={"ASPEN_ENABLE_MDNS": "true"}, config_file=cfg)
    assert loaded.config.enable_mdns is True


def test_rust_aspen_names_are_accepted(tmp_path: Path) -> None:
    cfg = write(tmp_path, f'node_id = 7\nractor_port = 26001\n[iroh]\nsecret_key = "{"01" * 32}"\n'
                          'enable_gossip = false\ngossip_ticket = "' + TICKET + '"\nenable_mdns = false\n')
    loaded = build_config(flags={}, environ={"ASPEN_IROH_ENABLE_PKARR": "true"}, config_file=cfg)
    c = loaded.config
    assert c.node_id == 7 and c.bind_port == 26001
    assert c.secret_key == "01" * 32 and c.ticket == TICKET
    assert not c.enable_gossip and not c.enable_mdns and c.enable_pkarr


def test_peers_env_keeps_json_endpoint_addr_whole() -> None:
    # The Rust Aspen splits ASPEN_PEERS on every comma, which breaks the JSON form.
    json_peer = '2@{"id":"' + EID + '","addrs":[{"Ip":"127.0.0.1:1"},{"Ip":"127.0.0.1:2"}]}'
    env = {"ASPEN_PEERS": f"1@{EID},{json_peer}"}
    loaded = build_config(flags={}, environ=env, config_file=None)
    assert loaded.config.peers == [f"1@{EID}", json_peer]
    assert split_peer_list("a, b ,,c") == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("flags", "environ", "toml", "key", "source", "fragment"),
    [
        ({"node_id": "0"}, {}, None, "node_id", "flag", ">= 1"),
        ({"node_id": "x"}, {}, None, "node_id", "flag", "not an integer"),
        ({}, {"ASPEN_NODE_ID": "-3"}, None, "node_id", "env ASPEN_NODE_ID", ">= 1"),
        ({}, {}, "node_id = 18446744073709551616\n", "node_id", "file", "<="),
        ({}, {}, 'node_id = "one"\n', "node_id", "file", "not an integer"),
        ({"heartbeat_interval_ms": "0"}, {}, None, "heartbeat_interval_ms", "flag", ">= 1"),
        ({"http_addr": "nowhere"}, {}, None, "http_addr", "flag", "HOST:PORT"),
        ({"http_addr": "127.0.0.1:70000"}, {}, None, "http_addr", "flag", "HOST:PORT"),
        ({}, {"ASPEN_ENABLE_GOSSIP": "maybe"}, None, "enable_gossip", "env ASPEN_ENABLE_GOSSIP", "boolean"),
        ({"secret_key": "zz"}, {}, None, "secret_key", "flag", "64 hex"),
        ({"secret_key": "g" * 64}, {}, None, "secret_key", "flag", "not hex"),
        ({"relay_urls": ["http://a", "http://b", "http://c", "http://d", "http://e"]}, {}, None,
         "relay_urls", "flag", "at most 4"),
        ({"relay_urls": ["ftp://x"]}, {}, None, "relay_urls", "flag", "http"),
        ({"peers": ["not-a-peer"]}, {}, None, "peers", "flag", "NODE_ID@"),
        ({"peers": ["1@abcd"]}, {}, None, "peers", "flag", "endpoint id"),
        ({"peers": ['1@{"id": 5}']}, {}, None, "peers", "flag", "id"),
        ({"storage_backend": "floppy"}, {}, None, "storage_backend", "flag", "one of"),
        ({"bind_port": "65536"}, {}, None, "bind_port", "flag", "<= 65535"),
    ],
)
def test_bad_values_name_key_value_and_source(tmp_path: Path, flags: dict[str, object], environ: dict[str, str],
                                              toml: str | None, key: str, source: str, fragment: str) -> None:
    cfg = write(tmp_path, toml) if toml else None
    with pytest.raises(ConfigError) as info:
        build_config(flags=flags, environ=environ, config_file=cfg)
    err = info.value
    assert err.key == key
    assert err.source.startswith(source)
    assert fragment in str(err)
    assert key in str(err)


def test_cross_field_errors_say_which_layer(tmp_path: Path) -> None:
    cfg = write(tmp_path, "election_timeout_min_ms = 2000\n")
    with pytest.raises(ConfigError, match=r"election_timeout_max_ms=1900 \(from flag\).*election_timeout_min_ms=2000 "
                                          r"\(from file"):
        build_config(flags={"election_timeout_max_ms": "1900"}, environ={}, config_file=cfg)
    with pytest.raises(ConfigError, match="heartbeat_interval_ms=1500"):
        build_config(flags={"heartbeat_interval_ms": "1500"}, environ={}, config_file=None)
    with pytest.raises(ConfigError, match="cookie"):
        build_config(flags={"cookie": ""}, environ={}, config_file=None)
    with pytest.raises(ConfigError, match="both set"):
        build_config(flags={"secret_key": "00" * 32, "secret_key_file": "/tmp/k"}, environ={}, config_file=None)


def test_unknown_keys_fail_in_file_and_env(tmp_path: Path) -> None:
    cfg = write(tmp_path, "node_idd = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'node_idd'"):
        build_config(flags={}, environ={}, config_file=cfg)
    cfg = write(tmp_path, "[iroh]\nsecret = 'x'\n")
    with pytest.raises(ConfigError, match="iroh.secret"):
        build_config(flags={}, environ={}, config_file=cfg)
    with pytest.raises(ConfigError, match="ASPEN_NODEID"):
        build_config(flags={}, environ={"ASPEN_NODEID": "3"}, config_file=None)


def test_broken_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_config(flags={}, environ={}, config_file=write(tmp_path, "node_id = = 3"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        build_config(flags={}, environ={}, config_file=tmp_path / "missing.toml")


def test_secrets_are_masked_in_show_rows() -> None:
    loaded = build_config(flags={"cookie": "s3cret", "secret_key": "01" * 32}, environ={}, config_file=None)
    shown = dict((k, v) for k, v, _ in loaded.show_rows())
    assert shown["cookie"] == "<set>" and shown["secret_key"] == "<set>"
    assert "s3cret" not in repr(loaded.show_rows())


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASPEN_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "aspen", *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=60)


def test_cli_config_show_prints_sources(tmp_path: Path) -> None:
    cfg = write(tmp_path, "heartbeat_interval_ms = 250\n")
    result = run_cli("config", "show", "--config", str(cfg), "--node-id", "9", env={"ASPEN_ENABLE_MDNS": "false"})
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert lines["node_id"].split()[1:] == ["9", "flag"]
    assert "env ASPEN_ENABLE_MDNS" in lines["enable_mdns"] and " false " in lines["enable_mdns"]
    assert f"file {cfg}" in lines["heartbeat_interval_ms"]
    assert lines["election_timeout_max_ms"].split()[1:] == ["3000", "default"]


def test_cli_bad_value_exits_2_with_message(tmp_path: Path) -> None:
    result = run_cli("config", "show", "--node-id", "zero")
    assert result.returncode == 2
    assert "node_id='zero' (from flag): not an integer" in result.stderr
    result = run_cli("config", "show", env={"ASPEN_HEARTBEAT_INTERVAL_MS": "-1"})
    assert result.returncode == 2 and "env ASPEN_HEARTBEAT_INTERVAL_MS" in result.stderr
    result = run_cli("config", "show", "--no-such-flag")
    assert result.returncode == 2 and "--no-such-flag" in result.stderr
    result = run_cli("run", "--data-dir", str(tmp_path / "no" / "such" / "parent"))
    assert result.returncode == 2 and "parent directory" in result.stderr
