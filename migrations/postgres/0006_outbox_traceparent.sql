-- The span that wrote an event (W3C traceparent), when traces are exported: its bus message
-- continues that trace.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
