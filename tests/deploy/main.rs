//! `deploy/` checked offline, with no container engine or cluster: every file parses, every
//! variable and role is one the binary knows, the probes answer on the real API, the grace
//! periods outlast the ack wait, the image runs as non-root — and the NATS server settings
//! start a real three-node cluster on which the service's streams get three replicas.

#[path = "../common/mod.rs"]
mod common;
mod manifests;
mod nats_cluster;
mod probes;
mod schemas;
mod temporal;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use yaml_serde::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_learning-progress");

/// Variables a process reads that are not the binary's flags.
const PROCESS_VARIABLES: [&str; 1] = ["RUST_LOG"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(relative: &str) -> String {
    let path = deploy_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every document of a YAML file, with `<<` merge keys applied as compose applies them.
fn documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    yaml_serde::Deserializer::from_str(&text)
        .map(|document| {
            let mut value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{relative} does not parse: {e}"));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{relative}: merge keys: {e}"));
            value
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// Every Kubernetes object under deploy/k8s, by file.
fn kubernetes_objects() -> Vec<(String, Value)> {
    let mut objects = Vec::new();
    for file in yaml_files(&deploy_dir().join("k8s")) {
        let relative = file
            .strip_prefix(deploy_dir())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if relative.ends_with("kustomization.yaml") {
            continue;
        }
        for object in documents(&relative) {
            objects.push((relative.clone(), object));
        }
    }
    objects
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(value, path)?.as_str()
}

fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

/// What `learning-progress <role> --help` says: the variables it reads, with their defaults.
struct Role {
    variables: BTreeMap<String, Option<String>>,
}

impl Role {
    /// The role's help, or a panic naming the role if the binary has no such subcommand.
    fn of(role: &str) -> Role {
        let output = std::process::Command::new(BINARY)
            .args([role, "--help"])
            // the help shows a variable's value when it is set; show only names and defaults
            .env_clear()
            .output()
            .expect("the binary runs");
        assert!(
            output.status.success(),
            "`learning-progress {role}` is not a subcommand: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let help = String::from_utf8(output.stdout).unwrap();
        let mut variables = BTreeMap::new();
        for rest in help.split("[env: ").skip(1) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let after = rest.split_once(']').map_or("", |(_, after)| after);
            let default = after
                .trim_start()
                .strip_prefix("[default: ")
                .and_then(|d| d.split_once(']'))
                .map(|(d, _)| d.to_owned());
            variables.insert(name, default);
        }
        assert!(!variables.is_empty(), "no variables in the help of {role}");
        Role { variables }
    }

    fn reads(&self, variable: &str) -> bool {
        self.variables.contains_key(variable) || PROCESS_VARIABLES.contains(&variable)
    }
}

/// Names that other values of the same environment use as `$(NAME)` (Kubernetes) — inputs to
/// those values, not settings of the binary.
fn referenced(values: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for value in values {
        let mut rest = value.as_str();
        while let Some(start) = rest.find("$(") {
            let tail = &rest[start + 2..];
            let end = tail.find(')').expect("closing parenthesis");
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}
