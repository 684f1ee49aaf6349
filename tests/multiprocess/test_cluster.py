"""A real cluster of `aspen run` processes, used as its users use it: HTTP, kill -9, restarts."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from aspen.identity import SecretKey
from aspen.localcluster import LocalCluster
from aspen.smoke import run_smoke

pytestmark = pytest.mark.multiprocess

WRITER_THREADS = 3
MAX_WRITES_PER_THREAD = 2000  # bound on the background writers; they stop long before this


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("c3"), 3) as c:
        c.start()
        c.form([1, 2, 3])
        yield c


@pytest.fixture
def fresh3(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path, 3) as c:
        c.start()
        c.form([1, 2, 3])
        yield c


def test_smoke_flow(tmp_path: Path) -> None:
    figures = run_smoke(tmp_path, log=lambda line: None)
    assert figures["failover_s"] <= 3.0


def test_write_through_any_node_reads_linearizably_everywhere(cluster3: LocalCluster) -> None:
    for writer in (1, 2, 3):
        status, body = cluster3.write(writer, f"from-{writer}", f"v{writer}")
        assert status == 200, body
        for reader in (1, 2, 3):
            status, body = cluster3.read(reader, f"from-{writer}")
            assert (status, body) == (200, {"key": f"from-{writer}", "value": f"v{writer}"})


class Writers:
    """Background clients writing unique keys through random live nodes, recording acks."""

    def __init__(self, c: LocalCluster, avoid: set[int]) -> None:
        self.c = c
        self.avoid = avoid
        self.acked: dict[str, str] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(WRITER_THREADS)]

    def _run(self, thread_id: int) -> None:
        rng = random.Random(thread_id)
        for n in range(MAX_WRITES_PER_THREAD):
            if self.stop.is_set():
                return
            node = rng.choice([i for i in self.c.nodes if i not in self.avoid])
            key, value = f"t{thread_id}-{n}", f"value-{n}"
            status, _ = self.c.write(node, key, value)
            if status == 200:
                with self.lock:
                    self.acked[key] = value

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


@pytest.mark.parametrize("victim_role", ["leader", "follower"])
def test_kill9_of_any_single_node_loses_no_acknowledged_write(fresh3: LocalCluster, victim_role: str) -> None:
    c = fresh3
    leader = c.wait_leader()
    victim = leader if victim_role == "leader" else next(i for i in (1, 2, 3) if i != leader)
    avoid: set[int] = set()
    with Writers(c, avoid) as writers:
        time.sleep(1.0)
        avoid.add(victim)  # clients stop choosing it before it dies (they would only see errors)
        c.nodes[victim].kill(signal.SIGKILL)
        time.sleep(1.5)
        c.nodes[victim].start()
        c.nodes[victim].wait_ready()
        avoid.discard(victim)
        time.sleep(1.0)
    assert len(writers.acked) > 20, "writers made no progress"
    c.wait_leader()
    for node in (1, 2, 3):
        for key, value in writers.acked.items():
            status, body = c.read(node, key)
            assert (status, body) == (200, {"key": key, "value": value}), f"node {node} lost {key}"


def test_whole_cluster_killed_and_restarted_keeps_acknowledged_writes(fresh3: LocalCluster) -> None:
    c = fresh3
    acked = {}
    for n in range(30):
        status, _ = c.write(1 + n % 3, f"k{n}", f"v{n}")
        assert status == 200
        acked[f"k{n}"] = f"v{n}"
    for node in c.nodes.values():
        node.kill(signal.SIGKILL)
    c.start()
    c.wait_leader()
    for node in (1, 2, 3):
        for key, value in acked.items():
            assert c.read(node, key) == (200, {"key": key, "value": value})


def test_follower_worker_killed_alone_is_restarted_and_catches_up(fresh3: LocalCluster) -> None:
    c = fresh3
    leader = c.wait_leader()
    follower = next(i for i in (1, 2, 3) if i != leader)
    old_pid = c.nodes[follower].worker_pid()
    assert old_pid is not None
    import os

    os.kill(old_pid, signal.SIGKILL)
    for n in range(10):  # the cluster keeps a quorum meanwhile
        assert c.write(leader, f"during-{n}", str(n))[0] == 200

    def recovered() -> bool:
        status, body = c.nodes[follower].call("GET", "/health")
        return status == 200 and body["worker"]["incarnation"] == 2

    deadline = time.monotonic() + 30
    while not recovered():
        assert time.monotonic() < deadline, "worker was not restarted"
        time.sleep(0.1)
    assert c.metric(follower, "aspen_worker_restarts_total") == 1.0
    deadline = time.monotonic() + 30
    while c.read(follower, "during-9", "stale") != (200, {"key": "during-9", "value": "9"}):
        assert time.monotonic() < deadline, "restarted worker did not catch up"
        time.sleep(0.1)
    assert c.read(follower, "during-0") == (200, {"key": "during-0", "value": "0"})


def test_non_member_endpoint_is_refused(cluster3: LocalCluster) -> None:
    """A stranger with a valid QUIC identity but no membership cannot inject Raft messages."""
    from aspen.addr import EndpointAddr
    from aspen.quic import ConnectionLostError, Endpoint
    from aspen.raft.messages import AppendEntries, encode_message
    from aspen_raft.frames import RAFT_ALPN, RaftFrame, encode_frame

    c = cluster3
    leader = c.wait_leader()
    target = next(i for i in (1, 2, 3) if i != leader)
    _, before = c.nodes[target].call("GET", "/raft-metrics")
    refused_before = c.metric(target, "aspen_raft_rpc_refused_total", 'reason="not_member"')
    addr = EndpointAddr.from_json(c.nodes[target].ready["endpoint_addr"])
    forged = AppendEntries(leader, target, before["current_term"] + 5, 0, 0, [], 0)

    async def attack() -> None:
        stranger = Endpoint(SecretKey.generate(), registry=CollectorRegistry(), bind_host="127.0.0.1")
        await stranger.start()
        try:
            conn = await stranger.connect(addr, RAFT_ALPN)
            try:
                stream = await conn.open_stream()
                await stream.write_frame(encode_frame(RaftFrame(leader, [encode_message(forged)])))
                await asyncio.sleep(0.5)
            except ConnectionLostError as exc:  # the node closed on us: exactly what we want
                assert "not a member" in str(exc)
        finally:
            await stranger.stop()

    asyncio.run(attack())
    time.sleep(0.5)
    _, after = c.nodes[target].call("GET", "/raft-metrics")
    assert after["current_term"] == before["current_term"]
    assert c.metric(target, "aspen_raft_rpc_refused_total", 'reason="not_member"') == refused_before + 1
    assert c.write(target, "still", "fine")[0] == 200


def test_bad_http_inputs_get_documented_errors_and_change_nothing(cluster3: LocalCluster) -> None:
    import urllib.request

    c = cluster3
    node = c.nodes[2]
    _, before = node.call("GET", "/raft-metrics")
    cases = [
        (b'{"command": {"Set": {"key": "x", "value": "y"}}}', "text/plain", 415),
        (b'{"command": ', "application/json", 400),
        (b'{"command": {"Set": {"key": "x"}}}', "application/json", 422),
        (b'{"command": {"Nope": {}}}', "application/json", 422),
    ]
    for body, ctype, expected in cases:
        req = urllib.request.Request(node.url + "/write", data=body, method="POST", headers={"Content-Type": ctype})
        try:
            urllib.request.urlopen(req, timeout=10)
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
            assert "error" in __import__("json").loads(exc.read())
        assert status == expected, (body, status)
    assert c.read(2, "x") == (404, {"error": "key 'x' not found"})
    _, after = node.call("GET", "/raft-metrics")
    assert after["last_log_index"] == before["last_log_index"]
    status, body = node.call("POST", "/init", {"initial_members": [{"id": 2, "addr": ""}]})
    assert status == 400 and "already" in body["error"]


def test_metrics_carry_the_rust_aspen_families(cluster3: LocalCluster) -> None:
    c = cluster3
    leader = c.wait_leader()
    assert c.write(leader, "metrics", "x")[0] == 200
    status, text = c.nodes[leader].call("GET", "/metrics")
    assert status == 200
    lines = str(text).splitlines()

    def value(prefix: str) -> float:
        found = [line for line in lines if line.startswith(prefix + " ")]
        assert found, f"{prefix} missing from /metrics"
        return float(found[0].rsplit(" ", 1)[1])

    n = f'node_id="{leader}"'
    assert value(f"aspen_current_leader{{{n}}}") == leader
    assert value(f'aspen_state{{{n},state="Leader"}}') == 1.0
    assert value(f"aspen_last_applied_index{{{n}}}") >= 2
    assert value(f"aspen_apply_lag{{{n}}}") >= 0
    assert value(f"aspen_fsyncs_total{{{n}}}") >= 1
    followers = [i for i in (1, 2, 3) if i != leader]
    for f in followers:
        assert value(f'aspen_replication_lag{{follower_id="{f}",{n}}}') >= 0
    assert value("aspen_write_latency_seconds_count") >= 1
    assert any(line.startswith("aspen_node_info{") for line in lines)


def test_cli_client_against_any_node(cluster3: LocalCluster) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ASPEN_")}

    def aspen(*args: str, node: int = 1) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aspen", *args, "--node", cluster3.nodes[node].url],
                              capture_output=True, text=True, env=env, timeout=60)

    assert aspen("kv", "put", "cli/a", "1", node=2).stdout.strip() == "OK"
    assert aspen("kv", "put", "cli/b", "2", node=3).returncode == 0
    assert aspen("kv", "get", "cli/a", node=3).stdout.strip() == "1"
    assert aspen("kv", "scan", "cli/").stdout.splitlines() == ["cli/a\t1", "cli/b\t2"]
    failed = aspen("kv", "cas", "cli/a", "--expected", "9", "--new", "x")
    assert failed.returncode == 1 and "FAILED" in failed.stdout
    assert aspen("kv", "cas", "cli/a", "--expected", "1", "--new", "x").stdout.strip() == "OK"
    assert aspen("kv", "delete", "cli/b", node=2).returncode == 0
    missing = aspen("kv", "get", "cli/b")
    assert missing.returncode == 1 and "not found" in missing.stderr
    status = json.loads(aspen("cluster", "status", "--json", node=2).stdout)
    assert status["voters"] == [1, 2, 3] and status["current_leader"] in (1, 2, 3)
    human = aspen("cluster", "status", node=3).stdout
    assert "voters [1, 2, 3]" in human


def test_lagging_follower_catches_up_by_snapshot_after_compaction(tmp_path: Path) -> None:
    """The leader compacts its log while a follower is down; the follower comes back and gets a
    snapshot over raft-rpc (large lane), restores it in its worker, and serves every key."""
    from aspen.localcluster import FAST_TIMING_ARGS

    args = (*FAST_TIMING_ARGS, "--snapshot-every-entries", "20", "--snapshot-keep-entries", "5")
    with LocalCluster(tmp_path, 3, extra_args=args) as c:
        c.start()
        c.form([1, 2, 3])
        leader = c.wait_leader()
        follower = next(i for i in (1, 2, 3) if i != leader)
        c.nodes[follower].kill(signal.SIGKILL)
        for n in range(120):
            assert c.write(leader, f"snap-{n}", str(n))[0] == 200
        status, metrics = c.nodes[leader].call("GET", "/raft-metrics")
        assert metrics["snapshot"]["index"] >= 100  # the log the follower lacks is gone
        c.nodes[follower].start()
        c.nodes[follower].wait_ready()
        deadline = time.monotonic() + 60
        while c.read(follower, "snap-119", "stale") != (200, {"key": "snap-119", "value": "119"}):
            assert time.monotonic() < deadline, "follower did not catch up"
            time.sleep(0.1)
        for n in range(0, 120, 7):
            assert c.read(follower, f"snap-{n}", "stale") == (200, {"key": f"snap-{n}", "value": str(n)})
        _, fm = c.nodes[follower].call("GET", "/raft-metrics")
        assert fm["snapshot"] is not None and fm["snapshot"]["index"] >= 100


def test_static_peers_flag_lets_init_name_nodes_by_id(tmp_path: Path) -> None:
    """`--peers NODE_ID@{EndpointAddr JSON}` (the Rust Aspen's form) fills the peer map, so /init
    needs node ids only; the other nodes learn node 1's address from the membership."""
    import json
    import socket

    from aspen.localcluster import FAST_TIMING_ARGS

    def free_udp_port() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    keys = {i: SecretKey.generate() for i in (1, 2, 3)}
    ports = {i: free_udp_port() for i in (1, 2, 3)}
    specs = [f"{i}@" + json.dumps({"id": keys[i].public().hex(), "addrs": [{"Ip": f"127.0.0.1:{ports[i]}"}]})
             for i in (2, 3)]
    with LocalCluster(tmp_path, 3) as c:
        for i, node in c.nodes.items():
            node.extra_args = (*FAST_TIMING_ARGS, "--secret-key", keys[i].hex(), "--bind-port", str(ports[i]))
        c.nodes[1].extra_args += tuple(arg for spec in specs for arg in ("--peers", spec))
        c.start()
        status, body = c.nodes[1].call("POST", "/init", {"initial_members": [{"id": 1}, {"id": 2}, {"id": 3}]})
        assert status == 200, body
        c.wait_leader()
        status, body = c.write(3, "static", "peers")
        assert status == 200, body
        for i in (1, 2, 3):
            assert c.read(i, "static") == (200, {"key": "static", "value": "peers"})
        _, peers = c.nodes[2].call("GET", "/peers")
        assert {p["node_id"] for p in peers["peers"]} == {1, 2, 3}
