"""Server CPU per KV request: the node's HTTP front (aspen.fast_http) vs aiohttp alone.

One server process serves the control plane's routes over an in-memory cluster (a single
KvStateMachine, answering at once), so only the HTTP layer differs: "fast" is the node's front
(aspen/fast_http.py in front of aiohttp, as `aspen run` serves it), the baseline is the same
aiohttp application on an aiohttp TCPSite (what nodes served before). This process drives it
with the kv_bench load generator's client (aiohttp, one request at a time per worker), and the
server's user+system CPU (/proc) is divided by the requests it answered.

Rows: `/write` and `/read` at concurrency 16 and 64: server CPU ms/request and requests/s. The
two servers alternate (--repeat times each; best CPU figure kept), so both see the same machine.

    .venv/bin/python perf/http_bench.py [--duration-s 3] [--repeat 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _report import Row, add_json_argument, emit  # noqa: E402

import aiohttp  # noqa: E402
import msgspec  # noqa: E402

CONCURRENCIES = (16, 64)
WARMUP_S = 1.0
SERVER_READY_TIMEOUT_S = 15.0
VALUE = "v" * 100  # kv_bench's value size


# ---- the server (a child process) ---------------------------------------------------------------

async def _serve(mode: str) -> None:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from aspen.control_plane import MAX_REQUEST_BODY_SIZE, ApiError, add_routes
    from aspen.fast_http import FastHttpServer
    from aspen.raft import kv

    class MemoryCluster:
        """Answers KV calls from one in-memory state machine (nothing else is called)."""

        def __init__(self) -> None:
            self.sm = kv.KvStateMachine()
            self.index = 0

        async def write(self, command: kv.KvCommand) -> kv.KvResult:
            self.index += 1
            return self.sm.apply(self.index, kv.encode_command(command))

        async def read(self, query: kv.Get | kv.Scan, *, linearizable: bool) -> kv.GetResult | kv.ScanResult:
            return self.sm.read(query)

        def __getattr__(self, name: str) -> Any:
            raise ApiError(501, f"{name} is not part of this benchmark")

    app = web.Application(client_max_size=MAX_REQUEST_BODY_SIZE)
    registry = CollectorRegistry()
    kv_service = add_routes(app, MemoryCluster(), registry, None)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    if mode == "fast":
        assert runner.server is not None
        port = await FastHttpServer(runner.server, kv_service, registry).start("127.0.0.1", 0)
    else:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = int(runner.addresses[0][1])
    print(port, flush=True)
    await asyncio.Event().wait()


# ---- the driver ---------------------------------------------------------------------------------

def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(port: int, path: str, concurrency: int, duration_s: float) -> int:
    url = f"http://127.0.0.1:{port}{path}"
    headers = {"Content-Type": "application/json"}
    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker(n: int) -> None:
            nonlocal done
            i = 0
            while time.monotonic() < end:
                key = f"k/{n}/{i % 100}"
                body = ({"command": {"Set": {"key": key, "value": VALUE}}} if path == "/write" else {"key": key})
                async with session.post(url, data=msgspec.json.encode(body), headers=headers) as response:
                    await response.read()
                    if response.status not in (200, 404):
                        raise RuntimeError(f"{path}: HTTP {response.status}")
                done += 1
                i += 1

        end = time.monotonic() + duration_s
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return done


def _measure(mode: str, path: str, concurrency: int, duration_s: float) -> tuple[float, float]:
    """(server CPU ms per request, requests/s) for one server process."""
    proc = subprocess.Popen([sys.executable, __file__, "--serve", mode], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the bound port, once listening
        if not line:
            raise RuntimeError(f"{mode} server did not start")
        port = int(line)
        asyncio.run(_load(port, "/write", concurrency, WARMUP_S))  # keys exist for the reads
        cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
        requests = asyncio.run(_load(port, path, concurrency, duration_s))
        cpu1, t1 = _cpu_s(proc.pid), time.monotonic()
        return (cpu1 - cpu0) * 1000 / requests, requests / (t1 - t0)
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--serve", choices=("fast", "aiohttp"), help=argparse.SUPPRESS)
    add_json_argument(parser)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(_serve(args.serve))
        return 0
    started = time.monotonic()
    rows: list[Row] = []
    for path in ("/write", "/read"):
        for concurrency in CONCURRENCIES:
            cpu: dict[str, float] = {}
            rate: dict[str, float] = {}
            for _ in range(args.repeat):
                for mode in ("fast", "aiohttp"):  # alternating: both see the same machine load
                    ms, per_s = _measure(mode, path, concurrency, args.duration_s)
                    if ms < cpu.get(mode, float("inf")):
                        cpu[mode], rate[mode] = ms, per_s
            rows.append(Row(f"{path} c={concurrency} server CPU", "ms/request", cpu["fast"], cpu["aiohttp"],
                            "aiohttp"))
            rows.append(Row(f"{path} c={concurrency} requests/s", "requests/s", rate["fast"], rate["aiohttp"],
                            "aiohttp"))
    load = os.getloadavg()
    emit(f"KV routes over HTTP: the node's front (aspen.fast_http) vs aiohttp alone, in-memory cluster "
         f"(best of {args.repeat}, {time.monotonic() - started:.0f} s, load average "
         f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", rows, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
