"""The Rust Aspen's `aspen_*` Raft metric families, rendered from the worker's latest status.

The worker owns the Raft state; the I/O process asks it for a `RaftStatus` when `/metrics` is
scraped (`refresh`), and this collector renders that snapshot. Every family carries `node_id`,
as in the Rust Aspen (reference/aspen-rust-inventory.md §2). If the worker cannot answer, only
`aspen_node_info` is emitted: a scrape never blocks on, or fails with, a restarting worker.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from aspen import __version__
from aspen import worker_messages as wm

STATES = ("Leader", "Follower", "Candidate", "Learner")


class RaftMetricsCollector:
    """A prometheus_client collector over the last RaftStatus the node fetched."""

    def __init__(self, node_id: int, endpoint_id_hex: str) -> None:
        self._node_id = str(node_id)
        self._endpoint_id = endpoint_id_hex
        self.status: wm.RaftStatus | None = None

    def describe(self) -> list[Metric]:
        return []  # names are dynamic per scrape; nothing to pre-register

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=["node_id"])
        family.add_metric([self._node_id], value)
        return family

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("aspen_node_info", "node identity", labels=["node_id", "endpoint_id", "version"])
        info.add_metric([self._node_id, self._endpoint_id, __version__], 1)
        yield info
        s = self.status
        if s is None:
            return
        yield self._gauge("aspen_current_leader", "leader node id (0 = none known)", s.leader_id)
        yield self._gauge("aspen_current_term", "current Raft term", s.term)
        state = GaugeMetricFamily("aspen_state", "1 for this node's Raft state", labels=["node_id", "state"])
        for name in STATES:
            state.add_metric([self._node_id, name], 1 if s.role == name else 0)
        yield state
        yield self._gauge("aspen_last_log_index", "index of the last log entry", s.last_log_index)
        yield self._gauge("aspen_commit_index", "highest index known committed", s.commit_index)
        yield self._gauge("aspen_last_applied_index", "index applied to the state machine", s.applied_index)
        yield self._gauge("aspen_snapshot_index", "index of the latest snapshot", s.snapshot_index)
        yield self._gauge("aspen_apply_lag", "last_log_index - last_applied_index",
                          max(0, s.last_log_index - s.applied_index))
        if s.role == "Leader":
            lag = GaugeMetricFamily("aspen_replication_lag", "leader's last index - follower's matched index",
                                    labels=["node_id", "follower_id"])
            for follower, matched in sorted(s.replication.items()):
                if str(follower) != self._node_id:
                    lag.add_metric([self._node_id, str(follower)], max(0, s.last_log_index - matched))
            yield lag
        fsyncs = CounterMetricFamily("aspen_fsyncs", "durable syncs of the Raft log", labels=["node_id"])
        fsyncs.add_metric([self._node_id], s.fsyncs)
        yield fsyncs
        fsync_time = CounterMetricFamily("aspen_fsync_seconds", "time spent in Raft log syncs", labels=["node_id"])
        fsync_time.add_metric([self._node_id], s.fsync_seconds_total)
        yield fsync_time
        yield self._gauge("aspen_fsync_seconds_max", "slowest Raft log sync since the worker started",
                          s.fsync_seconds_max)


__all__ = ["RaftMetricsCollector"]
