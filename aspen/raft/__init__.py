"""Raft for Aspen: a sans-IO consensus core, its storage seam, wire messages and state machine.

`types.py` (values and the `RaftStorage` protocol), `messages.py` (wire Structs), `core.py`
(the sans-IO state machine, etcd's Ready/Advance), `memory_storage.py` (an in-memory storage
with synced/unsynced semantics for simulation). The durable storage, the KV state machine and
the worker live in their own modules.
"""

from __future__ import annotations

from aspen.raft.types import (
    NO_NODE,
    Entry,
    EntryKind,
    HardState,
    LogCompacted,
    LogUnavailable,
    Membership,
    RaftStorage,
    Snapshot,
    SnapshotMeta,
)

__all__ = [
    "NO_NODE",
    "Entry",
    "EntryKind",
    "HardState",
    "LogCompacted",
    "LogUnavailable",
    "Membership",
    "RaftStorage",
    "Snapshot",
    "SnapshotMeta",
]
