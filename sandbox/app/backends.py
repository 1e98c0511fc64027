"""The database and Redis as a pod reaches them: connections, their state, and reconnecting.

Each backend has a state, kept up to date by a monitor thread that checks it once a second while it
works and, while it does not, tries again with a capped back-off (0.2 s doubling to 5 s), one log
line per failed attempt naming the user and the server (never the password). Readiness is read from
these states. Credentials come only from the environment the process started with: a new Secret
value reaches new pods only, as in a cluster.

States: ``ok``; ``read-only`` (the database answers but refuses writes: a standby, the
``default_transaction_read_only`` setting, or no INSERT privilege on the role's table); ``refused``
(the server refused the credentials); ``unreachable`` (no connection, or the server is starting or
stopping); ``error`` (anything else, e.g. the database does not exist); ``unknown`` before the
first check.

Database connections are pooled (a few idle ones, each at most ``SANDBOX_DB_CONNECTION_MAX_AGE_SECONDS``
old, default 60), so a password changed on the server keeps working on the open connections until
they are recycled, as with a real pool. A unit of work that finds its connection gone (terminated
by the server, e.g. during a restore's swap) is run once more on a new one.
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq

from sandbox.app import log

OK, READ_ONLY, REFUSED, UNREACHABLE, ERROR, UNKNOWN = (
    "ok",
    "read-only",
    "refused",
    "unreachable",
    "error",
    "unknown",
)
USABLE = (OK, READ_ONLY)
CHECK_INTERVAL = 1.0
IDLE_CONNECTIONS = 4


class Backoff:
    def __init__(self, first: float = 0.2, cap: float = 5.0):
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.first


class Unavailable(Exception):
    """The backend cannot be used now; ``state`` says why."""

    def __init__(self, backend: str, state: str):
        self.backend, self.state = backend, state
        super().__init__(f"{backend} {state}")


class ReadOnly(Exception):
    """The database refused a write."""


class Backend(abc.ABC):
    name = ""

    def __init__(self, failures):
        self.failures = failures  # the counter of failed connection attempts
        self.state, self.detail = UNKNOWN, "not checked yet"
        self.attempts = 0  # failed attempts in a row
        self._lock = threading.Lock()

    @property
    def usable(self) -> bool:
        return self.state in USABLE

    def set_state(self, state: str, detail: str) -> None:
        with self._lock:
            changed = state != self.state
            self.state, self.detail = state, detail
        if changed and state in USABLE:
            log.info(f"{self.name} {state} at {self.where}" + (f" ({detail})" if state != OK else ""))

    def failed_attempt(self, state: str, reason: str) -> None:
        """One failed connection attempt: counted, logged, and the state set."""
        self.failures.inc()
        self.attempts += 1
        if state == REFUSED:
            text = f"{self.name} refused the credentials of user {self.user!r} at {self.where}"
        else:
            text = f"{self.name} {state} at {self.where} as user {self.user!r}: {reason}"
        log.warning(f"{text} (attempt {self.attempts})")
        self.set_state(state, reason)

    @abc.abstractmethod
    def check(self) -> bool:
        """One connection attempt with the credentials of the environment; True when accepted."""

    def monitor(self, stop: threading.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            try:
                working = self.check()
            except Exception as exc:  # the monitor must outlive any surprise; it is logged
                log.error(f"{self.name} check failed: {type(exc).__name__}")
                self.set_state(ERROR, type(exc).__name__)
                working = False
            if working:
                backoff.reset()
                self.attempts = 0
            stop.wait(CHECK_INTERVAL if working else backoff.next())


def classify_pg_error(message: str) -> tuple[str, str]:
    """The state and a short reason for a failed connection, from the server's or libpq's message
    (which names the user and the server but never the password)."""
    text = message.lower()
    if "authentication failed" in text or "no pg_hba.conf entry" in text:
        return REFUSED, "authentication failed"
    if "role" in text and "does not exist" in text:
        return REFUSED, "no such role"
    if "permission denied for database" in text or "not permitted to log in" in text:
        return REFUSED, "login not permitted"
    if "database" in text and "does not exist" in text:
        return ERROR, "the database does not exist"
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("timeout expired", "connection timed out"),
        ("starting up", "the server is starting up"),
        ("shutting down", "the server is shutting down"),
        ("recovery mode", "the server is in recovery mode"),
        ("too many", "too many connections"),
        ("does not allow connections", "the database does not allow connections"),
        ("could not translate host", "unknown host"),
        ("server closed the connection", "the server closed the connection"),
    ):
        if needle in text:
            return (ERROR if needle == "does not allow connections" else UNREACHABLE), reason
    return UNREACHABLE, "connection failed"


class Database(Backend):
    name = "database"

    def __init__(self, url: str, application_name: str, failures, write_table: str):
        super().__init__(failures)
        self.url, self.application_name, self.write_table = url, application_name, write_table
        try:
            info = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error:
            info = {}
        self.user = info.get("user", "?")
        self.where = f"{info.get('host', '?')}:{info.get('port', 5432)}/{info.get('dbname', '?')}"
        self.max_age = float(os.environ.get("SANDBOX_DB_CONNECTION_MAX_AGE_SECONDS", "60"))
        self._idle: list[tuple[float, psycopg.Connection]] = []
        self._pool_lock = threading.Lock()

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(
                self.url, autocommit=True, connect_timeout=3, application_name=self.application_name
            )
        except psycopg.Error as exc:
            self.failed_attempt(*classify_pg_error(str(exc)))
            raise Unavailable(self.name, self.state) from None

    @contextlib.contextmanager
    def connection(self):
        born, conn = None, None
        with self._pool_lock:
            while self._idle and conn is None:
                born, conn = self._idle.pop()
                if conn.closed or time.monotonic() - born > self.max_age:
                    conn.close()
                    conn = None
        if conn is None:
            born, conn = time.monotonic(), self._connect()
        try:
            yield conn
        finally:
            reusable = (
                not conn.closed
                and not conn.broken
                and conn.info.transaction_status == pq.TransactionStatus.IDLE
            )
            with self._pool_lock:
                if reusable and len(self._idle) < IDLE_CONNECTIONS:
                    self._idle.append((born, conn))
                    conn = None
            if conn is not None:
                conn.close()

    def run(self, work: Callable[[psycopg.Connection], Any], write: bool = False) -> Any:
        """``work(conn)`` on a pooled connection (autocommit: use ``conn.transaction()`` for more
        than one statement). Raises Unavailable, or ReadOnly when the database refuses a write."""
        if not self.usable:
            raise Unavailable(self.name, self.state)
        for attempt in range(2):
            try:
                with self.connection() as conn:
                    return work(conn)
            except (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege) as exc:
                if write:
                    self.set_state(READ_ONLY, f"a write was refused: {exc.sqlstate}")
                raise ReadOnly() from None
            except psycopg.OperationalError:
                if attempt:
                    raise Unavailable(self.name, "connection lost") from None
        raise AssertionError("unreachable")

    def check(self) -> bool:
        query = (
            "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on', "
            "coalesce(has_table_privilege(to_regclass(%s), 'INSERT'), true)"
        )
        for attempt in range(2):
            try:
                with self.connection() as conn:
                    standby, read_only, may_insert = conn.execute(query, (self.write_table,)).fetchone()
                break
            except Unavailable:
                return False
            except psycopg.OperationalError:
                if attempt:
                    self.failed_attempt(UNREACHABLE, "the connection was lost")
                    return False
        if standby:
            self.set_state(READ_ONLY, "the server is a standby")
        elif read_only:
            self.set_state(READ_ONLY, "default_transaction_read_only is on")
        elif not may_insert:
            self.set_state(READ_ONLY, f"no INSERT privilege on {self.write_table}")
        else:
            self.set_state(OK, "")
        return True

    def close(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for _born, conn in idle:
            conn.close()


class Cache(Backend):
    """Redis: sessions (api) and the crank's work queue."""

    name = "redis"

    def __init__(self, url: str, failures):
        super().__init__(failures)
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.redis = redis
        parts = urllib.parse.urlsplit(url)
        self.user = parts.username or "default"
        self.where = f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"
        # One quick retry covers a pooled connection the server closed; the monitor does the rest.
        self.client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 1),
        )

    def _classify(self, exc: Exception) -> tuple[str, str]:
        text = str(exc).lower()
        if isinstance(exc, self.redis.AuthenticationError) or "noauth" in text or "wrongpass" in text:
            return REFUSED, "authentication failed"
        if isinstance(exc, self.redis.TimeoutError):
            return UNREACHABLE, "timed out"
        if isinstance(exc, self.redis.ConnectionError):
            return UNREACHABLE, "connection failed"
        return ERROR, type(exc).__name__

    def run(self, work: Callable[[Any], Any]) -> Any:
        if not self.usable:
            raise Unavailable(self.name, self.state)
        try:
            return work(self.client)
        except self.redis.RedisError as exc:
            state, reason = self._classify(exc)
            if state in (REFUSED, UNREACHABLE):
                self.failed_attempt(state, reason)
                raise Unavailable(self.name, state) from None
            raise

    def check(self) -> bool:
        try:
            self.client.ping()
        except self.redis.RedisError as exc:
            self.failed_attempt(*self._classify(exc))
            return False
        self.set_state(OK, "")
        return True

    def close(self) -> None:
        self.client.close()


class Missing(Backend):
    """A backend whose URL is not in the environment: never usable, said once."""

    def __init__(self, name: str, variable: str, failures):
        super().__init__(failures)
        self.name, self.user, self.where = name, "?", "?"
        self.state, self.detail = ERROR, f"{variable} is not set"
        log.error(f"{name}: {variable} is not set")

    def check(self) -> bool:
        return False

    def run(self, work, write: bool = False):
        raise Unavailable(self.name, self.state)

    def close(self) -> None:
        pass
