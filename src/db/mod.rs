//! PostgreSQL: the connection pool, the migrations, the track catalogue and the progress CRUD.

pub mod progress;
pub mod tracks;
pub mod views;

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
    let pool = pool(config)?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    tracing::info!(database = %config.redacted_url(), "migrations applied");
    Ok(())
}
