-- hexdispatch schema (PostgreSQL). Ids are UUID text, times epoch milliseconds, money integer
-- minor units; JSON payloads are text so the same queries run on the SQLite default.

CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,
    role           TEXT NOT NULL CHECK (role IN ('rider', 'driver', 'operator')),
    name           TEXT NOT NULL,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    phone          TEXT,
    created_ms     BIGINT NOT NULL
);

CREATE TABLE drivers (
    driver_id      TEXT PRIMARY KEY,
    vehicle_type   TEXT NOT NULL,
    status         TEXT NOT NULL,
    lat            DOUBLE PRECISION,
    lng            DOUBLE PRECISION,
    position_ms    BIGINT,
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL
);

CREATE TABLE vehicles (
    driver_id      TEXT PRIMARY KEY REFERENCES drivers (driver_id),
    vehicle_type   TEXT NOT NULL,
    plate          TEXT
);

-- The current state of each trip, a projection of its events (the log is the truth).
CREATE TABLE trips (
    trip_id          TEXT PRIMARY KEY,
    rider_id         TEXT NOT NULL,
    driver_id        TEXT,
    status           TEXT NOT NULL,
    vehicle_type     TEXT NOT NULL,
    fare_estimate    BIGINT NOT NULL,
    fare             BIGINT,
    currency         TEXT NOT NULL,
    version          BIGINT NOT NULL,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL,
    idempotency_key  TEXT,
    fingerprint      TEXT
);
CREATE INDEX trips_rider ON trips (rider_id, trip_id);
CREATE INDEX trips_live ON trips (status) WHERE status IN ('REQUESTED', 'MATCHING', 'ACCEPTED', 'DRIVER_ARRIVING', 'TRIP_STARTED');
CREATE UNIQUE INDEX trips_idempotency ON trips (rider_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Append-only: one row per event, in order per trip.
CREATE TABLE trip_events (
    trip_id   TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    type      TEXT NOT NULL,
    at_ms     BIGINT NOT NULL,
    data      TEXT NOT NULL,
    PRIMARY KEY (trip_id, seq)
);

-- Driver positions, sampled.
CREATE TABLE location_history (
    driver_id  TEXT NOT NULL,
    ts_ms      BIGINT NOT NULL,
    lat        DOUBLE PRECISION NOT NULL,
    lng        DOUBLE PRECISION NOT NULL,
    heading    DOUBLE PRECISION,
    speed_mps  DOUBLE PRECISION,
    PRIMARY KEY (driver_id, ts_ms)
);

-- Domain events to publish, written in the same transaction as what they announce.
CREATE TABLE outbox (
    id            BIGSERIAL PRIMARY KEY,
    message_id    TEXT NOT NULL UNIQUE,
    routing_key   TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    published_ms  BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_ms IS NULL;

CREATE TABLE promotions (
    code             TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('percent', 'flat')),
    value            BIGINT NOT NULL,
    valid_from_ms    BIGINT NOT NULL,
    valid_until_ms   BIGINT NOT NULL,
    per_rider_limit  INTEGER NOT NULL
);

CREATE TABLE promotion_uses (
    code      TEXT NOT NULL,
    rider_id  TEXT NOT NULL,
    uses      INTEGER NOT NULL,
    PRIMARY KEY (code, rider_id)
);

CREATE TABLE wallets (
    owner_id    TEXT PRIMARY KEY,
    currency    TEXT NOT NULL,
    balance     BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);

-- Double entry: every transaction's rows sum to zero.
CREATE TABLE ledger (
    id          BIGSERIAL PRIMARY KEY,
    txn_id      TEXT NOT NULL,
    account     TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    currency    TEXT NOT NULL,
    trip_id     TEXT,
    reference   TEXT,
    created_ms  BIGINT NOT NULL
);
CREATE INDEX ledger_txn ON ledger (txn_id);
CREATE INDEX ledger_account ON ledger (account, created_ms);
