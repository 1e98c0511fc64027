"""python -m sandbox.kubeapi --host 127.0.0.1 --port 8080 [--seed FILE ...] [--ready-file PATH]
[--tls-cert FILE --tls-key FILE] [--token-file FILE] [--images FILE] [--pods-dir DIR] [--restart-backoff S]"""

import argparse
import logging
import os
import signal
import sys
import threading

from . import KubeAPIServer, load_manifests


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sandbox.kubeapi", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ready-delay", type=float, default=1.0, help="seconds until a new pod is Ready")
    parser.add_argument("--seed", action="append", default=[], help="multi-document YAML manifest to load")
    parser.add_argument("--ready-file", help="write the listening port here once serving and seeded")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    parser.add_argument("--token-file", help="require the bearer token this file holds (401 otherwise)")
    parser.add_argument("--images", help="image catalogue (YAML): what pulls, and what runs as a process")
    parser.add_argument("--pods-dir", help="container logs go here (default: a temporary folder)")
    parser.add_argument(
        "--restart-backoff", type=float, default=10.0, help="first crash-loop back-off in seconds (doubles)"
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    token = None
    if args.token_file:
        with open(args.token_file) as fh:
            token = fh.read().strip()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    server = KubeAPIServer(
        args.host,
        args.port,
        args.ready_delay,
        tls=tls,
        token=token,
        images=args.images,
        pods_dir=args.pods_dir,
        restart_backoff=args.restart_backoff,
    ).start()
    try:
        for path in args.seed:
            server.load(load_manifests(path))
        if args.ready_file:
            tmp = f"{args.ready_file}.tmp"
            with open(tmp, "w") as fh:
                fh.write(f"{server.port}\n")
            os.replace(tmp, args.ready_file)
        print(f"kubeapi sandbox listening on {server.url}", file=sys.stderr, flush=True)
        while not done.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
