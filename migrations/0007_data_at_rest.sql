-- Data at rest and credential lifecycle (issue 10, section 5).

-- The CSRF token of a browser session is derived from the session cookie (HMAC), so nothing
-- that would let a reader of the database forge a consent is stored.
ALTER TABLE sessions DROP COLUMN csrf;

-- An authorization code is marked spent instead of deleted, so that presenting it again can be
-- recognised and the tokens it produced revoked (RFC 6749 §4.1.2). Spent codes are forgotten
-- by the retention task a day after they expire.
ALTER TABLE oauth_codes ADD COLUMN spent INTEGER NOT NULL DEFAULT 0;

-- Which authorization code a token pair descends from (directly, or through refreshes).
ALTER TABLE oauth_tokens ADD COLUMN code_hash BLOB;
CREATE INDEX oauth_tokens_by_code ON oauth_tokens(code_hash) WHERE code_hash IS NOT NULL;
-- Revoking every token of a user (password change, deactivation, `token revoke`).
CREATE INDEX oauth_tokens_by_user ON oauth_tokens(user_id);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- The per-recipient cap removes the oldest read notifications first: a range over this index.
CREATE INDEX notifications_read_by_user ON notifications(user_id, id) WHERE is_read = 1;
