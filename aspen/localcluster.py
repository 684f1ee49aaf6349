"""A cluster of real `aspen run` processes on loopback: for the demo, the smoke test, the
multi-process tests and the benchmarks.

Nodes get OS-chosen ports (HTTP and QUIC) and their own data dirs under one base dir; they talk
to each other exactly as users' nodes do (HTTP control plane, QUIC raft-rpc). Every wait is
bounded. `stop()` (or the context manager) leaves no process behind.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aspen.child_process import python_module_command

NODE_READY_TIMEOUT_S = 60.0  # two Python processes starting on a loaded 2-core machine
HTTP_TIMEOUT_S = 15.0  # above the node's CLIENT_REQUEST_TIMEOUT_MS (10 s)
LEADER_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
# Faster than the Rust defaults (500 / 1500-3000 ms) so that failover in a demo or a test takes
# well under a second; still far above loopback round trips.
FAST_TIMING_ARGS = ("--heartbeat-interval-ms", "100", "--election-timeout-min-ms", "600",
                    "--election-timeout-max-ms", "1200")


class ClusterError(Exception):
    pass


def http(base: str, method: str, path: str, body: Any = None, *, timeout_s: float = HTTP_TIMEOUT_S,
         token: str | None = None) -> tuple[int, Any]:
    """One HTTP call; returns (status, parsed JSON or text). Connection errors give status 0."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def read_ready_line(proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any] | None:
    """The JSON `ready` line `aspen run` prints on stdout, or None if the process exits or the
    time runs out first."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            return None
        ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.2))
        if ready:
            buf += os.read(proc.stdout.fileno(), 65536)
    return dict(json.loads(buf.split(b"\n", 1)[0]))


@dataclass
class LocalNode:
    node_id: int
    data_dir: Path
    extra_args: tuple[str, ...] = ()
    gossip: bool = False  # opt-in: nodes run with --disable-gossip unless asked
    proc: subprocess.Popen[bytes] | None = None
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.ready['http_addr']}"

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / f"node-{self.node_id}.log", "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASPEN_")}
        self.proc = subprocess.Popen(
            [*python_module_command("aspen"), "run", "--node-id", str(self.node_id), "--data-dir", str(self.data_dir),
             "--http-addr", "127.0.0.1:0", "--bind-host", "127.0.0.1", "--disable-mdns",
             *(() if self.gossip else ("--disable-gossip",)), *self.extra_args],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env)
        log.close()

    def wait_ready(self, timeout_s: float = NODE_READY_TIMEOUT_S) -> dict[str, Any]:
        assert self.proc is not None
        ready = read_ready_line(self.proc, timeout_s)
        if ready is None:
            raise ClusterError(f"node {self.node_id} did not start (exit {self.proc.poll()}); "
                               f"see {self.data_dir.parent}/node-{self.node_id}.log")
        self.ready = ready
        return self.ready

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return http(self.url, method, path, body, **kwargs)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def worker_pid(self) -> int | None:
        status, body = self.call("GET", "/health")
        return body.get("worker", {}).get("pid") if status in (200, 503) and isinstance(body, dict) else None


class LocalCluster:
    """N nodes under `base_dir`, ids 1..N. Use as a context manager."""

    def __init__(self, base_dir: Path, size: int, *, extra_args: tuple[str, ...] = FAST_TIMING_ARGS,
                 gossip: bool = False) -> None:
        """`gossip=True` starts nodes with gossip discovery on (default off, as before); pass a
        ticket per node with `add_node(..., extra_args=(..., "--ticket", T))`."""
        self.base_dir = base_dir
        self.gossip = gossip
        self.nodes: dict[int, LocalNode] = {
            i: LocalNode(i, base_dir / f"node-{i}", extra_args, gossip) for i in range(1, size + 1)}

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_node(self, node_id: int, extra_args: tuple[str, ...] = FAST_TIMING_ARGS,
                 gossip: bool | None = None) -> LocalNode:
        node = self.nodes[node_id] = LocalNode(node_id, self.base_dir / f"node-{node_id}", extra_args,
                                               self.gossip if gossip is None else gossip)
        return node

    def start(self, ids: list[int] | None = None) -> None:
        chosen = [self.nodes[i] for i in (ids or list(self.nodes))]
        for node in chosen:
            node.start()
        for node in chosen:
            node.wait_ready()

    def restart(self, node_id: int) -> LocalNode:
        node = self.nodes[node_id]
        node.kill(signal.SIGTERM)
        node.start()
        node.wait_ready()
        return node

    def stop(self) -> None:
        for node in self.nodes.values():
            node.kill(signal.SIGTERM)

    def introduce(self, to: int, ids: list[int]) -> None:
        """`POST /add-peer` on node `to` for each of `ids` (the Rust Aspen's manual peer exchange)."""
        for i in ids:
            if i == to:
                continue
            status, body = self.nodes[to].call("POST", "/add-peer", {
                "node_id": i, "endpoint_addr": self.nodes[i].ready["endpoint_addr"]})
            if status != 200:
                raise ClusterError(f"add-peer {i} on node {to}: {status} {body}")

    def form(self, voters: list[int]) -> dict[str, Any]:
        """Initialise the cluster with `voters` through the first of them; wait for a leader."""
        first = voters[0]
        self.introduce(first, voters)
        status, body = self.nodes[first].call("POST", "/init", {"initial_members": [
            {"id": i, "addr": self.nodes[i].ready["http_addr"]} for i in voters]})
        if status != 200:
            raise ClusterError(f"init: {status} {body}")
        self.wait_leader(voters)
        return dict(body)

    def leader(self, among: list[int] | None = None) -> int | None:
        """The leader as the running nodes report it, if they agree on one."""
        seen = set()
        for i in among or list(self.nodes):
            node = self.nodes[i]
            if not node.is_running:
                continue
            status, body = node.call("GET", "/raft-metrics", timeout_s=2)
            if status == 200 and body.get("current_leader"):
                seen.add(body["current_leader"])
        if len(seen) == 1:
            leader = seen.pop()
            return leader if self.nodes.get(leader) is not None and self.nodes[leader].is_running else None
        return None

    def wait_leader(self, among: list[int] | None = None, timeout_s: float = LEADER_TIMEOUT_S,
                    not_node: int | None = None) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.leader(among)
            if leader is not None and leader != not_node:
                return leader
            time.sleep(0.05)
        raise ClusterError(f"no leader within {timeout_s} s")

    def metric(self, node_id: int, name: str, labels: str = "") -> float:
        """One sample from node `node_id`'s /metrics (`labels` as written there), 0.0 if absent."""
        status, text = self.nodes[node_id].call("GET", "/metrics")
        if status != 200:
            raise ClusterError(f"/metrics on node {node_id}: {status}")
        prefix = f"{name}{{{labels}}}" if labels else name
        for line in str(text).splitlines():
            if line.startswith(prefix + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def write(self, node_id: int, key: str, value: str) -> tuple[int, Any]:
        return self.nodes[node_id].call("POST", "/write", {"command": {"Set": {"key": key, "value": value}}})

    def read(self, node_id: int, key: str, consistency: str = "linearizable") -> tuple[int, Any]:
        return self.nodes[node_id].call("POST", "/read", {"key": key, "consistency": consistency})

    def status_rows(self) -> list[dict[str, Any]]:
        """One row per node for a status table (node, role, term, commit, applied, peers)."""
        rows = []
        for i, node in sorted(self.nodes.items()):
            row: dict[str, Any] = {"node": i, "role": "down", "term": "-", "commit": "-", "applied": "-",
                                   "leader": "-", "peers": "-", "voters": "-", "learners": "-"}
            if node.is_running:
                status, body = node.call("GET", "/raft-metrics", timeout_s=2)
                if status == 200:
                    row.update(role=body["state"], term=body["current_term"], commit=body["commit_index"],
                               applied=(body.get("last_applied") or {}).get("index", 0),
                               leader=body.get("current_leader") or "-",
                               voters=",".join(map(str, body.get("voters", []))) or "-",
                               learners=",".join(map(str, body.get("learners", []))) or "-")
                else:
                    row["role"] = "unhealthy"
                status, body = node.call("GET", "/peers", timeout_s=2)
                if status == 200:
                    row["peers"] = ",".join(str(p["node_id"]) for p in body["peers"]) or "-"
            rows.append(row)
        return rows


def format_status(rows: list[dict[str, Any]]) -> str:
    headers = ["node", "role", "term", "commit", "applied", "leader", "peers", "voters", "learners"]
    table = [[str(r[h]) for h in headers] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table]
    return "\n".join(lines)


__all__ = ["LocalCluster", "LocalNode", "ClusterError", "http", "read_ready_line", "format_status",
           "FAST_TIMING_ARGS"]
