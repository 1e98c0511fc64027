"""A small HTTP server the kubelet tests run as a pod's process (through a test image catalogue).

    python tests/emulator/podprog.py --listen 127.0.0.1:PORT [--exit-after SECONDS] [--ignore-term]

GET /env answers {"pid": ..., "env": {...}}; /health/ready answers 503 until the file named by
$READY_FILE exists (200 without it); /health/live answers 503 while the file named by $DEAD_FILE
exists. It prints a line when it starts, per /env request and on SIGTERM (then exits 0, unless
--ignore-term)."""

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def say(text):
    print(text, flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code, body = 200, {"ok": True}
        if self.path == "/env":
            say(f"request GET /env from {os.environ.get('HOSTNAME')}")
            body = {"pid": os.getpid(), "env": dict(os.environ)}
        elif self.path == "/health/ready":
            ready = os.environ.get("READY_FILE")
            code = 200 if not ready or os.path.exists(ready) else 503
        elif self.path == "/health/live":
            dead = os.environ.get("DEAD_FILE")
            code = 503 if dead and os.path.exists(dead) else 200
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--exit-after", type=float)
    parser.add_argument("--ignore-term", action="store_true")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)

    def on_term(*_):
        say("SIGTERM received")
        if not args.ignore_term:
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    say(f"start {os.environ.get('HOSTNAME')} listening on {args.listen}")
    print("a line on stderr", file=sys.stderr, flush=True)
    if args.exit_after is not None:
        threading.Timer(args.exit_after, lambda: os._exit(3)).start()
    server.serve_forever()
    say("stopped")


if __name__ == "__main__":
    main()
