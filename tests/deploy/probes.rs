//! The real API, started with its Deployment's settings (the ConfigMap, the literal values and
//! the Secret's placeholders; the database and NATS of the test), answers the probe paths the
//! Deployment names and stops within its grace period on SIGTERM.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use sqlx::PgPool;

use super::common::{self, eventually};
use super::{BINARY, at, kubernetes_objects, str_at};

const WAIT: Duration = Duration::from_secs(30);

/// The API container's environment as Kubernetes would give it, less what the test replaces.
fn deployment_environment() -> (BTreeMap<String, String>, yaml_serde::Value) {
    let objects: Vec<_> = kubernetes_objects().into_iter().map(|(_, o)| o).collect();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let pod = at(
        find("Deployment", "learning-progress-api"),
        &["spec", "template", "spec"],
    )
    .unwrap()
    .clone();
    let container = &pod["containers"][0];
    let mut env = BTreeMap::new();
    for from in container["envFrom"].as_sequence().into_iter().flatten() {
        let map = find(
            "ConfigMap",
            str_at(from, &["configMapRef", "name"]).unwrap(),
        );
        for (key, value) in map["data"].as_mapping().unwrap() {
            env.insert(
                key.as_str().unwrap().to_owned(),
                value.as_str().unwrap().to_owned(),
            );
        }
    }
    for entry in container["env"].as_sequence().unwrap() {
        let name = entry["name"].as_str().unwrap().to_owned();
        let value = match at(entry, &["valueFrom", "secretKeyRef"]) {
            Some(secret) => {
                let object = find("Secret", secret["name"].as_str().unwrap());
                object["stringData"][secret["key"].as_str().unwrap()]
                    .as_str()
                    .unwrap()
            }
            None => entry["value"].as_str().unwrap(),
        };
        env.insert(name, value.to_owned());
    }
    (env, pod)
}

#[sqlx::test]
async fn the_api_with_its_deployments_settings_answers_its_probes_and_stops_in_its_grace_period(
    pool: PgPool,
) {
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let (nats, js) = common::isolated_nats().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let (mut env, pod) = deployment_environment();
    for (name, value) in [
        (
            "DATABASE_URL",
            format!("{}/{database}", &base[..base.rfind('/').unwrap()]),
        ),
        ("NATS_URL", nats.url.clone()),
        ("NATS_SUBJECT_PREFIX", nats.subject_prefix.clone()),
        ("NATS_COMMANDS_STREAM", nats.commands_stream.clone()),
        ("NATS_EVENTS_STREAM", nats.events_stream.clone()),
        ("NATS_DLQ_STREAM", nats.dlq_stream.clone()),
        ("API_ADDR", format!("127.0.0.1:{port}")),
    ] {
        env.insert(name.to_owned(), value);
    }
    let mut api = tokio::process::Command::new(BINARY)
        .arg(pod["containers"][0]["args"][0].as_str().unwrap())
        .env_clear()
        .envs(&env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let http = reqwest::Client::new();
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = str_at(&pod["containers"][0], &[probe, "httpGet", "path"]).unwrap();
        let url = format!("http://127.0.0.1:{port}{path}");
        eventually(WAIT, &format!("200 on {path}"), || async {
            let response = http.get(&url).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    let pid = api.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(grace), api.wait())
        .await
        .expect("the API stops within its grace period")
        .unwrap();
    assert!(status.success(), "the API exited with {status} on SIGTERM");
    common::delete_streams(&js, &nats).await;
}
