-- Tag origin (issue 10 §3; README "Tag origin"). The stored `MP|md5(key)[:5]|TAG` string stays
-- exactly as Bitrix24 shows it, but its 20-bit namespace is no boundary between integrations, so
-- who sent a tagged notification is kept apart: `app:{client_id}` for an OAuth app,
-- `hook:{owner}:{sha256(CLIENT_ID)[:32 hex]}` for a webhook. Tag replace (D4) and
-- delete-by-tag match this column as well as the string.
ALTER TABLE notifications ADD COLUMN tag_origin TEXT;

-- Rows stored before this migration cannot be attributed: the namespace is a one-way hash and
-- the webhook's owner was not recorded. They get `legacy`, which every origin's replace and
-- delete also match (the rule they were stored under). A replace turns one into a row with its
-- real origin, so they fade out.
UPDATE notifications SET tag_origin = 'legacy' WHERE tag IS NOT NULL OR sub_tag IS NOT NULL;

-- Replace on add: (recipient, tag, origin). Also serves the same-tag read toggle.
DROP INDEX notifications_by_user_tag;
CREATE INDEX notifications_by_user_tag_origin
    ON notifications(user_id, tag, tag_origin) WHERE tag IS NOT NULL;
-- Delete by TAG / SUB_TAG, for every recipient: (tag, origin) point lookups.
DROP INDEX notifications_by_tag;
CREATE INDEX notifications_by_tag_origin ON notifications(tag, tag_origin) WHERE tag IS NOT NULL;
DROP INDEX notifications_by_sub_tag;
CREATE INDEX notifications_by_sub_tag_origin
    ON notifications(sub_tag, tag_origin) WHERE sub_tag IS NOT NULL;
