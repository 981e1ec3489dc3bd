//! `imnotify migrate --from-sqlite DATA_DIR --database-url …` (issue 14): copies a SQLite data
//! directory into an empty PostgreSQL database whose schema the PostgreSQL store has just
//! created, in one transaction, so a user who outgrows one machine keeps everything.
//!
//! The copy goes by column name: for every table both schemas have, the columns both have,
//! each value converted to the PostgreSQL column's type (SQLite's 0/1 become booleans, its
//! integers the column's integer width). Ids are kept, so every notification, webhook URL and
//! event id stays valid; afterwards each identity column's sequence and the event counter are
//! set past the copied ids. Triggers are off during the copy (`session_replication_role`), so
//! derived rows such as the notification chats' counters are copied as they are rather than
//! counted twice; that needs a role allowed to set it (the database owner on most managed
//! services, a superuser elsewhere).

use std::collections::BTreeMap;
use std::path::Path;

use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

/// Tables in an order that satisfies references; `schema_version` (the PostgreSQL store's own)
/// and the limiter tables are not copied.
const TABLES: &[&str] = &[
    "users",
    "webhooks",
    "apps",
    "app_installs",
    "oauth_codes",
    "oauth_tokens",
    "sessions",
    "settings",
    "notify_chats",
    "notifications",
    "events",
    "outbox",
];

/// Tables that must be empty for the copy to start (DECISIONS: never merge two data sets).
const MUST_BE_EMPTY: &[&str] = &["users", "webhooks", "apps", "notifications", "events"];

/// Rows copied per table, in copy order.
pub type Report = Vec<(String, u64)>;

enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

fn read_cell(v: rusqlite::types::ValueRef<'_>) -> Cell {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Int(i),
        ValueRef::Real(f) => Cell::Real(f),
        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
    }
}

/// `cell` as a parameter for a PostgreSQL column of type `ty` (`information_schema` names).
fn param(cell: Cell, ty: &str, at: &str) -> anyhow::Result<Box<dyn ToSql + Sync + Send>> {
    let bad = |what: &str| anyhow::anyhow!("{at}: cannot store {what} in a column of type {ty}");
    Ok(match (cell, ty) {
        (Cell::Null, "bigint") => Box::new(None::<i64>),
        (Cell::Null, "integer") => Box::new(None::<i32>),
        (Cell::Null, "smallint") => Box::new(None::<i16>),
        (Cell::Null, "boolean") => Box::new(None::<bool>),
        (Cell::Null, "double precision") => Box::new(None::<f64>),
        (Cell::Null, "real") => Box::new(None::<f32>),
        (Cell::Null, "bytea") => Box::new(None::<Vec<u8>>),
        (Cell::Null, _) => Box::new(None::<String>),
        (Cell::Int(i), "bigint") => Box::new(i),
        (Cell::Int(i), "integer") => {
            Box::new(i32::try_from(i).map_err(|_| bad("a large integer"))?)
        }
        (Cell::Int(i), "smallint") => {
            Box::new(i16::try_from(i).map_err(|_| bad("a large integer"))?)
        }
        (Cell::Int(i), "boolean") => Box::new(i != 0),
        (Cell::Int(i), "double precision") => Box::new(i as f64),
        (Cell::Int(i), "real") => Box::new(i as f32),
        (Cell::Int(i), "text" | "character varying") => Box::new(i.to_string()),
        (Cell::Real(f), "double precision") => Box::new(f),
        (Cell::Real(f), "real") => Box::new(f as f32),
        (Cell::Text(t), "text" | "character varying") => Box::new(t),
        (Cell::Text(t), "bytea") => Box::new(t.into_bytes()),
        (Cell::Blob(b), "bytea") => Box::new(b),
        (Cell::Blob(b), "text" | "character varying") => {
            Box::new(String::from_utf8(b).map_err(|_| bad("bytes that are not UTF-8"))?)
        }
        (Cell::Int(_), _) => return Err(bad("an integer")),
        (Cell::Real(_), _) => return Err(bad("a real")),
        (Cell::Text(_), _) => return Err(bad("text")),
        (Cell::Blob(_), _) => return Err(bad("a blob")),
    })
}

/// Copies the SQLite database `sqlite` into the PostgreSQL database at `url`, whose schema
/// must exist (open the PostgreSQL store once first) and whose data tables must be empty.
/// All or nothing: one transaction. Errors name the table and row.
pub async fn sqlite_to_postgres(sqlite: &Path, url: &str) -> anyhow::Result<Report> {
    if !sqlite.is_file() {
        anyhow::bail!("{}: no SQLite database there", sqlite.display());
    }
    let src = rusqlite::Connection::open_with_flags(
        sqlite,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let (mut client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    let result = copy(&src, &mut client).await;
    drop(client);
    let _ = driver.await;
    result
}

async fn copy(
    src: &rusqlite::Connection,
    client: &mut tokio_postgres::Client,
) -> anyhow::Result<Report> {
    let tx = client.transaction().await?;
    for t in MUST_BE_EMPTY {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .await?
            .get(0);
        if n > 0 {
            let rows = if n == 1 { "row" } else { "rows" };
            anyhow::bail!(
                "the PostgreSQL database is not empty ({t} has {n} {rows}); migrate copies into \
                 an empty database only"
            );
        }
    }
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .map_err(|e| {
            anyhow::anyhow!("turning triggers off for the copy needs more privileges: {e}")
        })?;
    // Rows a fresh schema starts with (the settings a store writes on opening, the counter).
    for t in TABLES {
        tx.execute(&format!("DELETE FROM {t}"), &[]).await?;
    }
    let mut report = Report::new();
    for table in TABLES {
        let pg: BTreeMap<String, String> = tx
            .query(
                "SELECT column_name, data_type FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[table],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let sqlite_cols: Vec<String> = {
            let mut st = src.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
            let cols = st.query_map([], |r| r.get(0))?;
            cols.collect::<Result<_, _>>()?
        };
        let cols: Vec<&String> = sqlite_cols.iter().filter(|c| pg.contains_key(*c)).collect();
        if cols.is_empty() {
            continue;
        }
        let list = cols
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let marks = (1..=cols.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let insert = tx
            .prepare(&format!("INSERT INTO {table} ({list}) VALUES ({marks})"))
            .await?;
        let mut st = src.prepare(&format!("SELECT {list} FROM {table}"))?;
        let mut rows = st.query([])?;
        let mut copied = 0u64;
        while let Some(row) = rows.next()? {
            let mut params = Vec::with_capacity(cols.len());
            for (i, c) in cols.iter().enumerate() {
                let at = format!("{table}.{c} (row {})", copied + 1);
                params.push(param(read_cell(row.get_ref(i)?), &pg[*c], &at)?);
            }
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            tx.execute(&insert, &refs)
                .await
                .map_err(|e| anyhow::anyhow!("{table}, row {}: {e}", copied + 1))?;
            copied += 1;
        }
        report.push((table.to_string(), copied));
    }
    // Past the copied ids and past every id SQLite ever handed out: AUTOINCREMENT keeps its
    // high-water mark in `sqlite_sequence` after the rows are gone (a reset, retention, a TAG
    // replace, a delete), and an id once returned is never reused (migration 0001). Without
    // this, a data dir whose newest events were pruned would restart the event ids below a
    // client's `Last-Event-ID`, and the client would miss the new ones.
    let spent: BTreeMap<String, i64> = {
        // Migration 0001's AUTOINCREMENT tables make it, so every data dir has it.
        let mut st = src.prepare("SELECT name, seq FROM sqlite_sequence")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.collect::<rusqlite::Result<BTreeMap<String, i64>>>()?
    };
    let identities = tx
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND is_identity = 'YES'",
            &[],
        )
        .await?;
    for r in identities {
        let (table, column): (String, String) = (r.get(0), r.get(1));
        let seq = spent.get(&table).copied().unwrap_or(0);
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                 GREATEST((SELECT max({column}) FROM {table}), {seq}, 1), \
                 (SELECT max({column}) FROM {table}) IS NOT NULL OR {seq} > 0)"
            ),
            &[],
        )
        .await?;
    }
    let events_spent = spent.get("events").copied().unwrap_or(0);
    tx.execute(
        &format!(
            "INSERT INTO event_counter (last_id) \
             SELECT GREATEST(COALESCE(max(id), 0), {events_spent}) FROM events \
             ON CONFLICT (only_row) DO UPDATE SET last_id = EXCLUDED.last_id"
        ),
        &[],
    )
    .await?;
    tx.commit().await?;
    Ok(report)
}
