//! The compose file, the Kubernetes manifests and the Dockerfile, read as data.

use std::collections::{BTreeMap, BTreeSet};

use yaml_serde::Value;

use super::{Role, at, deploy_dir, documents, kubernetes_objects, read, referenced, str_at};

const IMAGE: &str = "learning-progress";
const ROLES: [&str; 5] = ["api", "consumer", "migrate", "worker", "xapi-forward"];
/// The role that runs only where an LRS is configured: one process, behind a compose profile.
const OPTIONAL: &str = "xapi-forward";

/// A container of the service's image in a Kubernetes workload.
struct Container {
    workload: String,
    role: String,
    pod: Value,
    spec: Value,
}

fn service_containers() -> Vec<Container> {
    let mut containers = Vec::new();
    for (_, object) in kubernetes_objects() {
        let Some(pod) = at(&object, &["spec", "template", "spec"]) else {
            continue;
        };
        for spec in pod["containers"].as_sequence().unwrap() {
            if str_at(spec, &["image"]) != Some(IMAGE) {
                continue;
            }
            let role = spec["args"][0]
                .as_str()
                .expect("the role as first argument");
            containers.push(Container {
                workload: str_at(&object, &["metadata", "name"]).unwrap().to_owned(),
                role: role.to_owned(),
                pod: pod.clone(),
                spec: spec.clone(),
            });
        }
    }
    containers
}

/// The keys of each ConfigMap and Secret, by kind and name.
fn config_keys() -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut keys = BTreeMap::new();
    for (_, object) in kubernetes_objects() {
        let kind = str_at(&object, &["kind"]).unwrap();
        let data = match kind {
            "ConfigMap" => &object["data"],
            "Secret" => &object["stringData"],
            _ => continue,
        };
        let names = data
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        let name = str_at(&object, &["metadata", "name"]).unwrap().to_owned();
        keys.insert((kind.to_owned(), name), names);
    }
    keys
}

fn compose_services() -> Vec<(String, Value)> {
    let compose = documents("compose.yaml").remove(0);
    compose["services"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(name, service)| (name.as_str().unwrap().to_owned(), service.clone()))
        .collect()
}

fn seconds(duration: &str) -> u64 {
    duration
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{duration:?} is not a number of seconds"))
}

#[test]
fn every_yaml_file_under_deploy_parses_and_names_its_objects_without_a_namespace() {
    let files = super::yaml_files(&deploy_dir());
    assert!(files.len() >= 8, "{files:?}");
    for file in &files {
        let relative = file.strip_prefix(deploy_dir()).unwrap().to_str().unwrap();
        assert!(!documents(relative).is_empty(), "{relative} is empty");
    }
    let objects = kubernetes_objects();
    assert!(objects.len() >= 15, "{} objects", objects.len());
    for (file, object) in objects {
        for field in [&["apiVersion"][..], &["kind"], &["metadata", "name"]] {
            assert!(str_at(&object, field).is_some(), "{file}: no {field:?}");
        }
        assert!(
            at(&object, &["metadata", "namespace"]).is_none(),
            "{file}: the namespace is the caller's choice"
        );
    }
}

#[test]
fn every_variable_the_compose_file_sets_is_one_its_role_reads() {
    let mut roles = BTreeSet::new();
    for (name, service) in compose_services() {
        if !str_at(&service, &["image"]).is_some_and(|i| i.starts_with(IMAGE)) {
            continue;
        }
        let role = service["command"][0].as_str().unwrap();
        let reads = Role::of(role);
        for variable in service["environment"].as_mapping().unwrap().keys() {
            let variable = variable.as_str().unwrap();
            assert!(
                reads.reads(variable),
                "{name}: `{role}` does not read {variable}"
            );
        }
        if role != "migrate" {
            let (replicas, profile) = if role == OPTIONAL {
                (1, Some("xapi"))
            } else {
                (2, None)
            };
            assert_eq!(
                at(&service, &["deploy", "replicas"]).and_then(Value::as_u64),
                Some(replicas),
                "{name}"
            );
            assert_eq!(service["profiles"][0].as_str(), profile, "{name}");
            assert_eq!(
                str_at(&service, &["depends_on", "migrate", "condition"]),
                Some("service_completed_successfully"),
                "{name} starts before the migration completed"
            );
        }
        // every role that may be the first to create the streams
        if ["consumer", "worker", OPTIONAL].contains(&role) {
            assert_eq!(
                str_at(&service, &["environment", "NATS_REPLICAS"]),
                Some("3")
            );
        }
        roles.insert(role.to_owned());
    }
    assert_eq!(roles, ROLES.map(str::to_owned).into());
}

#[test]
fn every_variable_the_kubernetes_pods_set_is_one_their_role_reads() {
    let keys = config_keys();
    let mut roles = BTreeSet::new();
    for container in service_containers() {
        let (workload, role) = (&container.workload, container.role.as_str());
        let reads = Role::of(role);
        let env = container.spec["env"].as_sequence().unwrap();
        let values: Vec<String> = env
            .iter()
            .filter_map(|e| e["value"].as_str().map(str::to_owned))
            .collect();
        let inputs = referenced(&values);
        for entry in env {
            let name = entry["name"].as_str().unwrap();
            assert!(
                reads.reads(name) || inputs.contains(name),
                "{workload}: `{role}` does not read {name}"
            );
            if let Some(secret) = at(entry, &["valueFrom", "secretKeyRef"]) {
                let source = (
                    "Secret".to_owned(),
                    secret["name"].as_str().unwrap().to_owned(),
                );
                let key = secret["key"].as_str().unwrap();
                assert!(
                    keys[&source].contains(key),
                    "{workload}: no secret key {key}"
                );
            }
        }
        for from in container.spec["envFrom"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let name = str_at(from, &["configMapRef", "name"]).expect("a ConfigMap");
            let source = ("ConfigMap".to_owned(), name.to_owned());
            for key in keys
                .get(&source)
                .unwrap_or_else(|| panic!("no ConfigMap {name}"))
            {
                assert!(
                    reads.reads(key),
                    "{workload}: `{role}` does not read {key} ({name})"
                );
            }
        }
        roles.insert(role.to_owned());
    }
    assert_eq!(roles, ROLES.map(str::to_owned).into());
}

#[test]
fn only_the_api_is_probed_over_http_on_healthz_and_readyz() {
    for container in service_containers() {
        let probe = |kind: &str| str_at(&container.spec, &[kind, "httpGet", "path"]);
        if container.role == "api" {
            assert_eq!(probe("livenessProbe"), Some("/healthz"));
            assert_eq!(probe("readinessProbe"), Some("/readyz"));
        } else {
            // the other roles serve no HTTP: such a probe would restart them forever
            for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
                assert!(probe(kind).is_none(), "{}: {kind}", container.workload);
            }
        }
    }
}

#[test]
fn the_consumers_grace_period_outlasts_the_applier_ack_wait() {
    let default_wait: u64 = Role::of("consumer").variables["APPLIER_ACK_WAIT_SECS"]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    let consumer = service_containers()
        .into_iter()
        .find(|c| c.role == "consumer")
        .unwrap();
    let ack_wait = consumer.spec["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "APPLIER_ACK_WAIT_SECS")
        .map_or(default_wait, |e| {
            e["value"].as_str().unwrap().parse().unwrap()
        });
    let grace = consumer.pod["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace > ack_wait,
        "Kubernetes: grace {grace} s, ack wait {ack_wait} s"
    );

    let (_, service) = compose_services()
        .into_iter()
        .find(|(name, _)| name == "consumer")
        .unwrap();
    let ack_wait = str_at(&service, &["environment", "APPLIER_ACK_WAIT_SECS"])
        .map_or(default_wait, |w| w.parse().unwrap());
    let grace = seconds(str_at(&service, &["stop_grace_period"]).unwrap());
    assert!(
        grace > ack_wait,
        "compose: grace {grace} s, ack wait {ack_wait} s"
    );
}

/// On SIGTERM the forwarder finishes the batch in hand: one request to the LRS at most, then
/// its acks. The grace period outlasts its ack wait, which outlasts the LRS timeout, so that
/// batch is neither cut short nor delivered again while it is still being posted.
#[test]
fn the_forwarders_grace_period_outlasts_its_ack_wait_which_outlasts_the_lrs_timeout() {
    let help = Role::of(OPTIONAL);
    let default = |variable: &str| -> u64 {
        help.variables[variable]
            .as_deref()
            .unwrap_or_else(|| panic!("no default for {variable}"))
            .parse()
            .unwrap()
    };
    let check = |what: &str, grace: u64, setting: &dyn Fn(&str) -> Option<u64>| {
        let ack_wait = setting("XAPI_ACK_WAIT_SECS").unwrap_or(default("XAPI_ACK_WAIT_SECS"));
        let timeout = setting("XAPI_LRS_TIMEOUT_SECS").unwrap_or(default("XAPI_LRS_TIMEOUT_SECS"));
        assert!(
            grace > ack_wait && ack_wait > timeout,
            "{what}: grace {grace} s, ack wait {ack_wait} s, LRS timeout {timeout} s"
        );
    };

    let forwarder = service_containers()
        .into_iter()
        .find(|c| c.role == OPTIONAL)
        .unwrap();
    let keys = config_keys();
    let config_maps: Vec<Value> = kubernetes_objects()
        .into_iter()
        .map(|(_, o)| o)
        .filter(|o| o["kind"] == "ConfigMap")
        .collect();
    let setting = |name: &str| -> Option<u64> {
        let direct = forwarder.spec["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str());
        let from_config = forwarder.spec["envFrom"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|from| str_at(from, &["configMapRef", "name"]))
            .filter(|map| keys[&("ConfigMap".to_owned(), (*map).to_owned())].contains(name))
            .find_map(|map| {
                config_maps
                    .iter()
                    .find(|o| o["metadata"]["name"] == map)
                    .and_then(|o| o["data"][name].as_str())
            });
        direct.or(from_config).map(|v| v.parse().unwrap())
    };
    let grace = forwarder.pod["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    check("Kubernetes", grace, &setting);

    let (_, service) = compose_services()
        .into_iter()
        .find(|(_, s)| s["command"][0] == OPTIONAL)
        .unwrap();
    let grace = seconds(str_at(&service, &["stop_grace_period"]).unwrap());
    check("compose", grace, &|name: &str| {
        str_at(&service, &["environment", name]).map(|v| v.parse().unwrap())
    });
}

#[test]
fn every_long_running_workload_has_a_disruption_budget_and_the_api_a_service() {
    let objects: Vec<Value> = kubernetes_objects().into_iter().map(|(_, o)| o).collect();
    let of_kind = |kind: &'static str| objects.iter().filter(move |o| o["kind"] == kind);
    let selects = |selector: &Value, labels: &Value| {
        let selector = selector.as_mapping().unwrap();
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    for workload in of_kind("Deployment").chain(of_kind("StatefulSet")) {
        let labels = &workload["spec"]["template"]["metadata"]["labels"];
        let name = str_at(workload, &["metadata", "name"]).unwrap();
        assert!(
            of_kind("PodDisruptionBudget")
                .any(|b| selects(&b["spec"]["selector"]["matchLabels"], labels)),
            "no PodDisruptionBudget for {name}"
        );
        let replicas = workload["spec"]["replicas"].as_u64().unwrap();
        assert!(replicas >= 2, "{name}: {replicas} replica(s)");
    }
    let api = of_kind("Deployment")
        .find(|d| d["metadata"]["name"] == "learning-progress-api")
        .unwrap();
    let labels = &api["spec"]["template"]["metadata"]["labels"];
    let port = &api["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"];
    assert!(
        of_kind("Service").any(|s| selects(&s["spec"]["selector"], labels)
            && s["spec"]["ports"][0]["targetPort"] == *port),
        "no Service in front of the API"
    );
}

#[test]
fn the_image_runs_the_binary_as_a_non_root_user_and_kubernetes_enforces_it() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    assert!(stages.len() >= 3, "deps, build and runtime stages");
    let runtime = stages.last().unwrap();
    let instruction = |name: &str| {
        runtime
            .lines()
            .find_map(|l| l.strip_prefix(name).map(str::trim))
            .unwrap_or_else(|| panic!("no {name} in the runtime stage"))
    };
    let user = instruction("USER ");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric user");
    assert_ne!(uid, 0, "the runtime stage runs as root");
    assert!(instruction("ENTRYPOINT ").contains("/learning-progress\""));
    let cmd: Vec<String> = serde_json::from_str(instruction("CMD ")).unwrap();
    Role::of(&cmd[0]);
    assert!(
        !runtime.contains("COPY . "),
        "the runtime stage holds the binary alone"
    );

    for container in service_containers() {
        let security = &container.pod["securityContext"];
        assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
        assert_eq!(security["runAsUser"].as_u64(), Some(uid.into()));
    }
    let ignored = std::fs::read_to_string(deploy_dir().join("../.dockerignore")).unwrap();
    for path in ["target/", ".stack/", ".git/"] {
        assert!(
            ignored.lines().any(|l| l == path),
            ".dockerignore lacks {path}"
        );
    }
}

/// With an engine's tools at hand, their own offline checks too; without them, nothing.
#[test]
fn the_engines_own_tools_accept_the_files_where_installed() {
    let runs = |tool: &str, args: &[&str]| {
        std::process::Command::new(tool)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let check = |tool: &str, args: &[&str]| {
        let output = std::process::Command::new(tool)
            .args(args)
            .current_dir(deploy_dir())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    if runs("docker", &["compose", "version"]) {
        check(
            "docker",
            &["compose", "-f", "compose.yaml", "config", "--quiet"],
        );
    } else {
        eprintln!("docker is not installed: compose config not checked by it");
    }
    if runs("kubectl", &["version", "--client"]) {
        check("kubectl", &["kustomize", "k8s"]);
    } else {
        eprintln!("kubectl is not installed: kustomize build not checked by it");
    }
}

/// The dependency stage builds from the manifests alone: it must copy every workspace
/// member's, and those with `Cargo.lock` must resolve without changing it (`--locked`).
#[test]
fn the_dependency_stage_copies_every_workspace_manifest_and_resolves_with_the_lockfile() {
    let cargo = |dir: &std::path::Path, args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO"))
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cargo {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let root = deploy_dir().parent().unwrap().to_owned();
    let args = [
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
        "--offline",
    ];
    let metadata: serde_json::Value = serde_json::from_slice(&cargo(&root, &args)).unwrap();
    let dockerfile = read("Dockerfile");
    let stub = std::env::temp_dir().join(format!("lp-deps-{}", uuid::Uuid::new_v4().simple()));
    for package in metadata["packages"].as_array().unwrap() {
        let manifest = std::path::Path::new(package["manifest_path"].as_str().unwrap());
        let relative = manifest.strip_prefix(&root).unwrap();
        assert!(
            dockerfile.contains(&format!("COPY {} ", relative.display())),
            "the dependency stage does not copy {}",
            relative.display()
        );
        let sources = stub.join(relative.parent().unwrap()).join("src");
        std::fs::create_dir_all(&sources).unwrap();
        std::fs::copy(manifest, stub.join(relative)).unwrap();
        std::fs::write(sources.join("main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(sources.join("lib.rs"), "").unwrap();
    }
    std::fs::copy(root.join("Cargo.lock"), stub.join("Cargo.lock")).unwrap();
    // the host's whole graph (normal, build and dev) from the stubs and the lockfile alone
    cargo(
        &stub,
        &["tree", "--locked", "--offline", "-e", "normal,build,dev"],
    );
    std::fs::remove_dir_all(&stub).ok();
}
