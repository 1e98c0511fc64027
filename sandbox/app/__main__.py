"""``python -m sandbox.app migrate ...`` and ``python -m sandbox.app serve ...``."""

from __future__ import annotations

import argparse
import sys

from sandbox.app import migrate

ROLES = ("api", "indexer", "crank")


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="matchbook", description="The sandbox application's command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate.add_parser(commands)
    serve = commands.add_parser("serve", help="run one service (a pod's container)")
    serve.add_argument("--role", choices=ROLES, required=True)
    serve.add_argument("--listen", type=listen_address, required=True, metavar="HOST:PORT")
    serve.add_argument("--image", required=True, help="the container's image; its tag is the version")
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return migrate.run(args.action)
    # Imported here: `migrate` is run by `kubectl exec` and needs none of the server.
    from sandbox.app import server

    return server.serve(args.role, args.listen, args.image)


if __name__ == "__main__":
    sys.exit(main())
