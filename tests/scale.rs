//! Listing and counting stay cheap as notifications accumulate: with a million rows in a real
//! SQLite file, every statement behind im.notify.get, the counters and the read toggles is
//! served by an index (never a scan of the notifications table), and the counters kept by
//! triggers agree with the rows. No timings are asserted; `bench/notify_get.sh` measures them.

use std::path::Path;

use imnotify::domain::inbox::{Cursor, ReadRequest, ReadScope};
use imnotify::store::sqlite::{sql, SqliteStore, DB_FILE};
use imnotify::store::Store;
use rusqlite::Connection;

const ROWS: i64 = 1_000_000;
const USERS: i64 = 1_000;

/// Fills the notifications table the fast way: one transaction, one prepared statement, no
/// journal, no fsync, a large page cache (the default one thrashes on five indexes). Row `i` goes to user `1 + i % USERS`; every third is read, every 500th is a
/// confirmation, every tenth is tagged.
fn fill(path: &Path) {
    let mut c = Connection::open(path).unwrap();
    // Leaving WAL mode needs the only connection, and the dropped store's writer thread may
    // still be closing its own; SQLite does not wait for that by itself.
    let mut tries = 0;
    while let Err(e) = c.pragma_update(None, "journal_mode", "OFF") {
        tries += 1;
        assert!(tries < 200, "the store's connection stayed open: {e}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    c.pragma_update(None, "synchronous", "OFF").unwrap();
    c.pragma_update(None, "cache_size", -262_144).unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut user = tx
            .prepare("INSERT INTO users (id, name, created_at) VALUES (?1, 'U', 0)")
            .unwrap();
        for id in 1..=USERS {
            user.execute([id]).unwrap();
        }
        let mut n = tx
            .prepare(
                "INSERT INTO notifications
                    (user_id, notify_type, text, tag, sub_tag, is_read, created_at, tag_origin)
                 VALUES (?1, ?2, 'Build finished', ?3, ?3, ?4, ?5, ?6)",
            )
            .unwrap();
        for i in 0..ROWS {
            let tag = (i % 10 == 0).then(|| format!("MP|abcde|T{}", i % 5000));
            // Two origins share the namespace, as a collision would make them.
            let origin = tag.as_ref().map(|_| {
                if i % 20 == 0 {
                    "app:local.x"
                } else {
                    "hook:3:ab"
                }
            });
            n.execute(rusqlite::params![
                1 + i % USERS,
                if i % 500 == 0 { 1 } else { 4 },
                tag,
                (i % 3 == 0) as i64,
                1_700_000_000 + i,
                origin,
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
}

/// The plan's detail lines for one statement.
fn plan(c: &Connection, stmt: &str) -> Vec<String> {
    let mut q = c.prepare(&format!("EXPLAIN QUERY PLAN {stmt}")).unwrap();
    let n = q.parameter_count();
    let args: Vec<i64> = (0..n).map(|_| 1).collect();
    q.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Asserts that the statement reaches notifications only through `index`, by a search (a range
/// or point lookup), and never sorts the whole result.
fn assert_indexed(c: &Connection, name: &str, stmt: &str, indexes: &[&str]) {
    let lines = plan(c, stmt);
    let on_table: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(" notifications"))
        .collect();
    assert!(
        !on_table.is_empty(),
        "{name}: no access to notifications in {lines:?}"
    );
    for l in &on_table {
        assert!(
            l.starts_with("SEARCH notifications USING "),
            "{name} scans: {lines:?}"
        );
        assert!(
            indexes.iter().any(|i| l.contains(i)),
            "{name} uses none of {indexes:?}: {lines:?}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.contains("TEMP B-TREE")),
        "{name} sorts its rows: {lines:?}"
    );
}

#[test]
fn a_million_notifications_are_listed_and_counted_through_indexes() {
    let dir = tempfile::tempdir().unwrap();
    // Opening the store applies the migrations, triggers included. It is closed while the
    // table is filled, whose journal mode must not change under another connection.
    drop(SqliteStore::open(dir.path()).unwrap());
    let path = dir.path().join(DB_FILE);
    let started = std::time::Instant::now();
    fill(&path);
    eprintln!("filled {ROWS} rows in {:?}", started.elapsed());
    let store = SqliteStore::open(dir.path()).unwrap();

    let c = Connection::open(&path).unwrap();
    let count: i64 = c
        .query_row("SELECT COUNT(*) FROM notifications", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, ROWS);

    // The readers of im.notify.get, history paging and answer.
    assert_indexed(
        &c,
        "PAGE_NORMAL",
        sql::PAGE_NORMAL,
        &["notifications_normal_by_user"],
    );
    assert_indexed(
        &c,
        "PAGE_CONFIRM",
        sql::PAGE_CONFIRM,
        &["notifications_confirm_by_user"],
    );
    assert_indexed(&c, "ONE", sql::ONE, &["INTEGER PRIMARY KEY"]);
    // The writers of read, read.list, read.all, delete and confirm.
    assert_indexed(&c, "TAG_OF", sql::TAG_OF, &["INTEGER PRIMARY KEY"]);
    assert_indexed(&c, "MARK_ONE", sql::MARK_ONE, &["INTEGER PRIMARY KEY"]);
    assert_indexed(
        &c,
        "READ_FROM",
        sql::READ_FROM,
        &["notifications_unread_by_user"],
    );
    assert_indexed(
        &c,
        "READ_ALL",
        sql::READ_ALL,
        &["notifications_unread_by_user"],
    );
    assert_indexed(
        &c,
        "UNREAD_FROM",
        sql::UNREAD_FROM,
        // Since migration 0007, the partial index of read rows: only those are touched.
        &[
            "notifications_by_user",
            "notifications_normal_by_user",
            "notifications_read_by_user",
        ],
    );
    assert_indexed(
        &c,
        "MARK_TAG",
        sql::MARK_TAG,
        &["notifications_by_user_tag_origin"],
    );
    assert_indexed(
        &c,
        "REPLACE_TAG",
        sql::REPLACE_TAG,
        &["notifications_by_user_tag_origin"],
    );
    assert_indexed(&c, "DELETE_OWN", sql::DELETE_OWN, &["INTEGER PRIMARY KEY"]);
    assert_indexed(&c, "CONFIRM", sql::CONFIRM, &["INTEGER PRIMARY KEY"]);
    assert_indexed(
        &c,
        "DELETE_TAG",
        sql::DELETE_TAG,
        &["notifications_by_tag_origin (tag=? AND tag_origin=?)"],
    );
    assert_indexed(
        &c,
        "DELETE_SUB_TAG",
        sql::DELETE_SUB_TAG,
        &["notifications_by_sub_tag_origin (sub_tag=? AND tag_origin=?)"],
    );
    assert_indexed(
        &c,
        "REPLACE_TAG",
        sql::REPLACE_TAG,
        &["notifications_by_user_tag"],
    );
    // The event log's replay and the e-mail worker's work list: index ranges, no sort.
    for (name, stmt, index) in [
        (
            "EVENTS_AFTER",
            sql::EVENTS_AFTER,
            "SEARCH events USING INDEX events_by_user",
        ),
        (
            "DUE_MAILS",
            sql::DUE_MAILS,
            "SEARCH o USING INDEX outbox_due",
        ),
    ] {
        let lines = plan(&c, stmt);
        assert!(
            lines.iter().any(|l| l.starts_with(index)),
            "{name}: {lines:?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("TEMP B-TREE") || l.starts_with("SCAN")),
            "{name}: {lines:?}"
        );
    }

    // Lifecycle removals (issue 10): the cap's two passes over one recipient, and the removal.
    assert_indexed(
        &c,
        "CAP_OLDEST_READ",
        sql::CAP_OLDEST_READ,
        &["notifications_read_by_user"],
    );
    assert_indexed(
        &c,
        "CAP_OLDEST_UNREAD",
        sql::CAP_OLDEST_UNREAD,
        &["notifications_unread_by_user"],
    );
    assert_indexed(&c, "REMOVE", sql::REMOVE, &["INTEGER PRIMARY KEY"]);
    // Retention reads the oldest rows in rowid order: a scan that its LIMIT stops, never a sort.
    let lines = plan(&c, sql::OLDEST);
    assert_eq!(lines, vec!["SCAN notifications".to_owned()], "OLDEST");

    // The counters are one lookup in the chats table, not a count over notifications.
    let lines = plan(&c, sql::CHAT);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("SEARCH notify_chats USING INDEX") && lines[0].contains("user_id=?"),
        "{lines:?}"
    );
    // And the triggers that keep them touch one chat row by its unique user id.
    let lines = plan(
        &c,
        "UPDATE notify_chats SET total = total + 1, unread = unread + 1 WHERE user_id = ?1",
    );
    assert!(
        lines[0].starts_with("SEARCH notify_chats USING INDEX"),
        "{lines:?}"
    );

    // The counters the triggers kept agree with the rows, for every user.
    let disagreeing: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM notify_chats ch
              WHERE ch.total <> (SELECT COUNT(*) FROM notifications n WHERE n.user_id = ch.user_id)
                 OR ch.unread <> (SELECT COUNT(*) FROM notifications n
                                   WHERE n.user_id = ch.user_id AND n.is_read = 0)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(disagreeing, 0);

    // The store answers from that file as the handlers would ask it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let chat = store.notify_chat(7).await.unwrap().unwrap();
        assert_eq!(chat.total, ROWS / USERS);
        let page = store.notification_page(7, Cursor::Start, 50).await.unwrap();
        assert_eq!(page.len(), 50);
        assert!(page.iter().all(|n| n.user_id == 7));
        // User 1 has every 500th row as a confirmation (i % 1000 == 0 and 500): they lead.
        let page = store.notification_page(1, Cursor::Start, 50).await.unwrap();
        let confirms = page.iter().take_while(|n| n.notify_type == 1).count();
        assert_eq!(confirms, 50, "user 1's 1000 confirmations come first");
        let ids: Vec<i64> = page.iter().map(|n| n.id).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(ids, sorted, "newest first");
        let next = store
            .notification_page(7, Cursor::Normal(page_last(&store, 7).await), 50)
            .await
            .unwrap();
        assert_eq!(next.len(), 50);

        // read.all on one user moves that user's counter, through the triggers, and no other.
        let before_other = store.notify_chat(8).await.unwrap().unwrap();
        store
            .mark_read(
                7,
                vec![ReadRequest {
                    scope: ReadScope::All,
                    read: true,
                }],
            )
            .await
            .unwrap();
        let after = store.notify_chat(7).await.unwrap().unwrap();
        assert_eq!(after.unread, 0);
        assert_eq!(after.total, chat.total);
        assert_eq!(store.notify_chat(8).await.unwrap().unwrap(), before_other);
    });
}

async fn page_last(store: &SqliteStore, user: i64) -> i64 {
    store
        .notification_page(user, Cursor::Start, 50)
        .await
        .unwrap()
        .last()
        .unwrap()
        .id
}
