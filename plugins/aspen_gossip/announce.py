"""Signed discovery announcements: format, verification, and when to send them (sans-IO).

An announcement says "Raft node `node_id` is the endpoint `addr.endpoint_id`, reachable at
`addr`, as of `timestamp_unix_ms`", signed with that endpoint's Ed25519 key. It travels as gossip
content (`Broadcast`), so it is also covered by Plumtree's dedup (message id = blake3(content)).

Wire: `SignedAnnouncement(body, signature)` where `body` is the MessagePack of
`AnnouncementBody(node_id, addr, timestamp_unix_ms)` and `signature` is Ed25519 over
``ANNOUNCEMENT_DOMAIN || topic_id || body``. Signing the exact body bytes avoids any
canonicalisation question; the domain and topic keep a signature from being replayed as another
kind of message or into another cluster.

Verification (`AnnouncementVerifier.verify`), in this order, each failure a `Rejected(reason)`:
1. "malformed": not a SignedAnnouncement / body does not decode (bounded sizes).
2. "bad_signature": not signed by the key named in `addr.endpoint_id`.
3. "own": our own announcement coming back (ignored, not an attack).
4. "future": timestamp more than `max_clock_skew_ms` ahead of our wall clock.
5. "stale": timestamp older than `max_age_ms`.
6. "hijack": the node id is bound to another endpoint key — by the Raft membership
   (`bound_keys`, authoritative) or, failing that, by the first accepted announcement for it.
7. "replayed": not newer than the last accepted announcement of that node.
Accepted announcements then go to `aspen.peers.PeerMap.update(node_id, addr, "gossip")`, which
refuses rebinding once more (`apply_to_peer_map`); its refusal is also counted as "hijack".
Every rejection is counted in `rejections` (reason -> count) for the adapter's metrics.

Timing (`Announcer`): at once when we get our first neighbor (swarm-wide), a one-hop
announcement to neighbors whenever a new neighbor comes up, then swarm-wide every
`interval_ms` (10 s, as the Rust Aspen and DESIGN.md say). When an announcement from a node id
we had not heard of is accepted (`on_new_peer`), the next swarm-wide one is moved forward (at
most once per `reply_min_interval_ms`), so a newcomer learns the existing members at once.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Annotated

import msgspec

from aspen.addr import EndpointAddr, EndpointAddrWire
from aspen.errors import ConfigError, UsageError
from aspen.identity import SIGNATURE_SIZE, EndpointId, SecretKey
from aspen.peers import PeerMap

from aspen_gossip.messages import SCOPE_NEIGHBORS, SCOPE_SWARM

ANNOUNCE_INTERVAL_MS = 10_000  # DESIGN.md and the Rust Aspen: every 10 s
# A node that hears a node id for the first time announces itself swarm-wide again, so the
# newcomer learns every member at once instead of one interval later (issue 6: all peer maps
# full within 2 s), but at most this often: during a mass start each node re-announces at most
# twice a second. guess: revisit for clusters of thousands.
ANNOUNCE_REPLY_MIN_INTERVAL_MS = 500
# guess: NTP-synced hosts agree within milliseconds; an unsynced laptop drifts seconds. One
# announce interval of slack in the future direction.
MAX_CLOCK_SKEW_MS = 10_000
# guess: gossip delivers within a second or two; an announcement older than six intervals has
# been superseded many times and is more likely a replay than news.
MAX_ANNOUNCEMENT_AGE_MS = 60_000
MAX_TRACKED_NODES = 1024  # = aspen.peers.MAX_PEERS: one replay/binding record per known node
MAX_ANNOUNCEMENT_BODY_SIZE = 3 * 1024  # fits a 4 KiB gossip frame with signature and headers
MAX_NODE_ID = 2**63 - 1  # Raft node ids: u64 in the Rust Aspen; msgspec bounds stop at int64
ANNOUNCEMENT_DOMAIN = b"aspen announcement v1\x00"

REASON_MALFORMED = "malformed"
REASON_BAD_SIGNATURE = "bad_signature"
REASON_OWN = "own"
REASON_FUTURE = "future"
REASON_STALE = "stale"
REASON_HIJACK = "hijack"
REASON_REPLAYED = "replayed"


class AnnouncementBody(msgspec.Struct, frozen=True, array_like=True):
    node_id: Annotated[int, msgspec.Meta(ge=0, le=MAX_NODE_ID)]
    addr: EndpointAddrWire
    timestamp_unix_ms: Annotated[int, msgspec.Meta(ge=0)]


class SignedAnnouncement(msgspec.Struct, frozen=True, array_like=True, tag=1):
    body: Annotated[bytes, msgspec.Meta(max_length=MAX_ANNOUNCEMENT_BODY_SIZE)]
    signature: Annotated[bytes, msgspec.Meta(min_length=SIGNATURE_SIZE, max_length=SIGNATURE_SIZE)]


_ENCODER = msgspec.msgpack.Encoder()
_SIGNED_DECODER = msgspec.msgpack.Decoder(SignedAnnouncement)
_BODY_DECODER = msgspec.msgpack.Decoder(AnnouncementBody)


def _signed_bytes(topic_id: bytes, body: bytes) -> bytes:
    return ANNOUNCEMENT_DOMAIN + topic_id + body


def sign_announcement(key: SecretKey, topic_id: bytes, node_id: int, addr: EndpointAddr,
                      timestamp_unix_ms: int) -> bytes:
    """The gossip content announcing `node_id` at `addr`, signed by `key` (addr's own key)."""
    if addr.endpoint_id != key.public():
        raise UsageError("an announcement must be signed by the key of the endpoint it announces")
    body = _ENCODER.encode(AnnouncementBody(node_id, addr.to_wire(), timestamp_unix_ms))
    if len(body) > MAX_ANNOUNCEMENT_BODY_SIZE:
        raise UsageError(f"announcement body is {len(body)} bytes, at most {MAX_ANNOUNCEMENT_BODY_SIZE}")
    return _ENCODER.encode(SignedAnnouncement(body, key.sign(_signed_bytes(topic_id, body))))


class Accepted(msgspec.Struct, frozen=True):
    node_id: int
    addr: EndpointAddr
    timestamp_unix_ms: int


class Rejected(msgspec.Struct, frozen=True):
    reason: str
    node_id: int | None = None


Verdict = Accepted | Rejected


class AnnouncementVerifier:
    """Checks announcements of one topic. Pure: the caller passes the wall clock in."""

    def __init__(self, topic_id: bytes, *, own_node_id: int | None = None,
                 max_clock_skew_ms: int = MAX_CLOCK_SKEW_MS, max_age_ms: int = MAX_ANNOUNCEMENT_AGE_MS,
                 max_tracked_nodes: int = MAX_TRACKED_NODES) -> None:
        if max_clock_skew_ms < 0 or max_age_ms <= 0 or max_tracked_nodes <= 0:
            raise ConfigError("announcement limits must be positive")
        self.topic_id = topic_id
        self.own_node_id = own_node_id
        self.max_clock_skew_ms = max_clock_skew_ms
        self.max_age_ms = max_age_ms
        self.max_tracked_nodes = max_tracked_nodes
        # node id -> (endpoint key, last accepted timestamp); LRU-bounded
        self._known: OrderedDict[int, tuple[EndpointId, int]] = OrderedDict()
        self.rejections: Counter[str] = Counter()
        self.accepted = 0

    def _reject(self, reason: str, node_id: int | None = None) -> Rejected:
        self.rejections[reason] += 1
        return Rejected(reason, node_id)

    def verify(self, data: bytes, now_unix_ms: int, *,
               bound_keys: Mapping[int, EndpointId] | None = None) -> Verdict:
        """Check one received announcement; `bound_keys` = node id -> key from the Raft membership."""
        try:
            signed = _SIGNED_DECODER.decode(data)
            body = _BODY_DECODER.decode(signed.body)
            addr = EndpointAddr.from_wire(body.addr)
        except (msgspec.DecodeError, ValueError):  # ValidationError is a DecodeError
            return self._reject(REASON_MALFORMED)
        key = addr.endpoint_id
        if not key.verify(_signed_bytes(self.topic_id, signed.body), signed.signature):
            return self._reject(REASON_BAD_SIGNATURE, body.node_id)
        node_id = body.node_id
        if node_id == self.own_node_id:
            return self._reject(REASON_OWN, node_id)
        ts = body.timestamp_unix_ms
        if ts - now_unix_ms > self.max_clock_skew_ms:
            return self._reject(REASON_FUTURE, node_id)
        if now_unix_ms - ts > self.max_age_ms:
            return self._reject(REASON_STALE, node_id)
        known = self._known.get(node_id)
        bound = bound_keys.get(node_id) if bound_keys is not None else None
        if bound is None and known is not None:
            bound = known[0]
        if bound is not None and bound != key:
            return self._reject(REASON_HIJACK, node_id)
        if known is not None and known[0] == key and ts <= known[1]:
            return self._reject(REASON_REPLAYED, node_id)
        self._known[node_id] = (key, ts)
        self._known.move_to_end(node_id)
        while len(self._known) > self.max_tracked_nodes:
            self._known.popitem(last=False)  # oldest first; the age bound still stops old replays
        self.accepted += 1
        return Accepted(node_id, addr, ts)

    def apply_to_peer_map(self, verdict: Verdict, peer_map: PeerMap) -> Verdict:
        """Record an accepted announcement in the peer map (source "gossip"); a refused rebinding
        becomes Rejected("hijack"). Rejections pass through unchanged."""
        if isinstance(verdict, Rejected):
            return verdict
        if not peer_map.update(verdict.node_id, verdict.addr, "gossip"):
            return self._reject(REASON_HIJACK, verdict.node_id)
        return verdict


class Announcer:
    """When to announce. The adapter calls `on_neighbor_up/down` with the neighbor count after
    the change, then `poll(now_ms)` (also at `next_deadline_ms()`); `poll` returns SCOPE_SWARM,
    SCOPE_NEIGHBORS or None, and the adapter broadcasts a freshly signed announcement with it."""

    def __init__(self, interval_ms: int = ANNOUNCE_INTERVAL_MS, *,
                 reply_min_interval_ms: int = ANNOUNCE_REPLY_MIN_INTERVAL_MS) -> None:
        if interval_ms <= 0:
            raise ConfigError(f"announce_interval_ms must be > 0, got {interval_ms}",
                              key="announce_interval_ms", value=interval_ms)
        if reply_min_interval_ms < 0:
            raise ConfigError(f"reply_min_interval_ms must be >= 0, got {reply_min_interval_ms}",
                              key="reply_min_interval_ms", value=reply_min_interval_ms)
        self.interval_ms = interval_ms
        self.reply_min_interval_ms = reply_min_interval_ms
        self._next_swarm_ms: int | None = None  # None while we have no neighbor
        self._last_swarm_ms: int | None = None
        self._neighbor_due = False

    def on_neighbor_up(self, now_ms: int, neighbor_count: int) -> None:
        if self._next_swarm_ms is None:
            self._next_swarm_ms = now_ms  # just joined: tell everybody at once
        else:
            self._neighbor_due = True  # tell the new neighbor at once (one hop)

    def on_neighbor_down(self, now_ms: int, neighbor_count: int) -> None:
        if neighbor_count == 0:
            self._next_swarm_ms = None  # announce again, at once, when we are back
            self._neighbor_due = False

    def on_new_peer(self, now_ms: int) -> None:
        """An announcement of a node id we had not heard of was accepted: announce ourselves
        swarm-wide soon (now, or `reply_min_interval_ms` after our last swarm-wide one)."""
        if self._next_swarm_ms is None:
            return  # no neighbor: we announce when we get one anyway
        earliest_ms = now_ms if self._last_swarm_ms is None else self._last_swarm_ms + self.reply_min_interval_ms
        self._next_swarm_ms = min(self._next_swarm_ms, max(now_ms, earliest_ms))

    def poll(self, now_ms: int) -> int | None:
        if self._next_swarm_ms is not None and now_ms >= self._next_swarm_ms:
            self._next_swarm_ms = now_ms + self.interval_ms
            self._last_swarm_ms = now_ms
            self._neighbor_due = False  # the swarm-wide one reaches the new neighbor too
            return SCOPE_SWARM
        if self._neighbor_due:
            self._neighbor_due = False
            return SCOPE_NEIGHBORS
        return None

    def next_deadline_ms(self) -> int | None:
        return self._next_swarm_ms


__all__ = [
    "AnnouncementBody", "SignedAnnouncement", "sign_announcement", "AnnouncementVerifier", "Accepted",
    "Rejected", "Verdict", "Announcer", "ANNOUNCE_INTERVAL_MS", "ANNOUNCE_REPLY_MIN_INTERVAL_MS", "MAX_CLOCK_SKEW_MS",
    "MAX_ANNOUNCEMENT_AGE_MS", "REASON_MALFORMED", "REASON_BAD_SIGNATURE", "REASON_OWN", "REASON_FUTURE",
    "REASON_STALE", "REASON_HIJACK", "REASON_REPLAYED",
]
