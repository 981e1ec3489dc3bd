-- Delivery (issue 12): the event log that every live channel reads, the e-mail outbox, and each
-- user's e-mail setting.

-- One row per change a user can see, written in the same transaction as the change. Ids only
-- grow (AUTOINCREMENT), so a client resumes with the last id it saw. `payload` is the JSON the
-- channels send, `counter` included. Kept `events.retention_hours`, then pruned oldest first.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
-- Replay: a user's events after an id, oldest first.
CREATE INDEX events_by_user ON events(user_id, id);

-- E-mail for MESSAGE_OUT (D10-D14). A row is written with its notification when the recipient
-- can be mailed; the worker sends it once due, if the notification is still there and unread.
-- state: pending, sent, skipped (read, deleted or unsubscribed by then), dead (out of attempts).
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    -- The stored tag at the time of the add: due mails of one user that share it are grouped.
    tag             TEXT,
    -- The application's name for the subject (D14); NULL for webhooks.
    sender_name     TEXT,
    state           TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Unix seconds of the next attempt: added + email.delay_seconds, then the backoff.
    due_at          INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    done_at         INTEGER
);
CREATE INDEX outbox_due ON outbox(due_at) WHERE state = 'pending';
CREATE INDEX outbox_by_state ON outbox(state, id);

-- D13: e-mail on (the default) or off; the CLI, the page and the unsubscribe link set it.
ALTER TABLE users ADD COLUMN email_notifications INTEGER NOT NULL DEFAULT 1;
