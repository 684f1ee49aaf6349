from __future__ import annotations

import pytest

from aspen.errors import UsageError
from aspen.identity import SecretKey
from aspen.quic.ping import PingStats, parse_target


def test_parse_target_ipv4_and_ipv6() -> None:
    key = SecretKey.generate().public()
    addr = parse_target(f"{key.hex()}@127.0.0.1:4433")
    assert addr.endpoint_id == key and str(addr.direct_addrs[0]) == "127.0.0.1:4433"
    addr6 = parse_target(f"{key.hex()}@[::1]:4433")
    assert addr6.direct_addrs[0].host == "::1"


@pytest.mark.parametrize("bad", ["nohost", "abc@127.0.0.1:1", "{k}@localhost:1", "{k}@1.2.3.4"])
def test_parse_target_refuses_nonsense(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_target(bad.format(k=SecretKey.generate().public().hex()))


def test_stats_summary() -> None:
    stats = PingStats(target="t", handshake_ms=1.5, rtts_ms=[1.0, 3.0], sent=3)
    assert stats.received == 2 and stats.avg_ms == 2.0
    assert "33% loss" in stats.summary()
