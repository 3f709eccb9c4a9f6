//! Postgres projections of the event log.
//!
//! [`Store`] connects and migrates; each caller then holds only its role:
//! - [`ProjectionWriter`], the projector's: folds records with the same
//!   `agentflow_core::apply` as the engine and writes the result, together
//!   with the offsets it consumed, in one transaction
//!   ([`ProjectionWriter::project`]), keeping aside what Postgres refuses;
//! - [`ProjectionReader`], the API's: queries the rows
//!   ([`ProjectionReader::get_workflow`], [`ProjectionReader::list_workflows`]);
//! - [`CheckpointReader`], the engine's: where a partition's replay starts;
//! - [`Admin`], the operator tools': whether a projection exists, emptying it.

mod projection;
mod quarantine;
mod queries;
mod rows;
mod snapshot;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub use projection::{BatchOutcome, Positioned, ProjectionCache};
pub use quarantine::{QuarantinedRecord, WriteRetry};
pub use queries::{ChangedSummary, Cursor, ListFilter, Projected, WorkflowHead, WorkflowSummary};
pub use snapshot::PartitionSnapshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    fn classify(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                StoreError::Unavailable(e)
            }
            // Connection exceptions (class 08) and the server shutting down
            // or starting up (57P01-57P03): what a pooled connection reports
            // when Postgres went away since its last query.
            sqlx::Error::Database(ref d)
                if d.code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) =>
            {
                StoreError::Unavailable(e)
            }
            e => StoreError::Database(e),
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// An error that passes by itself when tried again (SQLSTATE class 40,
    /// a serialization failure or deadlock; 53, too few resources; 55P03,
    /// a lock not available).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(d))
            if d.code().is_some_and(|c| c.starts_with("40") || c.starts_with("53") || c == "55P03"))
    }

    /// Postgres refused the data itself (SQLSTATE class 22, data exception,
    /// e.g. U+0000 in text; or 23, integrity constraint violation): writing
    /// the same again fails the same way.
    pub fn is_data_error(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(d))
            if d.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")))
    }
}

/// SHA-256 of `bytes`, lower-case hex: the key of `outputs` (and of the
/// log's payload topic, for the same JSON text).
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The reference an audit-trail record carries for an output kept in the
/// `outputs` table rather than in the record: its hash and length, and no
/// place in the log (`partition` -1, no chunks). Only the store writes and
/// resolves these; the log's own references are resolved before a record
/// reaches the projector.
pub(crate) fn in_outputs(sha256: &str, bytes: u64) -> agentflow_core::OutputRef {
    agentflow_core::OutputRef {
        sha256: sha256.to_owned(),
        bytes,
        chunks: 0,
        partition: -1,
        offset: -1,
    }
}

/// A pooled connection idle this long is pinged before it is handed out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(5);

/// The projections' database: connects, migrates, and hands each caller
/// its role. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

/// Declares a role: a handle on the pool that offers one caller's methods.
macro_rules! role {
    ($(#[$doc:meta])* $name:ident, $get:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            pool: PgPool,
        }

        impl $name {
            fn pool(&self) -> &PgPool {
                &self.pool
            }
        }

        impl Store {
            pub fn $get(&self) -> $name {
                $name {
                    pool: self.pool.clone(),
                }
            }
        }
    };
}

role!(
    /// The projector's writes: offsets claimed, batches projected, records
    /// quarantined.
    ProjectionWriter,
    writer
);
role!(
    /// The read side: workflows, their audit trail, what was quarantined,
    /// how far the projector has come.
    ProjectionReader,
    reader
);
role!(
    /// The engine's checkpoint: where each partition's replay starts.
    CheckpointReader,
    checkpoints
);
role!(
    /// The operator tools': whether a projection exists, and emptying it
    /// for a replay.
    Admin,
    admin
);

impl Store {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let opts: PgConnectOptions = url.parse().map_err(StoreError::Database)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // sqlx pings every connection it hands out by default: a round
            // trip per query, most of Postgres's traffic here. A connection
            // used in the last seconds is known to be alive (and a dead one
            // fails its query, which the callers retry or report as 503).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > IDLE_BEFORE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(opts)
            .await
            .map_err(StoreError::classify)?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations in `migrations/` (embedded at build time).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../../migrations").run(&self.pool).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        ping(&self.pool).await
    }
}

async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map_err(StoreError::classify)?;
    Ok(())
}
