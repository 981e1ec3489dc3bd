//! The cluster's rate and operating-time buckets in PostgreSQL (issue 14): the
//! `limits::SharedBuckets` of every instance on one database.
//!
//! Both tables are UNLOGGED: a limiter's state is not worth a WAL write per request, and like
//! the in-memory limiters (and Bitrix24's) it may be forgotten when the database crashes. They
//! are created here, at start, rather than by the schema migrations, because they hold no data
//! anyone would migrate, back up or replicate (unlogged tables are not replicated either).
//!
//! Failed logins (`login_backoff`, issue 10 §2) are shared the same way, so a password guesser
//! gets the lock-out of one instance from the whole cluster, not one per instance.
//!
//! A rate step is one `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING`: the row lock
//! serialises concurrent steps on one key across instances, so a burst of 50 is 50 for the
//! cluster, exactly.

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::limits::operating::Bucket;
use crate::limits::shared::LoginRule;
use crate::limits::SharedBuckets;

/// In one transaction under an advisory lock: `CREATE TABLE IF NOT EXISTS` run by several
/// processes at once on a fresh database can fail on the catalog's unique index (seen when
/// the cluster tests opened the limits at the same moment).
const SCHEMA: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(7596391042011214189); -- 'imnotify' limits schema
CREATE UNLOGGED TABLE IF NOT EXISTS rate_buckets (
    key BYTEA  PRIMARY KEY,
    -- GCRA's theoretical arrival time, nanoseconds since the Unix epoch.
    tat BIGINT NOT NULL
);
CREATE UNLOGGED TABLE IF NOT EXISTS operating_buckets (
    identity TEXT             NOT NULL,
    method   TEXT             NOT NULL,
    minute   BIGINT           NOT NULL,
    created  DOUBLE PRECISION NOT NULL,
    seconds  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (identity, method, minute)
);
CREATE UNLOGGED TABLE IF NOT EXISTS login_backoff (
    key          BYTEA  PRIMARY KEY,
    failures     INTEGER NOT NULL,
    -- Nanoseconds since the Unix epoch, as `last`; NULL while the failures are free.
    locked_until BIGINT,
    last         BIGINT NOT NULL
);
COMMIT;
";

/// $1 keys, $2 now (nanoseconds). The longest lock-out still running, if any.
const LOGIN_LOCKED: &str = "
SELECT max(locked_until) - $2::bigint FROM login_backoff
    WHERE key = ANY($1::bytea[]) AND locked_until > $2::bigint";

/// $1 key, $2 now, $3 free, $4 base, $5 ceiling (nanoseconds). One statement, so concurrent
/// failures on several instances each count (the row lock serialises them). In the update,
/// `b` is the row before it: a row untouched for the ceiling starts over at 1, as the
/// in-memory table forgets it. The doubling is computed in numeric so it cannot overflow
/// before the ceiling caps it.
const LOGIN_FAILED: &str = "
INSERT INTO login_backoff AS b (key, failures, locked_until, last)
VALUES ($1::bytea, 1,
        CASE WHEN 1 > $3::int THEN $2::bigint + LEAST($4::bigint, $5::bigint) END, $2::bigint)
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN b.last < $2::bigint - $5::bigint THEN 1 ELSE b.failures + 1 END,
    last = $2::bigint,
    locked_until = CASE
        WHEN (CASE WHEN b.last < $2::bigint - $5::bigint THEN 1 ELSE b.failures + 1 END) > $3::int
        THEN $2::bigint + LEAST(
            $4::numeric * power(2::numeric, LEAST(
                (CASE WHEN b.last < $2::bigint - $5::bigint THEN 1 ELSE b.failures + 1 END)
                    - $3::int - 1, 64)),
            $5::numeric)::bigint
        WHEN b.last < $2::bigint - $5::bigint THEN NULL
        ELSE b.locked_until END";

/// $1 key, $2 now, $3 interval, $4 tolerance (nanoseconds). A row comes back when allowed.
const RATE_STEP: &str = "
INSERT INTO rate_buckets AS b (key, tat) VALUES ($1::bytea, $2::bigint + $3::bigint)
ON CONFLICT (key) DO UPDATE SET tat = GREATEST(b.tat, $2::bigint) + $3::bigint
    WHERE GREATEST(b.tat, $2::bigint) - $2::bigint <= $4::bigint
RETURNING tat";

const OPERATING_READ: &str = "
SELECT minute, created, seconds FROM operating_buckets WHERE identity = $1 AND method = $2";

/// The CTE's change is not visible to the outer SELECT of the same statement, so the changed
/// bucket comes from RETURNING and the others from the table.
const OPERATING_ADD: &str = "
WITH up AS (
    INSERT INTO operating_buckets AS o (identity, method, minute, created, seconds)
    VALUES ($1::text, $2::text, $3::bigint, $4::float8, $5::float8)
    ON CONFLICT (identity, method, minute) DO UPDATE SET seconds = o.seconds + EXCLUDED.seconds
    RETURNING minute, created, seconds
)
SELECT minute, created, seconds FROM up
UNION ALL
SELECT minute, created, seconds FROM operating_buckets
    WHERE identity = $1 AND method = $2 AND minute <> $3";

/// The limits' buckets on a PostgreSQL pool shared with the store.
pub struct PgLimits {
    pool: Pool,
}

impl PgLimits {
    /// Creates the tables if missing, then [`PgLimits::new`]. Errors are the database's.
    pub async fn open(pool: Pool) -> Result<Arc<PgLimits>, String> {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        if let Err(e) = client.batch_execute(SCHEMA).await {
            // The connection may be left inside the failed transaction: not back to the pool.
            drop(deadpool_postgres::Object::take(client));
            return Err(e.to_string());
        }
        drop(client);
        Ok(PgLimits::new(pool))
    }

    /// On a pool whose database has the tables already (or will have: until then each call
    /// fails and the limiters fall back to the instance's own buckets).
    pub fn new(pool: Pool) -> Arc<PgLimits> {
        Arc::new(PgLimits { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, String> {
        self.pool.get().await.map_err(|e| e.to_string())
    }
}

fn buckets(rows: Vec<tokio_postgres::Row>) -> Result<Vec<Bucket>, String> {
    rows.iter()
        .map(|r| {
            Ok(Bucket {
                minute: r.try_get(0).map_err(|e| e.to_string())?,
                created: r.try_get(1).map_err(|e| e.to_string())?,
                seconds: r.try_get(2).map_err(|e| e.to_string())?,
            })
        })
        .collect()
}

#[async_trait::async_trait]
impl SharedBuckets for PgLimits {
    async fn rate_step(
        &self,
        key: &[u8],
        now: i64,
        interval: i64,
        tolerance: i64,
    ) -> Result<bool, String> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(RATE_STEP)
            .await
            .map_err(|e| e.to_string())?;
        let row = client
            .query_opt(&stmt, &[&key, &now, &interval, &tolerance])
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.is_some())
    }

    async fn operating_read(&self, identity: &str, method: &str) -> Result<Vec<Bucket>, String> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(OPERATING_READ)
            .await
            .map_err(|e| e.to_string())?;
        let rows = client
            .query(&stmt, &[&identity, &method])
            .await
            .map_err(|e| e.to_string())?;
        buckets(rows)
    }

    async fn operating_add(
        &self,
        identity: &str,
        method: &str,
        minute: i64,
        created: f64,
        seconds: f64,
    ) -> Result<Vec<Bucket>, String> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(OPERATING_ADD)
            .await
            .map_err(|e| e.to_string())?;
        let rows = client
            .query(&stmt, &[&identity, &method, &minute, &created, &seconds])
            .await
            .map_err(|e| e.to_string())?;
        buckets(rows)
    }

    async fn sweep(&self, now_nanos: i64, expired_before: f64) -> Result<u64, String> {
        let client = self.client().await?;
        let rate = client
            .execute("DELETE FROM rate_buckets WHERE tat < $1", &[&now_nanos])
            .await
            .map_err(|e| e.to_string())?;
        let operating = client
            .execute(
                "DELETE FROM operating_buckets WHERE created < $1",
                &[&expired_before],
            )
            .await
            .map_err(|e| e.to_string())?;
        // Failed logins untouched for the lock-out ceiling are forgotten, as in memory.
        let ceiling =
            i64::try_from(crate::limits::LOGIN_BACKOFF_CEILING.as_nanos()).unwrap_or(i64::MAX);
        let login = client
            .execute(
                "DELETE FROM login_backoff WHERE last < $1",
                &[&now_nanos.saturating_sub(ceiling)],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(rate + operating + login)
    }

    async fn login_locked(&self, keys: &[Vec<u8>], now: i64) -> Result<Option<i64>, String> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(LOGIN_LOCKED)
            .await
            .map_err(|e| e.to_string())?;
        let row = client
            .query_one(&stmt, &[&keys, &now])
            .await
            .map_err(|e| e.to_string())?;
        row.try_get(0).map_err(|e| e.to_string())
    }

    async fn login_failed(&self, key: &[u8], now: i64, rule: LoginRule) -> Result<(), String> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(LOGIN_FAILED)
            .await
            .map_err(|e| e.to_string())?;
        let free = i32::try_from(rule.free).unwrap_or(i32::MAX);
        client
            .execute(&stmt, &[&key, &now, &free, &rule.base, &rule.ceiling])
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn login_succeeded(&self, key: &[u8]) -> Result<(), String> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM login_backoff WHERE key = $1", &[&key])
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn clear_operating(&self) -> Result<(), String> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM operating_buckets", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
