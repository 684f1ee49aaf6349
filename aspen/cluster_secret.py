"""The cluster secret: what the cluster cookie is turned into, and how membership is proven.

Theory of operation
-------------------
The cluster cookie is a shared secret string. It is never sent, logged or put in a ticket. From
it we derive two values:

- ``topic_id = blake3(cookie)`` — the gossip topic, exactly as the Rust Aspen seeds compute it
  (aspen-rust-inventory.md §5). It is *public*: anyone who sees a ticket sees it, and it is only a
  rendezvous name. Knowing it gives no right to join.
- ``join_key = blake3.derive_key(JOIN_KEY_CONTEXT, cookie)`` — the membership key. It is what a
  ticket carries instead of the cookie; knowing it is what "being a member" means. It cannot be
  turned back into the cookie (blake3 is one-way), so a ticket never reveals the cookie, and the
  two values are independent (different derivations).

Membership proof (`membership_tag`): a keyed blake3 MAC of
``MEMBERSHIP_TAG_DOMAIN || purpose || topic_id || sender_id || receiver_id`` under the join key.

Threat model
------------
- Every connection is authenticated by the endpoint keys (QUIC/TLS, DESIGN.md "Identity"): the
  receiver *knows* which endpoint id sent a frame. The tag adds: "and that endpoint holds the join
  key". Binding the sender id means a tag cannot be reused by anyone else (they cannot speak as
  the sender); binding the receiver id means a tag handed to a non-member (say a wrong bootstrap
  address) cannot be replayed by it to a third node; binding the topic and the purpose keeps a
  gossip tag from serving as, say, a raft-rpc tag. The tag is sent inside the encrypted
  connection, so it is not observable on the network anyway.
- Outsiders (no join key): cannot enter any active view (Join/Neighbor/ShuffleReply carry the
  tag and are refused without it), so they receive no gossip and their frames are dropped; their
  announcements never reach a member.
- Insiders (hold the join key, or a ticket): trusted to be members. An insider can still not
  impersonate another endpoint (announcements are signed by the endpoint key, see
  aspen_gossip.announce) nor rebind a node id already bound to another key (aspen.peers).
- Revocation = change the cookie (new topic, new key) and hand out new tickets.

Raft-rpc can reuse `membership_tag(..., purpose=PURPOSE_RAFT_RPC)` with the same join key, so a
node that joined from a ticket can also speak raft-rpc.
"""

from __future__ import annotations

import hmac

import blake3

from aspen.errors import ConfigError

TOPIC_ID_SIZE = 32  # blake3 output; iroh-gossip TopicId is 32 bytes (iroh-protocols.md §6.2)
JOIN_KEY_SIZE = 32  # blake3 keyed mode needs exactly 32 bytes
MEMBERSHIP_TAG_SIZE = 32  # full blake3 output: no reason to truncate a 32-byte field
ENDPOINT_ID_SIZE = 32  # Ed25519 public key

# blake3 derive_key contexts must be hardcoded, globally unique and application specific
# (blake3 spec §6.2): "[application] [commit timestamp] [purpose]".
JOIN_KEY_CONTEXT = "aspen 2026-11-22 cluster join key v1"
MEMBERSHIP_TAG_DOMAIN = b"aspen membership tag v1\x00"
PURPOSE_GOSSIP = b"gossip"
PURPOSE_RAFT_RPC = b"raft-rpc"
MAX_COOKIE_SIZE = 1024  # guess: a cookie is a passphrase, not a document


def topic_id_from_cookie(cookie: str) -> bytes:
    """The gossip topic id: blake3 of the cookie's UTF-8 bytes (as the Rust Aspen does)."""
    return blake3.blake3(_cookie_bytes(cookie)).digest()


def join_key_from_cookie(cookie: str) -> bytes:
    """The membership key: blake3 derive_key(JOIN_KEY_CONTEXT, cookie). Never the cookie itself."""
    return blake3.blake3(_cookie_bytes(cookie), derive_key_context=JOIN_KEY_CONTEXT).digest()


def _cookie_bytes(cookie: str) -> bytes:
    raw = cookie.encode()
    if not raw:
        raise ConfigError("the cluster cookie must not be empty", key="cookie")
    if len(raw) > MAX_COOKIE_SIZE:
        raise ConfigError(f"the cluster cookie is {len(raw)} bytes, at most {MAX_COOKIE_SIZE}",
                          key="cookie")
    return raw


class ClusterSecret:
    """The topic id plus the join key; built from the cookie or from a ticket. Never logged."""

    __slots__ = ("topic_id", "_join_key")

    def __init__(self, topic_id: bytes, join_key: bytes) -> None:
        if len(topic_id) != TOPIC_ID_SIZE:
            raise ConfigError(f"a topic id is {TOPIC_ID_SIZE} bytes, got {len(topic_id)}", key="topic_id")
        if len(join_key) != JOIN_KEY_SIZE:
            raise ConfigError(f"a join key is {JOIN_KEY_SIZE} bytes, got {len(join_key)}", key="join_key")
        self.topic_id = bytes(topic_id)
        self._join_key = bytes(join_key)

    @classmethod
    def from_cookie(cls, cookie: str) -> ClusterSecret:
        return cls(topic_id_from_cookie(cookie), join_key_from_cookie(cookie))

    @property
    def join_key(self) -> bytes:
        """The raw join key (for tickets only; never log it)."""
        return self._join_key

    def membership_tag(self, sender: bytes, receiver: bytes, purpose: bytes = PURPOSE_GOSSIP) -> bytes:
        """The MAC proving `sender` holds the join key, for a frame it sends to `receiver`.

        `sender` and `receiver` are raw 32-byte endpoint ids.
        """
        if len(sender) != ENDPOINT_ID_SIZE or len(receiver) != ENDPOINT_ID_SIZE:
            raise ValueError("sender and receiver are 32-byte endpoint ids")
        hasher = blake3.blake3(key=self._join_key)
        hasher.update(MEMBERSHIP_TAG_DOMAIN)
        hasher.update(len(purpose).to_bytes(1, "big"))
        hasher.update(purpose)
        hasher.update(self.topic_id)
        hasher.update(sender)
        hasher.update(receiver)
        return hasher.digest()

    def verify_membership_tag(self, tag: bytes, sender: bytes, receiver: bytes,
                              purpose: bytes = PURPOSE_GOSSIP) -> bool:
        """True when `tag` is `membership_tag(sender, receiver, purpose)` (constant-time compare)."""
        if len(tag) != MEMBERSHIP_TAG_SIZE:
            return False
        return hmac.compare_digest(tag, self.membership_tag(sender, receiver, purpose))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ClusterSecret) and other.topic_id == self.topic_id
                and hmac.compare_digest(other._join_key, self._join_key))

    def __hash__(self) -> int:
        return hash(self.topic_id)

    def __repr__(self) -> str:
        return f"ClusterSecret(topic={self.topic_id.hex()[:10]}, join_key=<hidden>)"


__all__ = [
    "ClusterSecret",
    "topic_id_from_cookie",
    "join_key_from_cookie",
    "TOPIC_ID_SIZE",
    "JOIN_KEY_SIZE",
    "MEMBERSHIP_TAG_SIZE",
    "JOIN_KEY_CONTEXT",
    "PURPOSE_GOSSIP",
    "PURPOSE_RAFT_RPC",
]
