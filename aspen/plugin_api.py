"""The types a plugin sees: what hooks receive (`NodeContext`) and what they return.

Hookimpls are synchronous and cheap (STYLE.md rule 25): they read config from their arguments and
return objects — a discovery source, a datagram transport, a protocol handler, a service — that
the host starts, supervises and stops. Those objects follow the Protocols below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from aspen.addr import EndpointAddr, SocketAddr
from aspen.identity import EndpointId, SecretKey

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from aspen.cluster_view import ClusterView
    from aspen.config import NodeConfig
    from aspen.peers import PeerMap
    from aspen.worker_messages import RaftSendBatch, ToWorker

PluginKind = Literal["discovery", "transport", "protocol", "service", "mixed"]
OptionType = Literal["str", "int", "float", "bool", "list"]
OptionValue = str | int | float | bool | list[str]


@dataclass(frozen=True)
class PluginInfo:
    """What `aspen plugins` shows for a plugin: its kind and a one-line description."""

    kind: PluginKind
    description: str


@dataclass(frozen=True)
class ConfigOption:
    """A config option a plugin adds. It is set as TOML `[plugin.NAME] key = ...`, environment
    `ASPEN_<NAME>_<KEY>` or flag `--<name>-<key>` (name and key with '_' as '-'), with the same
    precedence and error reporting as the core options."""

    key: str
    type: OptionType
    default: OptionValue
    help: str
    min_value: float | None = None
    max_value: float | None = None


@runtime_checkable
class Service(Protocol):
    """Anything the host starts after the endpoint is up and stops before it goes down."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class DiscoverySource(Service, Protocol):
    """Finds peers. Discovered peers are pushed into `NodeContext.peers` (a `PeerMap`)."""

    async def publish(self, addr: EndpointAddr) -> None:
        """Announce our own address (called whenever it changes)."""
        ...

    async def resolve(self, endpoint_id: EndpointId) -> EndpointAddr | None:
        """Look one endpoint up on demand; None when this source does not know it."""
        ...


TransportAddr = SocketAddr | str  # a direct UDP address, or e.g. a relay URL


class DatagramReceiver(Protocol):
    def __call__(self, data: bytes, source: TransportAddr) -> None: ...


@runtime_checkable
class DatagramTransport(Service, Protocol):
    """A datagram path (direct UDP, relay): the QUIC endpoint sends and receives through it."""

    def set_receiver(self, receiver: DatagramReceiver) -> None: ...

    def send(self, data: bytes, destination: TransportAddr) -> None: ...

    def local_addrs(self) -> list[SocketAddr]: ...


class PeerStream(Protocol):
    """One bidirectional stream on an authenticated connection."""

    async def read_frame(self, *, timeout_ms: int | None = None) -> bytes | None:
        """The next length-prefixed frame's body, or None at a clean end of stream."""
        ...

    async def write_frame(self, body: bytes, *, end_stream: bool = False,
                          timeout_ms: int | None = None) -> None:
        """Queue one frame; waits (up to `timeout_ms`) only while the stream's send backlog is
        full. Passing the timeout here, not via asyncio.wait_for, costs no task per frame."""
        ...

    async def finish(self) -> None:
        """End our sending side cleanly (FIN) without another frame; idempotent."""
        ...

    @property
    def is_at_eof(self) -> bool:
        """The peer ended its side and every frame has been read (a reply may carry our FIN)."""
        ...

    def reset(self, error_code: int = 0) -> None: ...

    def limit_frames(self, limit_bytes: int) -> None:
        """Refuse frames over `limit_bytes` on this stream from now on (a protocol whose messages
        are small says so, so an oversized frame is refused before it is buffered)."""
        ...


class PeerConnection(Protocol):
    """A connection whose remote key has been proven; handlers never see any other kind."""

    @property
    def remote_id(self) -> EndpointId: ...

    @property
    def alpn(self) -> str: ...

    async def accept_stream(self) -> PeerStream | None:
        """The next stream the peer opened, or None once the connection is closed."""
        ...

    async def open_stream(self, *, unidirectional: bool = False) -> PeerStream:
        """A new stream; a unidirectional one can only be written (by us) and read (by the peer)."""
        ...

    def close(self, error_code: int = 0, reason: str = "") -> None: ...


@runtime_checkable
class ProtocolHandler(Protocol):
    """Serves one ALPN: the router hands it every accepted, authenticated connection."""

    alpn: str

    async def handle_connection(self, conn: PeerConnection) -> None: ...


class EndpointLike(Protocol):
    """The parts of the node's QUIC endpoint a plugin may use (aspen.quic.Endpoint)."""

    async def connect(self, addr: EndpointAddr, alpn: str, *, timeout_ms: int | None = None) -> PeerConnection: ...

    async def rpc(self, addr: EndpointAddr, alpn: str, body: bytes, *, timeout_ms: int = ...) -> bytes: ...

    def endpoint_addr(self, host: str | None = None) -> EndpointAddr: ...


class WorkerLink(Protocol):
    """The parts of the Raft worker channel a plugin may use."""

    async def send(self, message: ToWorker) -> None:
        """Queue a message for the worker (waits for ring space; raises WorkerUnavailable)."""
        ...

    async def send_many(self, messages: list[ToWorker]) -> None:
        """Queue several messages in order, waking the worker at most once."""
        ...

    def add_raft_sink(self, sink: Callable[[RaftSendBatch], None]) -> None:
        """Receive every batch of outbound Raft messages the worker produces."""
        ...


@dataclass
class NodeContext:
    """What the host hands to plugin hooks. Plugins read from it; they never replace its fields."""

    config: NodeConfig
    secret_key: SecretKey
    node_id: int
    data_dir: Path
    peers: PeerMap
    metrics: CollectorRegistry
    plugin_options: dict[str, dict[str, OptionValue]] = field(default_factory=dict)
    # Set by the host before the hooks that need them run (see aspen/hookspecs.py for the order).
    cluster: ClusterView | None = None
    worker: WorkerLink | None = None
    endpoint: EndpointLike | None = None  # set after aspen_protocol_handlers, before services start
    # Per-node objects a plugin creates in one hook and returns from another (keyed by plugin).
    extensions: dict[str, object] = field(default_factory=dict)

    @property
    def endpoint_id(self) -> EndpointId:
        return self.secret_key.public()

    def options_for(self, plugin_name: str) -> dict[str, OptionValue]:
        """The effective values of `plugin_name`'s own options (defaults filled in)."""
        return self.plugin_options.get(plugin_name, {})


__all__ = [
    "PluginKind", "PluginInfo", "ConfigOption", "OptionType", "OptionValue", "Service",
    "DiscoverySource", "DatagramTransport", "DatagramReceiver", "TransportAddr", "PeerStream",
    "PeerConnection", "ProtocolHandler", "NodeContext", "EndpointLike", "WorkerLink",
]
