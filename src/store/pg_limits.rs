//! The cluster's rate and operating-time buckets in PostgreSQL (issue 14): the
//! `limits::SharedBuckets` of every instance on one database.
//!
//! Both tables are UNLOGGED: a limiter's state is not worth a WAL write per request, and like
//! the in-memory limiters (and Bitrix24's) it may be forgotten when the database crashes. They
//! are created here, at start, rather than by the schema migrations, because they hold no data
//! anyone would migrate, back up or replicate (unlogged tables are not replicated either).
//!
//! A rate step is one `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING`: the row lock
//! serialises concurrent steps on one key across instances, so a burst of 50 is 50 for the
//! cluster, exactly.

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::limits::operating::Bucket;
use crate::limits::SharedBuckets;

const SCHEMA: &str = "
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
";

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
        client
            .batch_execute(SCHEMA)
            .await
            .map_err(|e| e.to_string())?;
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
        Ok(rate + operating)
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
