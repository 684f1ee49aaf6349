"""`aspen demo`: the README's main command — a local 3-node Aspen cluster.

Starts three nodes on embedded defaults (a temporary data dir unless `--data-dir`, loopback,
OS-chosen ports), forms the cluster, writes and reads a few keys, then shows a live status table
until Ctrl-C (or `--exit-after-s`), and stops everything cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from aspen.cli import EXIT_FAILURE, EXIT_OK, register_command
from aspen.localcluster import ClusterError, LocalCluster, format_status

DEMO_NODES = 3
STATUS_INTERVAL_S = 2.0


def cmd_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aspen demo", description="run a local 3-node Aspen cluster")
    parser.add_argument("--data-dir", help="keep the nodes' data here (default: a temporary directory)")
    parser.add_argument("--exit-after-s", type=float, default=None, help="stop by itself after this long")
    ns = parser.parse_args(argv)
    tmp = None if ns.data_dir else tempfile.TemporaryDirectory(prefix="aspen-demo-")
    base = Path(ns.data_dir) if ns.data_dir else Path(tmp.name)  # type: ignore[union-attr]
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cluster = LocalCluster(base, DEMO_NODES)
    try:
        print(f"starting {DEMO_NODES} nodes under {base} ...", flush=True)
        cluster.start()
        cluster.form(list(range(1, DEMO_NODES + 1)))
        leader = cluster.wait_leader()
        print(f"cluster formed; node {leader} leads\n")
        for key, value in (("greeting", "hello"), ("color", "green"), ("answer", "42")):
            status, _ = cluster.write(2, key, value)  # node 2 forwards to the leader if need be
            print(f"  write {key}={value} via node 2 -> {status}")
        for i in cluster.nodes:
            status, body = cluster.read(i, "greeting")
            print(f"  read greeting on node {i} (linearizable) -> {body.get('value') if status == 200 else body}")
        n1 = cluster.nodes[1].url
        print("\nTalk to it:")
        print(f"  curl -s -X POST {n1}/write -H 'Content-Type: application/json' "
              "-d '{\"command\":{\"Set\":{\"key\":\"k\",\"value\":\"v\"}}}'")
        print(f"  curl -s -X POST {n1}/read -H 'Content-Type: application/json' -d '{{\"key\":\"k\"}}'")
        print(f"  aspen kv put k v --node {n1}      aspen kv get k --node {cluster.nodes[3].url}")
        print(f"  aspen cluster status --node {n1}   curl -s {n1}/metrics")
        print("Ctrl-C stops it.\n", flush=True)
        started = time.monotonic()
        while not stop:
            print(format_status(cluster.status_rows()) + "\n", flush=True)
            deadline = time.monotonic() + STATUS_INTERVAL_S
            while not stop and time.monotonic() < deadline:
                time.sleep(0.1)
            if ns.exit_after_s is not None and time.monotonic() - started >= ns.exit_after_s:
                break
        return EXIT_OK
    except ClusterError as exc:
        print(f"aspen demo: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        print("stopping ...", flush=True)
        cluster.stop()
        print("stopped.")
        if tmp is not None:
            tmp.cleanup()


register_command("demo", cmd_demo, "run a local 3-node cluster demo (README quick start) until Ctrl-C")
