"""Signed announcements: accepted when genuine and fresh, rejected with a reason otherwise."""

from __future__ import annotations

import msgspec
import pytest

from aspen.addr import EndpointAddr, SocketAddr
from aspen.cluster_secret import ClusterSecret
from aspen.errors import UsageError
from aspen.identity import SecretKey
from aspen.peers import PeerMap
from aspen_gossip.announce import (
    MAX_ANNOUNCEMENT_AGE_MS,
    MAX_CLOCK_SKEW_MS,
    Accepted,
    AnnouncementVerifier,
    Announcer,
    Rejected,
    SignedAnnouncement,
    sign_announcement,
)
from aspen_gossip.messages import SCOPE_NEIGHBORS, SCOPE_SWARM

TOPIC = ClusterSecret.from_cookie("announce test").topic_id
NOW = 1_800_000_000_000  # a wall-clock instant, Unix ms
KEY = SecretKey(bytes(range(32)))
MALLORY = SecretKey(bytes(range(1, 33)))


def addr_of(key: SecretKey, port: int = 7000) -> EndpointAddr:
    return EndpointAddr(key.public(), "https://relay.example./", (SocketAddr("192.0.2.1", port),))


def announce(key: SecretKey = KEY, node_id: int = 1, ts: int = NOW, topic: bytes = TOPIC,
             addr: EndpointAddr | None = None) -> bytes:
    return sign_announcement(key, topic, node_id, addr or addr_of(key), ts)


def test_valid_announcement_is_accepted_and_lands_in_the_peer_map() -> None:
    verifier = AnnouncementVerifier(TOPIC)
    verdict = verifier.verify(announce(), NOW + 50)
    assert verdict == Accepted(1, addr_of(KEY), NOW)
    peers = PeerMap()
    assert verifier.apply_to_peer_map(verdict, peers) == verdict
    entry = peers.get(1)
    assert entry is not None and entry.addr == addr_of(KEY) and entry.source == "gossip"
    assert len(announce()) < 4096 - 100  # fits a default gossip frame with room


def test_bad_signature_is_rejected() -> None:
    signed = msgspec.msgpack.decode(announce(), type=SignedAnnouncement)
    forged = msgspec.msgpack.encode(SignedAnnouncement(signed.body, bytes(64)))
    verifier = AnnouncementVerifier(TOPIC)
    assert verifier.verify(forged, NOW) == Rejected("bad_signature", 1)
    # signed by another key than the one it names
    body_by_mallory = msgspec.msgpack.encode(SignedAnnouncement(signed.body, MALLORY.sign(signed.body)))
    assert verifier.verify(body_by_mallory, NOW).reason == "bad_signature"  # type: ignore[union-attr]
    # signed for another cluster's topic
    other = announce(topic=ClusterSecret.from_cookie("elsewhere").topic_id)
    assert verifier.verify(other, NOW).reason == "bad_signature"  # type: ignore[union-attr]
    assert verifier.rejections["bad_signature"] == 3


def test_stale_announcement_is_rejected() -> None:
    verifier = AnnouncementVerifier(TOPIC)
    assert verifier.verify(announce(ts=NOW - MAX_ANNOUNCEMENT_AGE_MS - 1), NOW) == Rejected("stale", 1)
    assert isinstance(verifier.verify(announce(ts=NOW - MAX_ANNOUNCEMENT_AGE_MS), NOW), Accepted)


def test_announcement_from_the_future_beyond_skew_is_rejected() -> None:
    verifier = AnnouncementVerifier(TOPIC)
    assert verifier.verify(announce(ts=NOW + MAX_CLOCK_SKEW_MS + 1), NOW) == Rejected("future", 1)
    assert isinstance(verifier.verify(announce(ts=NOW + MAX_CLOCK_SKEW_MS), NOW), Accepted)


def test_replayed_or_older_announcement_is_rejected() -> None:
    verifier = AnnouncementVerifier(TOPIC)
    first = announce(ts=NOW)
    assert isinstance(verifier.verify(first, NOW), Accepted)
    assert verifier.verify(first, NOW + 10) == Rejected("replayed", 1)
    assert verifier.verify(announce(ts=NOW - 5), NOW + 10) == Rejected("replayed", 1)
    assert isinstance(verifier.verify(announce(ts=NOW + 10_000), NOW + 10_000), Accepted)


def test_hijack_of_a_first_seen_binding_is_rejected() -> None:
    verifier = AnnouncementVerifier(TOPIC)
    assert isinstance(verifier.verify(announce(KEY, node_id=1), NOW), Accepted)
    # Mallory signs correctly with her own key but claims node 1
    assert verifier.verify(announce(MALLORY, node_id=1, ts=NOW + 1), NOW + 1) == Rejected("hijack", 1)
    assert isinstance(verifier.verify(announce(MALLORY, node_id=2, ts=NOW + 1), NOW + 1), Accepted)


def test_hijack_of_a_membership_binding_is_rejected_even_when_first_seen() -> None:
    verifier = AnnouncementVerifier(TOPIC)
    membership = {1: KEY.public()}
    verdict = verifier.verify(announce(MALLORY, node_id=1), NOW, bound_keys=membership)
    assert verdict == Rejected("hijack", 1)
    assert isinstance(verifier.verify(announce(KEY, node_id=1), NOW, bound_keys=membership), Accepted)


def test_peer_map_refusal_counts_as_hijack() -> None:
    peers = PeerMap()
    peers.update(1, addr_of(KEY), "static")
    verifier = AnnouncementVerifier(TOPIC)  # never saw node 1, but the peer map did
    verdict = verifier.apply_to_peer_map(verifier.verify(announce(MALLORY, node_id=1), NOW), peers)
    assert verdict == Rejected("hijack", 1)
    assert peers.get(1).addr.endpoint_id == KEY.public()  # type: ignore[union-attr]


def test_own_and_malformed_announcements_are_rejected() -> None:
    verifier = AnnouncementVerifier(TOPIC, own_node_id=1)
    assert verifier.verify(announce(node_id=1), NOW) == Rejected("own", 1)
    assert verifier.verify(b"\x93garbage", NOW) == Rejected("malformed")
    assert verifier.verify(b"", NOW) == Rejected("malformed")
    assert dict(verifier.rejections) == {"own": 1, "malformed": 2}


def test_signing_someone_elses_address_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        sign_announcement(KEY, TOPIC, 1, addr_of(MALLORY), NOW)


def test_announcer_announces_on_join_on_new_neighbors_and_every_interval() -> None:
    announcer = Announcer(interval_ms=10_000)
    assert announcer.poll(0) is None and announcer.next_deadline_ms() is None  # not joined yet
    announcer.on_neighbor_up(100, 1)
    assert announcer.poll(100) == SCOPE_SWARM
    assert announcer.poll(101) is None and announcer.next_deadline_ms() == 10_100
    announcer.on_neighbor_up(2_000, 2)
    assert announcer.poll(2_000) == SCOPE_NEIGHBORS  # at once, one hop, for the new neighbor
    assert announcer.poll(2_001) is None
    assert announcer.poll(10_099) is None and announcer.poll(10_100) == SCOPE_SWARM
    assert announcer.next_deadline_ms() == 20_100
    # losing every neighbor and coming back announces swarm-wide at once again
    announcer.on_neighbor_down(12_000, 0)
    assert announcer.poll(20_100) is None
    announcer.on_neighbor_up(13_000, 1)
    assert announcer.poll(13_000) == SCOPE_SWARM
