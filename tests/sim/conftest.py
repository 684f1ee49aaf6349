"""Seed lists for the simulation tests: CI runs a fixed list, --soak thousands, --seed N one."""

from __future__ import annotations

import pytest

# CI: 500 fixed seeds (the floor); a few minutes at most on a shared 2-core machine.
CI_SEEDS = range(500)
# Soak (--soak / -m soak): 10,000 seeds.
SOAK_SEEDS = range(10_000)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" not in metafunc.fixturenames:
        return
    replay = metafunc.config.getoption("--seed")
    soak = metafunc.definition.get_closest_marker("soak") is not None
    soak_enabled = metafunc.config.getoption("--soak") or "soak" in (metafunc.config.getoption("-m") or "")
    if replay is not None:
        seeds: range | list[int] = [int(replay)]
    elif soak:
        seeds = SOAK_SEEDS if soak_enabled else [0]  # skipped anyway: don't list 10,000 skips
    else:
        seeds = CI_SEEDS
    metafunc.parametrize("sim_seed", seeds, ids=[f"seed={s}" for s in seeds])
