"""Identity: key files, persistence across restarts, encodings, signatures."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aspen.errors import ConfigError
from aspen.identity import (
    EndpointId,
    SecretKey,
    load_or_create_key,
    read_key_file,
    write_key_file,
    zbase32_decode,
    zbase32_encode,
)


def test_key_is_created_once_and_reused(tmp_path: Path) -> None:
    first = load_or_create_key(tmp_path)
    again = load_or_create_key(tmp_path)
    assert first.public() == again.public()
    mode = stat.S_IMODE(os.stat(tmp_path / "secret.key").st_mode)
    assert mode == 0o600


def test_key_file_mode_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_key_file(tmp_path / "k", SecretKey.generate())
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600


def test_bad_key_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("not a key\n")
    with pytest.raises(ConfigError, match="not a valid secret key"):
        read_key_file(tmp_path / "k")
    with pytest.raises(ConfigError, match="cannot read key file"):
        read_key_file(tmp_path / "missing")


def test_endpoint_id_text_forms() -> None:
    key = SecretKey.from_hex("01" * 32)
    eid = key.public()
    assert len(eid.hex()) == 64 and eid.hex() == eid.hex().lower()
    assert eid.short() == eid.hex()[:10]
    assert EndpointId.from_hex(eid.hex().upper()) == eid
    assert EndpointId.parse(eid.zbase32()) == eid
    assert len(eid.zbase32()) == 52
    with pytest.raises(ValueError, match="64 hex"):
        EndpointId.from_hex("abc")
    with pytest.raises(ValueError, match="z-base-32"):
        EndpointId.parse("!" * 52)
    assert "01" * 32 not in repr(key)


@given(st.binary(min_size=0, max_size=64))
def test_zbase32_round_trip(data: bytes) -> None:
    assert zbase32_decode(zbase32_encode(data), len(data)) == data


def test_sign_and_verify() -> None:
    key = SecretKey.generate()
    other = SecretKey.generate()
    sig = key.sign(b"hello")
    assert key.public().verify(b"hello", sig)
    assert not key.public().verify(b"hellO", sig)
    assert not other.public().verify(b"hello", sig)
    assert not key.public().verify(b"hello", sig[:-1])


def test_keygen_cli_writes_0600_and_node_uses_it(tmp_path: Path) -> None:
    out = tmp_path / "node.key"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASPEN_")}
    result = subprocess.run([sys.executable, "-m", "aspen", "keygen", "--out", str(out)], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    key = read_key_file(out)
    assert f"endpoint_id: {key.public().hex()}" in result.stdout
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    again = subprocess.run([sys.executable, "-m", "aspen", "keygen", "--out", str(out)], capture_output=True,
                           text=True, env=env, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr
    assert read_key_file(out).public() == key.public()
