"""A real node: two processes, worker supervision, orderly and disorderly shutdown."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.multiprocess.harness import NodeProcess, pid_alive, shm_entries_of, wait_until, worker_pids_of
from tests.thirdparty import install_test_plugin

pytestmark = pytest.mark.multiprocess


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for node in started:
        node.cleanup()


def start(nodes: list[NodeProcess], data_dir: Path, *args: str, env: dict[str, str] | None = None) -> NodeProcess:
    node = NodeProcess(data_dir, *args, env=env)
    nodes.append(node)
    node.start()
    return node


def metric(node: NodeProcess, name: str) -> float:
    status, text = node.http("GET", "/metrics")
    assert status == 200
    for line in str(text).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_node_runs_two_processes_and_reports_identity(nodes: list[NodeProcess], tmp_path: Path) -> None:
    node = start(nodes, tmp_path / "n1", "--node-id", "3", "--secret-key", "07" * 32)
    ready = node.wait_ready()
    from aspen.identity import SecretKey

    assert ready["node_id"] == 3
    assert ready["endpoint_id"] == SecretKey.from_hex("07" * 32).public().hex()
    assert worker_pids_of(node.pid) == [ready["worker_pid"]]
    status, health = node.http("GET", "/health")
    assert status == 200 and health["status"] == "healthy"
    assert health["checks"]["raft_actor"]["pid"] == ready["worker_pid"]


def test_key_is_created_in_data_dir_and_reused(nodes: list[NodeProcess], tmp_path: Path) -> None:
    first = start(nodes, tmp_path / "n1")
    first_id = first.wait_ready()["endpoint_id"]
    first.signal(signal.SIGTERM)
    assert first.wait_exit(30) == 0
    second = start(nodes, tmp_path / "n1")
    assert second.wait_ready()["endpoint_id"] == first_id


def test_dead_worker_is_restarted_and_node_stays_up(nodes: list[NodeProcess], tmp_path: Path) -> None:
    node = start(nodes, tmp_path / "n1")
    ready = node.wait_ready()
    os.kill(ready["worker_pid"], signal.SIGKILL)

    def restarted() -> bool:
        status, health = node.http("GET", "/health")
        return status == 200 and health["worker"]["incarnation"] == 2

    assert wait_until(restarted, 30), node.stderr()[-2000:]
    _, health = node.http("GET", "/health")
    assert health["worker"]["restarts"] == 1
    assert health["worker"]["pid"] != ready["worker_pid"]
    assert metric(node, "aspen_worker_restarts_total") == 1.0
    assert "worker died" in node.stderr()
    assert node.proc is not None and node.proc.poll() is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_both_processes_cleanly(nodes: list[NodeProcess], tmp_path: Path, sig: int) -> None:
    node = start(nodes, tmp_path / "n1")
    ready = node.wait_ready()
    node.signal(sig)
    assert node.wait_exit(30) == 0
    assert wait_until(lambda: not worker_pids_of(node.pid), 10)
    assert not pid_alive(ready["worker_pid"])
    assert shm_entries_of(node.pid) == []


def test_sigkill_of_io_process_takes_the_worker_down(nodes: list[NodeProcess], tmp_path: Path) -> None:
    node = start(nodes, tmp_path / "n1")
    ready = node.wait_ready()
    node.signal(signal.SIGKILL)
    node.wait_exit(10)
    assert wait_until(lambda: not worker_pids_of(node.pid), 10), "worker outlived its parent"
    assert wait_until(lambda: not pid_alive(ready["worker_pid"]), 10)
    assert shm_entries_of(node.pid) == []


def test_failing_plugin_is_named_and_nothing_is_left_behind(nodes: list[NodeProcess], tmp_path: Path) -> None:
    paths = install_test_plugin(tmp_path / "site")
    env = {"PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    node = start(nodes, tmp_path / "n1", "--plugins", "static,testplugin", "--testplugin-fail-on-start", env=env)
    rc = node.wait_exit(60)
    assert rc == 1
    assert "plugin 'testplugin'" in node.stderr() and "told to fail on start" in node.stderr()
    assert wait_until(lambda: not worker_pids_of(node.pid), 10)
    assert shm_entries_of(node.pid) == []


def test_third_party_plugin_runs_in_a_node(nodes: list[NodeProcess], tmp_path: Path) -> None:
    paths = install_test_plugin(tmp_path / "site")
    env = {"PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    node = start(nodes, tmp_path / "n1", "--plugins", "testplugin", "--testplugin-greeting", "bonjour", env=env)
    assert node.wait_ready()["plugins"] == ["testplugin"]
    assert (tmp_path / "n1" / "testplugin-started").exists()
    assert (tmp_path / "n1" / "testplugin-greeting").read_text() == "bonjour"
    node.signal(signal.SIGTERM)
    assert node.wait_exit(30) == 0
    assert (tmp_path / "n1" / "testplugin-stopped").exists()


def test_aspen_ping_reaches_a_running_node_over_the_echo_plugin(nodes: list[NodeProcess], tmp_path: Path) -> None:
    import subprocess
    import sys

    node = start(nodes, tmp_path / "n1", "--bind-host", "127.0.0.1")
    ready = node.wait_ready()
    assert "echo" in ready["plugins"]
    target = f"{ready['endpoint_id']}@{ready['endpoint_addr']['addrs'][0]['Ip']}"
    result = subprocess.run([sys.executable, "-m", "aspen", "ping", "-c", "3", target], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "3 sent, 3 received, 0% loss" in result.stdout
    wrong_key = "ab" * 32 + "@" + ready["endpoint_addr"]["addrs"][0]["Ip"]
    impostor = subprocess.run([sys.executable, "-m", "aspen", "ping", "-c", "1", wrong_key], capture_output=True,
                              text=True, timeout=60)
    assert impostor.returncode == 1
