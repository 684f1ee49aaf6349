"""Run `python -m aspen.quic.testserver` in its own process and talk to it from the test.

Every wait is bounded; `QuicServerProcess.stop()` (also on context exit) closes stdin, then
SIGTERM, then SIGKILL — the server exits by itself if the test process dies (stdin closes).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from aspen.addr import EndpointAddr, SocketAddr
from aspen.identity import EndpointId, SecretKey
from aspen.quic import Endpoint

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0  # Python start-up on a loaded, shared 2-core machine
STOP_TIMEOUT_S = 5.0
ECHO_ALPN = "aspen-echo/1"
SINK_ALPN = "aspen-test-sink/1"
STATS_ALPN = "aspen-test-stats/1"

T = TypeVar("T")


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASPEN_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "plugins")])
    return env


class QuicServerProcess:
    """One testserver process. `addr` is its EndpointAddr on 127.0.0.1."""

    def __init__(self, key: SecretKey, *, port: int = 0, extra_args: list[str] | None = None) -> None:
        self.key = key
        self.requested_port = port
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> QuicServerProcess:
        cmd = [sys.executable, "-m", "aspen.quic.testserver", "--secret-key", self.key.hex(),
               "--port", str(self.requested_port), *self.extra_args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=server_env(), cwd=REPO)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                break
            if self.proc.poll() is not None:
                break
        if not line:
            err = self.stop()
            raise RuntimeError(f"testserver did not start: {err}")
        info = json.loads(line)
        assert info["endpoint_id"] == self.key.public().hex()
        self.port = int(info["port"])
        return self

    @property
    def addr(self) -> EndpointAddr:
        return EndpointAddr(self.key.public(), None, (SocketAddr("127.0.0.1", self.port),))

    def addr_as(self, endpoint_id: EndpointId) -> EndpointAddr:
        """This server's address, but claiming another key (to dial an 'impostor')."""
        return EndpointAddr(endpoint_id, None, (SocketAddr("127.0.0.1", self.port),))

    def kill(self) -> None:
        """SIGKILL (a crash: no CONNECTION_CLOSE is sent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> str:
        """Stop the process; returns its stderr (for failure messages)."""
        proc = self.proc
        if proc is None:
            return ""
        if proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_TIMEOUT_S)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.proc = None
        return err

    def __enter__(self) -> QuicServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_client(**kwargs: Any) -> Endpoint:
    return Endpoint(SecretKey.generate(), registry=CollectorRegistry(), bind_host="::", **kwargs)


def run(main: Callable[[], Awaitable[T]], *, timeout_s: float = 30.0) -> T:
    """Run an async test body on a fresh event loop, bounded by `timeout_s`."""
    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout_s)
    return asyncio.run(bounded())


async def server_stats(client: Endpoint, server: QuicServerProcess) -> dict[str, float]:
    reply = await client.rpc(server.addr, STATS_ALPN, b"stats", timeout_ms=5_000)
    data: dict[str, float] = json.loads(reply)
    return data
