"""Raft for Aspen: a sans-IO consensus core, its storage seam, wire messages and state machine.

`types.py` (values and the `RaftStorage` protocol), `messages.py` (wire Structs), `config.py`
(RaftConfig), `core.py` + `leader.py` (the sans-IO state machine, etcd's Ready/Advance),
`ready.py` (its outputs and the worker's contract), `memory_storage.py` (an in-memory storage
with synced/unsynced semantics for simulation). The durable storage, the KV state machine and
the worker live in their own modules.
"""

from __future__ import annotations

from aspen.raft.config import RaftConfig
from aspen.raft.core import RaftCore
from aspen.raft.memory_storage import MemoryStorage
from aspen.raft.ready import ProposalDropped, ReadState, Ready, Role, SoftState
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
    "MemoryStorage",
    "ProposalDropped",
    "RaftConfig",
    "RaftCore",
    "RaftStorage",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
]
