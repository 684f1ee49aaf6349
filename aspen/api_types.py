"""JSON shapes of the HTTP control plane, as typed msgspec Structs.

They accept the Rust Aspen's documented bodies verbatim (reference/aspen-rust-inventory.md §2),
so its curl commands work against our node, and add our own fields at the end with defaults.
Decoding is strict about types (a wrong shape is a 422 naming the field) and tolerant of unknown
fields (the Rust docs' `iroh_endpoint` must not break a request).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from aspen.raft.kv import MAX_KEY_SIZE, MAX_SCAN_LIMIT, MAX_SETMULTI_PAIRS, MAX_VALUE_SIZE

MAX_INIT_MEMBERS = 100  # = aspen.raft.types.MAX_MEMBERS: one request can name every member

NodeId = Annotated[int, msgspec.Meta(ge=1)]  # u64; msgspec rejects larger JSON ints itself
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_SIZE)]
Prefix = Annotated[str, msgspec.Meta(max_length=MAX_KEY_SIZE)]
Value = Annotated[str, msgspec.Meta(max_length=MAX_VALUE_SIZE)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]


class ClusterNode(msgspec.Struct):
    """A node in /init and /add-learner. `addr` is informational (the Rust Aspen stores the HTTP
    address there). The node is reached through `endpoint_addr` (our addition: EndpointAddr JSON),
    else `raft_addr` if it holds an endpoint id or EndpointAddr JSON, else the peer map."""

    id: NodeId
    addr: Text = ""
    raft_addr: Text | None = None
    endpoint_addr: dict[str, Any] | None = None


class InitRequest(msgspec.Struct):
    initial_members: Annotated[list[ClusterNode], msgspec.Meta(max_length=MAX_INIT_MEMBERS)]


class AddLearnerRequest(msgspec.Struct):
    learner: ClusterNode


class ChangeMembershipRequest(msgspec.Struct):
    members: Annotated[list[NodeId], msgspec.Meta(max_length=MAX_INIT_MEMBERS)]


class AddPeerRequest(msgspec.Struct):
    node_id: NodeId
    endpoint_addr: dict[str, Any]


class PromoteLearnerRequest(msgspec.Struct):
    learner_id: NodeId
    replace_node: NodeId | None = None
    force: bool = False


class SetBody(msgspec.Struct):
    key: Key
    value: Value


class SetMultiBody(msgspec.Struct):
    pairs: Annotated[list[tuple[Key, Value]], msgspec.Meta(max_length=MAX_SETMULTI_PAIRS)]


class DeleteBody(msgspec.Struct):
    key: Key


class CompareAndSwapBody(msgspec.Struct):
    """`expected` null = the key must be absent; `new` null = delete on success."""

    key: Key
    expected: Value | None = None
    new: Value | None = None


class WriteCommandBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Exactly one of the variants, as in the Rust Aspen's serde enum `{"Set": {...}}`."""

    Set: SetBody | None = None
    SetMulti: SetMultiBody | None = None
    Delete: DeleteBody | None = None
    CompareAndSwap: CompareAndSwapBody | None = None


class WriteRequest(msgspec.Struct):
    command: WriteCommandBody


Consistency = Literal["linearizable", "stale"]


class ReadRequest(msgspec.Struct):
    key: Key
    consistency: Consistency = "linearizable"


class ScanRequest(msgspec.Struct):
    prefix: Prefix = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_SCAN_LIMIT)] = 100
    after: Prefix | None = None
    consistency: Consistency = "linearizable"


__all__ = [
    "ClusterNode", "InitRequest", "AddLearnerRequest", "ChangeMembershipRequest", "AddPeerRequest",
    "PromoteLearnerRequest", "SetBody", "SetMultiBody", "DeleteBody", "CompareAndSwapBody",
    "WriteCommandBody", "WriteRequest", "ReadRequest", "ScanRequest", "Consistency",
]
