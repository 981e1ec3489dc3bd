//! Starting and stopping the server: open the store, create the first user on an empty data
//! directory, bind, serve, and drain on SIGTERM/SIGINT.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::auth::secret;
use crate::clock::Clock;
use crate::config::{Config, RetentionConfig};
use crate::delivery::{mail, outbox};
use crate::limits::{Limiters, RateOverride};
use crate::methods;
use crate::server;
use crate::state::{AppState, Keys, Registry};
use crate::store::hub::HubLimits;
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sqlite::{DeliveryOptions, OpenOptions, SqliteStore};
use crate::store::{Store, StoreError, User};
use crate::toolkit::Toolkit;

/// The sender of captured mails when `smtp.from` is not set (`email.capture` without SMTP).
const CAPTURE_FROM: &str = "imnotify <imnotify@localhost>";
/// Length of generated webhook codes: Bitrix24's own codes have 16 characters.
pub const WEBHOOK_CODE_LEN: usize = 16;
/// How often drained rate buckets and expired operating windows are forgotten. A drained bucket
/// (at most burst / rate seconds old, 25 s by default) is indistinguishable from a new one, so
/// the limiters hold roughly the clients of the last half minute.
const LIMITS_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// Notifications removed by one retention write. Each removal touches every index of the row
/// and its chat counter, and the commit is fsynced: 1000 rows took 400 ms on a busy 2-core
/// machine, and every request queued for the writer waited for it. 250 keeps that wait near
/// 100 ms; Bitrix24's agent deletes in steps of 1000, but only 2000 per run.
const RETENTION_CHUNK: usize = 250;
/// How long shutdown waits, once the HTTP server has drained, for the open streams to end
/// after the hub closed. A WebSocket is an upgraded connection that the graceful shutdown no
/// longer tracks: without this wait the process could exit before a socket that was still
/// opening sent its close frame (1001), and the client would see 1006 instead.
const STREAMS_DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// The method registry: every handler of `methods`, assembled here, above both `methods` and
/// the `protocol` layer that runs them.
pub fn registry() -> Registry {
    Registry::new(methods::all())
}

/// Opens the store: PostgreSQL when `database_url` is set, otherwise the SQLite database in
/// the data directory. `serve` passes `at_start` so the SQLite database's structure is checked
/// (`storage.quick_check`) before anything is served; admin commands skip that check.
pub async fn open_store(config: &Config, at_start: bool) -> anyhow::Result<Arc<dyn Store>> {
    open_store_with(config, at_start, Clock::system()).await
}

/// `open_store`, with the clock the store reads delivery times from (event times).
pub async fn open_store_with(
    config: &Config,
    at_start: bool,
    clock: Clock,
) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = &config.database_url {
        let store = PgStore::open(
            url,
            PgOptions {
                mail_delay: config.mail_enabled().then_some(config.email.delay_seconds),
                hub: HubLimits {
                    per_user: config.events.max_streams_per_user,
                    total: config.events.max_streams,
                },
                clock,
                max_notifications_per_user: config.limits.max_notifications_per_user,
            },
        )
        .await
        .context("opening the PostgreSQL database (database_url)")?;
        return Ok(Arc::new(store));
    }
    let options = OpenOptions {
        quick_check: at_start && config.storage.quick_check,
        max_notifications_per_user: config.limits.max_notifications_per_user,
    };
    let delivery = DeliveryOptions {
        // Without SMTP nothing is queued (issue 12: "Without smtp.host, e-mail is off").
        mail_delay: config.mail_enabled().then_some(config.email.delay_seconds),
        hub: HubLimits {
            per_user: config.events.max_streams_per_user,
            total: config.events.max_streams,
        },
        clock,
    };
    let store = SqliteStore::open_with(&config.data_dir, &options, delivery)
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    Ok(Arc::new(store))
}

/// One retention run: removes the notifications older than `retention.days`, a chunk per
/// write, and forgets expired sessions, codes and tokens. Returns how many notifications went.
pub async fn run_retention(store: &dyn Store, retention: &RetentionConfig, now: i64) -> usize {
    let mut removed = 0;
    if retention.days > 0 {
        let before = now - i64::from(retention.days) * 86_400;
        loop {
            // Instant, not the clock: this measures real work to pace it.
            let started = std::time::Instant::now();
            match store.expire_notifications(before, RETENTION_CHUNK).await {
                Ok(n) => {
                    removed += n;
                    if n < RETENTION_CHUNK {
                        break;
                    }
                    // At most half of the writer's time goes to retention, so requests
                    // queued behind it wait for one chunk at most, and often for none.
                    let took = started.elapsed();
                    tokio::time::sleep(took.max(std::time::Duration::from_millis(10))).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "retention failed");
                    break;
                }
            }
        }
    }
    if let Err(e) = store.forget_expired_credentials(now).await {
        tracing::error!(error = %e, "forgetting expired credentials failed");
    }
    if removed > 0 {
        tracing::info!(
            removed,
            days = retention.days,
            "retention removed old notifications"
        );
    }
    removed
}

/// Creates a webhook and returns its plain code, which exists nowhere else afterwards.
pub async fn create_webhook(
    store: &dyn Store,
    user_id: i64,
    scopes: &[String],
    rate: RateOverride,
) -> anyhow::Result<String> {
    let code = secret::generate(WEBHOOK_CODE_LEN);
    store
        .add_webhook(user_id, secret::hash(&code), scopes, rate)
        .await?;
    Ok(code)
}

/// On an empty data directory: user 1, an admin, with an `im` webhook. Returns the new code.
async fn bootstrap(store: &dyn Store) -> anyhow::Result<Option<String>> {
    if store.user_count().await? > 0 {
        return Ok(None);
    }
    let added = store
        .add_user(User {
            id: 1,
            name: "Admin".into(),
            last_name: String::new(),
            email: String::new(),
            active: true,
            is_admin: true,
        })
        .await;
    match added {
        // Another process started on the same fresh data directory and got there first.
        Err(StoreError::Conflict(_)) => return Ok(None),
        other => other?,
    }
    Ok(Some(
        create_webhook(store, 1, &["im".to_owned()], RateOverride::default()).await?,
    ))
}

/// Length of a generated admin token.
pub const ADMIN_TOKEN_LEN: usize = 32;

/// Sets the admin API's token digest: `admin.token` when configured, else the one stored in
/// the settings, else a new one, which is returned to be shown once.
pub async fn admin_token(
    store: &dyn Store,
    config: &Config,
    toolkit: &Toolkit,
    from_fixtures: Option<&str>,
) -> anyhow::Result<Option<String>> {
    if let Some(token) = config.admin.token.as_deref().filter(|t| !t.is_empty()) {
        toolkit.set_admin_token_hash(secret::hash(token));
        return Ok(None);
    }
    if let Some(token) = from_fixtures {
        let hash = secret::hash(token);
        store
            .put_setting(crate::web::admin::TOKEN_SETTING, hex::encode(hash))
            .await?;
        toolkit.set_admin_token_hash(hash);
        return Ok(None);
    }
    let fresh = secret::generate(ADMIN_TOKEN_LEN);
    let fresh_hex = hex::encode(secret::hash(&fresh));
    let stored = store
        .setting(crate::web::admin::TOKEN_SETTING, fresh_hex.clone())
        .await?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&stored, &mut hash).context("the stored admin token digest")?;
    toolkit.set_admin_token_hash(hash);
    Ok((stored == fresh_hex).then_some(fresh))
}

/// How the first-start banner names this binary in the admin command it suggests: `imnotify`
/// when its directory is on `PATH`, else its path, relative (`./target/debug/imnotify`) when it
/// is under the working directory. `cargo run` puts no `imnotify` on `PATH`, so a bare name
/// would fail for the README's first reader.
fn admin_binary() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "imnotify".to_owned();
    };
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| Some(d.as_path()) == exe.parent()));
    if on_path {
        return "imnotify".to_owned();
    }
    let shown = match std::env::current_dir() {
        Ok(cwd) => match exe.strip_prefix(&cwd) {
            Ok(rel) => std::path::Path::new(".").join(rel),
            Err(_) => exe.clone(),
        },
        Err(_) => exe.clone(),
    };
    shell_word(&shown.display().to_string())
}

/// The flag that points an admin command at this server's store, for the banner: ` --data-dir
/// DIR` unless it is the default `./data`; on PostgreSQL a `--database-url` placeholder, as the
/// URL may hold a password and stdout is often kept in logs. Without it the command would open
/// (and create) `./data`, another store, and report that user 1 does not exist.
fn store_flag(config: &Config) -> String {
    if config.database_url.is_some() {
        return " --database-url '...'".to_owned();
    }
    if config.data_dir == std::path::Path::new("./data") {
        return String::new();
    }
    format!(
        " --data-dir {}",
        shell_word(&config.data_dir.display().to_string())
    )
}

/// `s` as one POSIX shell word: as it is when it has only safe characters, else single-quoted.
fn shell_word(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs the server; `fixtures` is the `--fixtures` file, applied before the first request.
pub async fn serve(mut config: Config, fixtures: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let clock = Clock::system();
    let store = open_store_with(&config, true, clock.clone()).await?;
    // On SQLite, held while serving: `migrate --from-sqlite` refuses a data dir in use (issue 14).
    let _serving = match config.database_url {
        None => Some(crate::store::sqlite::ServeLock::serving(&config.data_dir)?),
        Some(_) => None,
    };
    // Bound before the first user and its webhook are made: their code is printed only once,
    // so a start that fails on a busy port or a bad certificate must not consume it.
    let bound = server::bind(&config).await?;
    // Likewise, a wrong fixtures file is refused before that code is made.
    let fixtures = match &fixtures {
        Some(path) => {
            let f = crate::fixtures::load(path)?;
            let fresh = store.user_count().await? == 0;
            f.check_users(store.as_ref(), fresh).await?;
            Some(f)
        }
        None => None,
    };
    let first_code = bootstrap(store.as_ref()).await?;
    let applied = match &fixtures {
        Some(f) => {
            let applied = f.apply(store.as_ref()).await?;
            tracing::info!(
                changed = applied.changed,
                unchanged = applied.unchanged,
                "fixtures applied"
            );
            Some(applied)
        }
        None => None,
    };
    let toolkit = Arc::new(Toolkit::new(&config));
    let fixture_token = applied.as_ref().and_then(|a| a.admin_token.as_deref());
    let new_admin_token = admin_token(store.as_ref(), &config, &toolkit, fixture_token).await?;
    // From here on `listen` is the bound address (port 0 resolved): the Host allow-list and the
    // fallback portal URL are made from it.
    config.listen = bound.addr;
    let base = config.base_url(bound.addr);

    // Stdout carries what a person (or a test) needs to start calling; logs go to stderr.
    // The socket itself, so nobody looks for TLS or a name that a proxy in front provides.
    println!("imnotify listening on {}", config.listen_url(bound.addr));
    if config.public_url.is_some() {
        println!("Public URL: {base}");
    }
    // Nothing can authenticate then: every credential needs HTTPS, and no HTTPS can arrive.
    // Said before the webhook and its curl line, which would fail with "Https required.".
    if config.require_https() && !config.tls_enabled() && config.trusted_proxies.is_empty() {
        let why = "HTTPS is required (require_https: on by default when listening beyond \
                   loopback), but this server speaks plain HTTP and trusts no TLS proxy: every \
                   call with a credential answers INVALID_REQUEST \"Https required.\". Set \
                   tls.cert and tls.key, or put a TLS proxy in front and list it in \
                   trusted_proxies, or on a trusted network pass --require-https false.";
        println!("Warning: {why}");
        tracing::warn!("{why}");
    }
    if let Some(token) = new_admin_token {
        println!("Admin token (for {base}/admin/api/, shown only now): {token}");
    }
    if let Some(code) = first_code {
        println!("Created user 1 (admin) and a webhook with scope im. Its code is shown only now.");
        println!("Webhook: {base}/rest/1/{code}/");
        println!("Try it:");
        println!(
            "curl -X POST -H \"Content-Type: application/json\" -H \"Accept: application/json\" -d '{{\"USER_ID\":1,\"MESSAGE\":\"System notification\",\"MESSAGE_OUT\":\"System notification for email\",\"TAG\":\"SYSTEM_EVENT_42\",\"SUB_TAG\":\"SYSTEM_EVENT|42\"}}' {base}/rest/1/{code}/im.notify.system.add"
        );
        println!(
            "To read it in the page: {} user password --id 1 --password '...'{}, then open {base}/ and sign in as 1.",
            admin_binary(),
            store_flag(&config)
        );
    }
    tracing::info!(addr = %bound.addr, tls = config.tls_enabled(), require_https = config.require_https(), "serving");

    let mut background = vec![tokio::spawn(outbox::prune(
        store.clone(),
        clock.clone(),
        config.events.clone(),
        config.email.clone(),
    ))];
    // Read once here: `/unsubscribe` and the Push&Pull channel check then touch no storage.
    let keys = Arc::new(Keys {
        mail: store
            .setting(mail::KEY_SETTING, secret::generate_hex(64))
            .await?,
        pull_channel: store
            .setting(crate::auth::channel::KEY_SETTING, secret::generate_hex(64))
            .await?,
    });
    if config.mail_enabled() {
        let settings = mail::MailSettings {
            from: config
                .smtp
                .from
                .as_deref()
                .filter(|f| !f.is_empty())
                .unwrap_or(CAPTURE_FROM)
                .parse()
                .context("smtp.from is not a mailbox")?,
            base_url: base.clone(),
            key: keys.mail.clone(),
        };
        // Capture wins over SMTP: a test server configured with both sends nothing.
        let sink = if config.email.capture {
            outbox::Sink::Capture(toolkit.clone())
        } else {
            outbox::Sink::Smtp(outbox::transport(&config.smtp).context("smtp settings")?)
        };
        background.push(tokio::spawn(outbox::run(
            store.clone(),
            clock.clone(),
            sink,
            settings,
            config.email.clone(),
        )));
        tracing::info!(
            delay_seconds = config.email.delay_seconds,
            capture = config.email.capture,
            "e-mail for MESSAGE_OUT is on"
        );
    }

    let mut limits = Limiters::from_config(&config.limits, &clock);
    // Instances on one database share the rate and operating limits (issue 14).
    if let Some(shared) = store.shared_limits() {
        limits.share(shared);
    }
    let limits = Arc::new(limits);
    // Made now, so that the first unknown login does not pay for it and stand out by its time.
    let warm = limits.clone();
    tokio::spawn(async move {
        warm.login.pool.run(crate::auth::password::dummy_hash).await;
    });
    let state = AppState {
        store: store.clone(),
        config: Arc::new(config),
        limits: limits.clone(),
        clock: clock.clone(),
        methods: Arc::new(registry()),
        toolkit,
        keys,
    };
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(LIMITS_SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            limits.sweep(clock.now());
            limits.sweep_shared(clock.now()).await;
        }
    });
    let retention = state.config.retention.clone();
    let retention_store = store.clone();
    let retention_clock = state.clock.clone();
    let retention_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(
            retention.interval_secs.max(1),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            run_retention(retention_store.as_ref(), &retention, retention_clock.unix()).await;
        }
    });
    let (tx, rx) = watch::channel(false);
    let hub = store.hub();
    let streams = hub.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        // Event streams end now; their clients resume from the log on the next start.
        hub.close();
        let _ = tx.send(true);
    });
    bound.serve(server::router(state), rx).await;
    let drain_until = tokio::time::Instant::now() + STREAMS_DRAIN;
    while streams.open_streams() > 0 && tokio::time::Instant::now() < drain_until {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    sweeper.abort();
    retention_task.abort();
    for task in background {
        task.abort();
    }
    store.flush().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::openapi::served;
    use serde_json::Value as Json;

    #[test]
    fn every_registered_method_has_both_paths() {
        let doc: Json = serde_json::from_str(served(&registry())).unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().unwrap();
        let mut n = 0;
        for spec in registry().iter() {
            n += 1;
            let rest = &paths[&format!("/rest/{}", spec.name)];
            assert!(
                rest["post"]["responses"]["200"].is_object(),
                "{}",
                spec.name
            );
            assert!(rest["get"]["security"].is_array(), "{}", spec.name);
            let hook = &paths[&format!("/rest/{{user_id}}/{{webhook_code}}/{}", spec.name)];
            assert!(hook["post"].is_object(), "{}", spec.name);
        }
        assert!(n > 0);
        assert_eq!(paths.len(), 2 * n, "no path for an unregistered method");
    }

    #[test]
    fn references_resolve_and_operation_ids_are_unique() {
        let doc: Json = serde_json::from_str(served(&registry())).unwrap();
        let methods = registry();
        let text = served(&methods);
        for name in ["Success", "Error", "Time"] {
            assert!(doc["components"]["schemas"][name].is_object());
        }
        let refs = text.matches("\"$ref\":\"#/components/schemas/").count();
        assert!(refs > 0);
        let mut ids = std::collections::HashSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for (m, op) in item.as_object().unwrap() {
                if m == "parameters" {
                    continue;
                }
                assert!(ids.insert(op["operationId"].as_str().unwrap().to_owned()));
            }
        }
    }
}
