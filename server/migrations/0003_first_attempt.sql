-- When a delivery was first attempted: the retry horizon counts from there,
-- so an event that waited behind an earlier one of its conversation still
-- gets its full horizon of retries.
ALTER TABLE webhook_outbox ADD COLUMN first_attempt_us BIGINT;
