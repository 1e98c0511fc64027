"""The crank's wallet, a stand-in for ``solana-keygen`` and ``solana transfer`` (runbook 000
"Compromised Crank Wallet"), which cannot run here.

A keypair file is what ``solana-keygen new -o FILE`` writes: a JSON array of 64 numbers, the 32-byte
secret seed then the 32-byte public key (here the SHA-256 of the seed, not Ed25519). ``pubkey`` prints
the public half in hex. ``transfer`` moves "ALL" funds of the ledger from one wallet to another: it
appends one line to a JSON-lines ledger file, naming the two public keys, never a secret.

    python -m sandbox.wallet new --outfile FILE
    python -m sandbox.wallet pubkey FILE
    python -m sandbox.wallet transfer --from OLD_FILE --to NEW_FILE --ledger FILE
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import time
from pathlib import Path


def new_keypair() -> str:
    seed = secrets.token_bytes(32)
    return json.dumps(list(seed + hashlib.sha256(seed).digest()))


def pubkey(keypair: str) -> str:
    numbers = json.loads(keypair)
    if not (isinstance(numbers, list) and len(numbers) == 64):
        raise ValueError("not a keypair: expected a JSON array of 64 numbers")
    return bytes(numbers[32:]).hex()


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.wallet")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="write a new keypair file (refuses to overwrite one)")
    new.add_argument("--outfile", required=True, type=Path)
    show = commands.add_parser("pubkey", help="print a keypair file's public key")
    show.add_argument("file", type=Path)
    transfer = commands.add_parser("transfer", help="move every fund of one wallet to another")
    transfer.add_argument("--from", dest="source", required=True, type=Path)
    transfer.add_argument("--to", dest="destination", required=True, type=Path)
    transfer.add_argument("--ledger", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "new":
            keypair = new_keypair()
            write_private(args.outfile, keypair)
            print(f"Wrote new keypair to {args.outfile}\npubkey: {pubkey(keypair)}")
        elif args.command == "pubkey":
            print(pubkey(args.file.read_text()))
        else:
            entry = {
                "from": pubkey(args.source.read_text()),
                "to": pubkey(args.destination.read_text()),
                "amount": "ALL",
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            with args.ledger.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")
            print(f"transferred ALL from {entry['from']} to {entry['to']}")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
