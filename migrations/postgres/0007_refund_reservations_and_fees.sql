-- What refunds took back of each charge: a refund reserves its amount in the statement that
-- checks what is left, so concurrent refunds of one trip never exceed the charge.
ALTER TABLE payments ADD COLUMN refunded BIGINT NOT NULL DEFAULT 0;
UPDATE payments SET refunded = COALESCE((SELECT SUM(r.amount) FROM refunds r WHERE r.trip_id = payments.trip_id), 0);

-- A late cancellation's fee in the projection, so a fee no message settled can be found.
ALTER TABLE trips ADD COLUMN cancellation_fee BIGINT;
CREATE INDEX trips_fee_due ON trips (trip_id) WHERE status = 'CANCELLED' AND cancellation_fee IS NOT NULL;
