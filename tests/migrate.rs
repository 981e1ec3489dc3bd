//! `imnotify migrate --from-sqlite DATA_DIR --database-url …` (issue 14): a SQLite server used
//! through REST is stopped, its data dir copied into an empty PostgreSQL database, and a
//! PostgreSQL server then answers the same notifications to the same webhook. Runs only under
//! `IMNOTIFY_TEST_PG` (scripts/pg.sh), with the reason printed otherwise.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Options, Server, BIN};
use serde_json::{json, Value};

/// A SQLite server whatever IMNOTIFY_TEST_PG says: the source of the migration.
struct SqliteServer {
    child: std::process::Child,
    addr: String,
    hook: String,
}

fn start_sqlite(dir: &std::path::Path) -> SqliteServer {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-limits",
            "--data-dir",
        ])
        .arg(dir)
        .env_remove("IMNOTIFY_DATABASE_URL")
        .env_remove("IMNOTIFY_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning imnotify");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut hook) = (String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("imnotify listening on http://") {
            addr = u.trim().to_owned();
        }
        if let Some(u) = line.strip_prefix("Webhook: ") {
            hook = u[u.find("/rest/").unwrap()..].trim().to_owned();
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    SqliteServer { child, addr, hook }
}

/// `imnotify migrate --from-sqlite DATA --database-url URL`, the environment's settings
/// ignored.
fn migrate(data: &std::path::Path, url: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["migrate", "--from-sqlite"])
        .arg(data)
        .args(["--database-url", url])
        .env_remove("IMNOTIFY_DATABASE_URL")
        .env_remove("IMNOTIFY_DATA_DIR")
        .output()
        .unwrap()
}

fn post(addr: &str, path: &str, body: &Value) -> Value {
    let headers = [("Content-Type", "application/json")];
    let request = common::request_bytes("POST", path, addr, &headers, body.to_string().as_bytes());
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let r = common::exchange(stream, &request);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

#[test]
fn a_sqlite_data_dir_moves_to_postgres_with_its_ids_webhook_and_read_state() {
    let Some(_) = common::test_pg() else {
        eprintln!("skipped: needs IMNOTIFY_TEST_PG (scripts/pg.sh start)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut src = start_sqlite(&data);
    let add = |body: Value| {
        post(
            &src.addr,
            &format!("{}im.notify.system.add", src.hook),
            &body,
        )
    };
    let first = add(json!({"USER_ID": 1, "MESSAGE": "first"}))["result"]
        .as_i64()
        .unwrap();
    add(json!({"USER_ID": 1, "MESSAGE": "tagged", "TAG": "T", "CLIENT_ID": "ci"}));
    add(json!({"USER_ID": 1, "MESSAGE": "tagged again", "TAG": "T", "CLIENT_ID": "ci"}));
    let last = add(json!({"USER_ID": 1, "MESSAGE": "[b]last[/b]"}))["result"]
        .as_i64()
        .unwrap();
    post(
        &src.addr,
        &format!("{}im.notify.read", src.hook),
        &json!({"ID": first, "ONLY_CURRENT": "Y"}),
    );
    let get = |addr: &str, hook: &str| {
        post(addr, &format!("{hook}im.notify.get"), &json!({}))["result"].clone()
    };
    let before = get(&src.addr, &src.hook);
    let counters = |addr: &str, hook: &str| {
        post(addr, &format!("{hook}im.counters.get"), &json!({}))["result"].clone()
    };
    let counters_before = counters(&src.addr, &src.hook);
    // A Push&Pull channel: its id is signed with the channel key, a setting that must move too.
    let out = Command::new(BIN)
        .args([
            "webhook",
            "add",
            "--user-id",
            "1",
            "--scope",
            "im,pull_channel",
            "--json",
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("IMNOTIFY_DATABASE_URL")
        .output()
        .unwrap();
    let v = common::json_output(&out);
    let pull_hook = format!("/rest/{}/{}/", v["user_id"], v["code"].as_str().unwrap());
    let channel = |addr: &str| {
        post(addr, &format!("{pull_hook}pull.config.get"), &json!({}))["result"]["channels"]
            ["private"]["id"]
            .clone()
    };
    let channel_before = channel(&src.addr);
    assert!(channel_before.is_string(), "{channel_before}");
    let key = |rows: Vec<String>| rows.join(",");
    unsafe {
        libc::kill(src.child.id() as libc::pid_t, libc::SIGTERM);
    }
    src.child.wait().unwrap();
    let sqlite_settings = {
        let db = rusqlite::Connection::open(data.join("imnotify.sqlite3")).unwrap();
        let mut st = db
            .prepare("SELECT key || '=' || value FROM settings ORDER BY key")
            .unwrap();
        let rows: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    assert!(
        sqlite_settings
            .iter()
            .any(|s| s.starts_with("pull_channel_key=")),
        "{sqlite_settings:?}"
    );

    let url = common::fresh_pg_database().expect("a database");
    let out = migrate(&data, &url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("notifications\t3"), "{stdout}");

    // Everything the SQLite server kept, the PostgreSQL server answers.
    assert_eq!(
        key(common::pg_query(
            &url,
            "SELECT key || '=' || value FROM settings ORDER BY key"
        )),
        key(sqlite_settings),
        "settings (the Push&Pull channel key among them) are copied"
    );
    let mut pg = Server::start_with(Options {
        shared_database: Some(url.clone()),
        ..Options::default()
    });
    pg.hook = src.hook.clone();
    assert_eq!(
        get(&pg.addr, &pg.hook),
        before,
        "the same notifications, ids and read state"
    );
    assert_eq!(counters(&pg.addr, &pg.hook), counters_before);
    // A channel id signed on the SQLite server is good on the PostgreSQL one (key copied).
    let poll = |id: &str| {
        let enc: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
        pg.get(&format!("/sub/?CHANNEL_ID={enc}&revision=19"))
            .status
    };
    let old = channel_before.as_str().unwrap();
    assert_eq!(poll(old), 304, "the first poll of a good channel");
    let flip = if old.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{flip}", &old[..old.len() - 1]);
    assert_eq!(poll(&forged), 400, "a wrongly signed channel");
    let next = post(
        &pg.addr,
        &format!("{}im.notify.system.add", pg.hook),
        &json!({"USER_ID": 1, "MESSAGE": "after the move"}),
    )["result"]
        .as_i64()
        .unwrap();
    assert!(
        next > last,
        "new ids continue after the copied ones: {next} after {last}"
    );
    // The tag replace still sees the copied tagged notification.
    post(
        &pg.addr,
        &format!("{}im.notify.system.add", pg.hook),
        &json!({"USER_ID": 1, "MESSAGE": "tagged once more", "TAG": "T", "CLIENT_ID": "ci"}),
    );
    let tagged = common::pg_query(
        &url,
        "SELECT count(*) FROM notifications WHERE tag IS NOT NULL",
    );
    assert_eq!(tagged, ["1"]);
    pg.terminate();

    // A second migrate into the now non-empty database is refused, and changes nothing.
    let out = migrate(&data, &url);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty"), "{err}");
    // "1 row", never "1 rows".
    assert!(err.contains(" row") && !err.contains(" 1 rows"), "{err}");
    assert_eq!(
        common::pg_query(&url, "SELECT count(*) FROM notifications"),
        ["4"]
    );
    common::drop_pg_database(&url);
}

/// Ids SQLite handed out stay spent on PostgreSQL when their rows are gone (here the newest
/// notification, deleted): AUTOINCREMENT never reuses an id, and the copy must not either.
/// Fails when the sequences are set only past the copied rows.
#[test]
fn ids_spent_on_sqlite_stay_spent_after_migrate() {
    let Some(_) = common::test_pg() else {
        eprintln!("skipped: needs IMNOTIFY_TEST_PG (scripts/pg.sh start)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut src = start_sqlite(&data);
    let hook = src.hook.clone();
    let ids: Vec<i64> = (0..3)
        .map(|i| {
            post(
                &src.addr,
                &format!("{hook}im.notify.system.add"),
                &json!({"USER_ID": 1, "MESSAGE": format!("n{i}")}),
            )["result"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let last = *ids.last().unwrap();
    post(
        &src.addr,
        &format!("{hook}im.notify.delete"),
        &json!({ "ID": last }),
    );
    unsafe {
        libc::kill(src.child.id() as libc::pid_t, libc::SIGTERM);
    }
    src.child.wait().unwrap();

    let url = common::fresh_pg_database().expect("a database");
    let out = migrate(&data, &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pg = Server::start_with(Options {
        shared_database: Some(url.clone()),
        ..Options::default()
    });
    pg.hook = hook.clone();
    let next = post(
        &pg.addr,
        &format!("{hook}im.notify.system.add"),
        &json!({"USER_ID": 1, "MESSAGE": "after"}),
    )["result"]
        .as_i64()
        .unwrap();
    assert!(
        next > last,
        "id {next} was handed out again: SQLite had given up to {last}"
    );
    pg.terminate();
    common::drop_pg_database(&url);
}

/// A migration and a server on the same data dir exclude each other (`imnotify.serve.lock`):
/// what a server acknowledged during the copy would otherwise be left behind. `migrate` refuses
/// while a server runs, before touching PostgreSQL, and works once it stopped; a server refuses
/// to start while a migration holds the lock. The refusals come before any connection to the
/// database, so this runs on both backends; under `IMNOTIFY_TEST_PG` the copy itself runs too.
/// Fails when serve holds no lock (migrate then copies a live data dir).
#[test]
fn migrate_and_serve_on_one_data_dir_exclude_each_other() {
    use std::os::fd::AsRawFd as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut src = start_sqlite(&data);
    let added = post(
        &src.addr,
        &format!("{}im.notify.system.add", src.hook),
        &json!({"USER_ID": 1, "MESSAGE": "acknowledged while serving"}),
    );
    assert!(added["result"].as_i64().is_some(), "{added}");
    // Without IMNOTIFY_TEST_PG an address nothing listens on: the refusal must come first.
    let url = common::fresh_pg_database()
        .unwrap_or_else(|| "postgres://imnotify@127.0.0.1:9/none".to_owned());
    let migrate = || {
        Command::new(BIN)
            .args(["migrate", "--from-sqlite"])
            .arg(&data)
            .args(["--database-url", &url])
            .env_remove("IMNOTIFY_DATABASE_URL")
            .env_remove("IMNOTIFY_DATA_DIR")
            .output()
            .unwrap()
    };

    let out = migrate();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "migrate copied a live data dir");
    assert!(
        stderr.contains("a server is running on") && stderr.contains("stop it"),
        "{stderr}"
    );
    if common::test_pg().is_some() {
        // Refused before the schema was made: nothing was written.
        assert_eq!(
            common::pg_query(
                &url,
                "SELECT count(*) FROM pg_tables WHERE tablename = 'notifications'"
            ),
            ["0"]
        );
    }
    // The server is unharmed by the attempt.
    let again = post(&src.addr, &format!("{}im.notify.get", src.hook), &json!({}));
    assert!(again["result"].is_object(), "{again}");
    unsafe {
        libc::kill(src.child.id() as libc::pid_t, libc::SIGTERM);
    }
    src.child.wait().unwrap();

    if common::test_pg().is_some() {
        let out = migrate();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            common::pg_query(&url, "SELECT count(*) FROM notifications"),
            ["1"]
        );
        common::drop_pg_database(&url);
    }

    // While a migration holds the lock (taken here the way migrate takes it), serve refuses.
    let lock = std::fs::File::open(data.join("imnotify.serve.lock")).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(rc, 0, "the stopped server still holds the lock");
    let mut serve = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("IMNOTIFY_DATABASE_URL")
        .env_remove("IMNOTIFY_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = serve.kill();
            let _ = serve.wait();
            panic!("serve started during a migration");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    serve
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "serve started during a migration");
    assert!(
        stderr.contains("is being copied into PostgreSQL"),
        "{stderr}"
    );
}
