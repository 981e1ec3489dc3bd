//! A real `imnotify serve` for tests (the `testing` feature): a free loopback port, a
//! temporary data directory, and a client for the first-start webhook of user 1.
//!
//! The binary is `IMNOTIFY_BIN` if set, else `imnotify` next to the test executable (cargo's
//! `target/debug`), else `imnotify` on `PATH`.
//!
//! ```no_run
//! let server = imnotify_client::testing::Server::start()?;
//! let id = server.client().system_add(&imnotify_client::Notify::new(1, "hello"))?;
//! assert!(id > 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Client, Error, RetryPolicy};

/// A running server, stopped (SIGKILL) and its data directory removed on drop.
///
/// ```no_run
/// let server = imnotify_client::testing::Server::start()?;
/// assert!(server.webhook.contains("/rest/1/"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The webhook URL of user 1 (scope `im`), `http://127.0.0.1:PORT/rest/1/CODE/`.
    pub webhook: String,
    /// The admin token of the test-server toolkit (`/admin/api/...`), when the server printed one.
    pub admin_token: Option<String>,
}

/// The binary to run: see the module docs.
///
/// ```no_run
/// println!("{}", imnotify_client::testing::binary().display());
/// ```
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IMNOTIFY_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        // Tests run from target/debug/deps; binaries live in target/debug.
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("imnotify");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("imnotify")
}

impl Server {
    /// Starts a server with the rate and operating limits off (`--no-limits`).
    ///
    /// ```no_run
    /// let s = imnotify_client::testing::Server::start()?;
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn start() -> Result<Server, Error> {
        Server::start_with(&["--no-limits"])
    }

    /// Starts a server with extra `serve` arguments.
    ///
    /// ```no_run
    /// let s = imnotify_client::testing::Server::start_with(&[])?; // limits on
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn start_with(args: &[&str]) -> Result<Server, Error> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "imnotify-client-test-{}-{}-{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        ));
        let fail = |what: &str, e: &dyn std::fmt::Display| Error::Config(format!("{what}: {e}"));
        std::fs::create_dir_all(&dir).map_err(|e| fail("temporary directory", &e))?;
        let mut child = Command::new(binary())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(args)
            .env_remove("IMNOTIFY_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| fail(&format!("starting {}", binary().display()), &e))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let (mut base, mut webhook, mut admin_token) = (None, None, None);
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("imnotify listening on ") {
                base = Some(url.trim().to_owned());
            } else if let Some((_, t)) = line
                .strip_prefix("Admin token ")
                .and_then(|l| l.rsplit_once(": "))
            {
                admin_token = Some(t.trim().to_owned());
            } else if let Some(url) = line.strip_prefix("Webhook: ") {
                webhook = Some(url.trim().to_owned());
                break;
            }
        }
        // Keep reading so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let mut server = Server {
            child,
            dir,
            base: base.unwrap_or_default(),
            webhook: String::new(),
            admin_token,
        };
        match webhook {
            Some(w) if !server.base.is_empty() => {
                // With `public_url` the printed link's origin is not the socket's.
                let path = w.find("/rest/").map_or(w.as_str(), |i| &w[i..]);
                server.webhook = format!("{}{path}", server.base);
                Ok(server)
            }
            _ => Err(Error::Config(
                "the server did not print its address and webhook".into(),
            )),
        }
    }

    /// A client for [`Server::webhook`], without a rate limit and with quick retries.
    ///
    /// ```no_run
    /// # let s = imnotify_client::testing::Server::start()?;
    /// let c = s.client();
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn client(&self) -> Client {
        Client::builder()
            .webhook(&self.webhook)
            .rate_limit(0, 0)
            .retry(RetryPolicy {
                base_delay: std::time::Duration::from_millis(20),
                ..RetryPolicy::default()
            })
            .build()
            .expect("a loopback URL")
    }

    /// The data directory (for `imnotify user add --data-dir ...` and the like).
    ///
    /// ```no_run
    /// # let s = imnotify_client::testing::Server::start()?;
    /// assert!(s.data_dir().exists());
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
