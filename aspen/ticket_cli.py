"""`aspen ticket`: print a node's cluster ticket (`GET /cluster-ticket`), or check one.

`aspen ticket --node URL` prints the `aspen...` string a new node joins with (`aspen run
--ticket T`, no other configuration); `--json` prints the whole answer (topic id, endpoint id,
bootstrap count). `aspen ticket --check T` decodes a ticket locally and says what is wrong with
it. Exit status: 0 success, 1 the node answered with an error or is unreachable, 2 usage or a
bad ticket (the message names the failed check: prefix, base32, length, checksum, version,
encoding, too_many_peers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from aspen.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, register_command
from aspen.client_cli import DEFAULT_NODE_URL, ClientError, call
from aspen.ticket import ClusterTicket, TicketError


def cmd_ticket(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aspen ticket", description="print or check a cluster ticket")
    parser.add_argument("--node", default=os.environ.get("ASPEN_URL", DEFAULT_NODE_URL),
                        help=f"node HTTP address (default $ASPEN_URL or {DEFAULT_NODE_URL})")
    parser.add_argument("--token", default=os.environ.get("ASPEN_TOKEN"), help="bearer token")
    parser.add_argument("--json", action="store_true", help="print the server's JSON")
    parser.add_argument("--check", metavar="TICKET", help="decode TICKET locally instead of asking a node")
    ns = parser.parse_args(argv)
    if ns.check is not None:
        try:
            ticket = ClusterTicket.decode(ns.check)
        except TicketError as exc:
            print(f"aspen: error: {exc} (reason: {exc.reason})", file=sys.stderr)
            return EXIT_USAGE
        info = {"topic_id": ticket.topic_id.hex(), "bootstrap": [a.to_json() for a in ticket.bootstrap]}
        print(json.dumps(info) if ns.json else
              f"valid ticket: topic {ticket.topic_id.hex()[:10]}, {len(ticket.bootstrap)} bootstrap peer(s)")
        return EXIT_OK
    try:
        out = call(ns.node, "GET", "/cluster-ticket", None, ns.token)
    except ClientError as exc:
        print(f"aspen: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(out) if ns.json else out["ticket"])
    return EXIT_OK


register_command("ticket", cmd_ticket, "print a node's cluster ticket (aspen ticket --node URL)")

__all__ = ["cmd_ticket"]
