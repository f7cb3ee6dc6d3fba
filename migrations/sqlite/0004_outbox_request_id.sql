-- The HTTP request that caused an event, carried into its bus message's headers.
ALTER TABLE outbox ADD COLUMN request_id TEXT;
