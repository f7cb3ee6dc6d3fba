-- One row per charged trip: the idempotency key of a charge is the trip id.
CREATE TABLE payments (
    trip_id      TEXT PRIMARY KEY,
    rider_id     TEXT NOT NULL,
    driver_id    TEXT NOT NULL,
    amount       BIGINT NOT NULL,
    commission   BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    created_ms   BIGINT NOT NULL
);

-- One row per applied top-up: the same reference twice credits once.
CREATE TABLE topups (
    reference    TEXT PRIMARY KEY,
    owner_id     TEXT NOT NULL,
    amount       BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    created_ms   BIGINT NOT NULL
);
