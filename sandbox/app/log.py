"""One line per event, ISO UTC timestamps, flushed at once (the kubelet reads a pipe or a file).

Request lines and other information go to stdout; warnings and errors to stderr. No line ever
carries a secret value: callers pass names (of a key, a user, a server), never what was presented.
"""

from __future__ import annotations

import sys
import threading
import time

_lock = threading.Lock()
pod = "-"


def timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _write(stream, level: str, text: str) -> None:
    line = f"{timestamp()} {level} {text}\n"
    with _lock:
        stream.write(line)
        stream.flush()


def request(method: str, path: str, status: int, seconds: float) -> None:
    _write(sys.stdout, "INFO", f"{method} {path} {status} {seconds:.3f}s {pod}")


def info(text: str) -> None:
    _write(sys.stdout, "INFO", f"{text} pod={pod}")


def warning(text: str) -> None:
    _write(sys.stderr, "WARN", f"{text} pod={pod}")


def error(text: str) -> None:
    _write(sys.stderr, "ERROR", f"{text} pod={pod}")
