"""Make the test-only plugin installable: a dist-info with an `aspen.plugins` entry point."""

from __future__ import annotations

from pathlib import Path

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "thirdparty"
TEST_PLUGIN_VERSION = "9.9.1"


def install_test_plugin(site_dir: Path) -> list[str]:
    """Write aspen_testplugin's metadata into `site_dir`; return the sys.path entries to add."""
    dist = site_dir / f"aspen_testplugin-{TEST_PLUGIN_VERSION}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: aspen-testplugin\nVersion: {TEST_PLUGIN_VERSION}\n")
    (dist / "entry_points.txt").write_text("[aspen.plugins]\ntestplugin = aspen_testplugin.hooks\n")
    return [str(site_dir), str(FIXTURE_DIR)]
