"""The `aspen` command line.

Exit status: 0 success, 1 runtime failure, 2 usage or configuration error (unknown plugin, bad
flag, bad config value, bad ticket) with a message naming what is wrong and where it came from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aspen import __version__
from aspen.config import (
    LoadedConfig,
    OptionSpec,
    all_specs,
    build_config,
    plugin_option_specs,
)
from aspen.errors import AspenError, ConfigError, UsageError
from aspen.identity import SecretKey, write_key_file
from aspen.plugin_host import PluginError, PluginHost, list_plugins

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace, list[str]], int]


def _err(message: str) -> None:
    print(f"aspen: error: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# config flags, generated from the option table


def add_config_flags(parser: argparse.ArgumentParser, specs: dict[str, OptionSpec]) -> None:
    """One argparse flag per spec name; only flags actually given land in the namespace."""
    group = parser.add_argument_group("configuration (CLI > env > file > defaults)")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML config file")
    group.add_argument("--plugins", metavar="A,B,...", default=argparse.SUPPRESS,
                       help="load exactly these plugins (default: the documented default set)")
    for spec in specs.values():
        dest = "cfg:" + spec.key
        if spec.type == "bool":
            for flag in spec.flags:
                group.add_argument(flag, dest=dest, action="store_const", const="true",
                                   default=argparse.SUPPRESS, help=f"{spec.help} (on)")
            for flag in spec.negative_flags:
                group.add_argument(flag, dest=dest, action="store_const", const="false",
                                   default=argparse.SUPPRESS, help=f"{spec.help} (off)")
        elif spec.type == "list":
            group.add_argument(*spec.flags, dest=dest, action="append", default=argparse.SUPPRESS,
                               metavar="VALUE", help=f"{spec.help} (repeatable)")
        else:
            group.add_argument(*spec.flags, dest=dest, default=argparse.SUPPRESS, metavar="VALUE",
                               help=spec.help)


def _flags_from(ns: argparse.Namespace) -> dict[str, Any]:
    return {k[4:]: v for k, v in vars(ns).items() if k.startswith("cfg:")}


def _preparse_plugins(argv: Sequence[str]) -> tuple[list[str] | None, Path | None]:
    """Which plugins to load, from --plugins > ASPEN_PLUGINS > config file > default."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugins", default=None)
    pre.add_argument("--config", default=None)
    ns, _ = pre.parse_known_args(argv)
    config_file = Path(ns.config) if ns.config else None
    text = ns.plugins if ns.plugins is not None else os.environ.get("ASPEN_PLUGINS")
    if text is not None:
        return [p.strip() for p in text.split(",") if p.strip()], config_file
    if config_file is not None and config_file.exists():
        import tomllib

        try:
            data = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return None, config_file  # reported properly by build_config
        plugins = data.get("plugins")
        if isinstance(plugins, list):
            return [str(p) for p in plugins], config_file
    return None, config_file


def load_node_config(argv: Sequence[str], prog: str) -> tuple[LoadedConfig, PluginHost]:
    """Load plugins, parse config flags, merge all layers. Raises UsageError/ConfigError."""
    names, config_file = _preparse_plugins(argv)
    host = PluginHost(names)
    plugin_specs: list[OptionSpec] = []
    for plugin_name, options in host.config_options():
        plugin_specs.extend(plugin_option_specs(plugin_name, options))
    specs = all_specs(plugin_specs)
    parser = argparse.ArgumentParser(prog=prog)
    add_config_flags(parser, specs)
    ns = parser.parse_args(argv)
    loaded = build_config(flags=_flags_from(ns), environ=os.environ, config_file=config_file,
                          plugin_specs=plugin_specs)
    return loaded, host


# ---------------------------------------------------------------------------------------------
# commands


def cmd_run(argv: list[str]) -> int:
    loaded, host = load_node_config(argv, "aspen run")
    from aspen.node import run_node

    return run_node(loaded, host)


def cmd_config(argv: list[str]) -> int:
    if not argv or argv[0] != "show":
        _err("usage: aspen config show [config flags]")
        return EXIT_USAGE
    loaded, host = load_node_config(argv[1:], "aspen config show")
    as_json = False
    rows = loaded.show_rows()
    if as_json:
        print(json.dumps([{"key": k, "value": v, "source": s} for k, v, s in rows]))
        return EXIT_OK
    rows.append(("plugins", ",".join(host.names), loaded.sources.get("plugins", "default")))
    width = max(len(r[0]) for r in rows)
    vwidth = min(60, max(len(r[1]) for r in rows))
    for key, value, source in rows:
        print(f"{key.ljust(width)}  {value.ljust(vwidth)}  {source}")
    return EXIT_OK


def cmd_keygen(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aspen keygen", description="create an Ed25519 secret key")
    parser.add_argument("--out", metavar="FILE", help="write the key here (mode 0600) instead of stdout")
    parser.add_argument("--force", action="store_true", help="overwrite an existing key file")
    ns = parser.parse_args(argv)
    key = SecretKey.generate()
    if ns.out:
        path = Path(ns.out)
        if path.exists() and not ns.force:
            _err(f"{path} exists; use --force to overwrite it")
            return EXIT_USAGE
        write_key_file(path, key)
        print(f"endpoint_id: {key.public().hex()}")
        print(f"secret key written to {path}")
    else:
        print(key.hex())
        print(f"endpoint_id: {key.public().hex()}", file=sys.stderr)
    return EXIT_OK


def cmd_plugins(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aspen plugins", description="list installed plugins")
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args(argv)
    listings = list_plugins()
    if ns.json:
        print(json.dumps([vars(p) for p in listings]))
        return EXIT_OK
    headers = ("name", "kind", "version", "description")
    rows = [(p.name, p.kind, p.version, p.description) for p in listings]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return EXIT_OK


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "run": (cmd_run, "start a node (I/O process + Raft worker process)"),
    "config": (cmd_config, "config show: the effective configuration and where each value came from"),
    "keygen": (cmd_keygen, "create a secret key"),
    "plugins": (cmd_plugins, "list installed plugins"),
}


def register_command(name: str, fn: Callable[[list[str]], int], help_text: str) -> None:
    """Add a subcommand (used by modules that bring their own: ping, kv, cluster, demo, ...)."""
    COMMANDS[name] = (fn, help_text)


def _load_optional_commands() -> None:
    # Subcommands whose modules may not exist yet in a partial install; each registers itself.
    for module in ("aspen.cli_extra",):
        try:
            __import__(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def _usage() -> str:
    lines = [f"aspen {__version__}", "", "usage: aspen COMMAND [options]", "", "commands:"]
    width = max(len(n) for n in COMMANDS)
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run 'aspen COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _load_optional_commands()
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return EXIT_OK if args else EXIT_USAGE
    if args[0] == "--version":
        print(__version__)
        return EXIT_OK
    command = COMMANDS.get(args[0])
    if command is None:
        _err(f"unknown command {args[0]!r}\n\n{_usage()}")
        return EXIT_USAGE
    try:
        return command[0](args[1:])
    except (ConfigError, UsageError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except PluginError as exc:
        _err(str(exc))
        return EXIT_FAILURE
    except AspenError as exc:
        _err(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
