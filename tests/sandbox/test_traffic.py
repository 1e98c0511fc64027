"""The load generator against a small local HTTP server: counts, statuses, failures, bounds, output.

Only counts are asserted, never wall-clock times.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sandbox import traffic
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self):
        self.hits: Counter = Counter()
        self.hosts: Counter = Counter()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), LocalHandler)


class LocalHandler(BaseHTTPRequestHandler):
    """``*ok`` 200, ``/err`` 500, ``/redirect`` 302, ``/close`` closes without answering,
    ``/slow`` answers after 1 s, anything else 404."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        with self.server.lock:
            self.server.hits[self.path] += 1
            self.server.hosts[self.headers.get("Host")] += 1
        if self.path == "/close":
            self.close_connection = True
            return
        if self.path == "/slow":
            time.sleep(1)
        status = {"/err": 500, "/redirect": 302, "/slow": 200}.get(self.path)
        if status is None:
            status = 200 if self.path.endswith("ok") else 404
        body = b"hello\n"
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/ok")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    srv = LocalServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def url(server):
    with server.lock:
        server.hits.clear()
        server.hosts.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_counts_every_request_and_status(server, url):
    report = traffic.run(url, rps=20, seconds=2, paths=["/ok", "/err", "/redirect", "/ok"], timeout=5)
    assert report.sent == 40
    assert report.statuses == {"200": 20, "302": 10, "500": 10}
    assert report.failures == {}
    assert (report.ok, report.failed) == (30, 10)
    assert [s["second"] for s in report.seconds] == [0, 1]
    for second in report.seconds:
        assert second["sent"] == 20
        assert sum(second["statuses"].values()) + sum(second["failures"].values()) == second["sent"]
        assert second["latency_ms"]["p50"] <= second["latency_ms"]["p90"] <= second["latency_ms"]["max"]
    assert not report.total["stopped_early"]
    # Exactly one request each on the wire, redirects not followed.
    assert dict(server.hits) == {"/ok": 20, "/err": 10, "/redirect": 10}


def test_connection_failures_are_counted_by_kind(url):
    report = traffic.run(url, rps=20, seconds=0.5, paths=["/ok", "/close"], timeout=5)
    assert report.sent == 10
    assert report.statuses == {"200": 5}
    assert report.failures == {"disconnected": 5}
    assert report.failed == 5

    refused = traffic.run(f"http://127.0.0.1:{closed_port()}", rps=20, seconds=0.5, timeout=2)
    assert refused.sent == 10 and refused.failures == {"refused": 10} and refused.failed == 10
    assert refused.statuses == {} and refused.total["latency_ms"] is None


def test_timeouts_are_failures(url):
    report = traffic.run(url, rps=8, seconds=0.5, paths=["/slow", "/ok"], timeout=0.25)
    assert report.sent == 4
    assert report.failures == {"timeout": 2}
    assert report.statuses == {"200": 2}
    assert report.failed == 2


def test_paths_are_appended_to_the_url_path(server, url):
    report = traffic.run(url + "/base", rps=10, seconds=0.5, paths=["/ok", "sub/ok"])
    assert report.statuses == {"200": 5}
    assert dict(server.hits) == {"/base/ok": 3, "/base/sub/ok": 2}
    assert traffic.run(url + "/just-ok", rps=6, seconds=0.5).statuses == {"200": 3}


def test_fractional_rates_plan_the_rounded_count(url):
    report = traffic.run(url + "/ok", rps=2.5, seconds=2)
    assert report.sent == 5
    assert [s["sent"] for s in report.seconds] == [3, 2]


def test_a_background_run_stops_early(url):
    handle = traffic.start(url, rps=50, seconds=60, paths=["/ok"])
    wait_for(lambda: handle.report().sent >= 20, timeout=10, what="20 requests sent")
    handle.stop()
    report = handle.wait(timeout=10)
    assert handle.done
    assert 20 <= report.sent < 3000
    assert report.total["stopped_early"]
    assert sum(report.statuses.values()) + sum(report.failures.values()) == report.sent
    assert sum(s["sent"] for s in report.seconds) == report.sent


@pytest.mark.parametrize(
    "args",
    [
        ["--rps", "2001", "--seconds", "1"],
        ["--rps", "1", "--seconds", "3601"],
        ["--rps", "100", "--seconds", "2001"],
        ["--rps", "0", "--seconds", "1"],
        ["--rps", "10", "--seconds", "-1"],
    ],
)
def test_out_of_bounds_is_refused_with_exit_2(server, url, args, capsys):
    assert traffic.main(["--url", url, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("traffic: ") and err.count("\n") == 1
    assert sum(server.hits.values()) == 0


@pytest.mark.parametrize("bad", ["ftp://127.0.0.1/", "127.0.0.1:8080", "http://", "http://host:notaport/"])
def test_a_bad_url_is_refused_with_exit_2(bad, capsys):
    assert traffic.main(["--url", bad, "--rps", "1", "--seconds", "1"]) == 2
    assert "bad URL" in capsys.readouterr().err
    with pytest.raises(traffic.BoundsError):
        traffic.run(bad, 1, 1)


def test_json_output_shape(url, capsys):
    assert (
        traffic.main(
            ["--url", url, "--rps", "12", "--seconds", "0.5", "--path", "/ok", "--path", "/err", "--json"]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"config", "seconds", "total"}
    assert doc["config"]["planned"] == 6 and doc["config"]["paths"] == ["/ok", "/err"]
    (second,) = doc["seconds"]
    assert set(second) == {"second", "sent", "ok", "failed", "statuses", "failures", "latency_ms"}
    assert set(second["latency_ms"]) == {"p50", "p90", "p99", "max"}
    total = doc["total"]
    for key in ("sent", "ok", "failed", "statuses", "failures", "latency_ms", "duration_s", "max_lag_ms"):
        assert key in total
    assert total["sent"] == 6 and total["statuses"] == {"200": 3, "500": 3} and total["failed"] == 3


def test_human_output_has_a_line_per_second_and_a_total(url, capsys):
    assert traffic.main(["--url", url, "--rps", "5", "--seconds", "2", "--path", "/ok"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["second   0", "second   1", "total"]
    assert all("sent 5" in line for line in lines[:2]) and "sent 10" in lines[2] and "[200:10]" in lines[2]


def test_default_url_makes_url_optional(url, capsys):
    assert traffic.main(["--rps", "4", "--seconds", "0.5", "--path", "/ok", "--json"], default_url=url) == 0
    assert json.loads(capsys.readouterr().out)["total"]["statuses"] == {"200": 2}
    assert traffic.main(["--rps", "2", "--seconds", "1"]) == 2


def test_host_sends_that_host_header(server, url, capsys):
    args = [
        "--url",
        url,
        "--path",
        "/ok",
        "--host",
        "api.matchbook.example",
        "--rps",
        "6",
        "--seconds",
        "0.5",
    ]
    assert traffic.main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["host"] == "api.matchbook.example" and doc["total"]["statuses"] == {"200": 3}
    assert server.hosts == {"api.matchbook.example": 3}
    traffic.run(url + "/ok", 4, 0.5)  # without it, the URL's own host and port
    assert server.hosts[f"127.0.0.1:{server.server_address[1]}"] == 2
    assert traffic.main(["--url", url, "--host", "a b", "--rps", "1", "--seconds", "1"]) == 2


def test_percentiles_are_nearest_rank():
    assert traffic.percentiles([]) is None
    assert traffic.percentiles(list(range(1, 101))) == {"p50": 50, "p90": 90, "p99": 99, "max": 100}
    assert traffic.percentiles([7.0]) == {"p50": 7.0, "p90": 7.0, "p99": 7.0, "max": 7.0}


def test_command_line_json_and_sigterm(server, url):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "sandbox.traffic", "--url", url, "--path", "/ok"]
    done = subprocess.run(
        [*cmd, "--rps", "4", "--seconds", "1", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"]["sent"] == 4

    proc = subprocess.Popen(
        [*cmd, "--rps", "20", "--seconds", "600", "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Signal it once it is sending, so its handler is in place.
        wait_for(lambda: server.hits["/ok"] >= 8, timeout=20, what="the generator sending")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    doc = json.loads(out)
    assert doc["total"]["stopped_early"] and 0 < doc["total"]["sent"] < 12000


def test_the_pool_grows_while_answers_are_slow(url):
    # Each answer takes 1 s: four threads cannot keep up with 10 per second, so the pool grows.
    report = traffic.run(url, rps=10, seconds=1, paths=["/slow"], timeout=5)
    assert report.statuses == {"200": 10}
    assert 4 < report.total["workers_started"] <= 20
