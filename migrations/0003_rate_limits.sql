-- A webhook's or application's own request-rate limit (P8); NULL takes the server's
-- limits.rate values, and a rate of 0 switches the limit off for that credential.
ALTER TABLE webhooks ADD COLUMN rate_per_second REAL;
ALTER TABLE webhooks ADD COLUMN rate_burst INTEGER;
ALTER TABLE apps ADD COLUMN rate_per_second REAL;
ALTER TABLE apps ADD COLUMN rate_burst INTEGER;
