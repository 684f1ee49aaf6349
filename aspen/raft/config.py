"""RaftConfig: the tunables of the sans-IO core, validated at construction.

Defaults follow the Rust Aspen (heartbeat 500 ms, election 1500-3000 ms) and openraft's
defaults where Aspen kept them (max_payload_entries = 300, snapshot every 5000 logs, keep 1000
trailing logs). `RaftCore.__init__` calls `validate()`, which raises ConfigError on nonsense
(etcd raft.go `Config.validate`).
"""

from __future__ import annotations

import msgspec

from aspen.errors import ConfigError
from aspen.raft.messages import MAX_ENTRIES_PER_APPEND, MAX_SNAPSHOT_CHUNK_SIZE
from aspen.units import MiB
from aspen.wire import MAX_RPC_MESSAGE_SIZE

# Room for everything in an AppendEntries but the entries (ids, terms, list header): generous.
APPEND_HEADROOM_SIZE = 64 * 1024
# Upper bound on AppendEntries in flight per follower (pipelining): etcd's MaxInflightMsgs
# default, 256. With max_append_size_bytes this bounds the bytes a leader has outstanding.
MAX_INFLIGHT_APPENDS = 256


class RaftConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Tunables of one Raft node. Times are milliseconds of the `now_ms` the caller passes."""

    node_id: int
    # Rust Aspen: heartbeat_interval 500 ms, election_timeout 1500..3000 ms (cluster/config.rs).
    heartbeat_interval_ms: int = 500
    election_timeout_min_ms: int = 1500
    election_timeout_max_ms: int = 3000
    # openraft max_payload_entries = 300.
    max_entries_per_append: int = 300
    # etcd's MaxSizePerMsg is typically 1 MiB; bounded by the wire limit below.
    max_append_size_bytes: int = 1 * MiB
    # etcd MaxInflightMsgs default (256) is for TCP streams; a smaller pipeline keeps a lossy
    # link's retransmit burst small (guess: revisit with the QUIC adapter).
    max_inflight_appends: int = 64
    # Bytes of committed entries handed to the state machine per Ready (etcd
    # MaxCommittedSizePerReady); guess: revisit.
    max_apply_size_bytes: int = 16 * MiB
    # openraft snapshot_policy LogsSinceLast(5000); 0 disables the policy (on-demand only).
    snapshot_interval_entries: int = 5000
    # openraft max_in_snapshot_log_to_keep = 1000: trailing entries kept behind a snapshot so
    # slightly lagging followers still get entries, not a snapshot.
    snapshot_keep_entries: int = 1000
    # Chunk size for InstallSnapshot; openraft's snapshot_max_chunk_size is 3 MiB; the hard
    # bound is MAX_SNAPSHOT_CHUNK_SIZE (10 MiB message minus headroom).
    snapshot_chunk_size_bytes: int = 3 * MiB
    # Rust Aspen LEARNER_LAG_THRESHOLD = 100 entries: a learner is promoted only when caught up.
    max_learner_lag_entries: int = 100
    check_quorum: bool = True
    pre_vote: bool = True
    # A commit index that advanced with no new entries to carry it waits this long for the next
    # append (or heartbeat) to carry it, instead of an empty AppendEntries of its own: under
    # load, or a sequential client, the next write's append follows within a few ms, which saves
    # a message and its response per follower per write (perf/kv_bench.py). Followers then
    # apply up to this much later; reads are unaffected (ReadIndex rounds carry the commit
    # index). 0 = tell followers at once. Never longer than the heartbeat interval.
    commit_notify_delay_ms: int = 20
    # While an append to a follower is unacknowledged, new entries that do not fill a whole
    # append (max_entries_per_append / max_append_size_bytes) wait for that acknowledgement and
    # go together, instead of one small append per Ready. Every message costs the I/O processes
    # far more than its bytes (Python QUIC, ~0.2 ms a datagram per side on perf/kv_bench.py's
    # box), so at c=16 this halved the leader's datagrams per write. A held tail waits one
    # follower round trip at most (or until a lost append is detected, as for any lost append);
    # full appends still pipeline up to max_inflight_appends. False = etcd's behaviour (each
    # Ready's entries go at once, pipelined).
    hold_partial_appends: bool = True

    def validate(self) -> None:
        """Raise ConfigError naming the first nonsensical field."""

        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"raft config {key}: {why}", key=key, value=getattr(self, key))

        if self.node_id <= 0:
            raise bad("node_id", "node ids start at 1 (0 means none)")
        if self.heartbeat_interval_ms <= 0:
            raise bad("heartbeat_interval_ms", "must be > 0")
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms:
            raise bad("election_timeout_min_ms", "must be > heartbeat_interval_ms")
        if self.election_timeout_max_ms <= self.election_timeout_min_ms:
            raise bad("election_timeout_max_ms", "must be > election_timeout_min_ms")
        if not 1 <= self.max_entries_per_append <= MAX_ENTRIES_PER_APPEND:
            raise bad("max_entries_per_append", f"must be in 1..{MAX_ENTRIES_PER_APPEND}")
        if not 1 <= self.max_append_size_bytes <= MAX_RPC_MESSAGE_SIZE - APPEND_HEADROOM_SIZE:
            raise bad("max_append_size_bytes", "must fit one RPC message (MAX_RPC_MESSAGE_SIZE)")
        if not 1 <= self.max_inflight_appends <= MAX_INFLIGHT_APPENDS:
            raise bad("max_inflight_appends", f"must be in 1..{MAX_INFLIGHT_APPENDS}")
        if self.max_apply_size_bytes < 1:
            raise bad("max_apply_size_bytes", "must be >= 1")
        if self.snapshot_interval_entries < 0:
            raise bad("snapshot_interval_entries", "must be >= 0 (0 = never by policy)")
        if self.snapshot_keep_entries < 0:
            raise bad("snapshot_keep_entries", "must be >= 0")
        if not 1 <= self.snapshot_chunk_size_bytes <= MAX_SNAPSHOT_CHUNK_SIZE:
            raise bad("snapshot_chunk_size_bytes", f"must be in 1..{MAX_SNAPSHOT_CHUNK_SIZE}")
        if self.commit_notify_delay_ms < 0:
            raise bad("commit_notify_delay_ms", "must be >= 0")
        if self.max_learner_lag_entries < 0:
            raise bad("max_learner_lag_entries", "must be >= 0")


__all__ = ["RaftConfig", "APPEND_HEADROOM_SIZE", "MAX_INFLIGHT_APPENDS"]
