//! Test harness: runs the real `imnotify` binary on a free loopback port with a temporary data
//! directory, and speaks raw HTTP/1.1 to it so that every byte of a request is under the test's
//! control.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_imnotify");

pub struct Server {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub addr: String,
    /// `/rest/1/CODE/`, the first-start webhook of user 1 (scope im).
    pub hook: String,
    /// The admin token the first start printed, if it made one (no `admin.token` configured).
    pub admin_token: Option<String>,
    pub extra_args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub fsize_limit: Option<u64>,
    /// Under `IMNOTIFY_TEST_PG`: this server's own database, passed as `--database-url`.
    pub database_url: Option<String>,
    /// Whether dropping this server drops its database.
    pub owns_database: bool,
}

#[derive(Default)]
pub struct Options {
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    /// Run with the rate and operating limits on. Off by default: most tests send many quick
    /// calls with one credential and are about something else.
    pub limits: bool,
    /// `RLIMIT_FSIZE` for the server process, in bytes (see `limit_file_size`).
    pub fsize_limit: Option<u64>,
    /// Under `IMNOTIFY_TEST_PG`: serve this database (another server's) instead of a fresh
    /// one; the server that made it drops it.
    pub shared_database: Option<String>,
}

/// Makes `cmd` run with no file allowed to grow past `bytes` (`RLIMIT_FSIZE`), and with
/// `SIGXFSZ` ignored so that a write past it fails with `EFBIG` instead of killing the process.
/// To the process this looks like a full disk, and, unlike `chmod`, it holds for root too (CI
/// runs as root).
pub fn limit_file_size(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
}

/// `IMNOTIFY_TEST_PG`: a PostgreSQL server URL (`postgres://user@127.0.0.1:PORT/postgres`,
/// see `scripts/pg.sh`). When set, every server runs on a fresh database of its own there.
pub fn test_pg() -> Option<String> {
    std::env::var("IMNOTIFY_TEST_PG")
        .ok()
        .filter(|u| !u.is_empty())
}

/// For a test that is about SQLite itself (its file, its query plans, its migrations): true,
/// with the reason printed, when the suite runs on PostgreSQL; the test then returns early.
pub fn sqlite_only(reason: &str) -> bool {
    if test_pg().is_some() {
        eprintln!("not run under PostgreSQL: {reason}");
        return true;
    }
    false
}

/// Runs SQL statements on the PostgreSQL server `url` names, returning the first column of the
/// last statement's rows as text.
pub fn pg_query(url: &str, sql: &str) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        let driver = tokio::spawn(connection);
        let mut out = Vec::new();
        for message in client.simple_query(sql).await.unwrap() {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                out.push(row.get(0).unwrap_or("").to_owned());
            }
        }
        drop(client);
        let _ = driver.await;
        out
    })
}

/// The URL of database `name` on the server `url` names.
pub fn pg_database_url(url: &str, name: &str) -> String {
    match url.rfind('/') {
        Some(i) if url[..i].contains("//") && !url[..i].ends_with('/') => {
            format!("{}/{name}", &url[..i])
        }
        _ => format!("{}/{name}", url.trim_end_matches('/')),
    }
}

/// A fresh database on the `IMNOTIFY_TEST_PG` server; its URL.
pub fn fresh_pg_database() -> Option<String> {
    let server = test_pg()?;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "imnotify_t{}_{}_{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    pg_query(&server, &format!("CREATE DATABASE {name}"));
    Some(pg_database_url(&server, &name))
}

/// Drops the database of `url` (best effort: a test's end must not fail on it).
pub fn drop_pg_database(url: &str) {
    let Some(server) = test_pg() else { return };
    let Some(name) = url.rsplit('/').next() else {
        return;
    };
    let name = name.to_owned();
    let _ = std::panic::catch_unwind(|| {
        pg_query(
            &server,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
    });
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Server {
            child: None,
            dir,
            base: String::new(),
            addr: String::new(),
            hook: String::new(),
            admin_token: None,
            extra_args: opts.args,
            envs: opts.envs,
            fsize_limit: opts.fsize_limit,
            owns_database: opts.shared_database.is_none(),
            database_url: opts.shared_database.clone().or_else(fresh_pg_database),
        };
        if !opts.limits {
            s.extra_args.push("--no-limits".to_owned());
        }
        if opts.shared_database.is_some() {
            // A second instance: the database has its first user already, so no webhook is
            // printed; wait for the listening line only.
            s.addr = "127.0.0.1:0".to_owned();
            s.launch(false);
        } else {
            s.launch(true);
        }
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn launch(&mut self, first: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let listen = if first {
            "127.0.0.1:0".to_owned()
        } else {
            self.addr.clone()
        };
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg(&listen)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra_args)
            .env_remove("IMNOTIFY_DATA_DIR")
            .env_remove("IMNOTIFY_DATABASE_URL")
            .env("IMNOTIFY_LOG__FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let Some(url) = &self.database_url {
            cmd.env("IMNOTIFY_DATABASE_URL", url);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(bytes) = self.fsize_limit {
            limit_file_size(&mut cmd, bytes);
        }
        let mut child = cmd.spawn().expect("spawning imnotify");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut base = None;
        while let Some(Ok(line)) = lines.next() {
            if let Some(url) = line.strip_prefix("imnotify listening on ") {
                base = Some(url.trim().to_owned());
                if !first {
                    break;
                }
            }
            if let Some((_, token)) = line
                .strip_prefix("Admin token ")
                .and_then(|l| l.rsplit_once(": "))
            {
                self.admin_token = Some(token.trim().to_owned());
            }
            if let Some(url) = line.strip_prefix("Webhook: ") {
                let url = url.trim();
                // From the path on: with public_url the link's base is not the socket's.
                self.hook = url[url.find("/rest/").expect("a webhook URL")..].to_owned();
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let base = base.unwrap_or_else(|| {
            panic!(
                "server did not start; log:\n{}",
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            )
        });
        self.addr = base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        self.base = base;
        self.child = Some(child);
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for the process to exit on its own.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe_kill_term(c.id());
        c.wait().unwrap()
    }

    /// Starts again on the same address and data directory.
    pub fn restart(&mut self) {
        self.launch(false);
    }

    /// Runs an admin command against this server's data directory.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .env_remove("IMNOTIFY_DATA_DIR")
            .env_remove("IMNOTIFY_DATABASE_URL");
        if let Some(url) = &self.database_url {
            cmd.env("IMNOTIFY_DATABASE_URL", url);
        }
        cmd.output().unwrap()
    }

    /// Runs an admin command that must succeed; what it printed on stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs an admin command with `--json` among `args`; what it printed, parsed.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        json_output(&self.cli(args))
    }

    /// `app add --name NAME --scope im` and `extra` flags: the new app's client id and secret.
    pub fn add_app(&self, name: &str, extra: &[&str]) -> (String, String) {
        self.add_app_scoped(name, "im", extra)
    }

    /// `app add --name NAME --scope SCOPE` (comma-separated) and `extra` flags: the new app's
    /// client id and secret.
    pub fn add_app_scoped(&self, name: &str, scope: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["app", "add", "--name", name, "--scope", scope, "--json"];
        args.extend_from_slice(extra);
        let v = self.cli_json(&args);
        (
            v["client_id"].as_str().expect("client_id").to_owned(),
            v["client_secret"]
                .as_str()
                .expect("client_secret")
                .to_owned(),
        )
    }

    /// `app token`: installs the app for `user_id` and returns the token answer.
    pub fn app_token(&self, client_id: &str, user_id: i64) -> serde_json::Value {
        let user = user_id.to_string();
        self.cli_json(&[
            "app",
            "token",
            "--client-id",
            client_id,
            "--user-id",
            &user,
            "--json",
        ])
    }

    pub fn add_user(&self, id: i64, extra: &[&str]) {
        let id = id.to_string();
        let mut args = vec!["user", "add", "--id", &id, "--name", "User"];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates a webhook and returns its path prefix `/rest/U/CODE/`.
    pub fn add_webhook(&self, user_id: i64, scope: &str) -> String {
        let uid = user_id.to_string();
        let out = self.cli(&[
            "webhook",
            "add",
            "--user-id",
            &uid,
            "--scope",
            scope,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        format!("/rest/{}/{}/", v["user_id"], v["code"].as_str().unwrap())
    }

    /// The SQLite database. A test that needs it checks [`sqlite_only`] first.
    pub fn db(&self) -> rusqlite::Connection {
        assert!(
            self.database_url.is_none(),
            "this test reads the SQLite file; it cannot run under IMNOTIFY_TEST_PG"
        );
        rusqlite::Connection::open(self.data_dir().join("imnotify.sqlite3")).unwrap()
    }

    /// How many notifications the database holds, for tests that check nothing was stored.
    pub fn notification_count(&self) -> i64 {
        if self.database_url.is_some() {
            return self.pg("SELECT COUNT(*) FROM notifications")[0]
                .parse()
                .unwrap();
        }
        self.db()
            .query_row("SELECT COUNT(*) FROM notifications", [], |r| r.get(0))
            .unwrap()
    }

    /// The server's log once a line satisfies `line` (waiting up to 10 s: log lines are
    /// written by a background thread, so a request's line may land after its answer).
    pub fn log_with(&self, line: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.lines().any(&line) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Sends raw bytes as one HTTP/1.1 request and reads the whole answer.
    pub fn raw(&self, request: &[u8]) -> Response {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(request).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        Response::parse(&buf)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.raw(&request_bytes(method, path, &self.addr, headers, body))
    }

    /// The listening address, for [`connect_from`].
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr.parse().expect("a socket address")
    }

    /// Posts an urlencoded form as the browser holding `cookie` (`name=value`) would.
    pub fn post_form_as(&self, path: &str, cookie: &str, body: &str) -> Response {
        self.request(
            "POST",
            path,
            &[
                ("Cookie", cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Response {
        self.request(
            "POST",
            path,
            &[
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }

    pub fn post_form(&self, path: &str, body: &str) -> Response {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
    }

    /// Loads the login form as a browser would: its CSRF token and the matching cookie
    /// (`name=value`), which `POST /login` needs together.
    pub fn login_token(&self) -> (String, String) {
        let page = self.get("/login?next=/");
        assert_eq!(page.status, 200, "{}", page.body);
        let set = page.header("set-cookie").expect("login CSRF cookie");
        let cookie = set.split(';').next().unwrap().to_owned();
        (csrf_from(&page.body), cookie)
    }

    /// Posts the login form with a fresh CSRF token and cookie, plus `extra` headers.
    pub fn post_login(&self, login: &str, password: &str, extra: &[(&str, &str)]) -> Response {
        let (csrf, cookie) = self.login_token();
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("login", login)
            .append_pair("password", password)
            .append_pair("next", "/")
            .append_pair("csrf", &csrf)
            .finish();
        let mut headers = vec![
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", cookie.as_str()),
        ];
        headers.extend_from_slice(extra);
        self.request("POST", "/login", &headers, form.as_bytes())
    }

    /// Signs in through the login form and returns the session cookie (`name=value`).
    pub fn sign_in(&self, login: &str, password: &str) -> String {
        let r = self.post_login(login, password, &[]);
        assert_eq!(r.status, 303, "{}", r.body);
        let set = r.header("set-cookie").expect("session cookie");
        assert!(set.contains("HttpOnly"), "{set}");
        set.split(';').next().unwrap().to_owned()
    }

    /// The CSRF token that the consent page of `client_id` shows a signed-in browser: the
    /// session's `sessid`.
    pub fn consent_csrf(&self, client_id: &str, cookie: &str) -> String {
        let page = self.request(
            "GET",
            &format!("/oauth/authorize/?client_id={client_id}"),
            &[("Cookie", cookie)],
            b"",
        );
        assert_eq!(page.status, 200, "{}", page.body);
        csrf_from(&page.body)
    }

    /// The webhook URL path for a method.
    pub fn hook_url(&self, method: &str) -> String {
        format!("{}{method}", self.hook)
    }

    /// Sends a notification through the first-start webhook and returns its id.
    pub fn notify(&self, body: serde_json::Value) -> i64 {
        let r = self.post_json(&self.hook_url("im.notify.system.add"), &body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["result"]
            .as_i64()
            .unwrap_or_else(|| panic!("no id in {}", r.body))
    }
}

/// A bound value of [`Server::query`].
#[derive(Debug, Clone)]
pub enum Sql {
    Int(i64),
    Text(String),
}

impl From<i64> for Sql {
    fn from(v: i64) -> Sql {
        Sql::Int(v)
    }
}

impl From<&str> for Sql {
    fn from(v: &str) -> Sql {
        Sql::Text(v.to_owned())
    }
}

impl From<&String> for Sql {
    fn from(v: &String) -> Sql {
        Sql::Text(v.clone())
    }
}

impl Sql {
    fn literal(&self) -> String {
        match self {
            Sql::Int(v) => v.to_string(),
            Sql::Text(t) => format!("'{}'", t.replace('\'', "''")),
        }
    }
}

/// `?N` placeholders filled with literals (for PostgreSQL's simple protocol). Test SQL only:
/// the values are the tests' own.
fn inline_params(sql: &str, params: &[Sql]) -> String {
    let mut out = sql.to_owned();
    // Highest first, so ?1 does not eat the start of ?10.
    for (i, p) in params.iter().enumerate().rev() {
        out = out.replace(&format!("?{}", i + 1), &p.literal());
    }
    out
}

impl Server {
    /// Runs one statement on this server's database, SQLite or PostgreSQL, with `?N`
    /// placeholders, and returns its rows, each value as text (`None` for NULL). Write SQL that
    /// both accept: booleans as `CAST(col AS INTEGER)`.
    pub fn query(&self, sql: &str, params: &[Sql]) -> Vec<Vec<Option<String>>> {
        if let Some(url) = &self.database_url {
            let sql = inline_params(sql, params);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            return runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let driver = tokio::spawn(connection);
                let mut out = Vec::new();
                for m in client.simple_query(&sql).await.unwrap() {
                    if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
                        out.push(
                            (0..row.len())
                                .map(|i| row.get(i).map(str::to_owned))
                                .collect(),
                        );
                    }
                }
                drop(client);
                let _ = driver.await;
                out
            });
        }
        let c = rusqlite::Connection::open(self.data_dir().join("imnotify.sqlite3")).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        let values: Vec<rusqlite::types::Value> = params
            .iter()
            .map(|p| match p {
                Sql::Int(v) => rusqlite::types::Value::Integer(*v),
                Sql::Text(t) => rusqlite::types::Value::Text(t.clone()),
            })
            .collect();
        let mut stmt = c.prepare(sql).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values.iter()), |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                            rusqlite::types::Value::Null => None,
                            rusqlite::types::Value::Integer(v) => Some(v.to_string()),
                            rusqlite::types::Value::Real(v) => Some(v.to_string()),
                            rusqlite::types::Value::Text(t) => Some(t),
                            rusqlite::types::Value::Blob(b) => Some(hex::encode(b)),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        rows
    }

    /// The single value of a one-row, one-column query, parsed (e.g. a count or an id).
    pub fn query_value<T: std::str::FromStr>(&self, sql: &str, params: &[Sql]) -> Option<T>
    where
        T::Err: std::fmt::Debug,
    {
        self.query(sql, params)
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
            .map(|v| v.parse().unwrap())
    }

    /// A write statement (see [`Server::query`]).
    pub fn execute(&self, sql: &str, params: &[Sql]) {
        self.query(sql, params);
    }

    /// Runs SQL on this server's PostgreSQL database (see [`pg_query`]).
    pub fn pg(&self, sql: &str) -> Vec<String> {
        pg_query(
            self.database_url.as_deref().expect("running on PostgreSQL"),
            sql,
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if let Some(url) = self.database_url.take().filter(|_| self.owns_database) {
            drop_pg_database(&url);
        }
    }
}

fn unsafe_kill_term(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// `Options::envs` from string pairs.
pub fn envs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Starts `serve` on the SQLite data directory `data` and returns what it printed up to the
/// end of the first-start banner ("To read it ..."), or up to 20 s of silence when it prints
/// none; then kills it. Read on a thread: a server without a banner prints nothing more and
/// keeps running.
pub fn first_start_banner(data: &Path) -> Vec<String> {
    first_start_banner_with(data, &[], &[])
}

/// [`first_start_banner`] with more `serve` arguments and environment variables (the
/// environment's own `IMNOTIFY_REQUIRE_HTTPS` and `IMNOTIFY_TRUSTED_PROXIES` removed first).
pub fn first_start_banner_with(data: &Path, args: &[&str], envs: &[(&str, &str)]) -> Vec<String> {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(args)
        .env_remove("IMNOTIFY_DATA_DIR")
        .env_remove("IMNOTIFY_DATABASE_URL")
        .env_remove("IMNOTIFY_ADMIN__TOKEN")
        .env_remove("IMNOTIFY_REQUIRE_HTTPS")
        .env_remove("IMNOTIFY_TRUSTED_PROXIES")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning imnotify");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        let done = line.starts_with("To read it");
        banner.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    banner
}

/// The JSON a command printed on stdout, after asserting that it succeeded (else its stderr).
pub fn json_output(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the command")
}

/// A TCP connection to `to` from the loopback address `from` (all of 127.0.0.0/8 is local), so
/// the server, or a proxy in front of it, sees another client. Reads time out after 60 s.
pub fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("bind the source address");
    socket.connect(&to.into()).expect("connect");
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// One HTTP/1.1 request's bytes: `Host: host`, `Connection: close`, `headers`, and
/// `Content-Length` when there is a body or the method is POST.
pub fn request_bytes(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends `request` on `stream` and reads the answer until the server closes. A write error is
/// ignored: a server that answers before reading a whole large body may close under the sender.
pub fn exchange(mut stream: TcpStream, request: &[u8]) -> Response {
    let _ = stream.write_all(request);
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    Response::parse(&buf)
}

/// Reads from `r` until `needle` appears or `limit` passes; what was read, or `None` when the
/// connection closed or the time ran out first. `r` needs a short read timeout of its own.
pub fn read_until(r: &mut impl Read, needle: &str, limit: Duration) -> Option<String> {
    let deadline = std::time::Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match r.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&seen).contains(needle) {
                    return Some(String::from_utf8_lossy(&seen).into_owned());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    None
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn parse(buf: &[u8]) -> Response {
        let text = String::from_utf8_lossy(buf);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Response {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts an error envelope with this code and status.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        let j = self.json();
        assert_eq!(j["error"], code, "body: {}", self.body);
        assert!(j["error_description"].is_string(), "body: {}", self.body);
        assert!(
            j.get("time").is_none(),
            "errors carry no time block: {}",
            self.body
        );
    }
}

/// The value of the consent form's hidden `csrf` field.
pub fn csrf_from(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let at = page.find(marker).expect("csrf field") + marker.len();
    page[at..].split('"').next().unwrap().to_owned()
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n.min(rest.len())]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
