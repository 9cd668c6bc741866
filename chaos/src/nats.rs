//! A three-node JetStream cluster on loopback: routes between every pair, JetStream on every
//! node, each node a process the harness can kill, restart and pause.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;

use crate::procs::{Proc, free_port, wait_for};

/// How often a node flushes JetStream writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
pub enum Fsync {
    /// nats-server's default: every two minutes; an acknowledged write may sit only in the
    /// page cache of each replica until then.
    Default,
    /// `sync_interval: always`: every write is fsynced before it is acknowledged.
    Always,
}

impl std::fmt::Display for Fsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fsync::Default => "default",
            Fsync::Always => "always",
        })
    }
}

pub struct Node {
    pub name: String,
    pub client_port: u16,
    pub proc: Proc,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub fsync: Fsync,
}

impl Cluster {
    pub async fn start(
        binary: &Path,
        root: &Path,
        logs: &Path,
        fsync: Fsync,
    ) -> anyhow::Result<Cluster> {
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for i in 0..3 {
            let name = format!("n{}", i + 1);
            let store = root.join(format!("nats-{name}"));
            std::fs::create_dir_all(&store)?;
            let sync = match fsync {
                Fsync::Default => String::new(),
                Fsync::Always => "  sync_interval: always\n".to_owned(),
            };
            let config = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\n\
                 jetstream {{\n  store_dir: {store:?}\n{sync}}}\n\
                 cluster {{\n  name: chaos\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
                client = client_ports[i],
                route = route_ports[i],
            );
            let file = root.join(format!("nats-{name}.conf"));
            std::fs::write(&file, config)?;
            let args = vec!["-c".to_owned(), path_string(&file)?];
            let proc = Proc::start(format!("nats-{name}"), binary, &args, &[], logs)?;
            nodes.push(Node {
                name,
                client_port: client_ports[i],
                proc,
            });
        }
        let cluster = Cluster { nodes, fsync };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Every node's URL, comma separated, as `NATS_URL` takes them.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node_url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[index].client_port)
    }

    /// Waits until JetStream answers through the cluster (a meta leader is elected).
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let url = self.url();
        wait_for(
            "the NATS cluster's JetStream to answer",
            Duration::from_secs(60),
            || {
                let url = url.clone();
                async move {
                    let servers: Vec<&str> = url.split(',').collect();
                    let client = async_nats::connect(servers).await.ok()?;
                    let js = jetstream::new(client);
                    js.query_account().await.ok().map(|_| ())
                }
            },
        )
        .await
    }

    /// The index of the node leading `stream`'s RAFT group.
    pub async fn leader_of(&self, js: &jetstream::Context, stream: &str) -> anyhow::Result<usize> {
        let name = wait_for(
            &format!("a leader for stream {stream}"),
            Duration::from_secs(60),
            || async {
                let mut handle = js.get_stream(stream).await.ok()?;
                let info = handle.info().await.ok()?;
                info.cluster.as_ref()?.leader.clone()
            },
        )
        .await?;
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .with_context(|| format!("leader {name} is not one of ours"))
    }
}

fn path_string(p: &PathBuf) -> anyhow::Result<String> {
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{p:?} is not UTF-8"))
}
