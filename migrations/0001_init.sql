-- Users who receive notifications and own webhooks.
CREATE TABLE users (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    last_name  TEXT    NOT NULL DEFAULT '',
    email      TEXT    NOT NULL DEFAULT '',
    active     INTEGER NOT NULL DEFAULT 1,
    is_admin   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

-- Incoming webhooks. The code is stored only as its SHA-256.
CREATE TABLE webhooks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    code_hash  BLOB    NOT NULL,
    scopes     TEXT    NOT NULL,
    active     INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
);
CREATE INDEX webhooks_by_user ON webhooks(user_id);

-- AUTOINCREMENT so that an id, once returned, is never handed out again, even when a tag replace
-- deletes the newest row just before the insert.
CREATE TABLE notifications (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL,
    author_id   INTEGER NOT NULL DEFAULT 0,
    notify_type INTEGER NOT NULL,
    module      TEXT    NOT NULL DEFAULT 'rest',
    event       TEXT    NOT NULL DEFAULT 'rest_notify',
    text        TEXT    NOT NULL,
    text_out    TEXT    NOT NULL DEFAULT '',
    tag         TEXT,
    sub_tag     TEXT,
    attach      TEXT,
    is_read     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
-- Per-user listing, newest first, and the LAST_ID cursor.
CREATE INDEX notifications_by_user ON notifications(user_id, id);
-- Tag replace on add: (recipient, stored tag).
CREATE INDEX notifications_by_user_tag ON notifications(user_id, tag) WHERE tag IS NOT NULL;
-- Delete by TAG / SUB_TAG across all recipients.
CREATE INDEX notifications_by_tag ON notifications(tag) WHERE tag IS NOT NULL;
CREATE INDEX notifications_by_sub_tag ON notifications(sub_tag) WHERE sub_tag IS NOT NULL;
-- Unread counters.
CREATE INDEX notifications_unread ON notifications(user_id) WHERE is_read = 0;
