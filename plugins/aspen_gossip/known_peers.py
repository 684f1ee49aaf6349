"""Known gossip peers, kept in the data dir so a restarted node finds the swarm again by itself.

Why: a node that bootstrapped the cluster (the ticket's first node) has no bootstrap peers of its
own and, before the cluster is initialised, nothing in Raft that names the others. Restarted, it
would sit alone in the topic while the others, who only miss one neighbor, never look for it. So
the discovery writes the addresses of its neighbors and of the peers it learned to
`KNOWN_PEERS_FILE` and joins through them after a restart (next to the ticket's peers).

Format: a JSON list of `EndpointAddrWire` (msgspec), at most `MAX_KNOWN_PEERS` entries and
`MAX_KNOWN_PEERS_FILE_BYTES` bytes; written to a temporary file and renamed, so a crash leaves the
old list or the new one. A missing, oversized or undecodable file means "no known peers" (logged).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import msgspec

from aspen.addr import EndpointAddr, EndpointAddrWire

from aspen_gossip.config import MAX_BOOTSTRAP_PEERS

logger = logging.getLogger(__name__)

KNOWN_PEERS_FILE = "gossip-known-peers.json"
# One join takes at most MAX_BOOTSTRAP_PEERS peers; keeping more would only be ignored.
MAX_KNOWN_PEERS = MAX_BOOTSTRAP_PEERS
# 16 addresses of a few hundred bytes each; anything much larger is not ours.
MAX_KNOWN_PEERS_FILE_BYTES = 64 * 1024

_KnownPeers = Annotated[list[EndpointAddrWire], msgspec.Meta(max_length=MAX_KNOWN_PEERS)]
_DECODER = msgspec.json.Decoder(_KnownPeers)


def load_known_peers(path: Path) -> list[EndpointAddr]:
    """The peers saved at `path`, or [] if there is no usable file."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KNOWN_PEERS_FILE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return []
    if len(data) > MAX_KNOWN_PEERS_FILE_BYTES:
        logger.warning("ignoring %s: larger than %d bytes", path, MAX_KNOWN_PEERS_FILE_BYTES)
        return []
    try:
        return [EndpointAddr.from_wire(w) for w in _DECODER.decode(data)]
    except (msgspec.DecodeError, ValueError) as exc:
        logger.warning("ignoring %s: %s", path, exc)
        return []


def save_known_peers(path: Path, addrs: list[EndpointAddr]) -> None:
    """Replace the list at `path` with the first MAX_KNOWN_PEERS of `addrs` (atomic rename)."""
    body = msgspec.json.encode([a.to_wire() for a in addrs[:MAX_KNOWN_PEERS]])
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(body)
        os.replace(tmp, path)
    except OSError as exc:  # a full or read-only disk must not stop gossip
        logger.warning("cannot write %s: %s", path, exc)


__all__ = ["KNOWN_PEERS_FILE", "MAX_KNOWN_PEERS", "MAX_KNOWN_PEERS_FILE_BYTES", "load_known_peers", "save_known_peers"]
