"""`aspen smoke`: the Rust Aspen's 5-node smoke flow, every step asserted, plus the failover its
banner promised (reference/aspen-rust-inventory.md §6, scripts/aspen-cluster-smoke.sh).

1-2. start 5 nodes; init voters 1-3 (peers introduced on node 1 only)
3.   add learners 4 and 5 (their addresses reach every member through the membership)
4.   promote: change-membership to [1..5]; every node reports the 5 voters
5.   write, then read linearizably on every node
6.   kill -9 the leader: a new leader within 3 s; writes continue
7.   the killed node restarts from its data dir and catches up
8.   shrink to one voter ([3]); write and read on node 3
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aspen.cli import EXIT_FAILURE, EXIT_OK, register_command
from aspen.localcluster import LocalCluster

NEW_LEADER_DEADLINE_S = 3.0  # the smoke banner's promise
CATCH_UP_TIMEOUT_S = 30.0


class SmokeFailure(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def eventually(fn: Callable[[], bool], timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.05)
    raise SmokeFailure(message)


def run_smoke(base: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the flow in `base`; raises SmokeFailure at the first broken promise. Returns figures."""
    figures: dict[str, Any] = {}
    with LocalCluster(base, 5) as c:
        c.start()
        log("PASS  1. five nodes started")
        c.form([1, 2, 3])
        leader = c.wait_leader([1, 2, 3])
        log(f"PASS  2. init [1,2,3]: node {leader} leads")

        c.introduce(1, [4, 5])  # only node 1 is told about 4 and 5
        for learner in (4, 5):
            status, body = c.nodes[1].call("POST", "/add-learner", {"learner": {
                "id": learner, "addr": c.nodes[learner].ready["http_addr"], "raft_addr": None}})
            check(status == 200 and learner in [n["id"] for n in body["learners"]],
                  f"add-learner {learner}: {status} {body}")
        log("PASS  3. learners 4 and 5 added (add-peer on node 1 only)")

        status, body = c.nodes[2].call("POST", "/change-membership", {"members": [1, 2, 3, 4, 5]})
        check(status == 200 and body["members"] == [1, 2, 3, 4, 5], f"change-membership: {status} {body}")
        def sees_five_voters(node_id: int) -> Callable[[], bool]:
            return lambda: bool(c.nodes[node_id].call("GET", "/raft-metrics")[1].get("voters") == [1, 2, 3, 4, 5])

        for i in c.nodes:
            eventually(sees_five_voters(i), 10, f"node {i} does not see voters [1..5]")
        log("PASS  4. promoted: every node reports voters [1,2,3,4,5] (request sent to node 2, forwarded)")

        status, body = c.write(4, "foo", "bar")
        check(status == 200, f"write via node 4: {status} {body}")
        for i in c.nodes:
            status, body = c.read(i, "foo")
            check(status == 200 and body["value"] == "bar", f"read foo on node {i}: {status} {body}")
        log("PASS  5. write via node 4; linearizable read of foo=bar on all 5 nodes")

        old = c.wait_leader()
        killed_at = time.monotonic()
        c.nodes[old].kill(signal.SIGKILL)
        survivors = [i for i in c.nodes if i != old]
        new = c.wait_leader(survivors, timeout_s=NEW_LEADER_DEADLINE_S, not_node=old)
        figures["failover_s"] = round(time.monotonic() - killed_at, 3)
        check(figures["failover_s"] <= NEW_LEADER_DEADLINE_S, f"new leader after {figures['failover_s']} s")
        status, body = c.write(survivors[0], "foo", "zoo")
        check(status == 200, f"write after failover: {status} {body}")
        for i in survivors:
            status, body = c.read(i, "foo")
            check(status == 200 and body["value"] == "zoo", f"read after failover on node {i}: {status} {body}")
        log(f"PASS  6. kill -9 leader {old}: node {new} leads after {figures['failover_s']} s; writes continue")

        c.nodes[old].start()
        c.nodes[old].wait_ready()
        eventually(lambda: c.read(old, "foo", "stale") == (200, {"key": "foo", "value": "zoo"}),
                   CATCH_UP_TIMEOUT_S, f"node {old} did not catch up")
        status, body = c.read(old, "foo")
        check(status == 200 and body["value"] == "zoo", f"linearizable read on restarted node: {status} {body}")
        log(f"PASS  7. node {old} restarted from its data dir and caught up (foo=zoo)")

        status, body = c.nodes[c.wait_leader()].call("POST", "/change-membership", {"members": [3]})
        check(status == 200 and body["members"] == [3], f"shrink to [3]: {status} {body}")
        c.wait_leader([3])
        status, body = c.write(3, "foo", "solo")
        check(status == 200, f"write on node 3 alone: {status} {body}")
        status, body = c.read(3, "foo")
        check(status == 200 and body["value"] == "solo", f"read on node 3 alone: {status} {body}")
        log("PASS  8. shrunk to [3]; write and read on node 3")
    return figures


def cmd_smoke(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aspen smoke", description="5-node smoke test with failover")
    parser.add_argument("--data-dir", help="keep node data and logs here (default: a temporary directory)")
    ns = parser.parse_args(argv)
    tmp = None if ns.data_dir else tempfile.TemporaryDirectory(prefix="aspen-smoke-")
    base = Path(ns.data_dir) if ns.data_dir else Path(tmp.name)  # type: ignore[union-attr]
    try:
        run_smoke(base)
        print("smoke: complete, every step passed")
        return EXIT_OK
    except (SmokeFailure, Exception) as exc:  # report any failure as a failed step, with logs kept
        print(f"FAIL  {exc}", file=sys.stderr)
        if tmp is not None:
            kept = Path(tempfile.mkdtemp(prefix="aspen-smoke-failed-"))
            import shutil

            shutil.copytree(base, kept, dirs_exist_ok=True)
            print(f"node logs kept in {kept}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if tmp is not None:
            tmp.cleanup()


register_command("smoke", cmd_smoke, "5-node smoke test (init, learners, promote, failover, restart, shrink)")
