"""The pluggy host: finds plugins by entry point, loads the chosen ones, calls their hooks.

Plugins are modules registered under the entry-point group "aspen.plugins" (ours and third
parties' alike); the entry-point name is the plugin's name. `aspen run --plugins a,b` loads
exactly those; without it, `DEFAULT_PLUGINS` (those of them that are installed). Hooks are called
per plugin through `call_each`, so a plugin that raises is reported by name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from aspen import hookspecs
from aspen.errors import AspenError, UsageError
from aspen.plugin_api import ConfigOption, PluginInfo

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "aspen.plugins"
# The documented default set (README "Plugins"): what a node loads without --plugins. Names that
# are not installed are skipped, so a slimmed-down install still starts.
DEFAULT_PLUGINS = ("static", "echo", "raft", "gossip", "mdns")
MAX_PLUGINS = 64  # guess: revisit; a node with more plugins than this is a configuration mistake


class PluginError(AspenError):
    """A plugin failed (to import, in a hook, or while starting); `plugin` names it."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plugin {plugin!r}: {message}")
        self.plugin = plugin


class UnknownPluginError(UsageError):
    def __init__(self, unknown: list[str], available: list[str]) -> None:
        names = ", ".join(sorted(available)) or "(none installed)"
        super().__init__(f"unknown plugin(s): {', '.join(unknown)}; available plugins: {names}")
        self.unknown = unknown
        self.available = available


@dataclass(frozen=True)
class PluginListing:
    name: str
    kind: str
    version: str
    description: str
    module: str


def installed_plugins() -> dict[str, EntryPoint]:
    """Every plugin installed in this environment, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _version_of(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.version) if dist is not None else "unknown"


class PluginHost:
    """Loads the named plugins into a pluggy PluginManager and calls their hooks."""

    def __init__(self, names: list[str] | None = None) -> None:
        available = installed_plugins()
        if names is None:
            names = [n for n in DEFAULT_PLUGINS if n in available]
        if len(names) > MAX_PLUGINS:
            raise UsageError(f"at most {MAX_PLUGINS} plugins, got {len(names)}")
        unknown = [n for n in names if n not in available]
        if unknown:
            raise UnknownPluginError(unknown, list(available))
        self.pm = pluggy.PluginManager("aspen")
        self.pm.add_hookspecs(hookspecs)
        self.modules: dict[str, ModuleType] = {}
        self._entry_points = {n: available[n] for n in names}
        for name in dict.fromkeys(names):  # keep order, drop duplicates
            try:
                module = available[name].load()
            except Exception as exc:  # a broken plugin is reported by name, never a traceback
                raise PluginError(name, f"cannot be imported: {type(exc).__name__}: {exc}") from exc
            self.pm.register(module, name=name)
            self.modules[name] = module
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(getattr(exc, "plugin_name", "?"), f"implements an unknown hook: {exc}") from exc

    @property
    def names(self) -> list[str]:
        return list(self.modules)

    def info(self, name: str) -> PluginInfo:
        return plugin_info(name, self.modules[name])

    def call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call `hook_name` on every loaded plugin that implements it, in load order.

        Returns (plugin name, result) pairs; a plugin that raises becomes PluginError naming it.
        """
        caller = getattr(self.pm.hook, hook_name)
        argnames = set(kwargs)
        results: list[tuple[str, Any]] = []
        impls = {impl.plugin_name: impl for impl in caller.get_hookimpls()}
        for name in self.modules:
            impl = impls.get(name)
            if impl is None:
                continue
            args = {k: v for k, v in kwargs.items() if k in impl.argnames}
            missing = set(impl.argnames) - argnames
            if missing:
                raise PluginError(name, f"{hook_name} wants unknown arguments {sorted(missing)}")
            try:
                results.append((name, impl.function(**args)))
            except Exception as exc:
                raise PluginError(name, f"{hook_name} failed: {type(exc).__name__}: {exc}") from exc
        return results

    def collect(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Like call_each for hooks returning lists: flattened (plugin name, item) pairs."""
        items: list[tuple[str, Any]] = []
        for name, result in self.call_each(hook_name, **kwargs):
            for item in result or []:
                items.append((name, item))
        return items

    def config_options(self) -> list[tuple[str, list[ConfigOption]]]:
        return [(name, list(opts or [])) for name, opts in self.call_each("aspen_config_options")]


def plugin_info(name: str, module: ModuleType) -> PluginInfo:
    fn = getattr(module, "aspen_plugin_info", None)
    if fn is None:
        lines = (module.__doc__ or "").strip().splitlines()
        return PluginInfo(kind="mixed", description=lines[0] if lines else "(no description)")
    info = fn()
    if not isinstance(info, PluginInfo):
        raise PluginError(name, "aspen_plugin_info must return a PluginInfo")
    return info


def list_plugins() -> list[PluginListing]:
    """Every installed plugin with kind, version and description; broken ones say so."""
    listings = []
    for name, ep in sorted(installed_plugins().items()):
        try:
            info = plugin_info(name, ep.load())
            kind: str = info.kind
            description = info.description
        except Exception as exc:  # listing must survive a broken plugin and say which
            kind, description = "broken", f"cannot be loaded: {type(exc).__name__}: {exc}"
        listings.append(PluginListing(name, kind, _version_of(ep), description, ep.value))
    return listings


__all__ = ["PluginHost", "PluginError", "UnknownPluginError", "PluginListing", "installed_plugins",
           "list_plugins", "DEFAULT_PLUGINS", "ENTRY_POINT_GROUP"]
