-- The notification lifecycle: notification chats with their counters, confirm buttons, and the
-- indexes that keep listing and counting independent of how many notifications are stored.

-- One notification chat per recipient (§2.7: "created on first use"). Its id is the `chat_id`
-- of im.notify.get. `total` and `unread` are kept by the triggers below, so that the counters of
-- im.notify.get and im.counters.get are one primary-key lookup instead of a count over rows.
CREATE TABLE notify_chats (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL UNIQUE,
    total   INTEGER NOT NULL DEFAULT 0,
    unread  INTEGER NOT NULL DEFAULT 0
);

-- Notifications stored before this migration get their chats, in recipient order.
INSERT INTO notify_chats (user_id, total, unread)
SELECT user_id, COUNT(*), SUM(is_read = 0)
  FROM notifications
 GROUP BY user_id
 ORDER BY user_id;

-- The keyboard of a confirm-type (1) notification, as JSON. REST cannot create those, so this is
-- empty unless another producer writes them.
ALTER TABLE notifications ADD COLUMN buttons TEXT;

CREATE TRIGGER notifications_count_insert AFTER INSERT ON notifications
BEGIN
    INSERT OR IGNORE INTO notify_chats (user_id) VALUES (NEW.user_id);
    UPDATE notify_chats
       SET total = total + 1, unread = unread + (NEW.is_read = 0)
     WHERE user_id = NEW.user_id;
END;

CREATE TRIGGER notifications_count_delete AFTER DELETE ON notifications
BEGIN
    UPDATE notify_chats
       SET total = total - 1, unread = unread - (OLD.is_read = 0)
     WHERE user_id = OLD.user_id;
END;

CREATE TRIGGER notifications_count_read AFTER UPDATE OF is_read ON notifications
WHEN OLD.is_read <> NEW.is_read
BEGIN
    UPDATE notify_chats
       SET unread = unread + (NEW.is_read = 0) - (OLD.is_read = 0)
     WHERE user_id = NEW.user_id;
END;

-- im.notify.get reads confirmations first, then the rest, each newest first from a LAST_ID
-- cursor. One partial index per stage makes each a range scan that stops after LIMIT rows.
CREATE INDEX notifications_confirm_by_user ON notifications(user_id, id) WHERE notify_type = 1;
CREATE INDEX notifications_normal_by_user ON notifications(user_id, id) WHERE notify_type <> 1;

-- "This one and all newer" and read.all touch only unread rows: a range over this index.
DROP INDEX notifications_unread;
CREATE INDEX notifications_unread_by_user ON notifications(user_id, id) WHERE is_read = 0;
