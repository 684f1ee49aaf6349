"""Aspen's QUIC endpoint vs raw aioquic: handshakes, 10 MiB transfers, small-RPC rates.

Both systems run the same way: a server process on this machine (uvloop) and the client in this
process (uvloop), over loopback, with the same QUIC settings (datagram size, flow-control
windows, idle timeout, Ed25519 certificate). The wire pattern is the same too: one stream per
call, a 4-byte length prefix + body each way, FIN after each side's frame.

  aspen   aspen.quic.Endpoint (identity checked both ways, pooled connection, framed streams)
          against `python -m aspen.quic.testserver` (echo + sink handlers)
  aspen-pmtu  the same with path-MTU probing on (DPLPMTUD from --datagram-size up to the
          route MTU, 65000 B on loopback); only the 10 MiB rows
  raw     aioquic.asyncio connect()/serve() with stream reader/writer, against this script's
          --serve-raw mode; no client certificate, no identity checks; it cannot probe (its
          STREAM frames break above 16383 bytes, see aspen/quic/connection.py)
  iroh    Rust iroh through its official Python bindings (`pip install 'aspen[bench]'`), client
          and server each in its own process inside a loopback-only network namespace
          (`unshare --net`, see "iroh" below); iroh's own transport settings (it negotiates
          its datagram size itself). Skipped with a note if unavailable.

Rows: handshake (fresh connection to a running server; ours also waits for HANDSHAKE_DONE,
since the server only sends it after checking our key, raw aioquic and iroh return once the
client sent its Finished), handshake + first 64-byte RPC on the fresh connection (the same
thing for every system: the server has accepted the dialer and answered), 10 MiB one-way + 8-byte ack, 10 MiB
echo, 64-byte RPCs/s at concurrency 1 and 32. Each is reported as wall time and as CPU time of
both processes (client + server, from /proc/PID/schedstat): on a shared, overloaded machine the
wall times mostly measure how much CPU the scheduler gave us, the CPU times what the work costs. Systems alternate bench by bench, round by round
(--repeat rounds), and each keeps its best round: the machine is shared, the best run is the
least disturbed one. Ratio = aspen / raw, and in the "vs iroh" rows aspen / iroh (for ms lower
is better, for MB/s and RPC/s higher is better). With iroh, a three-column table follows.

    .venv/bin/python perf/rpc_bench.py [--datagram-size 1452] [--repeat 3] [--json PATH]
                                       [--systems aspen,aspen-pmtu,raw,iroh] [--benches ...]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import select
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "plugins"))
from _report import Row, add_json_argument, emit  # noqa: E402

import uvloop  # noqa: E402
from aioquic.asyncio import QuicConnectionProtocol, connect, serve  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from aspen.addr import EndpointAddr, SocketAddr  # noqa: E402
from aspen.identity import EndpointId, SecretKey  # noqa: E402
from aspen.quic import Endpoint  # noqa: E402
from aspen.quic.endpoint import DEFAULT_CONNECTION_WINDOW_SIZE, DEFAULT_STREAM_WINDOW_SIZE  # noqa: E402
from aspen.quic.rpc import call as rpc_call  # noqa: E402
from aspen.quic.tls_identity import make_identity_certificate  # noqa: E402
from aspen.units import MiB  # noqa: E402

BIG_SIZE = 10 * MiB
SMALL_SIZE = 64
HANDSHAKES = 20  # per round; the row is the median of a round
SMALL_RPCS = {1: 300, 32: 1_280}
READY_TIMEOUT_S = 30.0
RPC_TIMEOUT_S = 30.0  # one call, even a 10 MiB one on a loaded machine
ECHO_ALPN = "aspen-echo/1"
SINK_ALPN = "aspen-test-sink/1"
RAW_ECHO_ALPN = "raw-echo"
RAW_SINK_ALPN = "raw-sink"
IROH_ECHO_ALPN = b"iroh-bench-echo"
IROH_SINK_ALPN = b"iroh-bench-sink"


def quic_settings(datagram_size: int) -> dict[str, object]:
    return dict(max_datagram_size=datagram_size, max_data=DEFAULT_CONNECTION_WINDOW_SIZE,
                max_stream_data=DEFAULT_STREAM_WINDOW_SIZE, idle_timeout=30.0)


# raw aioquic server -------------------------------------------------------------------------

async def raw_server(port: int, datagram_size: int) -> None:
    cert, key = make_identity_certificate(SecretKey.generate())
    config = QuicConfiguration(is_client=False, alpn_protocols=[RAW_ECHO_ALPN, RAW_SINK_ALPN],
                               certificate=cert, private_key=key, **quic_settings(datagram_size))  # type: ignore[arg-type]
    tasks: set[asyncio.Task[None]] = set()
    protocols: dict[int, QuicConnectionProtocol] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, alpn: str) -> None:
        size = int.from_bytes(await reader.readexactly(4), "big")
        body = await reader.readexactly(size)
        reply = body if alpn == RAW_ECHO_ALPN else size.to_bytes(8, "big")
        writer.write(len(reply).to_bytes(4, "big"))
        writer.write(reply)
        writer.write_eof()

    class Protocol(QuicConnectionProtocol):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self._stream_handler = self._on_stream  # type: ignore[assignment]

        def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            alpn = self._quic.tls.alpn_negotiated or ""
            task = asyncio.ensure_future(handle(reader, writer, alpn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await serve("::", port, configuration=config, create_protocol=Protocol)
    print(json.dumps({"port": server._transport.get_extra_info("sockname")[1]}), flush=True)  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    fd = sys.stdin.fileno()
    loop.add_reader(fd, lambda: stop.set() if not os.read(fd, 4096) else None)
    await stop.wait()
    server.close()


# server processes ---------------------------------------------------------------------------

class ServerProcess:
    def __init__(self, cmd: list[str]) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "plugins")])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=REPO)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"server did not start: {cmd}")
        self.info = json.loads(line)
        self.port = int(self.info["port"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


# clients --------------------------------------------------------------------------------------

class System:
    """What a benchmark row needs from a system under test."""

    name = ""

    async def handshake_s(self, *, first_rpc: bool = False) -> float:
        """Seconds until a fresh connection is usable — or, with `first_rpc`, until a 64-byte
        echo on it has come back (the same thing for every system, whatever connect() waits for)."""
        ...
    async def rpc(self, alpn_kind: str, body: bytes) -> bytes: ...
    async def close(self) -> None: ...

    async def reset(self) -> None:
        """Forget connections after a stalled call (the next call dials again)."""


class AspenSystem(System):
    name = "aspen"

    def __init__(self, server: ServerProcess, datagram_size: int, *, pmtu_probe: bool = False) -> None:
        self.addr = EndpointAddr(EndpointId.from_hex(server.info["endpoint_id"]), None,
                                 (SocketAddr("127.0.0.1", server.port),))
        self.endpoint = Endpoint(SecretKey.generate(), registry=CollectorRegistry(),
                                 max_datagram_size_bytes=datagram_size, pmtu_probe=pmtu_probe)
        if pmtu_probe:
            self.name = "aspen-pmtu"

    async def start(self) -> None:
        await self.endpoint.start()

    async def handshake_s(self, *, first_rpc: bool = False) -> float:
        start = time.perf_counter()
        conn = await self.endpoint.connect(self.addr, ECHO_ALPN)
        if first_rpc:
            await rpc_call(conn, bytes(SMALL_SIZE), timeout_ms=int(RPC_TIMEOUT_S * 1000))
        took = time.perf_counter() - start
        conn.close(0, "bench: next handshake")
        await asyncio.sleep(0.002)
        return took

    probed_size = 0  # the largest datagram size a connection reached (after PMTU probing)

    async def rpc(self, alpn_kind: str, body: bytes) -> bytes:
        reply = await self.endpoint.rpc(self.addr, ECHO_ALPN if alpn_kind == "echo" else SINK_ALPN,
                                        body, timeout_ms=int(RPC_TIMEOUT_S * 1000))
        for conn in self.endpoint._pool.connections():
            self.probed_size = max(self.probed_size, conn.quic.max_datagram_size)
        return reply

    async def close(self) -> None:
        await self.endpoint.stop()


class RawSystem(System):
    name = "raw"

    def __init__(self, server: ServerProcess, datagram_size: int) -> None:
        self.port = server.port
        self.datagram_size = datagram_size
        self._clients: dict[str, tuple[object, QuicConnectionProtocol]] = {}

    def _config(self, alpn: str) -> QuicConfiguration:
        return QuicConfiguration(is_client=True, alpn_protocols=[alpn], verify_mode=ssl.CERT_NONE,
                                 **quic_settings(self.datagram_size))  # type: ignore[arg-type]

    async def handshake_s(self, *, first_rpc: bool = False) -> float:
        start = time.perf_counter()
        async with connect("127.0.0.1", self.port, configuration=self._config(RAW_ECHO_ALPN)) as client:
            if first_rpc:
                await self._call(client, bytes(SMALL_SIZE))
            took = time.perf_counter() - start
            client.close()
        await asyncio.sleep(0.002)
        return took

    async def _client(self, alpn: str) -> QuicConnectionProtocol:
        if alpn not in self._clients:
            cm = connect("127.0.0.1", self.port, configuration=self._config(alpn))
            client = await cm.__aenter__()
            self._clients[alpn] = (cm, client)
        return self._clients[alpn][1]

    async def rpc(self, alpn_kind: str, body: bytes) -> bytes:
        client = await self._client(RAW_ECHO_ALPN if alpn_kind == "echo" else RAW_SINK_ALPN)
        return await self._call(client, body)

    async def _call(self, client: QuicConnectionProtocol, body: bytes) -> bytes:
        async with asyncio.timeout(RPC_TIMEOUT_S):
            reader, writer = await client.create_stream()
            writer.write(len(body).to_bytes(4, "big"))
            writer.write(body)
            writer.write_eof()
            size = int.from_bytes(await reader.readexactly(4), "big")
            return await reader.readexactly(size)

    async def close(self) -> None:
        for cm, _ in self._clients.values():
            await cm.__aexit__(None, None, None)  # type: ignore[attr-defined]
        self._clients.clear()

    async def reset(self) -> None:
        for _, client in self._clients.values():
            client.close()
        self._clients.clear()


# iroh (optional: pip install 'aspen[bench]') ------------------------------------------------
#
# The iroh package is the official Python binding (uniffi) of Rust iroh. Two things are set up so
# that its figures mean what ours mean:
#
# * No traffic leaves this machine. preset_minimal + RelayMode.disabled() turns off relays and
#   discovery, but iroh still probes for a UPnP/PCP port mapper (an SSDP M-SEARCH multicast to
#   239.255.255.250, seen with strace), which the binding cannot switch off. So the iroh client
#   and server run in their own network namespace (`unshare --net`) whose only interface is
#   loopback: there is no route for anything else. Without unshare (not root), no iroh column.
# * uniffi's generated `_UniffiRustBufferBuilder.write` copies bytes into Rust one byte per
#   Python loop iteration (~8.7 s for 10 MiB); `fix_iroh_byte_copy` replaces it with a memmove,
#   the fix the reference figure (~36 ms per 10 MiB) was measured with.


def fix_iroh_byte_copy() -> None:
    from iroh import iroh_ffi

    def write(self: Any, value: bytes) -> None:
        size = len(value)
        with self._reserve(size):
            address = ctypes.cast(self.rbuf.data, ctypes.c_void_p).value
            assert address is not None
            ctypes.memmove(address + self.rbuf.len, bytes(value), size)

    iroh_ffi._UniffiRustBufferBuilder.write = write


def iroh_options(alpns: list[bytes]) -> Any:
    import iroh
    return iroh.EndpointOptions(preset=iroh.preset_minimal(), bind_addr="127.0.0.1:0",
                                relay_mode=iroh.RelayMode.disabled(), alpns=alpns)


async def iroh_server() -> None:
    import iroh
    fix_iroh_byte_copy()
    endpoint = await iroh.Endpoint.bind(iroh_options([IROH_ECHO_ALPN, IROH_SINK_ALPN]))
    tasks: set[asyncio.Future[None]] = set()

    def spawn(coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def serve_stream(bi: Any, alpn: bytes) -> None:
        recv, send = bi.recv(), bi.send()
        size = int.from_bytes(await recv.read_exact(4), "big")
        body = await recv.read_exact(size)
        reply = body if alpn == IROH_ECHO_ALPN else size.to_bytes(8, "big")
        await send.write_all(len(reply).to_bytes(4, "big") + reply)
        await send.finish()

    async def serve_connection(incoming: Any) -> None:
        try:
            accepting = await incoming.accept()
            alpn = await accepting.alpn()
            conn = await accepting.connect()
            while True:
                spawn(serve_stream(await conn.accept_bi(), alpn))
        except iroh.IrohError:
            pass  # connection closed

    async def accept_loop() -> None:
        while (incoming := await endpoint.accept_next()) is not None:
            spawn(serve_connection(incoming))

    spawn(accept_loop())
    port = next(int(a.rsplit(":", 1)[1]) for a in endpoint.bound_sockets() if a.startswith("127."))
    print(json.dumps({"endpoint_id": endpoint.id().to_bytes().hex(), "port": port}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    fd = sys.stdin.fileno()
    loop.add_reader(fd, lambda: stop.set() if not os.read(fd, 4096) else None)
    await stop.wait()
    await endpoint.close()


class IrohSystem(System):
    """The iroh client, run inside the iroh runner's network namespace."""

    name = "iroh"

    def __init__(self, server: ServerProcess) -> None:
        import iroh
        self._iroh = iroh
        self.addr = iroh.EndpointAddr(iroh.EndpointId.from_bytes(bytes.fromhex(server.info["endpoint_id"])),
                                      None, [f"127.0.0.1:{server.port}"])
        self.endpoint: Any = None
        self._conns: dict[bytes, Any] = {}

    async def start(self) -> None:
        self.endpoint = await self._iroh.Endpoint.bind(iroh_options([]))

    async def handshake_s(self, *, first_rpc: bool = False) -> float:
        start = time.perf_counter()
        conn = await self.endpoint.connect(self.addr, IROH_ECHO_ALPN)
        if first_rpc:
            await self._call(conn, bytes(SMALL_SIZE))
        took = time.perf_counter() - start
        conn.close(0, b"bench: next handshake")
        await asyncio.sleep(0.002)
        return took

    async def rpc(self, alpn_kind: str, body: bytes) -> bytes:
        alpn = IROH_ECHO_ALPN if alpn_kind == "echo" else IROH_SINK_ALPN
        conn = self._conns.get(alpn)
        if conn is None:
            conn = self._conns[alpn] = await self.endpoint.connect(self.addr, alpn)
        return await self._call(conn, body)

    async def _call(self, conn: Any, body: bytes) -> bytes:
        async with asyncio.timeout(RPC_TIMEOUT_S):
            bi = await conn.open_bi()
            send, recv = bi.send(), bi.recv()
            await send.write_all(len(body).to_bytes(4, "big"))
            await send.write_all(body)
            await send.finish()
            size = int.from_bytes(await recv.read_exact(4), "big")
            reply: bytes = await recv.read_exact(size)
            return reply

    async def reset(self) -> None:
        for conn in self._conns.values():
            conn.close(0, b"bench: reset")
        self._conns.clear()

    async def close(self) -> None:
        await self.reset()
        if self.endpoint is not None:
            await self.endpoint.close()


async def iroh_runner() -> None:
    """Inside `unshare --net`: bring up loopback, start the iroh server, then run each bench the
    parent names on stdin (one JSON line each) and answer {"wall": s, "cpu": s} on stdout."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    fix_iroh_byte_copy()
    server = ServerProcess([sys.executable, str(Path(__file__).resolve()), "--serve-iroh"])
    system = IrohSystem(server)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await system.start()
        await system.rpc("echo", b"warm-up")
        print(json.dumps({"ready": True}), flush=True)
        while line := await reader.readline():
            bench_name = json.loads(line)["bench"]
            try:
                wall, cpu = await measure_once(system, server, bench_name)
                print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)
            except TimeoutError:
                await system.reset()
                print(json.dumps({"error": "timeout"}), flush=True)
    finally:
        await system.close()
        server.stop()


class IrohRunnerSystem(System):
    """The parent's handle on the iroh runner process (see iroh_runner)."""

    name = "iroh"

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "plugins")])
        self.proc = await asyncio.create_subprocess_exec(
            "unshare", "--net", "--", sys.executable, str(Path(__file__).resolve()), "--iroh-runner",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=REPO)
        reply = await self._reply(READY_TIMEOUT_S)
        if not reply.get("ready"):
            raise RuntimeError(f"iroh runner did not start: {reply}")

    async def _reply(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError("iroh runner exited")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def measure(self, bench_name: str) -> tuple[float, float]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"bench": bench_name}).encode() + b"\n")
        await self.proc.stdin.drain()
        reply = await self._reply(RPC_TIMEOUT_S * 2 + HANDSHAKES)
        if "error" in reply:
            raise TimeoutError(reply["error"])
        return float(reply["wall"]), float(reply["cpu"])

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def iroh_unavailable_reason() -> str | None:
    """Why there can be no iroh column, or None if there can."""
    try:
        import iroh  # noqa: F401
    except ImportError:
        return "the iroh package is not installed (pip install 'aspen[bench]')"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip not found: iroh needs a loopback-only network namespace"
    probe = subprocess.run(["unshare", "--net", "--", "true"], capture_output=True)
    if probe.returncode != 0:
        return "cannot create a network namespace (unshare --net needs root)"
    return None


# measurements -------------------------------------------------------------------------------

BENCHES = ("handshake", "first_rpc", "oneway", "echo", "rpc_c1", "rpc_c32")


def cpu_s(pid: int | str = "self") -> float:
    """CPU time a process has run, in seconds, at nanosecond resolution (/proc/PID/schedstat,
    first field; /proc/PID/stat counts 10 ms ticks)."""
    with open(f"/proc/{pid}/schedstat") as fh:
        return int(fh.read().split()[0]) / 1e9


async def measure_once(system: System, server: ServerProcess | None, bench: str) -> tuple[float, float]:
    """(wall seconds, client + server CPU seconds) per operation of `bench`.

    time.perf_counter, not loop.time(): uvloop's loop clock has millisecond resolution.
    """
    if isinstance(system, IrohRunnerSystem):
        return await system.measure(bench)  # measured the same way, inside the runner
    assert server is not None
    cpu_before = cpu_s() + cpu_s(server.proc.pid)
    if bench in ("handshake", "first_rpc"):
        first_rpc = bench == "first_rpc"
        took = sorted([await system.handshake_s(first_rpc=first_rpc) for _ in range(HANDSHAKES)])
        wall = took[len(took) // 2]  # median of a batch: handshakes are short and jittery
        ops = HANDSHAKES
    elif bench in ("oneway", "echo"):
        kind = "sink" if bench == "oneway" else "echo"
        body = bytes(BIG_SIZE)  # allocated outside the timed region
        start = time.perf_counter()
        reply = await system.rpc(kind, body)
        wall = time.perf_counter() - start
        assert (int.from_bytes(reply, "big") if kind == "sink" else len(reply)) == BIG_SIZE
        ops = 1
    else:
        concurrency = 1 if bench == "rpc_c1" else 32
        per_worker = SMALL_RPCS[concurrency] // concurrency
        small = bytes(SMALL_SIZE)

        async def worker() -> None:
            for _ in range(per_worker):
                await system.rpc("echo", small)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        ops = per_worker * concurrency
        wall = (time.perf_counter() - start) / ops
    cpu = (cpu_s() + cpu_s(server.proc.pid) - cpu_before) / ops
    return wall, cpu


async def bench(args: argparse.Namespace) -> tuple[list[Row], dict[str, dict[str, float]]]:
    """Start every system's server, then alternate systems bench by bench, round by round, so
    all see the same background load; keep each system's best round (wall and CPU apart).
    Returns the rows (aspen vs raw aioquic, then aspen vs iroh) and the best figures by system."""
    py = sys.executable
    pairs: list[tuple[System, ServerProcess | None]] = []
    try:
        for name in args.systems:
            if name in ("aspen", "aspen-pmtu"):
                probe = name == "aspen-pmtu"
                server = ServerProcess([py, "-m", "aspen.quic.testserver", "--uvloop",
                                        "--max-datagram-size", str(args.datagram_size)]
                                       + ([] if probe else ["--no-pmtu-probe"]))
                aspen = AspenSystem(server, args.datagram_size, pmtu_probe=probe)
                pairs.append((aspen, server))
                await aspen.start()
            elif name == "raw":
                server = ServerProcess([py, str(Path(__file__).resolve()), "--serve-raw",
                                        "--datagram-size", str(args.datagram_size)])
                pairs.append((RawSystem(server, args.datagram_size), server))
            elif name == "iroh":
                runner = IrohRunnerSystem()
                pairs.append((runner, None))
                await runner.start()  # warmed up inside
        for system, _ in pairs:
            if not isinstance(system, IrohRunnerSystem):
                await system.rpc("echo", b"warm-up")
        stalls: dict[str, int] = {}
        wall_best: dict[str, dict[str, float]] = {s.name: {} for s, _ in pairs}
        cpu_best: dict[str, dict[str, float]] = {s.name: {} for s, _ in pairs}
        for _ in range(args.repeat):
            for bench_name in args.benches:
                for system, server in pairs:
                    if system.name == "aspen-pmtu" and bench_name not in ("oneway", "echo"):
                        continue  # probing only changes the big transfers
                    try:
                        wall, cpu = await measure_once(system, server, bench_name)
                    except TimeoutError:
                        # Seen with raw aioquic: a 10 MiB transfer that never completes. Count
                        # it, drop that system's connections, keep benchmarking.
                        stalls[system.name] = stalls.get(system.name, 0) + 1
                        await system.reset()
                        continue
                    wall_best[system.name][bench_name] = min(wall, wall_best[system.name].get(bench_name, wall))
                    cpu_best[system.name][bench_name] = min(cpu, cpu_best[system.name].get(bench_name, cpu))
    finally:
        for system, server in pairs:
            await system.close()
            if server is not None:
                server.stop()
    for name, count in stalls.items():
        print(f"note: {name}: {count} call(s) did not finish within {RPC_TIMEOUT_S:.0f} s "
              "(timed out and skipped; connection re-dialed)", file=sys.stderr)
    mb = BIG_SIZE / 1e6
    probed_size = max((getattr(s, "probed_size", 0) for s, _ in pairs), default=0)
    ms = lambda v: 1000 * v  # noqa: E731
    us = lambda v: 1e6 * v  # noqa: E731
    per_s = lambda v: 1 / v  # noqa: E731
    mb_s = lambda v: mb / v  # noqa: E731
    label = f"PMTU-probed, {probed_size} B datagrams"
    # (name, unit, wall or cpu table, bench, transform, our system)
    specs: list[tuple[str, str, dict[str, dict[str, float]], str, Callable[[float], float], str]] = [
        ("QUIC handshake, median", "ms", wall_best, "handshake", ms, "aspen"),
        ("QUIC handshake, CPU both sides", "ms", cpu_best, "handshake", ms, "aspen"),
        ("handshake + first 64 B RPC, median", "ms", wall_best, "first_rpc", ms, "aspen"),
        ("handshake + first 64 B RPC, CPU", "ms", cpu_best, "first_rpc", ms, "aspen"),
        ("10 MiB one-way + 8 B ack", "ms", wall_best, "oneway", ms, "aspen"),
        ("10 MiB one-way + 8 B ack", "MB/s", wall_best, "oneway", mb_s, "aspen"),
        ("10 MiB one-way, CPU both sides", "ms", cpu_best, "oneway", ms, "aspen"),
        ("10 MiB echo", "ms", wall_best, "echo", ms, "aspen"),
        ("10 MiB echo, CPU both sides", "ms", cpu_best, "echo", ms, "aspen"),
        ("64 B RPC, concurrency 1", "RPC/s", wall_best, "rpc_c1", per_s, "aspen"),
        ("64 B RPC c1, CPU both sides", "us/RPC", cpu_best, "rpc_c1", us, "aspen"),
        ("64 B RPC, concurrency 32", "RPC/s", wall_best, "rpc_c32", per_s, "aspen"),
        ("64 B RPC c32, CPU both sides", "us/RPC", cpu_best, "rpc_c32", us, "aspen"),
        (f"10 MiB one-way, {label}", "ms", wall_best, "oneway", ms, "aspen-pmtu"),
        (f"10 MiB one-way, {label}", "MB/s", wall_best, "oneway", mb_s, "aspen-pmtu"),
        (f"10 MiB one-way, {label}, CPU", "ms", cpu_best, "oneway", ms, "aspen-pmtu"),
        (f"10 MiB echo, {label}", "ms", wall_best, "echo", ms, "aspen-pmtu"),
        (f"10 MiB echo, {label}, CPU", "ms", cpu_best, "echo", ms, "aspen-pmtu"),
    ]
    rows: list[Row] = []
    iroh_rows: list[Row] = []
    figures: dict[str, dict[str, float]] = {}
    for name, unit, table, bench_name, transform, ours in specs:
        if bench_name not in table.get(ours, {}):
            continue  # system or bench not run
        value = transform(table[ours][bench_name])
        others = {other: transform(table[other][bench_name])
                  for other in ("raw", "iroh") if bench_name in table.get(other, {})}
        figures[f"{name} [{unit}]"] = {"aspen": value, **others}
        rows.append(Row(name, unit, value, others.get("raw"), "raw aioquic"))
        if "iroh" in others:
            iroh_rows.append(Row(f"{name} vs iroh", unit, value, others["iroh"], "iroh"))
    return rows + iroh_rows, figures


def print_three_columns(figures: dict[str, dict[str, float]]) -> None:
    """aspen | raw aioquic | iroh side by side (ratios are aspen / other, as in the rows)."""
    head = ["row", "aspen", "raw aioquic", "iroh", "aspen/raw", "aspen/iroh"]
    table = []
    for name, by_system in figures.items():
        cells = [_fmt3(by_system.get(s)) for s in ("aspen", "raw", "iroh")]
        ratios = [f"{by_system['aspen'] / by_system[s]:.2f}x" if by_system.get(s) else "-"
                  for s in ("raw", "iroh")]
        table.append([name, *cells, *ratios])
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(head)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def _fmt3(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}" if value >= 10 else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datagram-size", type=int, default=1452,
                        help="max UDP payload for both systems (default 1452)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--systems", default="aspen,aspen-pmtu,raw,iroh",
                        help="comma-separated: aspen (fixed datagram size), aspen-pmtu (path MTU "
                             "probed from --datagram-size up), raw, iroh (skipped with a note "
                             "when the iroh package or a network namespace is unavailable)")
    parser.add_argument("--benches", default=",".join(BENCHES),
                        help=f"comma-separated subset of {','.join(BENCHES)} (default: all)")
    parser.add_argument("--serve-raw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--serve-iroh", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--iroh-runner", action="store_true", help=argparse.SUPPRESS)
    add_json_argument(parser)
    args = parser.parse_args()
    if args.serve_raw:
        uvloop.run(raw_server(args.port, args.datagram_size))
        return 0
    if args.serve_iroh:
        uvloop.run(iroh_server())
        return 0
    if args.iroh_runner:
        uvloop.run(iroh_runner())
        return 0
    args.systems = [s for s in args.systems.split(",") if s]
    args.benches = [b for b in args.benches.split(",") if b]
    unknown = set(args.benches) - set(BENCHES)
    if unknown:
        parser.error(f"unknown bench(es): {', '.join(sorted(unknown))}")
    if "iroh" in args.systems:
        reason = iroh_unavailable_reason()
        if reason is not None:
            print(f"note: no iroh column: {reason}", file=sys.stderr)
            args.systems.remove("iroh")
    started = time.monotonic()
    rows, figures = uvloop.run(bench(args))
    load = os.getloadavg()
    emit(f"QUIC RPC: aspen endpoint vs raw aioquic (datagrams {args.datagram_size} B, "
         f"best of {args.repeat}, {time.monotonic() - started:.0f} s, load average "
         f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", rows, args.json)
    if "iroh" in args.systems:
        print_three_columns(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
