-- The order-book database of runbook 000, small: a few rows in each table the runbooks query.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS events (
    id         bigserial PRIMARY KEY,
    slot       bigint NOT NULL,
    signature  text NOT NULL,
    kind       text NOT NULL,
    payload    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS events_slot_idx ON events (slot);
CREATE TABLE IF NOT EXISTS order_history (
    id         bigserial PRIMARY KEY,
    market     text NOT NULL,
    owner      text NOT NULL,
    side       text NOT NULL CHECK (side IN ('bid', 'ask')),
    price      numeric(20, 6) NOT NULL,
    quantity   numeric(20, 6) NOT NULL,
    status     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS order_history_market_idx ON order_history (market, created_at);
CREATE TABLE IF NOT EXISTS trades (
    id         bigserial PRIMARY KEY,
    market     text NOT NULL,
    maker      text NOT NULL,
    taker      text NOT NULL,
    price      numeric(20, 6) NOT NULL,
    quantity   numeric(20, 6) NOT NULL,
    slot       bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Migration 20240201120000 (sandbox/app/migrate.py owns its up and down SQL; `migrate rollback` reverts it).
ALTER TABLE trades ADD COLUMN IF NOT EXISTS fee numeric(20, 6) NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS trades_slot_idx ON trades (slot);
CREATE TABLE IF NOT EXISTS indexer_state (
    id             int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    last_slot      bigint NOT NULL,
    last_signature text NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

INSERT INTO schema_migrations (version) VALUES
    ('20240101000000'), ('20240115093000'), ('20240201120000')
ON CONFLICT DO NOTHING;
INSERT INTO events (slot, signature, kind, payload)
SELECT 250000000 + g, md5('sig' || g), (ARRAY['order_placed', 'order_cancelled', 'fill'])[1 + g % 3],
       jsonb_build_object('n', g)
FROM generate_series(1, 500) AS g
WHERE NOT EXISTS (SELECT 1 FROM events);
INSERT INTO order_history (market, owner, side, price, quantity, status)
SELECT (ARRAY['SOL-USDC', 'BTC-USDC'])[1 + g % 2], md5('owner' || g % 17), (ARRAY['bid', 'ask'])[1 + g % 2],
       100 + (g % 50) / 10.0, 1 + g % 7, (ARRAY['open', 'filled', 'cancelled'])[1 + g % 3]
FROM generate_series(1, 300) AS g
WHERE NOT EXISTS (SELECT 1 FROM order_history);
INSERT INTO trades (market, maker, taker, price, quantity, slot)
SELECT (ARRAY['SOL-USDC', 'BTC-USDC'])[1 + g % 2], md5('maker' || g % 11), md5('taker' || g % 13),
       100 + (g % 40) / 10.0, 1 + g % 5, 250000000 + g
FROM generate_series(1, 200) AS g
WHERE NOT EXISTS (SELECT 1 FROM trades);
INSERT INTO indexer_state (id, last_slot, last_signature)
VALUES (1, 250000500, md5('sig500'))
ON CONFLICT DO NOTHING;

-- The application's own tables (sandbox/app): markets it trades, orders it places (the crank fills
-- them), and the users who log in. Seeded users' passwords are `<name>-password` (docs/sandbox.md).
CREATE TABLE IF NOT EXISTS markets (
    symbol    text PRIMARY KEY,
    base      text NOT NULL,
    quote     text NOT NULL,
    tick_size numeric(20, 6) NOT NULL,
    status    text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'halted'))
);
CREATE TABLE IF NOT EXISTS orders (
    id         bigserial PRIMARY KEY,
    market     text NOT NULL REFERENCES markets (symbol),
    owner      text NOT NULL,
    side       text NOT NULL CHECK (side IN ('bid', 'ask')),
    price      numeric(20, 6) NOT NULL,
    quantity   numeric(20, 6) NOT NULL,
    status     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_market_idx ON orders (market, status);
CREATE TABLE IF NOT EXISTS users (
    name          text PRIMARY KEY,
    password_hash text NOT NULL,
    locked        boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO markets (symbol, base, quote, tick_size) VALUES
    ('SOL-USDC', 'SOL', 'USDC', 0.001), ('BTC-USDC', 'BTC', 'USDC', 0.1), ('ETH-USDC', 'ETH', 'USDC', 0.01)
ON CONFLICT DO NOTHING;
INSERT INTO users (name, password_hash, locked) VALUES
    ('alice', 'pbkdf2_sha256$20000$a11ce5a1$6974ec76bb52562d60f66c044eabdc1f1b4d1840cd66284b4c41b3c370dddabe', false),
    ('bob', 'pbkdf2_sha256$20000$b0b5a175$66051382ba9f83c5fe9427629fb3be257088ccec1b9a4f972c3bf997780d0538', false),
    ('carol', 'pbkdf2_sha256$20000$ca2015a1$9af9c27bda2406affd49c2fabf0f545809138c7e6e9f9dd6ce5e377c57f7254e', true)
ON CONFLICT DO NOTHING;
