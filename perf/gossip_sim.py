"""Gossip simulation figures for N = 100, 500, 1,000, 2,000 nodes (aspen_gossip.sim).

For each N: bootstrap (every node joins through one random earlier node, then 5 virtual minutes
of shuffles), warm-up broadcasts, then measured broadcasts from random senders (or one sender
with --single-sender). Network: per-link latency 10-50 ms, 1% loss retransmitted after 200 ms
(see aspen_gossip.sim for the model and the metric definitions).

Rows per N:
- delivery ratio: 1 - missed / expected deliveries (1.0 = every live node got every message)
- RMR mean / max: relative message redundancy, m / (n - 1) - 1 (Plumtree paper §5)
- LDH max / mean: last delivery hop (the source's push is hop 1)
- payloads/node/broadcast: payload frames received per live node per broadcast (= (1 + RMR) x
  delivered / N); baseline = payload frames per node that flooding would send over the same
  overlay (sum of active-view sizes - (N - 1), per node)
- frames/node/broadcast: every frame sent (payload and control: IHave, Graft, Prune, membership)
  per live node per broadcast; same flood baseline (flooding sends no control frames)
- wall/broadcast: simulation wall time per measured broadcast; baseline = the N=100 figure

Usage: python perf/gossip_sim.py [--nodes 100 500 1000 2000]
       [--broadcasts 20] [--seed 1] [--single-sender] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO), str(REPO / "plugins")]

from _report import Row, add_json_argument, emit  # noqa: E402

from aspen_gossip.sim import SimConfig, Simulator  # noqa: E402

SETTLE_MS = 300_000
WARMUP_BROADCASTS = 10


def measure(nodes: int, broadcasts: int, seed: int, single_sender: bool) -> tuple[dict[str, float], float]:
    sim = Simulator(SimConfig(nodes=nodes), seed)
    sim.bootstrap(settle_ms=SETTLE_MS)
    sender = 0 if single_sender else None
    sim.run_broadcasts(WARMUP_BROADCASTS, sender=sender)
    flood = sim.flood_payloads_per_node()
    start = time.perf_counter()
    report = sim.run_broadcasts(broadcasts, sender=sender)
    report.wall_s = time.perf_counter() - start
    figures = {
        "delivery": report.delivery_ratio,
        "rmr_mean": report.rmr_mean,
        "rmr_max": report.rmr_max,
        "ldh_max": float(report.ldh_max),
        "ldh_mean": report.ldh_mean,
        "frames": report.frames_per_node_per_broadcast,
        "payloads": report.payloads_per_node_per_broadcast,
        "wall_ms": report.wall_ms_per_broadcast,
    }
    return figures, flood


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 500, 1000, 2000])
    parser.add_argument("--broadcasts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--single-sender", action="store_true")
    add_json_argument(parser)
    args = parser.parse_args()
    rows: list[Row] = []
    wall_base: float | None = None
    for n in args.nodes:
        figures, flood = measure(n, args.broadcasts, args.seed, args.single_sender)
        if wall_base is None:
            wall_base = figures["wall_ms"]
        rows += [
            Row(f"N={n} delivery ratio", "ratio", figures["delivery"]),
            Row(f"N={n} RMR mean", "ratio", figures["rmr_mean"]),
            Row(f"N={n} RMR max", "ratio", figures["rmr_max"]),
            Row(f"N={n} LDH max", "hops", figures["ldh_max"]),
            Row(f"N={n} LDH mean", "hops", figures["ldh_mean"]),
            Row(f"N={n} payloads/node/broadcast", "frames", figures["payloads"], flood, "flood"),
            Row(f"N={n} frames/node/broadcast", "frames", figures["frames"], flood, "flood"),
            Row(f"N={n} wall/broadcast", "ms", figures["wall_ms"], wall_base, f"N={args.nodes[0]}"),
        ]
    senders = "one sender" if args.single_sender else "random senders"
    emit(f"gossip simulation: {args.broadcasts} broadcasts, {senders}, seed {args.seed}", rows, args.json)


if __name__ == "__main__":
    main()
