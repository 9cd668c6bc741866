//! The NATS server settings of deploy/ (compose's file and the Kubernetes ConfigMap) started as
//! a real three-node cluster on loopback ports: the roles log in as the permissions say, the
//! service's streams come up with three replicas, a command is acknowledged and held by all
//! three, and every node fsyncs each write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use learning_progress::messaging::{self, NatsConfig};
use learning_progress::model::{Action, ProgressCommand};
use uuid::Uuid;

use super::common::eventually;
use super::{documents, read, str_at};

const WAIT: Duration = Duration::from_secs(60);
const ROLES: [&str; 5] = ["api", "applier", "worker", "xapi", "operator"];

struct Node {
    _process: tokio::process::Child,
    client: u16,
    monitor: u16,
}

struct Cluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `config` with a deployment's addresses and paths swapped for loopback ports and `dir`;
/// panics if the file no longer has the lines a deployment needs (so the rewrite cannot
/// silently leave a node on a port or path of the real deployment).
fn rewrite(
    config: &str,
    client: u16,
    monitor: u16,
    route: u16,
    routes: &[u16],
    dir: &Path,
) -> String {
    let mut seen = BTreeMap::<&str, usize>::new();
    let mut in_cluster = false;
    let mut lines = Vec::new();
    for line in config.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let trimmed = line.trim();
        let key = trimmed.split([':', ' ']).next().unwrap_or_default();
        let replaced = match key {
            "cluster" => {
                in_cluster = true;
                None
            }
            "listen" if in_cluster => Some(format!("listen: 127.0.0.1:{route}")),
            "listen" => Some(format!("listen: 127.0.0.1:{client}")),
            "http" => Some(format!("http: 127.0.0.1:{monitor}")),
            "store_dir" => Some(format!("store_dir: {:?}", dir.join("store"))),
            "pid_file" => Some(format!("pid_file: {:?}", dir.join("nats.pid"))),
            "nats-route" => {
                let index = seen.get("nats-route").copied().unwrap_or(0);
                Some(format!("nats-route://127.0.0.1:{}", routes[index]))
            }
            _ => None,
        };
        match replaced {
            Some(new) => {
                *seen
                    .entry(if in_cluster && key == "listen" {
                        "route listen"
                    } else {
                        key
                    })
                    .or_default() += 1;
                lines.push(format!("{indent}{new}"));
            }
            None => lines.push(line.to_owned()),
        }
    }
    for (key, count) in [
        ("listen", 1),
        ("route listen", 1),
        ("http", 1),
        ("store_dir", 1),
        ("nats-route", 3),
    ] {
        assert_eq!(
            seen.get(key).copied().unwrap_or(0),
            count,
            "`{key}` lines in {config}"
        );
    }
    lines.join("\n")
}

impl Cluster {
    /// Three nodes of `config` (with `permissions` beside it), each named through `name_variable`.
    async fn start(config: &str, permissions: &str, name_variable: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("lp-deploy-nats-{}", Uuid::new_v4().simple()));
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned());
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let node_dir = dir.join(format!("nats-{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let (client, monitor) = (free_port(), free_port());
            let file = node_dir.join("nats.conf");
            std::fs::write(
                &file,
                rewrite(config, client, monitor, *route, &routes, &node_dir),
            )
            .unwrap();
            std::fs::write(node_dir.join("permissions.conf"), permissions).unwrap();
            let log = std::fs::File::create(node_dir.join("nats.log")).unwrap();
            let process = tokio::process::Command::new(&bin)
                .arg("-c")
                .arg(&file)
                .env(name_variable, format!("nats-{i}"))
                .envs(ROLES.map(|role| (password_variable(role), password(role))))
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {bin} (set NATS_SERVER_BIN): {e}"));
            nodes.push(Node {
                _process: process,
                client,
                monitor,
            });
        }
        let cluster = Cluster { nodes, dir };
        // each node's health: its JetStream in contact with the cluster's meta leader
        for node in &cluster.nodes {
            let url = format!("http://127.0.0.1:{}/healthz", node.monitor);
            eventually(WAIT, "every node of the cluster healthy", || async {
                let response = reqwest::get(&url).await.ok()?;
                response.status().is_success().then_some(())
            })
            .await;
        }
        cluster
    }

    /// How `role` connects: its user on the first node, every node to fail over to, the
    /// default stream names and subjects (the ones permissions.conf grants).
    fn role(&self, role: &str, replicas: usize) -> NatsConfig {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| match i {
                0 => format!("nats://{role}:{}@127.0.0.1:{}", password(role), node.client),
                _ => format!("nats://127.0.0.1:{}", node.client),
            })
            .collect();
        NatsConfig {
            subject_prefix: "progress".to_owned(),
            commands_stream: "PROGRESS_COMMANDS".to_owned(),
            events_stream: "PROGRESS_EVENTS".to_owned(),
            dlq_stream: "PROGRESS_DLQ".to_owned(),
            replicas,
            ..NatsConfig::isolated(urls.join(","), "deploy")
        }
    }
}

fn password_variable(role: &str) -> String {
    format!("NATS_{}_PASSWORD", role.to_uppercase())
}

fn password(role: &str) -> String {
    format!("{role}-test-password")
}

async fn streams_are_replicated_three_times(
    config: &str,
    permissions: &str,
    name_variable: &str,
    replicas: usize,
) {
    assert_eq!(replicas, 3, "the deployment's NATS_REPLICAS");
    let cluster = Cluster::start(config, permissions, name_variable).await;

    // the applier creates the streams at start-up, as the service does
    let applier = cluster.role("applier", replicas);
    let js = jetstream::new(messaging::connect(&applier, "applier").await.unwrap());
    messaging::ensure_streams(&js, &applier)
        .await
        .expect("the applier's role creates the streams on the cluster");
    for name in [
        &applier.commands_stream,
        &applier.events_stream,
        &applier.dlq_stream,
    ] {
        let info = js
            .get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{name}");
        assert_eq!(info.config.storage, jetstream::stream::StorageType::File);
    }

    // the worker publishes a command: acknowledged, then held by every replica
    let worker = cluster.role("worker", replicas);
    let wjs = jetstream::new(messaging::connect(&worker, "worker").await.unwrap());
    let command = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        track_id: Uuid::new_v4(),
        seq: 1,
        occurred_at: Utc::now(),
        action: Action::TrackStarted {
            current_unit_id: None,
        },
    };
    let ack = messaging::publish_command(&wjs, &worker, &command)
        .await
        .unwrap()
        .await
        .expect("JetStream acknowledges the command");
    assert_eq!(ack.stream, worker.commands_stream);
    eventually(
        WAIT,
        "three current replicas holding the command",
        || async {
            let mut stream = js.get_stream(&applier.commands_stream).await.ok()?;
            let info = stream.info().await.ok()?;
            let cluster = info.cluster.as_ref()?;
            let followers_current = cluster.replicas.len() == 2
                && cluster.replicas.iter().all(|r| r.current && !r.offline);
            (cluster.leader.is_some() && followers_current && info.state.messages == 1)
                .then_some(())
        },
    )
    .await;

    // the durability setting is in force on every node
    for node in &cluster.nodes {
        let varz: serde_json::Value =
            reqwest::get(format!("http://127.0.0.1:{}/varz", node.monitor))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let config = &varz["jetstream"]["config"];
        assert_eq!(config["sync_always"], true, "fsync per write: {config}");
    }
}

#[tokio::test]
async fn the_compose_nats_config_runs_a_cluster_with_three_replicas_of_every_stream() {
    let compose = documents("compose.yaml").remove(0);
    let replicas = str_at(
        &compose,
        &["services", "consumer", "environment", "NATS_REPLICAS"],
    )
    .unwrap()
    .parse()
    .unwrap();
    let config = read("nats/cluster.conf");
    assert!(config.contains("server_name: $SERVER_NAME"));
    streams_are_replicated_three_times(
        &config,
        &read("nats/permissions.conf"),
        "SERVER_NAME",
        replicas,
    )
    .await;
}

#[tokio::test]
async fn the_kubernetes_nats_config_runs_a_cluster_with_three_replicas_of_every_stream() {
    let objects = super::kubernetes_objects();
    let config_map = |name: &str| {
        objects
            .iter()
            .map(|(_, o)| o)
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no ConfigMap {name}"))
            .clone()
    };
    let nats = config_map("nats-config");
    let replicas = str_at(&config_map("learning-progress"), &["data", "NATS_REPLICAS"])
        .unwrap()
        .parse()
        .unwrap();
    let permissions = str_at(&nats, &["data", "permissions.conf"]).unwrap();
    assert_eq!(
        permissions,
        read("nats/permissions.conf"),
        "the ConfigMap's copy drifted"
    );
    let config = str_at(&nats, &["data", "nats.conf"]).unwrap();
    assert!(config.contains("server_name: $POD_NAME"));
    streams_are_replicated_three_times(config, permissions, "POD_NAME", replicas).await;
}
