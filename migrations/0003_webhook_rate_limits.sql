-- A webhook's own request-rate limit (P8); NULL takes the server's limits.rate values, and a
-- rate of 0 switches the limit off for that webhook.
-- Numbered 0003 so that it does not collide with the applications migration being written in
-- parallel as 0002.
ALTER TABLE webhooks ADD COLUMN rate_per_second REAL;
ALTER TABLE webhooks ADD COLUMN rate_burst INTEGER;
