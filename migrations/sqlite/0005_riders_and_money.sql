-- Ratings: each side of a trip rates the other once. `side` is who rated.
CREATE TABLE ratings (
    trip_id     TEXT NOT NULL,
    side        TEXT NOT NULL CHECK (side IN ('rider', 'driver')),
    rater_id    TEXT NOT NULL,
    ratee_id    TEXT NOT NULL,
    stars       INTEGER NOT NULL CHECK (stars BETWEEN 1 AND 5),
    comment     TEXT,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (trip_id, side)
);
CREATE INDEX ratings_ratee ON ratings (ratee_id);

-- One row per applied refund: the same reference twice refunds once. `commission` is the part
-- of the platform's commission this refund reversed.
CREATE TABLE refunds (
    reference   TEXT PRIMARY KEY,
    trip_id     TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    commission  BIGINT NOT NULL,
    currency    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE INDEX refunds_trip ON refunds (trip_id);

-- A trip is charged once: its fare, or (cancelled late) its cancellation fee.
ALTER TABLE payments ADD COLUMN kind TEXT NOT NULL DEFAULT 'fare';

-- Promotions are managed by operators; a disabled code is kept (its uses are history).
ALTER TABLE promotions ADD COLUMN disabled_ms BIGINT;
ALTER TABLE promotions ADD COLUMN created_ms BIGINT NOT NULL DEFAULT 0;

-- Trips booked ahead wait in SCHEDULED.
DROP INDEX trips_live;
CREATE INDEX trips_live ON trips (status) WHERE status IN ('SCHEDULED', 'REQUESTED', 'MATCHING', 'ACCEPTED', 'DRIVER_ARRIVING', 'TRIP_STARTED');
