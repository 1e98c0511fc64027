"""The maintenance page: 503 with ``Retry-After`` for every request, the answer an isolated or
drained service's users get through the Ingress (its ``default-backend`` annotation). ``/healthz``
answers 200 for the kubelet's probe.

    python -m sandbox.maintenance --listen 127.0.0.1:PORT [--retry-after SECONDS]
"""

from __future__ import annotations

import argparse
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def handler(retry_after: int) -> type[BaseHTTPRequestHandler]:
    class Maintenance(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                self.answer(200, b"ok\n", {})
            else:
                self.answer(503, b"down for maintenance\n", {"Retry-After": str(retry_after)})

        do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

        def answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in {"Content-Type": "text/plain", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            print(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}", flush=True)

    return Maintenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--retry-after", type=int, default=120)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), handler(args.retry_after))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"maintenance page on {args.listen}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
