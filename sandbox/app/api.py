"""The api role: the order book's JSON endpoints, API keys, and user sessions in Redis.

API keys: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``, equal to ``API_ADMIN_KEY`` for
``/api/...`` and to ``API_WEBHOOK_KEY`` for ``/api/webhooks/...``; anything else is 401 and one log
line naming the key expected and the client, never what was presented.

Users log in with a password (``users.password_hash``, PBKDF2-SHA256) and get a session token;
sessions live in Redis (key layout in docs/sandbox.md and below), each with a TTL
(``SANDBOX_SESSION_TTL_SECONDS``, default 3600). A user is locked by ``users.locked`` or by the Redis
key ``matchbook:user-locked:<user>``; a locked user cannot log in, and a session of theirs is
refused (and ended) when used. ``MATCHBOOK_LOGINS=disabled`` (runbook 004's system-wide lockdown)
refuses every new login with 503 ``{"error": "logins are disabled"}``; sessions already open go on.

Writes the database refuses (read-only) answer 503 ``{"error": "read-only"}``; reads go on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time

from sandbox.app import log
from sandbox.app.backends import ReadOnly, Unavailable
from sandbox.app.server import HTTPError, Request, Response, Service

SESSION = "matchbook:session:{}"  # hash {user, created_at, pod}, with the session's TTL
USER_SESSIONS = "matchbook:user-sessions:{}"  # set of the user's session ids
USER_LOCKED = "matchbook:user-locked:{}"  # exists: the user is locked
QUEUE = "matchbook:crank:queue"  # list: LPUSH work, the crank BRPOPs it

SIDES = ("bid", "ask")
ORDER_COLUMNS = "id, market, owner, side, price, quantity, status, created_at, updated_at"
# Compared against when the user does not exist, so a wrong user costs as much as a wrong password.
_NO_USER_HASH = "pbkdf2_sha256$20000$00$" + "0" * 64


def hash_password(password: str, salt: str | None = None, iterations: int = 20000) -> str:
    salt = salt or secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), iterations).hex()
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations)).hex()
    except ValueError:
        return False
    return hmac.compare_digest(got, digest)


def session_id(token: str) -> str:
    """Redis keeps a hash of the token, not the token: reading Redis does not give a way in."""
    return hashlib.sha256(token.encode()).hexdigest()


def _rows(cursor) -> list[dict]:
    names = [c.name for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _limit(req: Request, default: int = 50) -> int:
    try:
        return max(1, min(int(req.query.get("limit", default)), 500))
    except ValueError:
        raise HTTPError(400, "limit must be a number") from None


class Api:
    def __init__(self, service: Service):
        self.service, self.db, self.cache = service, service.db, service.cache
        self.admin_key = os.environ.get("API_ADMIN_KEY") or ""
        self.webhook_key = os.environ.get("API_WEBHOOK_KEY") or ""
        self.session_ttl = int(os.environ.get("SANDBOX_SESSION_TTL_SECONDS", "3600"))
        self.logins_disabled = os.environ.get("MATCHBOOK_LOGINS", "enabled") == "disabled"
        self.refused_keys = service.metrics.counter(
            "api_key_refusals_total", "Requests refused for a missing or wrong API key.", ("key",)
        )
        route = service.route
        route("GET", "/api/markets", self.admin(self.markets))
        route("GET", "/api/orders", self.admin(self.orders))
        route("POST", "/api/orders", self.admin(self.place_order))
        route("GET", "/api/orders/{id}", self.admin(self.order))
        route("GET", "/api/order-history", self.admin(self.order_history))
        route("POST", "/api/users/{user}/lock", self.admin(self.lock))
        route("POST", "/api/users/{user}/unlock", self.admin(self.unlock))
        route("POST", "/api/webhooks/{source}", self.keyed("API_WEBHOOK_KEY", self.webhook_key, self.webhook))
        route("POST", "/api/login", self.login)
        route("GET", "/api/me", self.me)
        route("POST", "/api/logout", self.logout)

    def loops(self) -> list:
        return []

    def status(self) -> dict:
        return {}

    # -- API keys --------------------------------------------------------------------------------
    def keyed(self, name: str, expected: str, handler):
        def checked(req: Request) -> Response:
            presented = req.headers.get("X-API-Key")
            if presented is None:
                scheme, _, value = (req.headers.get("Authorization") or "").partition(" ")
                presented = value.strip() if scheme.lower() == "bearer" else None
            if (
                not expected
                or not presented
                or not hmac.compare_digest(presented.encode(), expected.encode())
            ):
                why = (
                    "not configured"
                    if not expected
                    else ("no key presented" if not presented else "wrong key")
                )
                forwarded = f" forwarded_for={req.forwarded_for}" if req.forwarded_for else ""
                log.warning(
                    f"refused authentication: key {name} ({why}) client={req.client}{forwarded} "
                    f"{req.method} {req.path}"
                )
                self.refused_keys.inc(name)
                raise HTTPError(401, "unauthorized", detail=f"a valid {name} is required")
            return handler(req)

        return checked

    def admin(self, handler):
        return self.keyed("API_ADMIN_KEY", self.admin_key, handler)

    # -- order book ------------------------------------------------------------------------------
    def markets(self, _req: Request) -> Response:
        rows = self.db.run(
            lambda c: _rows(
                c.execute("SELECT symbol, base, quote, status, tick_size FROM markets ORDER BY symbol")
            )
        )
        return Response(200, {"markets": rows})

    def orders(self, req: Request) -> Response:
        market, status = req.query.get("market"), req.query.get("status")
        sql = (
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE (%(market)s::text IS NULL OR market = %(market)s) "
            "AND (%(status)s::text IS NULL OR status = %(status)s) ORDER BY id DESC LIMIT %(limit)s"
        )
        args = {"market": market, "status": status, "limit": _limit(req)}
        return Response(200, {"orders": self.db.run(lambda c: _rows(c.execute(sql, args)))})

    def order(self, req: Request) -> Response:
        if not req.params["id"].isdigit():
            raise HTTPError(404, "no such order")
        order_id = int(req.params["id"])

        def read(conn):
            found = _rows(conn.execute(f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = %s", (order_id,)))
            return found[0] if found else None

        found = self.db.run(read)
        if found is None:
            raise HTTPError(404, "no such order")
        return Response(200, {"order": found})

    def order_history(self, req: Request) -> Response:
        sql = (
            "SELECT id, market, owner, side, price, quantity, status, created_at FROM order_history "
            "WHERE (%(market)s::text IS NULL OR market = %(market)s) ORDER BY id DESC LIMIT %(limit)s"
        )
        args = {"market": req.query.get("market"), "limit": _limit(req)}
        return Response(200, {"order_history": self.db.run(lambda c: _rows(c.execute(sql, args)))})

    def place_order(self, req: Request) -> Response:
        body = req.json()
        market, owner, side = body.get("market"), body.get("owner"), body.get("side")
        if not isinstance(market, str) or not isinstance(owner, str) or not owner or side not in SIDES:
            raise HTTPError(400, "market, owner and side (bid or ask) are required")
        try:
            price, quantity = float(body.get("price")), float(body.get("quantity"))
        except (TypeError, ValueError):
            raise HTTPError(400, "price and quantity must be numbers") from None
        if not price > 0 or not quantity > 0:
            raise HTTPError(400, "price and quantity must be positive")

        def write(conn):
            with conn.transaction():
                found = conn.execute("SELECT status FROM markets WHERE symbol = %s", (market,)).fetchone()
                if found is None:
                    raise HTTPError(404, "no such market")
                if found[0] != "open":
                    raise HTTPError(409, f"the market is {found[0]}")
                order = _rows(
                    conn.execute(
                        "INSERT INTO orders (market, owner, side, price, quantity, status) "
                        f"VALUES (%s, %s, %s, %s, %s, 'open') RETURNING {ORDER_COLUMNS}",
                        (market, owner, side, price, quantity),
                    )
                )[0]
                conn.execute(
                    "INSERT INTO order_history (market, owner, side, price, quantity, status) "
                    "VALUES (%s, %s, %s, %s, %s, 'open')",
                    (market, owner, side, price, quantity),
                )
            return order

        order = self.db.run(write, write=True)
        self.service.processed(1)
        # The crank fills it; a Redis outage does not undo the order, it only delays the fill.
        try:
            self.cache.run(lambda r: r.lpush(QUEUE, json.dumps({"kind": "order", "id": order["id"]})))
            queued = True
        except Unavailable:
            queued = False
        return Response(201, {"order": order, "queued": queued})

    def webhook(self, req: Request) -> Response:
        source = req.params["source"]
        item = {"kind": "webhook", "source": source, "size": len(req.body)}
        self.cache.run(lambda r: r.lpush(QUEUE, json.dumps(item)))
        return Response(202, {"accepted": True, "source": source})

    # -- users and sessions ----------------------------------------------------------------------
    def _user(self, name: str) -> tuple[str, bool] | None:
        row = self.db.run(
            lambda c: c.execute("SELECT password_hash, locked FROM users WHERE name = %s", (name,)).fetchone()
        )
        return (row[0], bool(row[1])) if row else None

    def _locked(self, name: str, locked_in_db: bool | None = None) -> bool:
        if locked_in_db is None:
            found = self._user(name)
            locked_in_db = found is None or found[1]
        return locked_in_db or bool(self.cache.run(lambda r: r.exists(USER_LOCKED.format(name))))

    def login(self, req: Request) -> Response:
        if self.logins_disabled:
            log.warning(f"refused login: logins are disabled (MATCHBOOK_LOGINS) client={req.client}")
            raise HTTPError(503, "logins are disabled")
        body = req.json()
        user, password = body.get("user"), body.get("password")
        if not isinstance(user, str) or not isinstance(password, str):
            raise HTTPError(400, "user and password are required")
        found = self._user(user)
        matches = password_matches(password, found[0] if found else _NO_USER_HASH)
        if found is None or not matches:
            log.warning(f"refused login: user {user!r} (bad user or password) client={req.client}")
            raise HTTPError(401, "invalid user or password")
        if self._locked(user, found[1]):
            log.warning(f"refused login: user {user!r} is locked client={req.client}")
            raise HTTPError(403, "the account is locked")
        token = secrets.token_urlsafe(32)
        sid = session_id(token)

        def store(r):
            pipe = r.pipeline()
            pipe.hset(
                SESSION.format(sid),
                mapping={"user": user, "created_at": int(time.time()), "pod": self.service.pod},
            )
            pipe.expire(SESSION.format(sid), self.session_ttl)
            pipe.sadd(USER_SESSIONS.format(user), sid)
            pipe.expire(USER_SESSIONS.format(user), self.session_ttl)
            pipe.execute()

        self.cache.run(store)
        cookie = f"session={token}; Path=/; Max-Age={self.session_ttl}; HttpOnly; SameSite=Strict"
        body = {"user": user, "token": token, "expires_in": self.session_ttl}
        return Response(200, body, headers={"Set-Cookie": cookie})

    def _session(self, req: Request) -> tuple[str, str]:
        token = req.headers.get("X-Session-Token")
        if not token:
            for part in (req.headers.get("Cookie") or "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == "session":
                    token = value
        if not token:
            raise HTTPError(401, "no session")
        sid = session_id(token)
        user = self.cache.run(lambda r: r.hget(SESSION.format(sid), "user"))
        if not user:
            raise HTTPError(401, "the session has ended")
        return sid, user

    def _end(self, sid: str, user: str) -> None:
        self.cache.run(
            lambda r: r.pipeline().delete(SESSION.format(sid)).srem(USER_SESSIONS.format(user), sid).execute()
        )

    def me(self, req: Request) -> Response:
        sid, user = self._session(req)
        if self._locked(user):
            self._end(sid, user)
            log.warning(f"refused session: user {user!r} is locked client={req.client}")
            raise HTTPError(403, "the account is locked")
        ttl = self.cache.run(lambda r: r.ttl(SESSION.format(sid)))
        return Response(200, {"user": user, "session_expires_in": ttl})

    def logout(self, req: Request) -> Response:
        sid, user = self._session(req)
        self._end(sid, user)
        return Response(200, {"user": user, "logged_out": True})

    def end_sessions(self, user: str) -> int:
        def end(r):
            sids = r.smembers(USER_SESSIONS.format(user))
            pipe = r.pipeline()
            for sid in sids:
                pipe.delete(SESSION.format(sid))
            pipe.delete(USER_SESSIONS.format(user))
            return sum(pipe.execute()[:-1]) if sids else 0

        return self.cache.run(end)

    def _set_locked(self, req: Request, locked: bool) -> Response:
        user = req.params["user"]
        try:
            changed = self.db.run(
                lambda c: c.execute("UPDATE users SET locked = %s WHERE name = %s", (locked, user)).rowcount,
                write=True,
            )
        except ReadOnly:
            raise HTTPError(503, "read-only", detail="the database refuses writes") from None
        if not changed:
            raise HTTPError(404, "no such user")
        if locked:
            self.cache.run(lambda r: r.set(USER_LOCKED.format(user), "1"))
            ended = self.end_sessions(user)
        else:
            self.cache.run(lambda r: r.delete(USER_LOCKED.format(user)))
            ended = 0
        log.info(f"user {user!r} {'locked' if locked else 'unlocked'}, {ended} session(s) ended")
        return Response(200, {"user": user, "locked": locked, "sessions_ended": ended})

    def lock(self, req: Request) -> Response:
        return self._set_locked(req, True)

    def unlock(self, req: Request) -> Response:
        return self._set_locked(req, False)
