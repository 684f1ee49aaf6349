"""Gossip configuration: HyParView, Plumtree and limits. Defaults are the named constants below.

Every default says where it came from. iroh-gossip's numbers are in iroh-protocols.md §6.3/§6.4
(themselves from the HyParView paper, Leitão et al. 2007, and the Plumtree paper, Leitão et al.
2007, or marked "wild guess" there).
"""

from __future__ import annotations

import msgspec

from aspen.errors import ConfigError
from aspen.units import KiB

# --- HyParView ------------------------------------------------------------------------------
ACTIVE_VIEW_CAPACITY = 5  # HyParView paper p.9 (log10(10,000) + 1); iroh-gossip default
PASSIVE_VIEW_CAPACITY = 30  # HyParView paper p.9; iroh-gossip default
ACTIVE_RANDOM_WALK_LENGTH = 6  # ARWL, HyParView paper p.9; iroh-gossip default
PASSIVE_RANDOM_WALK_LENGTH = 3  # PRWL, HyParView paper p.9; iroh-gossip default
SHUFFLE_RANDOM_WALK_LENGTH = 6  # iroh-gossip default
SHUFFLE_ACTIVE_VIEW_COUNT = 3  # ka, HyParView paper p.9; iroh-gossip default
SHUFFLE_PASSIVE_VIEW_COUNT = 4  # kp, HyParView paper p.9; iroh-gossip default
SHUFFLE_INTERVAL_MS = 60_000  # iroh-gossip: "wild guess"
# Per shuffle tick, the chance that a node with a full active view swaps a neighbor for a passive
# peer (high priority). Breaks closed cliques (see hyparview._do_shuffle); guess: each member of a
# 6-node island tries on 10% of its ticks, so an island lasts ~100 s at the default interval.
ACTIVE_REFRESH_PROBABILITY = 0.1
# iroh-gossip uses 500 ms ("wild guess"); its users report joins that time out over relays
# (iroh-gossip #90, iroh-protocols.md §8.11): a relayed QUIC dial alone can take longer. 2 s.
NEIGHBOR_REQUEST_TIMEOUT_MS = 2_000
# How long a Join to a bootstrap peer may go unanswered before we report it as failed. guess:
# a dial plus a round trip over a relay, with margin.
JOIN_TIMEOUT_MS = 5_000

# --- Plumtree -------------------------------------------------------------------------------
# IHave received -> Graft. iroh-gossip uses 80 ms. Measured in aspen_gossip.sim (1,000 nodes,
# random senders, per-link latency 10-50 ms, 1% loss, optimisation threshold 7): 80 ms -> RMR
# 0.66, 300 ms -> RMR 0.09, at equal delivery; with threshold 2: 150 ms -> 0.29, 300 ms -> 0.02,
# 500 ms -> 0.01 but LDH max 23 instead of 16. Over QUIC a "missing" eager payload is almost always late,
# not lost: a lost packet comes back after one PTO (RFC 9002 §6.2, >= RTT + 4 rttvar +
# max_ack_delay), and a graft sent before that only adds a duplicate and reshapes the tree.
GRAFT_TIMEOUT_1_MS = 300
# Graft sent -> try the next announcer. iroh-gossip uses 40 ms, less than one round trip at
# 10-50 ms per link: the second Graft then races the first, and the announcer farther from the
# source often wins, deepening our whole subtree. Measured (1,000 nodes, random senders, seeds
# 1-2): 40 ms -> LDH max 16 / 14; 150 ms -> 14 / 14. Over QUIC a Graft is not lost, so the next
# announcer is only needed when the first died or lost the payload: waiting longer costs little.
GRAFT_TIMEOUT_2_MS = 150
DISPATCH_TIMEOUT_MS = 5  # IHave batching window; iroh-gossip default
# Hops; Plumtree §3.8 now applies only to a sender that has not yet sent its Level frame: the
# anchor tree (aspen_gossip.tree) decides every other link. iroh-gossip uses 7. Measured before
# the anchor tree (1,000 nodes, random senders, graft timeout 300 ms, seed 1, 30 broadcasts):
# threshold 7 -> RMR 0.09, LDH mean 18.5 / max 24; 4 -> 0.06, 16.1 / 23; 3 -> 0.05, 14.3 / 20;
# 2 -> 0.02, 13.8 / 16; 1 -> 0.06, 15.5 / 20.
OPTIMIZATION_THRESHOLD = 2
MESSAGE_CACHE_RETENTION_MS = 30_000  # payloads kept for Graft replies; iroh-gossip default
MESSAGE_ID_RETENTION_MS = 90_000  # seen ids kept for dedup; iroh-gossip default
CACHE_EVICT_INTERVAL_MS = 1_000  # iroh-gossip default

# --- Limits ---------------------------------------------------------------------------------
MAX_MESSAGE_SIZE = 4 * KiB  # whole encoded Gossip frame; iroh-gossip DEFAULT_MAX_MESSAGE_SIZE
MIN_MESSAGE_SIZE = 512  # iroh-gossip's minimum
# Bounded caches (STYLE rule 12): oldest entries are dropped first, and counted.
# 90 s of ids at 100 broadcasts/s is 9,000; x7 for headroom. guess: revisit.
MAX_SEEN_IDS = 65_536
MAX_CACHED_MESSAGES = 4_096  # payloads kept for Grafts: 30 s at ~130/s. guess: revisit
MAX_CACHED_BYTES = 16 * 1024 * KiB  # 16 MiB of payloads at most. guess: revisit
MAX_MISSING_IDS = 4_096  # ids announced by IHave but not yet received. guess: revisit
MAX_ANNOUNCERS_PER_ID = 16  # IHave senders remembered per missing id (> active view). guess
MAX_LAZY_QUEUE_ENTRIES = 4_096  # IHave entries queued per peer before dispatch. guess: revisit
# Ids first delivered off the anchor tree and only announced (IHave) onwards, waiting for the
# tree's copy to push eagerly (plumtree._held). A few per broadcast at 1,000 nodes; an id whose
# tree copy never comes stays until dropped oldest-first, which only costs its subtree a Graft.
MAX_HELD_IDS = 1_024
MAX_BOOTSTRAP_PEERS = 16  # DESIGN.md: at most 16 ticket bootstrap peers


class GossipConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Tunables of one gossip topic. `validate()` is called by every core constructor."""

    active_view_capacity: int = ACTIVE_VIEW_CAPACITY
    passive_view_capacity: int = PASSIVE_VIEW_CAPACITY
    active_random_walk_length: int = ACTIVE_RANDOM_WALK_LENGTH
    passive_random_walk_length: int = PASSIVE_RANDOM_WALK_LENGTH
    shuffle_random_walk_length: int = SHUFFLE_RANDOM_WALK_LENGTH
    shuffle_active_view_count: int = SHUFFLE_ACTIVE_VIEW_COUNT
    shuffle_passive_view_count: int = SHUFFLE_PASSIVE_VIEW_COUNT
    shuffle_interval_ms: int = SHUFFLE_INTERVAL_MS
    active_refresh_probability: float = ACTIVE_REFRESH_PROBABILITY
    neighbor_request_timeout_ms: int = NEIGHBOR_REQUEST_TIMEOUT_MS
    join_timeout_ms: int = JOIN_TIMEOUT_MS
    graft_timeout_1_ms: int = GRAFT_TIMEOUT_1_MS
    graft_timeout_2_ms: int = GRAFT_TIMEOUT_2_MS
    dispatch_timeout_ms: int = DISPATCH_TIMEOUT_MS
    optimization_threshold: int = OPTIMIZATION_THRESHOLD
    message_cache_retention_ms: int = MESSAGE_CACHE_RETENTION_MS
    message_id_retention_ms: int = MESSAGE_ID_RETENTION_MS
    cache_evict_interval_ms: int = CACHE_EVICT_INTERVAL_MS
    max_message_size: int = MAX_MESSAGE_SIZE
    max_seen_ids: int = MAX_SEEN_IDS
    max_cached_messages: int = MAX_CACHED_MESSAGES
    max_cached_bytes: int = MAX_CACHED_BYTES
    max_missing_ids: int = MAX_MISSING_IDS
    max_lazy_queue_entries: int = MAX_LAZY_QUEUE_ENTRIES

    def validate(self) -> GossipConfig:
        """Raise ConfigError naming the first nonsensical field; return self."""
        positive = [
            "active_view_capacity", "passive_view_capacity", "shuffle_interval_ms",
            "neighbor_request_timeout_ms", "join_timeout_ms", "graft_timeout_1_ms",
            "graft_timeout_2_ms", "dispatch_timeout_ms", "optimization_threshold",
            "message_cache_retention_ms", "message_id_retention_ms", "cache_evict_interval_ms",
            "max_seen_ids", "max_cached_messages", "max_cached_bytes", "max_missing_ids",
            "max_lazy_queue_entries",
        ]
        for name in positive:
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"gossip.{name} must be > 0, got {value}", key=name, value=value)
        for name in ("active_random_walk_length", "passive_random_walk_length",
                     "shuffle_random_walk_length", "shuffle_active_view_count",
                     "shuffle_passive_view_count"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"gossip.{name} must be >= 0, got {value}", key=name, value=value)
        if not 0.0 <= self.active_refresh_probability <= 1.0:
            raise ConfigError("gossip.active_refresh_probability must be in [0, 1]",
                              key="active_refresh_probability", value=self.active_refresh_probability)
        if self.passive_random_walk_length > self.active_random_walk_length:
            raise ConfigError("gossip.passive_random_walk_length must be <= active_random_walk_length "
                              "(the walk passes PRWL on its way down from ARWL)",
                              key="passive_random_walk_length", value=self.passive_random_walk_length)
        if self.shuffle_active_view_count + self.shuffle_passive_view_count + 1 > 64:
            raise ConfigError("gossip shuffle sample exceeds MAX_SHUFFLE_NODES (64)",
                              key="shuffle_passive_view_count", value=self.shuffle_passive_view_count)
        if not MIN_MESSAGE_SIZE <= self.max_message_size <= 65_536:
            raise ConfigError(f"gossip.max_message_size must be in [{MIN_MESSAGE_SIZE}, 65536], "
                              f"got {self.max_message_size}", key="max_message_size",
                              value=self.max_message_size)
        if self.message_cache_retention_ms > self.message_id_retention_ms:
            raise ConfigError("gossip.message_cache_retention_ms must be <= message_id_retention_ms "
                              "(a cached payload whose id was forgotten would be re-delivered)",
                              key="message_cache_retention_ms", value=self.message_cache_retention_ms)
        return self


__all__ = ["GossipConfig"]
