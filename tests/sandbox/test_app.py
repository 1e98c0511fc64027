"""The sandbox application (`python -m sandbox.app serve`), run as real processes against the
sandbox's PostgreSQL and Redis, and talked to over HTTP: readiness and refused credentials, API
keys, orders and the crank, sessions in Redis, read-only mode, metrics, faulty and slow images, and
SIGTERM's drain."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg
import pytest
import redis

from driver import ROOT
from sandbox.processes import free_port
from tests.conftest import wait_for

ADMIN_KEY, WEBHOOK_KEY = "test-admin-key-1f3a", "test-webhook-key-9c2e"
OWNER = "test-app-owner"


# -- helpers -------------------------------------------------------------------------------------
def call(method: str, url: str, body: dict | None = None, headers: dict | None = None, timeout: float = 10):
    """(status, parsed JSON or text, headers) of one request; HTTP errors are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, raw, got = answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), exc.headers
    text = raw.decode()
    if (got.get("Content-Type") or "").startswith("application/json"):
        return status, json.loads(text) if text else None, got
    return status, text, got


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """The samples of a Prometheus text exposition; every sample's family has a TYPE line."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert family in types, f"no TYPE for {name}"
            pairs = LABEL.findall(labels or "")
            assert len(pairs) == (labels.count('="') if labels else 0), line
            samples[(name, frozenset(pairs))] = float(value)
    return samples


def sample(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class App:
    """One `python -m sandbox.app serve` process on a free port, its output in two files."""

    def __init__(self, folder: Path, role: str, tag: str, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pod = f"{role}-{tag.replace('.', '')}-{self.port}"
        self.out, self.err = folder / f"{self.pod}.out", folder / f"{self.pod}.err"
        full = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "HOSTNAME": self.pod,
            "PYTHONPATH": f"{ROOT}:{ROOT / 'collections'}",
            "POD_NAME": self.pod,
            "POD_NAMESPACE": "matchbook",
            "SANDBOX_SHUTDOWN_DELAY_SECONDS": "0.2",
            **env,
        }
        argv = [sys.executable, "-m", "sandbox.app", "serve", "--role", role]
        argv += ["--listen", f"127.0.0.1:{self.port}", "--image", f"sandbox.local/matchbook-{role}:{tag}"]
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=full, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )

    def get(self, path: str, **kw):
        return call("GET", self.url + path, **kw)

    def status(self, path: str) -> int | None:
        try:
            return self.get(path, timeout=2)[0]
        except OSError:
            return None

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(lambda: self.status("/health/ready") == 200, timeout=timeout, what=f"{self.pod} ready")

    def metrics(self) -> dict:
        status, text, headers = self.get("/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse_metrics(text)

    def logs(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def box(target):
    if target.status is None:
        pytest.fail("the application tests need the sandbox (its database and Redis)")
    from sandbox.platform import Sandbox

    return Sandbox(Path(target.status["dir"]))


@pytest.fixture(scope="module")
def urls(target, box):
    pg = target.status["postgres"]
    password = Path(pg["password_file"]).read_text().strip()
    database = f"postgresql://{pg['user']}:{password}@127.0.0.1:{pg['port']}/{pg['database']}"
    redis_url = target.status["redis"]["url"]
    # Redis with a password: the status's URL may carry it already; else it is in the secrets folder.
    redis_password = box.dir / "secrets" / "redis-password"
    parts = urllib.parse.urlsplit(redis_url)
    if redis_password.exists() and not parts.password:
        secret = urllib.parse.quote(redis_password.read_text().strip(), safe="")
        redis_url = parts._replace(netloc=f":{secret}@{parts.hostname}:{parts.port}").geturl()
    # Redis database 1: the sandbox's own crank pod works the queue in database 0, and would take this
    # module's orders from its crank.
    redis_url = urllib.parse.urlsplit(redis_url)._replace(path="/1").geturl()
    return {"DATABASE_URL": database, "REDIS_URL": redis_url, "password": password}


@pytest.fixture(scope="module")
def env(urls):
    return {
        "DATABASE_URL": urls["DATABASE_URL"],
        "REDIS_URL": urls["REDIS_URL"],
        "API_ADMIN_KEY": ADMIN_KEY,
        "API_WEBHOOK_KEY": WEBHOOK_KEY,
    }


@pytest.fixture(scope="module")
def admin(box):
    conn = box.admin_database()
    with psycopg.connect(
        host=conn["host"], port=conn["port"], user=conn["user"], password=conn["password"], dbname="app",
        autocommit=True,
    ) as connection:  # fmt: skip
        yield connection


@pytest.fixture(scope="module")
def cache(urls):
    client = redis.Redis.from_url(urls["REDIS_URL"], decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """Starts apps; stops each at the end of the module and asserts it exited 0."""
    folder = tmp_path_factory.mktemp("apps")
    apps = []

    def start(role: str, env: dict, tag: str = "v1.4.2") -> App:
        app = App(folder, role, tag, env)
        apps.append(app)
        return app

    yield start
    codes = {app.pod: app.stop() for app in apps}
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture(scope="module")
def api(started, env, admin, cache):
    app = started("api", env)
    app.wait_ready()
    yield app
    admin.execute("DELETE FROM order_history WHERE owner = %s", (OWNER,))
    admin.execute("DELETE FROM orders WHERE owner = %s", (OWNER,))
    admin.execute("UPDATE users SET locked = (name = 'carol')")
    for user in ("alice", "bob", "carol"):
        cache.delete(f"matchbook:user-locked:{user}")


def admin_key() -> dict:
    return {"X-API-Key": ADMIN_KEY}


# -- tests ---------------------------------------------------------------------------------------
def test_ready_with_good_credentials_and_the_metrics_move(api):
    status, body, _ = api.get("/health/ready")
    assert status == 200
    assert body["status"] == "ready" and body["database"] == "ok" and body["redis"] == "ok"
    assert body["role"] == "api" and body["version"] == "v1.4.2" and body["pod"] == api.pod
    assert api.get("/health")[0] == 200 and api.get("/health/live")[0] == 200
    status, body, _ = api.get("/health/database")
    assert status == 200 and body["database"] == "ok" and body["user"] == "app"

    before = api.metrics()
    assert sample(before, "app_info", role="api", version="v1.4.2", pod=api.pod) == 1
    assert sample(before, "app_ready") == 1
    for _ in range(3):
        assert api.get("/api/markets", headers=admin_key())[0] == 200
    assert api.get("/api/orders/987654321", headers=admin_key())[0] == 404
    after = api.metrics()
    route = {"route": "/api/markets", "method": "GET"}
    assert sample(after, "http_requests_total", **route, code="200") - sample(
        before, "http_requests_total", **route, code="200"
    ) == 3  # fmt: skip
    assert sample(after, "http_request_duration_seconds_count", **route) >= 3
    assert sample(after, "http_request_duration_seconds_bucket", **route, le="+Inf") == sample(
        after, "http_request_duration_seconds_count", **route
    )
    # Routes are templates: no order id in any label.
    assert sample(after, "http_requests_total", route="/api/orders/{id}", method="GET", code="404") >= 1
    assert not [key for key in after if any("987654321" in value for _name, value in key[1])]
    for name in ("db_connection_failures_total", "rows_processed_total", "rows_processed_per_second"):
        assert (name, frozenset()) in after
    # One line per request: time level method path status duration pod.
    line = re.compile(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO GET /api/markets 200 \d+\.\d{3}s (\S+)$", re.M
    )
    assert {m.group(1) for m in line.finditer(api.out.read_text())} == {api.pod}


def test_the_api_key_is_required_and_never_logged(api):
    wrong = "wrong-key-value-5d1b"
    assert api.get("/api/markets")[0] == 401
    assert api.get("/api/markets", headers={"X-API-Key": wrong})[0] == 401
    status, body, _ = api.get("/api/markets", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 200 and {m["symbol"] for m in body["markets"]} >= {"SOL-USDC", "BTC-USDC"}
    # Webhooks take the webhook key, and only it.
    hook = api.url + "/api/webhooks/payments"
    assert call("POST", hook, {"event": "paid"}, {"X-API-Key": ADMIN_KEY})[0] == 401
    assert call("POST", hook, {"event": "paid"}, {"X-API-Key": WEBHOOK_KEY})[0] == 202
    wait_for(lambda: "key API_WEBHOOK_KEY (wrong key)" in api.err.read_text(), what="the refusal logged")
    refusals = [line for line in api.err.read_text().splitlines() if "refused authentication" in line]
    assert any("key API_ADMIN_KEY (no key presented) client=127.0.0.1" in line for line in refusals)
    assert any("key API_ADMIN_KEY (wrong key) client=127.0.0.1" in line for line in refusals)
    logs = api.logs()
    assert wrong not in logs and ADMIN_KEY not in logs and WEBHOOK_KEY not in logs
    assert sample(api.metrics(), "api_key_refusals_total", key="API_ADMIN_KEY") >= 2


def test_orders_are_written_read_back_and_filled_by_the_crank(api, started, env, admin):
    crank = started("crank", env)
    crank.wait_ready()
    order = {"market": "SOL-USDC", "owner": OWNER, "side": "bid", "price": 101.25, "quantity": 3}
    status, body, _ = call("POST", api.url + "/api/orders", order, admin_key())
    assert status == 201, body
    placed = body["order"]
    assert placed["status"] == "open" and placed["price"] == "101.250000" and body["queued"] is True
    listed = api.get("/api/orders?market=SOL-USDC&limit=500", headers=admin_key())[1]["orders"]
    assert placed["id"] in [o["id"] for o in listed]
    assert all(o["market"] == "SOL-USDC" for o in listed)
    # The crank pops the order from the Redis queue and fills it.
    wait_for(
        lambda: api.get(f"/api/orders/{placed['id']}", headers=admin_key())[1]["order"]["status"] == "filled",
        timeout=20,
        what="the crank to fill the order",
    )
    history = admin.execute(
        "SELECT status FROM order_history WHERE owner = %s ORDER BY id", (OWNER,)
    ).fetchall()  # fmt: skip
    assert [r[0] for r in history] == ["open", "filled"]
    seen = api.get("/api/order-history?market=SOL-USDC&limit=5", headers=admin_key())[1]["order_history"]
    assert seen[0]["owner"] == OWNER and seen[0]["status"] == "filled"
    metrics = crank.metrics()
    assert sample(metrics, "rows_processed_total") >= 1 and ("queue_depth", frozenset()) in metrics
    assert sample(metrics, "app_info", role="crank", version="v1.4.2", pod=crank.pod) == 1
    # Bad input and unknown markets are refused, and nothing is written.
    assert call("POST", api.url + "/api/orders", {**order, "side": "up"}, admin_key())[0] == 400
    assert call("POST", api.url + "/api/orders", {**order, "market": "NOPE-USDC"}, admin_key())[0] == 404
    assert admin.execute("SELECT count(*) FROM orders WHERE owner = %s", (OWNER,)).fetchone()[0] == 1


def login(api, user: str, password: str | None = None):
    return call("POST", api.url + "/api/login", {"user": user, "password": password or f"{user}-password"})


def me(api, token: str) -> int:
    return api.get("/api/me", headers={"X-Session-Token": token})[0]


def test_sessions_live_in_redis_and_end_when_the_user_is_locked(api, cache, admin):
    status, body, headers = login(api, "alice")
    assert status == 200 and body["user"] == "alice"
    token = body["token"]
    assert "HttpOnly" in headers["Set-Cookie"]
    status, mine, _ = api.get("/api/me", headers={"Cookie": f"session={token}"})
    assert status == 200 and mine["user"] == "alice" and 0 < mine["session_expires_in"] <= 3600
    assert call("POST", api.url + "/api/logout", headers={"X-Session-Token": token})[0] == 200
    assert me(api, token) == 401
    assert login(api, "alice", "not-her-password")[0] == 401
    assert login(api, "nobody")[0] == 401
    assert login(api, "carol")[0] == 403  # seeded locked

    # A procedure ends every session of a user through Redis: the per-user set names them.
    tokens = [login(api, "bob")[1]["token"] for _ in range(2)]
    assert all(me(api, t) == 200 for t in tokens)
    ids = cache.smembers("matchbook:user-sessions:bob")
    assert len(ids) >= 2 and all(cache.ttl(f"matchbook:session:{i}") > 0 for i in ids)
    assert not [i for i in ids if i in tokens]  # Redis holds hashes of the tokens, not the tokens
    cache.delete(*[f"matchbook:session:{i}" for i in ids], "matchbook:user-sessions:bob")
    assert all(me(api, t) == 401 for t in tokens)

    # Locked by a Redis key: no new login, and a live session is refused when used.
    token = login(api, "bob")[1]["token"]
    cache.set("matchbook:user-locked:bob", "1")
    assert me(api, token) == 403 and login(api, "bob")[0] == 403
    cache.delete("matchbook:user-locked:bob")
    assert login(api, "bob")[0] == 200

    # Locked through the API: the database column set, the sessions ended; unlocked again.
    token = login(api, "alice")[1]["token"]
    status, body, _ = call("POST", api.url + "/api/users/alice/lock", headers=admin_key())
    assert status == 200 and body["locked"] is True and body["sessions_ended"] >= 1
    assert admin.execute("SELECT locked FROM users WHERE name = 'alice'").fetchone()[0] is True
    assert me(api, token) == 401 and login(api, "alice")[0] == 403
    assert call("POST", api.url + "/api/users/alice/unlock", headers=admin_key())[0] == 200
    assert login(api, "alice")[0] == 200
    assert "alice-password" not in api.logs()


def test_a_wrong_database_password_is_not_ready_and_logged_without_the_password(started, env, urls):
    wrong = "wrong-password-7e4c"
    bad_url = urls["DATABASE_URL"].replace(f":{urls['password']}@", f":{wrong}@")
    assert bad_url != urls["DATABASE_URL"]
    app = started("api", {**env, "DATABASE_URL": bad_url})
    refused = "database refused the credentials of user 'app' at 127.0.0.1:"
    wait_for(lambda: app.err.read_text().count(refused) >= 2, timeout=20, what="two refused attempts logged")
    status, body, _ = app.get("/health/ready")
    assert status == 503 and body["database"] == "refused" and body["redis"] == "ok"
    assert body["failed"] == [{"backend": "database", "state": "refused", "detail": "authentication failed"}]
    assert app.get("/health/live")[0] == 200 and app.get("/health/database")[0] == 503
    # Requests that need the database answer 503 at once; the process goes on.
    assert app.get("/api/markets", headers=admin_key())[0] == 503
    metrics = app.metrics()
    assert sample(metrics, "db_connection_failures_total") >= 2 and sample(metrics, "app_ready") == 0
    logs = app.logs()
    assert wrong not in logs and urls["password"] not in logs
    assert app.stop() == 0


def terminate_sessions_of(admin, pod: str) -> None:
    """As a procedure does after changing a database setting: the app reconnects and sees it."""
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
        (f"%/{pod}",),
    )


def test_read_only_database_refuses_writes_with_503_and_reads_go_on(api, admin):
    order = {"market": "BTC-USDC", "owner": OWNER, "side": "ask", "price": 50000, "quantity": 1}
    try:
        admin.execute("ALTER DATABASE app SET default_transaction_read_only = on")
        terminate_sessions_of(admin, api.pod)
        wait_for(
            lambda: api.get("/health/ready")[1]["database"] == "read-only", timeout=20, what="read-only seen"
        )
        status, body, _ = api.get("/health/ready")
        assert status == 200 and body["status"] == "ready"
        status, body, _ = call("POST", api.url + "/api/orders", order, admin_key())
        assert status == 503 and body["error"] == "read-only"
        assert api.get("/api/markets", headers=admin_key())[0] == 200
        assert sample(api.metrics(), "app_database_read_only") == 1
        assert api.proc.poll() is None
    finally:
        admin.execute("ALTER DATABASE app RESET default_transaction_read_only")
        terminate_sessions_of(admin, api.pod)
    wait_for(lambda: api.get("/health/ready")[1]["database"] == "ok", timeout=20, what="writable again")
    assert call("POST", api.url + "/api/orders", order, admin_key())[0] == 201


def test_the_indexer_writes_events_and_advances_its_state(started, env, admin):
    last_id = admin.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    state = admin.execute("SELECT last_slot, last_signature, updated_at FROM indexer_state").fetchone()
    indexer = started("indexer", {**env, "SANDBOX_INDEXER_ROWS_PER_SECOND": "20"})
    try:
        indexer.wait_ready()
        wait_for(lambda: sample(indexer.metrics(), "rows_processed_total") >= 10, timeout=20, what="rows")
        metrics = indexer.metrics()
        assert ("indexer_lag_slots", frozenset()) in metrics and sample(metrics, "indexer_lag_slots") < 100
        assert sample(metrics, "rows_processed_per_second") > 0
        assert indexer.stop() == 0
        slot = admin.execute("SELECT last_slot FROM indexer_state").fetchone()[0]
        assert slot >= state[0] + 10
        written = admin.execute("SELECT count(*), max(slot) FROM events WHERE id > %s", (last_id,)).fetchone()
        assert written[0] >= 10 and written[1] == slot
    finally:
        indexer.stop()
        admin.execute("DELETE FROM events WHERE id > %s", (last_id,))
        admin.execute(
            "UPDATE indexer_state SET last_slot = %s, last_signature = %s, updated_at = %s", state
        )  # fmt: skip


def test_faulty_fails_its_share_of_api_requests_and_slow_is_slower(started, env):
    faulty = started(
        "api", {**env, "SANDBOX_FAULTY_ERROR_RATE": "0.25", "SANDBOX_FAULTY_LATENCY_MS": "5"}, "faulty"
    )
    slow = started("api", {**env, "SANDBOX_SLOW_LATENCY_MS": "300"}, "slow")
    faulty.wait_ready()
    slow.wait_ready()
    codes = [faulty.get("/")[0] for _ in range(40)]
    assert abs(codes.count(500) - 10) <= 2 and codes.count(200) == 40 - codes.count(500)
    # Health and metrics are never failed.
    assert all(faulty.status("/health/ready") == 200 for _ in range(10))
    assert sample(faulty.metrics(), "app_info", role="api", version="faulty", pod=faulty.pod) == 1
    started_at = time.monotonic()
    assert slow.get("/")[0] == 200
    assert time.monotonic() - started_at >= 0.3
    started_at = time.monotonic()
    assert slow.get("/health/live")[0] == 200
    assert time.monotonic() - started_at < 0.3


def test_sigterm_is_not_ready_at_once_finishes_the_request_in_flight_and_exits_0(started, env):
    app = started(
        "api", {**env, "SANDBOX_SLOW_LATENCY_MS": "2500", "SANDBOX_SHUTDOWN_DELAY_SECONDS": "1"}, "slow"
    )
    app.wait_ready()
    answers = []
    thread = threading.Thread(target=lambda: answers.append(app.get("/", timeout=10)))
    thread.start()
    wait_for(lambda: sample(app.metrics(), "http_requests_in_flight") >= 2, what="the request in flight")
    app.proc.send_signal(signal.SIGTERM)
    body = wait_for(lambda: (r := app.get("/health/ready"))[0] == 503 and r[1], what="not ready at once")
    assert body["shutting_down"] is True and app.get("/health/live")[0] == 200
    thread.join(timeout=10)
    assert answers and answers[0][0] == 200
    assert app.proc.wait(timeout=20) == 0
    assert app.status("/health/live") is None
    assert "shutting down" in app.out.read_text() and app.out.read_text().rstrip().endswith(
        f"stopped pod={app.pod}"
    )
