"""Plugin discovery and loading through entry points, including a third-party plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aspen.config import build_config, plugin_option_specs
from aspen.errors import ConfigError
from aspen.plugin_host import DEFAULT_PLUGINS, PluginError, PluginHost, UnknownPluginError, list_plugins
from tests.thirdparty import TEST_PLUGIN_VERSION, install_test_plugin


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    paths = install_test_plugin(tmp_path / "site")
    for p in paths:
        monkeypatch.syspath_prepend(p)
    return paths


def test_default_set_loads_only_installed_defaults() -> None:
    host = PluginHost(None)
    assert "static" in host.names
    assert set(host.names) <= set(DEFAULT_PLUGINS)
    assert host.info("static").kind == "discovery"


def test_plugins_flag_loads_exactly_those(third_party: list[str]) -> None:
    host = PluginHost(["testplugin"])
    assert host.names == ["testplugin"]
    assert host.info("testplugin").kind == "service"


def test_unknown_plugin_names_the_available_ones(third_party: list[str]) -> None:
    with pytest.raises(UnknownPluginError) as info:
        PluginHost(["static", "nope"])
    message = str(info.value)
    assert "nope" in message and "static" in message and "testplugin" in message


def test_third_party_plugin_is_listed_with_version(third_party: list[str]) -> None:
    listing = {p.name: p for p in list_plugins()}
    assert listing["testplugin"].version == TEST_PLUGIN_VERSION
    assert listing["testplugin"].kind == "service"
    assert listing["static"].kind == "discovery"


def test_plugin_options_join_the_config_layers(third_party: list[str]) -> None:
    host = PluginHost(["testplugin"])
    specs = [s for name, opts in host.config_options() for s in plugin_option_specs(name, opts)]
    loaded = build_config(flags={"plugin.testplugin.greeting": "hi"}, environ={"ASPEN_TESTPLUGIN_LEVEL": "4"},
                          config_file=None, plugin_specs=specs)
    assert loaded.config.plugin_options["testplugin"] == {"fail_on_start": False, "greeting": "hi", "level": 4}
    with pytest.raises(ConfigError, match=r"plugin.testplugin.level='9' \(from env ASPEN_TESTPLUGIN_LEVEL\)"):
        build_config(flags={}, environ={"ASPEN_TESTPLUGIN_LEVEL": "9"}, config_file=None, plugin_specs=specs)


def test_a_hook_that_raises_is_reported_by_plugin_name(third_party: list[str], tmp_path: Path) -> None:
    host = PluginHost(["testplugin"])
    with pytest.raises(PluginError, match="testplugin.*aspen_services"):
        host.call_each("aspen_services", node=None)  # the impl dereferences node: it raises


def test_cli_lists_plugins_and_rejects_unknown(third_party: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASPEN_")}
    env["PYTHONPATH"] = os.pathsep.join([*third_party, env.get("PYTHONPATH", "")])
    listed = subprocess.run([sys.executable, "-m", "aspen", "plugins"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["testplugin"][1:3] == ["service", TEST_PLUGIN_VERSION]
    assert rows["static"][1] == "discovery"
    bad = subprocess.run([sys.executable, "-m", "aspen", "run", "--plugins", "static,bogus"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert bad.returncode == 2
    assert "unknown plugin(s): bogus" in bad.stderr and "testplugin" in bad.stderr
