"""The indexer's and the crank's background loops.

Indexer: follows a simulated chain whose head advances ``SANDBOX_INDEXER_ROWS_PER_SECOND`` slots a
second (default 2; 0 stops it), writing one row to ``events`` per slot and advancing
``indexer_state`` in the same transaction, at most 4 seconds' worth per step when it is behind. The
head starts at ``indexer_state.last_slot`` and moves on while the database is unusable, so
``indexer_lag_slots`` (head - last_slot) grows during an outage and shrinks after it.

Crank: works the Redis list ``matchbook:crank:queue`` (BRPOP), at most
``SANDBOX_CRANK_ITEMS_PER_SECOND`` items a second (default 10). ``order`` items (pushed by the api's
POST /api/orders) fill the order: ``orders.status`` 'filled' and a 'filled' row in
``order_history``. ``settle`` items, which the crank pushes itself every
``SANDBOX_CRANK_TOPUP_SECONDS`` (default 2) while the queue holds fewer than 5 items, only read.
An item it cannot finish (the database read-only or gone) goes back to the head of the queue.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from sandbox import wallet
from sandbox.app import log
from sandbox.app.backends import Backoff, ReadOnly, Unavailable

SEED_SLOT = 250000000  # the seed's slots are SEED_SLOT + n, signed md5('sig' || n)
KINDS = ("order_placed", "order_cancelled", "fill")
MARKETS = ("SOL-USDC", "BTC-USDC", "ETH-USDC")
QUEUE = "matchbook:crank:queue"


def signature(slot: int) -> str:
    return hashlib.md5(f"sig{slot - SEED_SLOT}".encode()).hexdigest()


class Indexer:
    def __init__(self, service):
        self.service, self.db = service, service.db
        self.rate = float(os.environ.get("SANDBOX_INDEXER_ROWS_PER_SECOND", "2"))
        self.head: float | None = None
        self.last_slot: int | None = None
        service.metrics.gauge(
            "indexer_lag_slots", "Slots the indexer is behind the chain's head.", read=self.lag
        )
        service.metrics.gauge(
            "indexer_last_slot", "The newest slot written.", read=lambda: float(self.last_slot or 0)
        )

    def lag(self) -> float:
        if self.head is None or self.last_slot is None:
            return 0.0
        return max(0.0, float(int(self.head) - self.last_slot))

    def status(self) -> dict:
        return {
            "indexer": {
                "last_slot": self.last_slot,
                "lag_slots": int(self.lag()),
                "rows_per_second": self.rate,
            }
        }

    def loops(self) -> list:
        return [self.index]

    def _step(self, conn) -> int:
        with conn.transaction():
            row = conn.execute("SELECT last_slot FROM indexer_state WHERE id = 1 FOR UPDATE").fetchone()
            last = row[0] if row else SEED_SLOT
            if self.head is None:
                self.head = float(last)
            self.last_slot = last
            count = min(int(self.head) - last, max(1, int(self.rate * 4)))
            if count <= 0:
                return 0
            slots = list(range(last + 1, last + count + 1))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO events (slot, signature, kind, payload) VALUES (%s, %s, %s, %s)",
                    [(s, signature(s), KINDS[s % 3], json.dumps({"slot": s})) for s in slots],
                )
            conn.execute(
                "INSERT INTO indexer_state (id, last_slot, last_signature, updated_at) "
                "VALUES (1, %s, %s, now()) "
                "ON CONFLICT (id) DO UPDATE SET last_slot = excluded.last_slot, "
                "last_signature = excluded.last_signature, updated_at = now()",
                (slots[-1], signature(slots[-1])),
            )
        self.last_slot = slots[-1]
        return count

    def index(self) -> None:
        stop, backoff, before = self.service.stop, Backoff(), time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if self.head is not None:
                self.head += self.rate * (now - before)
            before = now
            if self.rate <= 0:
                stop.wait(1.0)
                continue
            try:
                written = self.db.run(self._step, write=True)
            except (Unavailable, ReadOnly):
                stop.wait(backoff.next())
                continue
            except Exception as exc:  # e.g. the table gone during a restore's swap: log, go on
                log.error(f"indexer step failed: {type(exc).__name__}: {str(exc)[:200]}")
                stop.wait(backoff.next())
                continue
            backoff.reset()
            if written:
                self.service.processed(written)
            stop.wait(max(0.1, min(1.0, 1.0 / self.rate)))


class Crank:
    TOPUP_BELOW = 5

    def __init__(self, service):
        self.service, self.db, self.cache = service, service.db, service.cache
        self.per_item = 1.0 / max(float(os.environ.get("SANDBOX_CRANK_ITEMS_PER_SECOND", "10")), 0.01)
        self.topup_every = float(os.environ.get("SANDBOX_CRANK_TOPUP_SECONDS", "2"))
        self.depth = 0
        self.next_topup = 0.0
        self.topups = 0
        # The wallet it signs with (CRANK_KEYPAIR, a keypair file's JSON): only its public key is shown.
        try:
            self.wallet = (
                wallet.pubkey(os.environ["CRANK_KEYPAIR"]) if os.environ.get("CRANK_KEYPAIR") else None
            )
        except ValueError:
            self.wallet = None
        log.info(f"crank wallet {self.wallet or '(none: CRANK_KEYPAIR is not a keypair)'}")
        service.metrics.gauge(
            "queue_depth", "Items waiting in the crank's queue.", read=lambda: float(self.depth)
        )

    def status(self) -> dict:
        processed = int(self.service.rows.value())
        return {"crank": {"queue_depth": self.depth, "processed": processed, "wallet": self.wallet}}

    def loops(self) -> list:
        return [self.work]

    def _top_up(self, r) -> None:
        if time.monotonic() >= self.next_topup and self.topup_every > 0:
            self.next_topup = time.monotonic() + self.topup_every
            if r.llen(QUEUE) < self.TOPUP_BELOW:
                self.topups += 1
                r.lpush(QUEUE, json.dumps({"kind": "settle", "market": MARKETS[self.topups % len(MARKETS)]}))

    def _fill(self, conn, order_id: int) -> None:
        with conn.transaction():
            row = conn.execute(
                "UPDATE orders SET status = 'filled', updated_at = now() WHERE id = %s AND status = 'open' "
                "RETURNING market, owner, side, price, quantity",
                (order_id,),
            ).fetchone()
            if row:
                conn.execute(
                    "INSERT INTO order_history (market, owner, side, price, quantity, status) "
                    "VALUES (%s, %s, %s, %s, %s, 'filled')",
                    row,
                )

    def _process(self, item: dict) -> None:
        kind = item.get("kind")
        if kind == "order" and isinstance(item.get("id"), int):
            self.db.run(lambda c: self._fill(c, item["id"]), write=True)
        elif kind == "settle":
            self.db.run(
                lambda c: c.execute(
                    "SELECT count(*) FROM orders WHERE market = %s AND status = 'open'", (item.get("market"),)
                ).fetchone()
            )

    def work(self) -> None:
        stop, backoff = self.service.stop, Backoff()
        while not stop.is_set():
            try:
                self.cache.run(self._top_up)
                popped = self.cache.run(lambda r: r.brpop([QUEUE], timeout=1))
                if popped:
                    raw = popped[1]
                    try:
                        item = json.loads(raw)
                    except ValueError:
                        item = {}
                    try:
                        self._process(item if isinstance(item, dict) else {})
                    except (Unavailable, ReadOnly):
                        self.cache.run(lambda r, raw=raw: r.rpush(QUEUE, raw))  # back at the head: next
                        raise
                    self.service.processed(1)
                self.depth = int(self.cache.run(lambda r: r.llen(QUEUE)))
            except (Unavailable, ReadOnly):
                stop.wait(backoff.next())
                continue
            except Exception as exc:
                log.error(f"crank step failed: {type(exc).__name__}: {str(exc)[:200]}")
                stop.wait(backoff.next())
                continue
            backoff.reset()
            if popped:
                stop.wait(self.per_item)
