"""Seeded simulations of many gossip cores (aspen_gossip.sim): delivery, redundancy, healing.

Metrics are defined in aspen_gossip.sim (Plumtree paper §5: RMR = m / (n - 1) - 1, LDH = hops of
the last first-delivery, the source's push being hop 1).

What CI runs and why (measured on the shared 2-core box):
- 1,000 nodes, random senders, 10 warm-up + 20 measured broadcasts, one seed (~10 s):
  zero missed, RMR mean < 0.2, LDH max < 15 (iroh-gossip's single-sender bounds).
- 1,000 nodes, one sender, iroh's latency model (static 50 ms), 30 broadcasts (~10 s):
  iroh-gossip's own single-sender bounds: zero missed, RMR < 0.2, LDH < 15 (max).
- 300 nodes, 20% fail at once, heal, 20 broadcasts (~3 s): zero missed after healing.
- 300 nodes, the anchor of the tree fails: one new anchor, zero missed (~3 s).
- `--soak`: 1,000 nodes x 100 random-sender broadcasts (LDH max < 15 for every one), then 20%
  fail at once and 100 more, seeds 1-8 (~4 min; seeds 1-6 took 165 s on the loaded 2-core box).
`pytest --seed N` replays exactly one seed; every assertion message names its seed.
"""

from __future__ import annotations

import random

import pytest

from aspen_gossip.messages import MAX_TREE_LEVEL
from aspen_gossip.sim import PhaseReport, SimConfig, Simulator

CI_SEEDS = [1]
SOAK_SEEDS = [1, 2, 3, 4, 5, 6, 7, 8]
# Random senders share one tree, rooted at the lowest id (aspen_gossip.tree), its deepest nodes
# gathered under the lowest branch, and an off-tree copy is not pushed down it (plumtree._held).
# Measured at 1,000 nodes (10-50 ms per link, 1% loss), 100 broadcasts each: seeds 1-10 LDH max
# 13 on every seed, mean 11.1-11.7, RMR mean 0.007-0.012. (Without the branch and the hold: max
# 13-15; with Plumtree's own per-message optimisation: 19-22.) The bounds are iroh's
# single-sender ones, RMR < 0.2 and LDH < 15: one hop to spare on every broadcast of 10 seeds.
STABLE_RMR_MEAN_BOUND = 0.2
STABLE_LDH_MAX_BOUND = 15
# iroh-gossip tests/sim.rs big_single_sender
SINGLE_RMR_BOUND = 0.2
SINGLE_LDH_BOUND = 15
SETTLE_MS = 300_000  # virtual: five shuffle rounds after the last join; breaks closed cliques


def seeds(replay_seed: int | None, default: list[int]) -> list[int]:
    return [replay_seed] if replay_seed is not None else default


def stable_sim(nodes: int, seed: int, config: SimConfig | None = None) -> Simulator:
    sim = Simulator(config or SimConfig(nodes=nodes), seed)
    sim.bootstrap(settle_ms=SETTLE_MS)
    assert sim.isolated_nodes() == [], f"seed {seed}: isolated nodes after bootstrap"
    assert sim.is_connected(), f"seed {seed}: overlay partitioned after bootstrap"
    return sim


def check_delivery(report: PhaseReport, seed: int, phase: str) -> None:
    assert report.missed == 0, f"seed {seed} {phase}: {report.summary()}"


def test_stable_state_1000_nodes_random_senders(replay_seed: int | None) -> None:
    for seed in seeds(replay_seed, CI_SEEDS):
        sim = stable_sim(1000, seed)
        sim.run_broadcasts(10)  # warm-up: the first broadcasts flood and prune the tree
        report = sim.run_broadcasts(20)
        check_delivery(report, seed, "stable")
        assert report.rmr_mean < STABLE_RMR_MEAN_BOUND, f"seed {seed}: {report.summary()}"
        assert report.ldh_max < STABLE_LDH_MAX_BOUND, f"seed {seed}: {report.summary()}"
        # payloads: about one per node, where flooding the same overlay sends ~degree - 1
        assert report.payloads_per_node_per_broadcast < 0.5 * sim.flood_payloads_per_node()


def test_single_sender_1000_nodes_meets_iroh_bounds(replay_seed: int | None) -> None:
    for seed in seeds(replay_seed, CI_SEEDS):
        sim = stable_sim(1000, seed, SimConfig(nodes=1000, latency_min_ms=50, latency_max_ms=50))
        sim.run_broadcasts(10, sender=0)
        report = sim.run_broadcasts(30, sender=0)
        check_delivery(report, seed, "single sender")
        assert report.rmr_mean < SINGLE_RMR_BOUND, f"seed {seed}: {report.summary()}"
        assert report.ldh_max < SINGLE_LDH_BOUND, f"seed {seed}: {report.summary()}"


def fail_and_heal(sim: Simulator, seed: int, fraction: float, heal_ms: int) -> list[int]:
    live = sim.live_nodes()
    victims = random.Random(seed).sample(live, int(len(live) * fraction))
    sim.fail(victims)
    sim.run_until(sim.now_ms + heal_ms)
    assert sim.isolated_nodes() == [], f"seed {seed}: isolated nodes after healing"
    assert sim.is_connected(), f"seed {seed}: overlay partitioned after healing"
    return victims


def test_20_percent_fail_at_once_and_the_overlay_heals(replay_seed: int | None) -> None:
    for seed in seeds(replay_seed, CI_SEEDS):
        sim = stable_sim(300, seed, SimConfig(nodes=300))
        sim.run_broadcasts(5)
        victims = fail_and_heal(sim, seed, 0.2, heal_ms=30_000)
        report = sim.run_broadcasts(20)
        check_delivery(report, seed, "after 20% failure")
        assert report.live_nodes == 300 - len(victims)


def test_the_anchor_fails_and_the_tree_regrows_around_the_next_lowest_id(replay_seed: int | None) -> None:
    for seed in seeds(replay_seed, CI_SEEDS):
        sim = stable_sim(300, seed, SimConfig(nodes=300))
        sim.run_broadcasts(5)
        assert {sim.topics[i].plumtree.tree.anchor for i in range(300)} == {sim.ids[0]}
        sim.fail([0])  # the lowest id: everyone's anchor
        sim.run_until(sim.now_ms + 30_000)
        trees = [sim.topics[i].plumtree.tree for i in sim.live_nodes()]
        assert {t.anchor for t in trees} == {sim.ids[1]}, f"seed {seed}"
        # every uplink chain ends at the anchor: no loop, no dead end (levels can lag by a Level
        # frame in flight while HyParView keeps replacing links, so they are not compared)
        for tree in trees:
            hop = tree
            for _ in range(MAX_TREE_LEVEL):
                if hop.uplink is None:
                    break
                hop = sim.topics[sim.index[hop.uplink]].plumtree.tree
            assert hop.me == sim.ids[1], f"seed {seed}: {sim.index[tree.me]} does not reach the anchor"
        report = sim.run_broadcasts(20)
        check_delivery(report, seed, "after the anchor failed")
        assert report.rmr_mean < STABLE_RMR_MEAN_BOUND, f"seed {seed}: {report.summary()}"


def test_same_seed_replays_the_same_run() -> None:
    def run(seed: int) -> list[tuple[int, int, int, int]]:
        sim = Simulator(SimConfig(nodes=60), seed)
        sim.bootstrap(settle_ms=5_000)
        report = sim.run_broadcasts(5)
        return [(m.sender, m.delivered, m.payload_frames, m.ldh) for m in report.broadcasts]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_nodes_without_the_cluster_secret_never_get_in() -> None:
    from aspen.cluster_secret import ClusterSecret
    from aspen_gossip.topic import Topic

    sim = Simulator(SimConfig(nodes=53), 3)
    outsiders = (50, 51, 52)  # same protocol, same topic id, wrong join key
    wrong = ClusterSecret(sim.secret.topic_id, ClusterSecret.from_cookie("not the cookie").join_key)
    for i in outsiders:
        sim.topics[i] = Topic(sim.ids[i], wrong, sim.config.gossip, rng=random.Random(i))
    sim.bootstrap(settle_ms=20_000)
    assert all(not sim.topics[i].active_view for i in outsiders)
    assert all(sim.topics[i].active_view for i in range(50))
    assert not any(sim.ids[i] in sim.topics[j].passive_view for i in outsiders for j in range(50))
    for k in range(5):
        stats = sim.broadcast(k, f"members only {k}".encode())
        sim.run_until(sim.now_ms + 2_000)
        assert stats.delivered == 49 and not (set(outsiders) & stats.receivers)
    # the outsiders' own broadcasts reach nobody
    stats = sim.broadcast(50, b"let me in")
    sim.run_until(sim.now_ms + 2_000)
    assert stats.delivered == 0
    assert sum(sim.topics[j].stats["rejected_bad_membership_tag"] for j in range(50)) >= 3


@pytest.mark.soak
def test_soak_1000_nodes_100_broadcasts_then_20_percent_churn(replay_seed: int | None) -> None:
    for seed in seeds(replay_seed, SOAK_SEEDS):
        sim = stable_sim(1000, seed)
        sim.run_broadcasts(10)
        stable = sim.run_broadcasts(100)
        check_delivery(stable, seed, "stable")
        assert stable.rmr_mean < STABLE_RMR_MEAN_BOUND, f"seed {seed}: {stable.summary()}"
        assert stable.ldh_max < STABLE_LDH_MAX_BOUND, f"seed {seed}: {[m.ldh for m in stable.broadcasts]}"
        fail_and_heal(sim, seed, 0.2, heal_ms=60_000)
        after = sim.run_broadcasts(100)
        check_delivery(after, seed, "after 20% failure")
