"""Parse static peer specs: `NODE_ID@ENDPOINT_ID` or `NODE_ID@{EndpointAddr JSON}`.

These are the two forms the Rust Aspen's `--peers` accepts (its doc comment's
`1@<id>:<relay>:<addrs>` form was never parsed, so neither do we). The endpoint id may be 64 hex
characters or z-base-32.
"""

from __future__ import annotations

import json

from aspen.addr import EndpointAddr
from aspen.identity import EndpointId

MAX_NODE_ID = 2**64 - 1


def parse_peer_spec(text: str) -> tuple[int, EndpointAddr]:
    """(node id, address) from a peer spec; ValueError saying what is wrong otherwise."""
    node_part, sep, addr_part = text.strip().partition("@")
    if not sep:
        raise ValueError(f"peer {text!r} must look like NODE_ID@ENDPOINT_ID or NODE_ID@{{json}}")
    if not node_part.isdigit() or not 1 <= int(node_part) <= MAX_NODE_ID:
        raise ValueError(f"peer {text!r}: node id {node_part!r} must be an integer 1..2^64-1")
    node_id = int(node_part)
    if addr_part.startswith("{"):
        try:
            obj = json.loads(addr_part)
        except json.JSONDecodeError as exc:
            raise ValueError(f"peer {node_id}: bad EndpointAddr JSON: {exc.msg}") from None
        return node_id, EndpointAddr.from_json(obj)
    try:
        return node_id, EndpointAddr(EndpointId.parse(addr_part))
    except ValueError as exc:
        raise ValueError(f"peer {node_id}: bad endpoint id: {exc}") from None


def format_peer_spec(node_id: int, addr: EndpointAddr) -> str:
    """The spec that `parse_peer_spec` reads back: JSON form when there are addresses."""
    if addr.direct_addrs or addr.relay_url:
        return f"{node_id}@{json.dumps(addr.to_json(), separators=(',', ':'))}"
    return f"{node_id}@{addr.endpoint_id.hex()}"


__all__ = ["parse_peer_spec", "format_peer_spec"]
