//! Upgrading a data directory written before the lifecycle migration: its notifications get
//! notification chats with the right counters, and the counters follow later writes.

use imnotify::domain::inbox::{ReadRequest, ReadScope, TagField};
use imnotify::store::sqlite::{SqliteStore, DB_FILE};
use imnotify::store::Store;

#[test]
fn existing_notifications_get_chats_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A database as the first release left it: schema 1 and some notifications.
        let c = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        c.execute_batch(include_str!("../migrations/0001_init.sql"))
            .unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute_batch(
            "INSERT INTO users (id, name, created_at) VALUES (1, 'A', 0), (2, 'B', 0), (3, 'C', 0);
             INSERT INTO notifications (user_id, notify_type, text, tag, is_read, created_at) VALUES
                (2, 4, 'a', 'MP|x|T', 0, 1), (2, 4, 'b', NULL, 1, 2), (1, 4, 'c', NULL, 0, 3);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let one = store.notify_chat(1).await.unwrap().unwrap();
        let two = store.notify_chat(2).await.unwrap().unwrap();
        assert_eq!((one.total, one.unread), (1, 1));
        assert_eq!((two.total, two.unread), (2, 1));
        assert!(one.chat_id < two.chat_id, "backfilled in user order");
        assert_eq!(store.notify_chat(3).await.unwrap(), None);

        // The triggers keep them from here on.
        store
            .mark_read(
                2,
                vec![ReadRequest {
                    scope: ReadScope::All,
                    read: true,
                }],
            )
            .await
            .unwrap();
        assert_eq!(store.notify_chat(2).await.unwrap().unwrap().unread, 0);
        // A tagged row from before tag origins (migration 0006) is `legacy`: any origin's
        // delete by tag still reaches it, as under the rule it was stored with.
        let origin: Option<String> = rusqlite::Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .query_row(
                "SELECT tag_origin FROM notifications WHERE tag = 'MP|x|T'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(origin.as_deref(), Some("legacy"));
        store
            .delete_by_tag(TagField::Tag, "MP|x|T".into(), "hook:1:x".into())
            .await
            .unwrap();
        let two = store.notify_chat(2).await.unwrap().unwrap();
        assert_eq!((two.total, two.unread), (1, 0));
    });
}
