"""`aspen demo`: the README's main command.

Starts a node on embedded defaults (a temporary data dir unless `--data-dir`, loopback HTTP on
an OS-chosen port), prints its identity and status, and keeps showing status until Ctrl-C (or
`--exit-after-s`), then stops everything cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from aspen.cli import EXIT_FAILURE, EXIT_OK, register_command

DEMO_READY_TIMEOUT_S = 60.0
STATUS_INTERVAL_S = 2.0
HTTP_TIMEOUT_S = 5.0


def _get(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
            return dict(json.loads(resp.read()))
    except Exception as exc:  # a status line must survive a slow or restarting node
        return {"error": str(exc)}


def _wait_ready(proc: subprocess.Popen[bytes]) -> dict[str, Any] | None:
    assert proc.stdout is not None
    deadline = time.monotonic() + DEMO_READY_TIMEOUT_S
    buf = b""
    while b"\n" not in buf and time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            buf += os.read(proc.stdout.fileno(), 65536)
    if b"\n" not in buf:
        return None
    return dict(json.loads(buf.split(b"\n", 1)[0]))


def cmd_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aspen demo", description="run a local Aspen node and show its status")
    parser.add_argument("--data-dir", help="keep node data here (default: a temporary directory)")
    parser.add_argument("--exit-after-s", type=float, default=None, help="stop by itself after this long")
    ns = parser.parse_args(argv)
    tmp = None if ns.data_dir else tempfile.TemporaryDirectory(prefix="aspen-demo-")
    data_dir = Path(ns.data_dir) if ns.data_dir else Path(tmp.name) / "node-1"  # type: ignore[union-attr]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASPEN_")}
    proc = subprocess.Popen([sys.executable, "-m", "aspen", "run", "--node-id", "1", "--data-dir", str(data_dir),
                             "--http-addr", "127.0.0.1:0", "--log-level", "warning"],
                            stdout=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        ready = _wait_ready(proc)
        if ready is None:
            print("aspen demo: the node did not start", file=sys.stderr)
            return EXIT_FAILURE
        base = f"http://{ready['http_addr']}"
        print("Aspen node running")
        print(f"  node id      {ready['node_id']}")
        print(f"  endpoint id  {ready['endpoint_id']}")
        print(f"  data dir     {ready['data_dir']}")
        print(f"  processes    I/O pid {ready['pid']}, Raft worker pid {ready['worker_pid']}")
        print(f"  http         {base}   (try: curl {base}/health)")
        print("Ctrl-C stops it.\n")
        print(f"{'uptime_s':>9}  {'status':<10} {'worker_pid':>10} {'restarts':>8}")
        started = time.monotonic()
        while not stop and proc.poll() is None:
            health = _get(base + "/health")
            worker = health.get("worker", {})
            print(f"{time.monotonic() - started:9.1f}  {health.get('status', 'down'):<10} "
                  f"{worker.get('pid') or '-':>10} {worker.get('restarts', '-'):>8}", flush=True)
            deadline = time.monotonic() + STATUS_INTERVAL_S
            while not stop and time.monotonic() < deadline:
                time.sleep(0.1)
            if ns.exit_after_s is not None and time.monotonic() - started >= ns.exit_after_s:
                break
        return EXIT_OK if proc.poll() is None else EXIT_FAILURE
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        print("stopped.")
        if tmp is not None:
            tmp.cleanup()


register_command("demo", cmd_demo, "run a local demo (README quick start) until Ctrl-C")
