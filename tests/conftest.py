"""Options shared by the whole suite.

--seed N       replay one simulation seed (simulation tests print the seed of any failure)
--rewrite      regenerate the expected output of data-driven scenario files (review the diff)
--soak         run the long soak/scale variants (the `soak` marker); CI runs reduced forms
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--seed", type=int, default=None, help="replay exactly this simulation seed")
    parser.addoption("--rewrite", action="store_true", default=False,
                     help="rewrite expected output of scenario files")
    parser.addoption("--soak", action="store_true", default=False,
                     help="run tests marked soak (long runs)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak") or "soak" in (config.getoption("-m") or ""):
        return
    skip_soak = pytest.mark.skip(reason="soak run: opt in with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip_soak)


@pytest.fixture
def replay_seed(request: pytest.FixtureRequest) -> int | None:
    """The seed given with --seed, or None to run the configured seed list."""
    value = request.config.getoption("--seed")
    return int(value) if value is not None else None


@pytest.fixture
def rewrite(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--rewrite"))
