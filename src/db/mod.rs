//! PostgreSQL: the connection pool, the migrations, the track catalogue and the progress CRUD.

pub mod progress;
pub mod tracks;
pub(crate) mod views;

use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::config::DbConfig;

/// The migrations under `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Opens a bounded pool. Connections are made lazily, so a database that is down at start-up
/// delays the first query instead of failing the process.
pub fn pool(config: &DbConfig) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.database_url.parse()?;
    Ok(PgPoolOptions::new()
        // bounded: PostgreSQL (and Supabase's pooler) caps connections per project
        .max_connections(config.max_connections)
        // fail a query fast instead of queueing forever when the database is unreachable
        .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
        .connect_lazy_with(options.application_name("learning-progress")))
}

/// [`pool`], after making sure `DATABASE_URL` does not go through a transaction pooler (see
/// [`refuse_transaction_pooler`]): what every command that uses the database opens.
pub async fn connect(config: &DbConfig) -> anyhow::Result<PgPool> {
    let pool = pool(config)?;
    refuse_transaction_pooler(config, &pool).await?;
    Ok(pool)
}

/// Why a transaction pooler cannot carry this service, and what to use instead.
const TRANSACTION_POOLER: &str = "DATABASE_URL goes through a transaction pooler (PgBouncer or \
    Supavisor in transaction mode, such as Supabase's port 6543), which hands each transaction \
    to any server connection: this service's prepared statements and session locks need one \
    server connection per client connection. Use Supabase's session pooler (the same host, port \
    5432) or the direct connection (db.<project-ref>.supabase.co:5432, IPv6)";

/// Fails when `DATABASE_URL` goes through a transaction pooler: Supabase's by its address, any
/// other by watching whether a connection's server process changes between two statements
/// while another connection holds a transaction (a transaction pooler hands the most recently
/// freed server to the next transaction). A database that does not answer within a few seconds
/// is not checked: the service starts, and queries retry as they would anyway.
pub(crate) async fn refuse_transaction_pooler(
    config: &DbConfig,
    pool: &PgPool,
) -> anyhow::Result<()> {
    if is_supabase_transaction_pooler(&config.database_url) {
        anyhow::bail!(TRANSACTION_POOLER);
    }
    match tokio::time::timeout(Duration::from_secs(5), server_switches(pool)).await {
        Ok(Ok(false)) => Ok(()),
        Ok(Ok(true)) => anyhow::bail!(TRANSACTION_POOLER),
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not check for a transaction pooler; going on");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                "the database did not answer in 5 s; not checked for a transaction pooler"
            );
            Ok(())
        }
    }
}

/// `host` ending in `pooler.supabase.com`, port 6543.
fn is_supabase_transaction_pooler(url: &str) -> bool {
    url.parse::<PgConnectOptions>().is_ok_and(|options| {
        options.get_host().ends_with("pooler.supabase.com") && options.get_port() == 6543
    })
}

/// Whether one connection's statements run on different server processes. Uses the simple
/// query protocol, which every pooler carries, so the check itself never trips on prepared
/// statements.
async fn server_switches(pool: &PgPool) -> Result<bool, sqlx::Error> {
    use sqlx::Row as _;
    async fn backend(connection: &mut sqlx::PgConnection) -> Result<i32, sqlx::Error> {
        let rows = sqlx::raw_sql("select pg_backend_pid()")
            .fetch_all(&mut *connection)
            .await?;
        rows.first()
            .map(|row| row.try_get::<i32, _>(0))
            .transpose()?
            .ok_or(sqlx::Error::RowNotFound)
    }
    let mut watched = pool.acquire().await?;
    let mut other = pool.acquire().await?;
    for _ in 0..3 {
        let before = backend(&mut watched).await?;
        sqlx::raw_sql("begin").execute(&mut *other).await?;
        let held = backend(&mut other).await;
        let after = backend(&mut watched).await;
        sqlx::raw_sql("rollback").execute(&mut *other).await?;
        held?;
        if after? != before {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Creates the database if it does not exist yet, then applies every pending migration.
pub async fn migrate(config: &DbConfig) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if !Postgres::database_exists(&config.database_url)
        .await
        .context("checking whether the database exists")?
    {
        Postgres::create_database(&config.database_url)
            .await
            .context("creating the database")?;
        tracing::info!(database = %config.redacted_url(), "created database");
    }
    let pool = connect(config).await?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    tracing::info!(database = %config.redacted_url(), "migrations applied");
    Ok(())
}
