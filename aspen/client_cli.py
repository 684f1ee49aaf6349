"""`aspen kv ...` and `aspen cluster ...`: a client of a node's HTTP control plane.

The node is `--node URL` (or `ASPEN_URL`, default http://127.0.0.1:8080); `--token` (or
`ASPEN_TOKEN`) sends the bearer token. Output is for humans by default and the server's JSON with
`--json`. Exit status: 0 success, 1 the node answered with an error (message printed), 2 usage.
Any node can be asked: writes, reads and membership calls are forwarded to the leader.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from aspen.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, register_command
from aspen.peer_spec import parse_peer_spec

DEFAULT_NODE_URL = "http://127.0.0.1:8080"
CLIENT_TIMEOUT_S = 30.0  # above the node's own forwarding and commit timeouts


class ClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT_S) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            message = json.loads(raw).get("error", raw.decode(errors="replace"))
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace")
        raise ClientError(exc.code, str(message)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ClientError(0, f"cannot reach {base}: {getattr(exc, 'reason', exc)}") from None
    return json.loads(raw) if raw else None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node", default=os.environ.get("ASPEN_URL", DEFAULT_NODE_URL),
                        help=f"node HTTP address (default $ASPEN_URL or {DEFAULT_NODE_URL})")
    parser.add_argument("--token", default=os.environ.get("ASPEN_TOKEN"), help="bearer token")
    parser.add_argument("--json", action="store_true", help="print the server's JSON")


def _node_arg(text: str) -> dict[str, Any]:
    """`ID` or `ID@ENDPOINT_ID` or `ID@{EndpointAddr JSON}` -> a ClusterNode body."""
    if "@" not in text:
        if not text.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r}: want NODE_ID or NODE_ID@ENDPOINT_ID")
        return {"id": int(text), "addr": ""}
    try:
        node_id, addr = parse_peer_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return {"id": node_id, "addr": "", "endpoint_addr": addr.to_json()}


def _print(ns: argparse.Namespace, payload: Any, human: str) -> None:
    print(json.dumps(payload) if ns.json else human)


def cmd_kv(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aspen kv", description="read and write keys")
    sub = parser.add_subparsers(dest="op", required=True)
    p = sub.add_parser("put", help="set KEY to VALUE")
    p.add_argument("key")
    p.add_argument("value")
    p = sub.add_parser("get", help="read KEY (linearizable unless --stale)")
    p.add_argument("key")
    p.add_argument("--stale", action="store_true", help="local read, may be behind the leader")
    p = sub.add_parser("delete", help="remove KEY")
    p.add_argument("key")
    p = sub.add_parser("cas", help="compare-and-swap KEY")
    p.add_argument("key")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--expected", help="current value must equal this")
    g.add_argument("--absent", action="store_true", help="key must not exist")
    g2 = p.add_mutually_exclusive_group(required=True)
    g2.add_argument("--new", help="value to set on success")
    g2.add_argument("--delete", action="store_true", help="delete on success")
    p = sub.add_parser("scan", help="keys by prefix, in order")
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--after", default=None)
    p.add_argument("--stale", action="store_true")
    for sp in sub.choices.values():
        _common(sp)
    ns = parser.parse_args(argv)
    try:
        if ns.op == "put":
            out = call(ns.node, "POST", "/write", {"command": {"Set": {"key": ns.key, "value": ns.value}}}, ns.token)
            _print(ns, out, "OK")
        elif ns.op == "get":
            out = call(ns.node, "POST", "/read",
                       {"key": ns.key, "consistency": "stale" if ns.stale else "linearizable"}, ns.token)
            _print(ns, out, str(out["value"]))
        elif ns.op == "delete":
            out = call(ns.node, "POST", "/write", {"command": {"Delete": {"key": ns.key}}}, ns.token)
            _print(ns, out, "OK")
        elif ns.op == "cas":
            body = {"key": ns.key, "expected": None if ns.absent else ns.expected,
                    "new": None if ns.delete else ns.new}
            out = call(ns.node, "POST", "/write", {"command": {"CompareAndSwap": body}}, ns.token)
            _print(ns, out, "OK" if out.get("succeeded") else f"FAILED (current: {out.get('current')!r})")
            if not out.get("succeeded"):
                return EXIT_FAILURE
        elif ns.op == "scan":
            out = call(ns.node, "POST", "/scan", {"prefix": ns.prefix, "limit": ns.limit, "after": ns.after,
                                                   "consistency": "stale" if ns.stale else "linearizable"}, ns.token)
            lines = [f"{k}\t{v}" for k, v in out["pairs"]]
            if out.get("next_after"):
                lines.append(f"# more: --after {out['next_after']}")
            _print(ns, out, "\n".join(lines))
    except ClientError as exc:
        print(f"aspen: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _state_text(state: dict[str, Any]) -> str:
    voters = ", ".join(str(m) for m in state.get("members", []))
    learners = ", ".join(str(n["id"]) for n in state.get("learners", []))
    return f"voters: [{voters}]  learners: [{learners}]"


def cmd_cluster(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aspen cluster", description="form and change the cluster")
    sub = parser.add_subparsers(dest="op", required=True)
    p = sub.add_parser("init", help="initialise with these voters (NODE_ID or NODE_ID@ENDPOINT_ID)")
    p.add_argument("nodes", nargs="+", type=_node_arg)
    p = sub.add_parser("add-learner", help="add a non-voting member")
    p.add_argument("learner", type=_node_arg, help="NODE_ID or NODE_ID@ENDPOINT_ID")
    p = sub.add_parser("promote", help="make a learner a voter")
    p.add_argument("learner_id", type=int)
    p.add_argument("--replace", type=int, default=None, help="voter to remove in the same change")
    p.add_argument("--force", action="store_true")
    p = sub.add_parser("change-membership", help="set the voters")
    p.add_argument("members", nargs="+", type=int)
    sub.add_parser("status", help="role, term, indexes and leader of the node")
    for sp in sub.choices.values():
        _common(sp)
    ns = parser.parse_args(argv)
    try:
        if ns.op == "init":
            out = call(ns.node, "POST", "/init", {"initial_members": ns.nodes}, ns.token)
            _print(ns, out, _state_text(out))
        elif ns.op == "add-learner":
            out = call(ns.node, "POST", "/add-learner", {"learner": ns.learner}, ns.token)
            _print(ns, out, _state_text(out))
        elif ns.op == "promote":
            out = call(ns.node, "POST", "/admin/promote-learner",
                       {"learner_id": ns.learner_id, "replace_node": ns.replace, "force": ns.force}, ns.token)
            _print(ns, out, str(out.get("message", "OK")))
        elif ns.op == "change-membership":
            out = call(ns.node, "POST", "/change-membership", {"members": ns.members}, ns.token)
            _print(ns, out, _state_text(out))
        elif ns.op == "status":
            out = call(ns.node, "GET", "/raft-metrics", None, ns.token)
            human = (f"node {out.get('node_id')}: {out.get('state')}, term {out.get('current_term')}, "
                     f"leader {out.get('current_leader')}, last log {out.get('last_log_index')}, "
                     f"applied {(out.get('last_applied') or {}).get('index')}, "
                     f"voters {out.get('voters')}, learners {out.get('learners')}")
            _print(ns, out, human)
    except ClientError as exc:
        print(f"aspen: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


register_command("kv", cmd_kv, "put/get/delete/cas/scan keys through a node's HTTP API")
register_command("cluster", cmd_cluster, "init/add-learner/promote/change-membership/status")

__all__ = ["call", "ClientError", "EXIT_USAGE"]
