//! `all`: the worker, the applier and the API in one process, for a laptop. One shutdown token
//! stops all three; if one fails, the others are stopped too instead of limping on.

use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiConfig};
use crate::applier::{self, ApplierConfig};
use crate::auth::AuthConfig;
use crate::config::DbConfig;
use crate::messaging::NatsConfig;
use crate::workflow::{self, TemporalConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct AllConfig {
    #[command(flatten)]
    pub db: DbConfig,
    #[command(flatten)]
    pub nats: NatsConfig,
    #[command(flatten)]
    pub temporal: TemporalConfig,
    #[command(flatten)]
    pub applier: ApplierConfig,
    #[command(flatten)]
    pub api: ApiConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
}

pub async fn run(config: AllConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    crate::db::migrate(&config.db).await?;
    // the worker is not `Send`, so the three run as futures of this task, not spawned tasks
    let stop_all = |result: anyhow::Result<()>| {
        shutdown.cancel();
        result
    };
    let (worker, applier, api) = tokio::join!(
        async {
            let result = workflow::serve(
                &config.db,
                config.nats.clone(),
                &config.temporal,
                shutdown.clone(),
            )
            .await;
            stop_all(result.map_err(anyhow::Error::from))
        },
        async {
            stop_all(
                applier::start(&config.db, &config.nats, &config.applier, shutdown.clone()).await,
            )
        },
        async {
            stop_all(
                api::run(
                    &config.db,
                    &config.nats,
                    // one process: the API reports the backlog of this applier's durable
                    ApiConfig {
                        applier_durable: config.applier.durable.clone(),
                        ..config.api.clone()
                    },
                    &config.auth,
                    shutdown.clone(),
                )
                .await,
            )
        },
    );
    worker.and(applier).and(api)
}
