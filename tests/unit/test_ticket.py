"""Cluster tickets: round trip, each malformed-ticket error, the 16-peer limit, no cookie inside."""

from __future__ import annotations

import base64

import pytest

from aspen.addr import EndpointAddr, SocketAddr
from aspen.cluster_secret import ClusterSecret, join_key_from_cookie, topic_id_from_cookie
from aspen.errors import ConfigError
from aspen.identity import SecretKey
from aspen.ticket import MAX_TICKET_BOOTSTRAP_PEERS, ClusterTicket, TicketError

COOKIE = "correct horse battery staple"
SECRET = ClusterSecret.from_cookie(COOKIE)


def peer(i: int, *, relay: bool = True) -> EndpointAddr:
    key = SecretKey(bytes([i]) * 32)
    return EndpointAddr(key.public(), f"https://relay{i}.example./" if relay else None,
                        (SocketAddr(f"192.0.2.{i}", 7000 + i), SocketAddr("2001:db8::1", 7000)))


def b32(data: bytes) -> str:
    return "aspen" + base64.b32encode(data).decode().rstrip("=").lower()


def test_round_trip() -> None:
    ticket = ClusterTicket.from_secret(SECRET, [peer(1), peer(2, relay=False)])
    text = ticket.encode()
    assert text.startswith("aspen") and text == text.lower() and "=" not in text
    back = ClusterTicket.decode(text)
    assert back == ticket
    assert back.secret() == SECRET
    assert back.bootstrap[1].relay_url is None and str(back.bootstrap[0].direct_addrs[1]) == "[2001:db8::1]:7000"
    assert ClusterTicket.decode("  " + text + "\n") == ticket  # pasted with whitespace


def test_topic_and_join_key_derivation() -> None:
    import blake3
    assert SECRET.topic_id == blake3.blake3(COOKIE.encode()).digest()  # as in the Rust Aspen seeds
    assert SECRET.join_key == join_key_from_cookie(COOKIE) != SECRET.topic_id
    assert topic_id_from_cookie("other") != SECRET.topic_id
    assert "join_key=<hidden>" in repr(SECRET) and SECRET.join_key.hex() not in repr(SECRET)


def test_ticket_never_contains_the_cookie() -> None:
    ticket = ClusterTicket.from_secret(SECRET, [peer(1)])
    raw = ticket.to_bytes()
    text = ticket.encode()
    assert COOKIE.encode() not in raw and COOKIE not in text
    assert COOKIE.encode().hex() not in raw.hex()
    assert b32(COOKIE.encode())[5:] not in text
    assert ticket.join_key == SECRET.join_key and ticket.topic_id == SECRET.topic_id


def test_wrong_prefix() -> None:
    text = ClusterTicket.from_secret(SECRET).encode()
    with pytest.raises(TicketError, match="must start with 'aspen'") as info:
        ClusterTicket.decode("endpoint" + text[5:])
    assert info.value.reason == "prefix"
    assert isinstance(info.value, ConfigError)  # the CLI maps ConfigError to exit code 2


def test_bad_base32() -> None:
    with pytest.raises(TicketError, match="not valid base32") as info:
        ClusterTicket.decode("aspen0189!!")
    assert info.value.reason == "base32"
    text = ClusterTicket.from_secret(SECRET).encode()
    with pytest.raises(TicketError) as info:
        ClusterTicket.decode("aspen" + text[5:].upper())
    assert info.value.reason == "base32"


def test_bad_checksum_from_a_typo_or_truncation() -> None:
    text = ClusterTicket.from_secret(SECRET, [peer(1)]).encode()
    position = len(text) // 2
    typo = text[:position] + ("a" if text[position] != "a" else "b") + text[position + 1:]
    with pytest.raises(TicketError, match="checksum mismatch") as info:
        ClusterTicket.decode(typo)
    assert info.value.reason == "checksum"
    with pytest.raises(TicketError) as info:
        ClusterTicket.decode(text[:-8])
    assert info.value.reason in ("checksum", "base32")


def test_unknown_version() -> None:
    good = ClusterTicket.from_secret(SECRET).to_bytes()
    from aspen.ticket import _checksum  # re-checksum a doctored version byte
    head = bytes([2]) + good[1:-4]
    with pytest.raises(TicketError, match="version 2 is not supported") as info:
        ClusterTicket.decode(b32(head + _checksum(head)))
    assert info.value.reason == "version"


def test_sixteen_peers_is_the_limit() -> None:
    peers = [peer(i) for i in range(1, MAX_TICKET_BOOTSTRAP_PEERS + 1)]
    ticket = ClusterTicket.from_secret(SECRET, peers)
    assert len(ClusterTicket.decode(ticket.encode()).bootstrap) == 16
    with pytest.raises(TicketError, match="17 bootstrap peers, at most 16") as info:
        ClusterTicket.from_secret(SECRET, peers + [peer(17)])
    assert info.value.reason == "too_many_peers"


def test_decoding_a_ticket_with_too_many_peers_says_so() -> None:
    import msgspec

    from aspen.ticket import TicketBodyV1, _checksum
    body = msgspec.msgpack.encode(TicketBodyV1(SECRET.topic_id, SECRET.join_key,
                                               [peer(i).to_wire() for i in range(1, 18)]))
    head = bytes([1]) + body
    with pytest.raises(TicketError, match="17 bootstrap peers") as info:
        ClusterTicket.decode(b32(head + _checksum(head)))
    assert info.value.reason == "too_many_peers"


def test_garbage_with_a_valid_checksum_is_an_encoding_error() -> None:
    from aspen.ticket import _checksum
    head = bytes([1]) + b"\xc1\xc1\xc1"
    with pytest.raises(TicketError) as info:
        ClusterTicket.decode(b32(head + _checksum(head)))
    assert info.value.reason == "encoding"
    with pytest.raises(TicketError) as info:
        ClusterTicket.decode("aspen")
    assert info.value.reason == "length"
