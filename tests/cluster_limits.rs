//! The cluster-wide limits (issue 14) on a real PostgreSQL: three `Limiters`, each with its own
//! connection pool as three instances would have, share one burst and one operating account.
//! Skips with a printed reason unless `IMNOTIFY_TEST_PG` names a database (`scripts/pg.sh url`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imnotify::clock::Clock;
use imnotify::config::Limits as LimitsConfig;
use imnotify::limits::{Limiters, RateKey, RateOverride};
use imnotify::store::pg_limits::PgLimits;

fn database_url() -> Option<String> {
    match std::env::var("IMNOTIFY_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: IMNOTIFY_TEST_PG is not set (scripts/pg.sh provides it)");
            None
        }
    }
}

fn pool(url: &str, size: usize) -> deadpool_postgres::Pool {
    let mut cfg = deadpool_postgres::Config::new();
    cfg.url = Some(url.to_owned());
    cfg.pool = Some(deadpool_postgres::PoolConfig::new(size));
    cfg.create_pool(
        Some(deadpool_postgres::Runtime::Tokio1),
        tokio_postgres::NoTls,
    )
    .expect("pool")
}

/// A credential no other run has used, so runs against one database do not share buckets.
fn fresh_key() -> RateKey {
    RateKey {
        ip: IpAddr::from([127, 0, 0, 1]),
        credential: rand::random(),
    }
}

async fn instance(url: &str, clock: &Clock) -> Arc<Limiters> {
    let mut l = Limiters::from_config(&LimitsConfig::default(), clock);
    l.share(PgLimits::open(pool(url, 8)).await.expect("open"));
    Arc::new(l)
}

/// Sends `per_instance` requests at once through each instance and counts the allowed ones.
async fn burst(instances: &[Arc<Limiters>], key: RateKey, per_instance: usize) -> usize {
    let mut tasks = Vec::new();
    for l in instances {
        for _ in 0..per_instance {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                l.check_rate(&key, RateOverride::default()).await
            }));
        }
    }
    let mut allowed = 0;
    for t in tasks {
        if t.await.expect("task") {
            allowed += 1;
        }
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_one_burst() {
    let Some(url) = database_url() else { return };
    // A manual clock: the bucket does not drain while the test runs, so the count is exact.
    let clock = Clock::manual(1_800_000_000);
    let mut cluster = Vec::new();
    for _ in 0..3 {
        cluster.push(instance(&url, &clock).await);
    }
    let allowed = burst(&cluster, fresh_key(), 60).await;
    assert_eq!(allowed, 50, "the default burst of 50 holds for the cluster");

    // Without the shared buckets each instance would give its own burst: 150.
    let alone: Vec<_> = (0..3)
        .map(|_| Arc::new(Limiters::from_config(&LimitsConfig::default(), &clock)))
        .collect();
    assert_eq!(burst(&alone, fresh_key(), 60).await, 150);

    // The bucket drains at 2/s for the whole cluster: after 1 s, two more, wherever they land.
    let key = fresh_key();
    assert_eq!(burst(&cluster, key, 20).await, 50);
    clock.advance(Duration::from_secs(1));
    assert_eq!(burst(&cluster, key, 5).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhooks_own_quota_is_its_own_bucket() {
    let Some(url) = database_url() else { return };
    let clock = Clock::manual(1_800_000_000);
    let a = instance(&url, &clock).await;
    let b = instance(&url, &clock).await;
    let key = fresh_key();
    let small = RateOverride {
        per_second: None,
        burst: Some(3),
    };
    let mut allowed = 0;
    for i in 0..10 {
        let l = if i % 2 == 0 { &a } else { &b };
        if l.check_rate(&key, small).await {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3);
    let off = RateOverride {
        per_second: Some(0.0),
        burst: None,
    };
    for _ in 0..100 {
        assert!(a.check_rate(&key, off).await, "a rate of 0 is unlimited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operating_time_charged_on_one_instance_blocks_the_others() {
    let Some(url) = database_url() else { return };
    let t0 = 1_800_000_000.0;
    let clock = Clock::manual(t0 as i64);
    let a = instance(&url, &clock).await;
    let b = instance(&url, &clock).await;
    let who = format!("apauth:{}", rand::random::<u32>());
    let m = "im.notify.system.add";
    assert!(b.operating_admit(&who, m, t0).await.is_some());
    // Through A: 300 s, then 200 s more: above the 480 s limit.
    let u = a.operating_record(&who, m, t0, 300.0, t0 + 300.0).await;
    assert_eq!(u.operating, 300.0);
    let u = a
        .operating_record(&who, m, t0 + 301.0, 200.0, t0 + 501.0)
        .await;
    assert_eq!(u.operating, 500.0);
    assert_eq!(u.reset_at, Some(t0 as i64 + 600));
    assert!(a.operating_admit(&who, m, t0 + 502.0).await.is_none());
    // B read the account before A charged it; once its short cache has expired it refuses too.
    clock.advance(Duration::from_secs(2));
    assert!(b.operating_admit(&who, m, t0 + 502.0).await.is_none());
    // A fast call on B reports the cluster's usage.
    let u = b
        .operating_record(&who, m, t0 + 502.0, 0.01, t0 + 502.0)
        .await;
    assert_eq!(u.operating, 500.0);
    // Other methods are separate accounts; the window ends 600 s after the first bucket.
    assert!(b
        .operating_admit(&who, "im.notify.get", t0 + 502.0)
        .await
        .is_some());
    assert!(b.operating_admit(&who, m, t0 + 600.0).await.is_some());
    // The toolkit's reset forgets the account on every instance.
    b.clear_operating().await;
    clock.advance(Duration::from_secs(2));
    assert!(a.operating_admit(&who, m, t0 + 502.0).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_deletes_drained_and_expired_rows() {
    let Some(url) = database_url() else { return };
    let t0 = 1_800_000_000.0;
    let clock = Clock::manual(t0 as i64);
    let mut l = Limiters::from_config(&LimitsConfig::default(), &clock);
    l.share(PgLimits::open(pool(&url, 2)).await.expect("open"));
    let key = fresh_key();
    assert!(l.check_rate(&key, RateOverride::default()).await);
    let who = format!("apauth:{}", rand::random::<u32>());
    l.operating_record(&who, "m", t0, 5.0, t0 + 5.0).await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let rows = |key: RateKey, who: String| {
        let client = &client;
        async move {
            let bytes = imnotify::limits::shared::rate_key_bytes(&key, 500_000_000, 50).to_vec();
            let rate: i64 = client
                .query_one(
                    "SELECT count(*) FROM rate_buckets WHERE key = $1",
                    &[&bytes],
                )
                .await
                .expect("count")
                .get(0);
            let operating: i64 = client
                .query_one(
                    "SELECT count(*) FROM operating_buckets WHERE identity = $1",
                    &[&who],
                )
                .await
                .expect("count")
                .get(0);
            (rate, operating)
        }
    };
    assert_eq!(rows(key, who.clone()).await, (1, 1));
    // Not yet drained or expired: kept.
    l.sweep_shared(t0 + 0.1).await;
    assert_eq!(rows(key, who.clone()).await, (1, 1));
    // Far in the future both have drained or expired (other tests' rows may come and go).
    l.sweep_shared(t0 + 700.0).await;
    assert_eq!(rows(key, who).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_falls_back_to_the_instance() {
    if database_url().is_none() {
        return;
    }
    let clock = Clock::manual(1_800_000_000);
    // A pool to a port nobody listens on: every statement fails at once.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        pool(&format!("postgres://imnotify@127.0.0.1:{port}/imnotify"), 2)
    };
    let mut l = Limiters::from_config(&LimitsConfig::default(), &clock);
    l.share(PgLimits::new(dead));
    let key = fresh_key();
    let started = Instant::now();
    let mut allowed = 0;
    for _ in 0..60 {
        if l.check_rate(&key, RateOverride::default()).await {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 50, "the instance's own bucket decides");
    assert!(started.elapsed() < Duration::from_secs(30), "no hang");
}

/// The cost the shared rate limit adds to a request: one statement, measured sequentially on
/// one connection (printed; `--nocapture` shows it). The bound only catches a gross regression.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_step_cost() {
    let Some(url) = database_url() else { return };
    let clock = Clock::system();
    let mut l = Limiters::from_config(&LimitsConfig::default(), &clock);
    l.share(PgLimits::open(pool(&url, 1)).await.expect("open"));
    let unlimited = RateOverride {
        per_second: Some(1e9),
        burst: Some(1_000_000),
    };
    let key = fresh_key();
    l.check_rate(&key, unlimited).await;
    let n = 1000;
    let started = Instant::now();
    for _ in 0..n {
        assert!(l.check_rate(&key, unlimited).await);
    }
    let per = started.elapsed() / n;
    let local = Limiters::from_config(&LimitsConfig::default(), &clock);
    let started = Instant::now();
    for _ in 0..n {
        local.check_rate(&key, unlimited).await;
    }
    let per_local = started.elapsed() / n;
    eprintln!(
        "rate check: shared (PostgreSQL, loopback) {per:?} per request, in memory {per_local:?}"
    );
    assert!(per < Duration::from_millis(50), "{per:?} per rate check");
}

/// Failed logins count for the cluster (issue 10 §2 across instances, issue 14): a guesser
/// spreading attempts over three instances gets the lock-out of one. Per account, 5 failures
/// are free (`LOGIN_FREE_PER_ACCOUNT`) and the 6th locks the account for 1 s, then 2 s; per
/// address, 20 are free. Each instance alone sees too few failures to lock anything, so this
/// fails when the back-off is per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_logins_lock_out_on_every_instance() {
    let Some(url) = database_url() else { return };
    let clock = Clock::manual(1_800_000_000);
    let mut cluster = Vec::new();
    for _ in 0..3 {
        cluster.push(instance(&url, &clock).await);
    }
    // Fresh keys, so runs against one database do not meet.
    let account: [u8; 16] = rand::random();
    let ip = IpAddr::from(rand::random::<[u8; 16]>());

    for l in &cluster {
        for _ in 0..2 {
            assert_eq!(l.login_locked(&account, Some(ip)).await, None);
            l.login_failed(account, Some(ip)).await;
        }
    }
    let late = instance(&url, &clock).await;
    for l in cluster.iter().chain([&late]) {
        assert_eq!(
            l.login_locked(&account, Some(ip)).await,
            Some(Duration::from_secs(1)),
            "six failures over three instances lock the account everywhere"
        );
    }
    // The lock-out ends; the next failure, on another instance, doubles it for all.
    clock.advance(Duration::from_secs(1));
    assert_eq!(cluster[1].login_locked(&account, Some(ip)).await, None);
    cluster[0].login_failed(account, Some(ip)).await;
    assert_eq!(
        cluster[2].login_locked(&account, Some(ip)).await,
        Some(Duration::from_secs(2))
    );
    // A success on one instance clears the account on all (the address's 7 stay under 20).
    cluster[1].login_succeeded(&account).await;
    assert_eq!(cluster[2].login_locked(&account, Some(ip)).await, None);

    // Per address: 21 failures over the cluster, each with another login, lock the address.
    let guesser = IpAddr::from(rand::random::<[u8; 16]>());
    for i in 0..21 {
        cluster[i % 3]
            .login_failed(rand::random(), Some(guesser))
            .await;
    }
    let someone: [u8; 16] = rand::random();
    assert_eq!(
        late.login_locked(&someone, Some(guesser)).await,
        Some(Duration::from_secs(1))
    );
    assert_eq!(late.login_locked(&someone, Some(ip)).await, None);
}
