//! im.notify.get latency over HTTP at two database sizes, to show that it depends on the page
//! size and not on how many notifications are stored. Run it with `bench/notify_get.sh`, which
//! builds the release binary first.
//!
//! For each size: start the server on an empty data directory (which creates user 1 and its
//! webhook), stop it, fill the notifications table directly with that many rows for user 1 (the
//! worst case: every row is the caller's), start it again, and time im.notify.get (the first
//! page, and a page deep in the cursor) and im.counters.get. Prints medians, p95 and the ratio of
//! the largest size to the smallest.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running {
    child: Child,
    addr: String,
    hook: Option<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path, data: &Path, listen: &str) -> Running {
    let mut child = Command::new(bin)
        // The rate limit (2 requests/s by default) would refuse a benchmark's quick calls.
        .args(["serve", "--no-limits", "--listen", listen, "--data-dir"])
        .arg(data)
        .env("IMNOTIFY_LOG__FILTER", "warn")
        // The filler rows are dated years back and all belong to one user: retention and the
        // per-recipient cap would remove them while they are measured.
        .env("IMNOTIFY_RETENTION__DAYS", "0")
        .env("IMNOTIFY_LIMITS__MAX_NOTIFICATIONS_PER_USER", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting imnotify");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    let mut hook = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("imnotify listening on ") {
            addr = Some(url.trim().trim_start_matches("http://").to_owned());
            if listen != "127.0.0.1:0" {
                break;
            }
        }
        if let Some(url) = line.strip_prefix("Webhook: ") {
            let path = url.trim().splitn(4, '/').nth(3).unwrap();
            hook = Some(format!("/{path}"));
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Running {
        child,
        addr: addr.expect("server did not start"),
        hook,
    }
}

fn fill(db: &Path, rows: i64) {
    let mut c = rusqlite::Connection::open(db).unwrap();
    c.pragma_update(None, "journal_mode", "OFF").unwrap();
    c.pragma_update(None, "synchronous", "OFF").unwrap();
    c.pragma_update(None, "cache_size", -262_144).unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut n = tx
            .prepare(
                "INSERT INTO notifications (user_id, notify_type, text, tag, is_read, created_at)
                 VALUES (1, ?1, 'Build #42 finished: [b]green[/b]', ?2, ?3, ?4)",
            )
            .unwrap();
        for i in 0..rows {
            let tag = (i % 10 == 0).then(|| format!("MP|abcde|T{i}"));
            n.execute(rusqlite::params![
                if i % 500 == 0 { 1 } else { 4 },
                tag,
                (i % 3 == 0) as i64,
                1_700_000_000 + i,
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
}

fn post(addr: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

struct Stats {
    median_ms: f64,
    p95_ms: f64,
}

fn time(addr: &str, path: &str, body: &str, requests: usize) -> Stats {
    for _ in 0..20 {
        assert_eq!(post(addr, path, body).0, 200);
    }
    let mut samples: Vec<f64> = (0..requests)
        .map(|_| {
            let t = Instant::now();
            let (status, answer) = post(addr, path, body);
            let elapsed = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(status, 200, "{answer}");
            elapsed
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    Stats {
        median_ms: samples[samples.len() / 2],
        p95_ms: samples[samples.len() * 95 / 100],
    }
}

fn main() {
    let mut sizes = vec![10_000_i64, 1_000_000];
    let mut requests = 300;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rows" => {
                sizes = args
                    .next()
                    .expect("--rows N,M,...")
                    .split(',')
                    .map(|n| n.parse().expect("a row count"))
                    .collect()
            }
            "--requests" => requests = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let exe = std::env::current_exe().unwrap();
    let bin: PathBuf = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("imnotify"))
        .filter(|b| b.exists())
        .expect("the imnotify binary next to examples/ (build it with --bins)");

    println!(
        "{:>10}  {:>26}  {:>26}  {:>26}",
        "rows", "get first page (med/p95)", "get deep page (med/p95)", "counters.get (med/p95)"
    );
    let mut results = Vec::new();
    for &rows in &sizes {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = start(&bin, &data, "127.0.0.1:0");
        let hook = first.hook.clone().expect("first start prints the webhook");
        let addr = first.addr.clone();
        drop(first);
        fill(&data.join("imnotify.sqlite3"), rows);
        let server = start(&bin, &data, &addr);

        let get = format!("{hook}im.notify.get");
        let first_page = time(&server.addr, &get, r#"{"LIMIT":50}"#, requests);
        // A page in the middle of the cursor walk.
        let deep = format!(r#"{{"LIMIT":50,"LAST_ID":{},"LAST_TYPE":3}}"#, rows / 2);
        let deep_page = time(&server.addr, &get, &deep, requests);
        let counters = time(
            &server.addr,
            &format!("{hook}im.counters.get"),
            "{}",
            requests,
        );
        let (_, answer) = post(&server.addr, &get, r#"{"LIMIT":1}"#);
        assert!(
            answer.contains(&format!("\"total_count\":{rows}")),
            "{answer}"
        );
        println!(
            "{rows:>10}  {:>12.3} / {:>8.3} ms  {:>12.3} / {:>8.3} ms  {:>12.3} / {:>8.3} ms",
            first_page.median_ms,
            first_page.p95_ms,
            deep_page.median_ms,
            deep_page.p95_ms,
            counters.median_ms,
            counters.p95_ms
        );
        results.push((rows, first_page, deep_page, counters));
    }
    if let (Some(small), Some(large)) = (results.first(), results.last()) {
        println!(
            "median ratio {} rows / {} rows: get first page {:.2}, get deep page {:.2}, counters {:.2}",
            large.0,
            small.0,
            large.1.median_ms / small.1.median_ms,
            large.2.median_ms / small.2.median_ms,
            large.3.median_ms / small.3.median_ms
        );
    }
}
