//! The faults, each injected on the real processes, and the time window it covered.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::TryStreamExt;
use learning_progress::messaging::NatsConfig;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::load::Live;
use crate::nats::Cluster;
use crate::postgres::{Postgres, Shutdown};
use crate::procs::wait_for;
use crate::service::Service;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// SIGKILL of an applier instance, restarted at once (as a supervisor would). Aimed: the
    /// kill lands the moment the ledger grows — right after a commit, before its acks.
    KillApplier { aimed: bool },
    /// SIGKILL of a Temporal worker mid-workflow, restarted a second later.
    KillWorker,
    /// SIGKILL of the node leading the commands stream, restarted 5 s later.
    KillNatsLeader,
    /// SIGKILL of a node following the commands stream's leader, restarted 5 s later.
    KillNatsFollower,
    /// SIGSTOP of the commands stream's leader for 10 s (longer than the election timeout),
    /// then SIGCONT: the cheapest partition.
    PauseNatsLeader,
    /// PostgreSQL stopped (fast: a checkpoint; immediate: crash recovery at the next start)
    /// and started again 2 s later.
    RestartPostgres(Shutdown),
    /// `pg_terminate_backend` of every service connection.
    TerminateBackends,
    /// Both appliers paused, the stored, acknowledged commands of up to three learners
    /// deleted from the commands stream, appliers resumed: the broker lost them.
    BrokerLoss,
    /// SIGKILL of the node API replica 1 is connected to, restarted 5 s later: the replica
    /// loses its event feed while serving.
    DropApiNats,
}

impl Fault {
    pub fn label(&self) -> &'static str {
        match self {
            Fault::KillApplier { aimed: true } => "kill -9 applier after commit",
            Fault::KillApplier { aimed: false } => "kill -9 applier",
            Fault::KillWorker => "kill -9 worker",
            Fault::KillNatsLeader => "kill -9 stream leader",
            Fault::KillNatsFollower => "kill -9 follower",
            Fault::PauseNatsLeader => "SIGSTOP leader 10 s",
            Fault::RestartPostgres(Shutdown::Fast) => "pg restart (fast)",
            Fault::RestartPostgres(Shutdown::Immediate) => "pg restart (immediate)",
            Fault::TerminateBackends => "pg_terminate_backend",
            Fault::BrokerLoss => "broker loses commands",
            Fault::DropApiNats => "API replica loses NATS",
        }
    }

    /// Every fault, for the mixed scenario.
    pub const ALL: [Fault; 11] = [
        Fault::KillApplier { aimed: true },
        Fault::KillApplier { aimed: false },
        Fault::KillWorker,
        Fault::KillNatsLeader,
        Fault::KillNatsFollower,
        Fault::PauseNatsLeader,
        Fault::RestartPostgres(Shutdown::Fast),
        Fault::RestartPostgres(Shutdown::Immediate),
        Fault::TerminateBackends,
        Fault::BrokerLoss,
        Fault::DropApiNats,
    ];
}

/// When a fault was in force, in seconds from the scenario's start.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Window {
    pub label: String,
    pub start: f64,
    pub end: f64,
    /// What it did, e.g. which node, how many messages deleted.
    pub detail: String,
}

/// Everything a fault acts on.
pub struct World<'a> {
    pub cluster: &'a mut Cluster,
    pub postgres: &'a Postgres,
    pub service: &'a mut Service,
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub nats: NatsConfig,
    pub live: Live,
    pub started: Instant,
    pub kills: usize,
    /// Service processes that exited without being killed, restarted as a supervisor would.
    pub self_exits: Vec<String>,
    /// Acknowledged commands deleted from the commands stream on purpose.
    pub purged: u64,
}

impl World<'_> {
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub async fn inject(&mut self, fault: Fault) -> anyhow::Result<Window> {
        let start = self.now();
        let detail = match fault {
            Fault::KillApplier { aimed } => self.kill_applier(aimed).await?,
            Fault::KillWorker => {
                let i = self.next_victim();
                self.service.workers[i].kill9().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.service.workers[i].restart()?;
                format!("worker-{}", i + 1)
            }
            Fault::KillNatsLeader | Fault::KillNatsFollower | Fault::DropApiNats => {
                let leader = self
                    .cluster
                    .leader_of(&self.js, &self.nats.commands_stream)
                    .await?;
                let node = match fault {
                    Fault::KillNatsLeader => leader,
                    Fault::KillNatsFollower => (leader + 1 + self.next_victim()) % 3,
                    _ => 0,
                };
                self.cluster.nodes[node].proc.kill9().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                self.cluster.nodes[node].proc.restart()?;
                self.wait_replicas_current().await?;
                format!(
                    "{} (leader was {})",
                    self.cluster.nodes[node].name, self.cluster.nodes[leader].name
                )
            }
            Fault::PauseNatsLeader => {
                let leader = self
                    .cluster
                    .leader_of(&self.js, &self.nats.commands_stream)
                    .await?;
                self.cluster.nodes[leader].proc.pause()?;
                tokio::time::sleep(Duration::from_secs(10)).await;
                self.cluster.nodes[leader].proc.resume()?;
                self.wait_replicas_current().await?;
                self.cluster.nodes[leader].name.clone()
            }
            Fault::RestartPostgres(how) => {
                self.postgres.stop(how).await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.postgres.start_again().await?;
                format!("{how:?}")
            }
            Fault::TerminateBackends => {
                let killed: Vec<bool> = sqlx::query_scalar(
                    "select pg_terminate_backend(pid) from pg_stat_activity
                     where datname = current_database() and pid <> pg_backend_pid()
                       and application_name <> 'chaos'",
                )
                .fetch_all(&self.pool)
                .await?;
                format!("{} connections", killed.len())
            }
            Fault::BrokerLoss => self.broker_loss().await?,
        };
        self.restart_self_exits().await?;
        Ok(Window {
            label: fault.label().to_owned(),
            start,
            end: self.now().max(start + 0.3),
            detail,
        })
    }

    fn next_victim(&mut self) -> usize {
        self.kills += 1;
        self.kills % 2
    }

    async fn kill_applier(&mut self, aimed: bool) -> anyhow::Result<String> {
        let i = self.next_victim();
        let mut aim = "";
        if aimed {
            // poll the ledger; kill the moment it grows, i.e. right after some commit
            let count = || async {
                sqlx::query_scalar::<_, i64>("select count(*) from progress_ledger")
                    .fetch_one(&self.pool)
                    .await
                    .ok()
            };
            let before = count().await;
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if count().await != before {
                    aim = " right after a commit";
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        self.service.appliers[i].kill9().await;
        self.service.appliers[i].restart()?;
        Ok(format!("applier-{}{aim}", i + 1))
    }

    async fn broker_loss(&mut self) -> anyhow::Result<String> {
        for applier in &self.service.appliers {
            applier.pause()?;
        }
        let result = self.purge_some().await;
        for applier in &self.service.appliers {
            applier.resume()?;
        }
        let (learners, messages) = result?;
        self.purged += messages;
        Ok(format!(
            "{messages} commands of {learners} learners deleted"
        ))
    }

    /// Deletes what the commands stream holds for up to three real learners.
    async fn purge_some(&self) -> anyhow::Result<(usize, u64)> {
        let stream = self.js.get_stream(&self.nats.commands_stream).await?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut learners = 0;
        let mut messages = 0;
        while learners == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let live = self.live.sample(64);
            let subjects: Vec<(String, usize)> = stream
                .info_with_subjects(format!("{}.cmd.>", self.nats.subject_prefix))
                .await?
                .try_collect()
                .await?;
            for (subject, _) in subjects {
                let user = subject
                    .split('.')
                    .rev()
                    .nth(1)
                    .and_then(|u| Uuid::parse_str(u).ok());
                if !user.is_some_and(|u| live.contains(&u)) || learners == 3 {
                    continue;
                }
                let purged = stream.purge().filter(subject).await?;
                messages += purged.purged;
                learners += 1;
            }
        }
        Ok((learners, messages))
    }

    /// Waits until every replica of the commands stream is current again, so the next fault
    /// does not land on a cluster still missing a node.
    async fn wait_replicas_current(&self) -> anyhow::Result<()> {
        let name = self.nats.commands_stream.clone();
        wait_for(
            "the commands stream's replicas to be current",
            Duration::from_secs(60),
            || async {
                let mut stream = self.js.get_stream(&name).await.ok()?;
                let info = stream.info().await.ok()?;
                let cluster = info.cluster.as_ref()?;
                cluster.leader.as_ref()?;
                let current = cluster.replicas.iter().all(|p| p.current && !p.offline);
                (current && cluster.replicas.len() == 2).then_some(())
            },
        )
        .await
    }

    /// A process that died by itself is restarted, as systemd or Kubernetes would, and
    /// reported.
    async fn restart_self_exits(&mut self) -> anyhow::Result<()> {
        let procs = self
            .service
            .appliers
            .iter_mut()
            .chain(self.service.workers.iter_mut())
            .chain(self.service.apis.iter_mut());
        for proc in procs {
            if let Err(e) = proc.check_alive() {
                tracing::warn!(error = %e, "restarting a service process that exited");
                self.self_exits.push(proc.name.clone());
                proc.kill9().await;
                proc.restart()?;
            }
        }
        Ok(())
    }
}
