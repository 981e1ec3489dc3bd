//! Storage faults and quotas (issue 10, section 5): failing fast on a data directory that cannot
//! be written, an empty or damaged database file, two processes initialising one directory,
//! `/healthz` after a failed write, retention and the per-recipient cap.
//!
//! Faults are made with `RLIMIT_FSIZE` (`common::limit_file_size`), which refuses writes past a
//! size with `EFBIG` for root as well: CI runs as root, where `chmod` stops nothing.

mod common;

use std::io::{BufRead, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Options, Server, BIN};
use serde_json::json;

fn serve_cmd(data: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-limits",
        "--data-dir",
    ])
    .arg(data)
    .env_remove("IMNOTIFY_DATA_DIR")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Runs a `serve` that is expected to refuse to start; kills it if it serves instead.
fn refused_start(mut cmd: Command) -> Output {
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    panic!(
        "the server started: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_data_dir_that_cannot_be_written_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Nothing may grow past 0 bytes: as a read-only or full file system would answer.
    let mut cmd = serve_cmd(&data);
    common::limit_file_size(&mut cmd, 0);
    let out = refused_start(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is not writable") && err.contains(&data.display().to_string()),
        "{err}"
    );
    if !is_root() {
        // Where permissions apply, a read-only directory says the same.
        use std::os::unix::fs::PermissionsExt as _;
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
        let out = refused_start(serve_cmd(&ro));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is not writable"), "{err}");
    }
}

/// `--data-dir` naming a file says so, not "cannot create it: File exists".
#[test]
fn a_data_dir_that_is_a_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"not a directory").unwrap();
    let out = refused_start(serve_cmd(&file));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "data directory {}: is a file, not a directory",
            file.display()
        )),
        "{err}"
    );
    assert!(!err.contains("File exists"), "{err}");
}

#[test]
fn an_empty_database_file_is_not_replaced_by_a_new_portal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("imnotify.sqlite3");
    std::fs::write(&db, b"").unwrap();
    let out = refused_start(serve_cmd(&data));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exists but is empty") && err.contains(&db.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left as it was");
    // Admin commands refuse it too.
    let out = Command::new(BIN)
        .args(["user", "add", "--id", "2", "--name", "X", "--data-dir"])
        .arg(&data)
        .env_remove("IMNOTIFY_DATA_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists but is empty"));
}

/// Reads a starting server's stdout until it listens and, for a while after, whether it printed
/// the first-start webhook; returns (listening, printed a webhook).
fn started(child: &mut Child) -> (bool, bool) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut listening = false;
    let mut webhook = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Once listening, the first-start lines follow at once or not at all.
        let wait = if listening {
            Duration::from_secs(2)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                listening |= line.starts_with("imnotify listening on");
                webhook |= line.starts_with("Webhook: ");
                if webhook {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (listening, webhook)
}

#[test]
fn two_processes_opening_a_fresh_data_dir_at_once_both_come_up() {
    // A race: several rounds, so that the old code's "table users already exists" shows.
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut a = serve_cmd(&data).spawn().unwrap();
        let mut b = serve_cmd(&data).spawn().unwrap();
        let ta = std::thread::spawn(move || {
            let r = started(&mut a);
            (a, r)
        });
        let tb = std::thread::spawn(move || {
            let r = started(&mut b);
            (b, r)
        });
        let (mut a, ra) = ta.join().unwrap();
        let (mut b, rb) = tb.join().unwrap();
        for child in [&mut a, &mut b] {
            let _ = child.kill();
        }
        let mut errs = String::new();
        for child in [&mut a, &mut b] {
            child.wait().unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut errs)
                .unwrap();
        }
        assert!(!errs.contains("already exists"), "round {round}: {errs}");
        assert!(ra.0 && rb.0, "round {round}: both listen: {errs}");
        assert_eq!(
            u8::from(ra.1) + u8::from(rb.1),
            1,
            "round {round}: exactly one created user 1 and its webhook"
        );
        let c = rusqlite::Connection::open(data.join("imnotify.sqlite3")).unwrap();
        let hooks: i64 = c
            .query_row("SELECT COUNT(*) FROM webhooks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(hooks, 1, "round {round}");
    }
}

#[test]
fn a_damaged_database_stops_the_start() {
    if common::sqlite_only("damages the SQLite file and expects quick_check to refuse it") {
        return;
    }
    let mut s = Server::start();
    for i in 0..200 {
        s.notify(json!({"USER_ID": 1, "MESSAGE": format!("notification {i} {}", "x".repeat(200))}));
    }
    s.terminate();
    let db = s.data_dir().join("imnotify.sqlite3");
    // Everything into the main file first, so the damage is not hidden behind newer WAL frames.
    s.db()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    // Overwrite the middle of the file, as a bad sector or a stray write would.
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    let pages = bytes.len() / page;
    assert!(pages > 6, "{pages} pages");
    let at = (pages / 2) * page;
    for b in &mut bytes[at..at + page] {
        *b = 0x5a;
    }
    std::fs::write(&db, &bytes).unwrap();
    let out = refused_start(serve_cmd(&s.data_dir()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        (err.contains("quick_check") || err.contains("integrity check"))
            && err.contains(&db.display().to_string()),
        "{err}"
    );
}

#[test]
fn healthz_answers_503_once_a_write_has_failed() {
    if common::sqlite_only("fills the disk with RLIMIT_FSIZE under the SQLite file (tests/postgres.rs covers an outage)") {
        return;
    }
    // Room for the fresh database and a little more, then every file stops growing.
    let s = Server::start_with(Options {
        fsize_limit: Some(1 << 20),
        ..Options::default()
    });
    let h = s.get("/healthz");
    assert_eq!((h.status, h.body.as_str()), (200, "{\"status\":\"ok\"}"));
    let big = "y".repeat(20_000);
    let mut failed = None;
    for i in 0..400 {
        let r = s.post_json(
            &s.hook_url("im.notify.system.add"),
            &json!({"USER_ID": 1, "MESSAGE": format!("{i} {big}")}),
        );
        if r.status != 200 {
            failed = Some(r);
            break;
        }
    }
    let failed = failed.expect("writes never failed past the file size limit");
    failed.assert_error(500, "INTERNAL_SERVER_ERROR");
    let h = s.get("/healthz");
    assert_eq!(h.status, 503, "{}", h.body);
    let j = h.json();
    assert_eq!(j["status"], "error");
    assert!(
        j["storage"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        h.body
    );
}

#[test]
fn retention_removes_notifications_older_than_its_days() {
    if common::sqlite_only("writes backdated rows into the SQLite file") {
        return;
    }
    let s = Server::start_with(Options {
        envs: vec![
            ("IMNOTIFY_RETENTION__DAYS".into(), "1".into()),
            ("IMNOTIFY_RETENTION__INTERVAL_SECS".into(), "1".into()),
        ],
        ..Options::default()
    });
    let ids: Vec<i64> = (0..4)
        .map(|i| s.notify(json!({"USER_ID": 1, "MESSAGE": format!("n{i}")})))
        .collect();
    // The first three were made two days ago.
    s.db()
        .execute(
            "UPDATE notifications SET created_at = created_at - 2 * 86400 WHERE id <= ?1",
            [ids[2]],
        )
        .unwrap();
    let start = Instant::now();
    while s.notification_count() > 1 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<i64> = s
        .db()
        .prepare("SELECT id FROM notifications")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, vec![ids[3]]);
    // The counters followed.
    let r = s.post_json(&s.hook_url("im.notify.get"), &json!({}));
    assert_eq!(r.json()["result"]["total_count"], 1, "{}", r.body);
}

#[test]
fn the_per_recipient_cap_removes_the_oldest_read_notifications_first() {
    if common::sqlite_only("reads and writes rows in the SQLite file") {
        return;
    }
    let s = Server::start_with(Options {
        envs: vec![(
            "IMNOTIFY_LIMITS__MAX_NOTIFICATIONS_PER_USER".into(),
            "3".into(),
        )],
        ..Options::default()
    });
    let add = |m: &str| s.notify(json!({"USER_ID": 1, "MESSAGE": m}));
    let ids = |s: &Server| -> Vec<i64> {
        s.db()
            .prepare("SELECT id FROM notifications ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let a = add("a");
    let b = add("b");
    let c = add("c");
    let r = s.post_json(
        &s.hook_url("im.notify.read"),
        &json!({"ID": b, "ONLY_CURRENT": "Y"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Over the cap: the read one goes although it is newer than a.
    let d = add("d");
    assert_eq!(ids(&s), vec![a, c, d]);
    // No read one left: the oldest unread goes.
    let e = add("e");
    assert_eq!(ids(&s), vec![c, d, e]);
    let r = s.post_json(&s.hook_url("im.notify.get"), &json!({}));
    let j = r.json();
    assert_eq!(j["result"]["total_count"], 3, "{}", r.body);
    assert_eq!(j["result"]["total_unread_count"], 3, "{}", r.body);
}
