//! Every manifest and the compose file validated against its published JSON schema, offline:
//! the Kubernetes objects by `kubernetes-validate` (strict: an unknown field is an error) for a
//! pinned Kubernetes release, the compose file by `jsonschema` against the compose-spec
//! schema. `tests/deploy/setup.sh` installs both, pinned, into `.stack/deploy-venv`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{deploy_dir, documents, kubernetes_objects, read, str_at};

/// The Kubernetes release whose API the manifests are checked against.
const KUBERNETES: &str = "1.35";

/// The virtualenv with the validators, installed on first use.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let script = deploy_dir().join("../tests/deploy/setup.sh");
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .expect("running tests/deploy/setup.sh");
        assert!(
            output.status.success(),
            "tests/deploy/setup.sh: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
}

/// The validator's exit status and everything it printed.
fn run(program: &str, args: &[&Path]) -> (bool, String) {
    let mut command = if program.ends_with(".py") {
        let mut c = Command::new(venv().join("bin/python"));
        c.arg(deploy_dir().join("../tests/deploy").join(program));
        c
    } else {
        Command::new(venv().join("bin").join(program))
    };
    if program == "kubernetes-validate" {
        command.args(["--strict", "--kubernetes-version", KUBERNETES]);
    }
    let output = command.args(args).output().expect("the validator runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    run("kubernetes-validate", &files)
}

fn manifests() -> Vec<PathBuf> {
    super::yaml_files(&deploy_dir().join("k8s"))
        .into_iter()
        .filter(|f| !f.ends_with("kustomization.yaml"))
        .collect()
}

/// A copy of `relative` under deploy/ with `from` replaced by `to` (which must occur).
fn broken_copy(relative: &str, from: &str, to: &str) -> PathBuf {
    let text = read(relative);
    assert!(text.contains(from), "{relative} has no {from:?}");
    let name = Path::new(relative).file_name().unwrap().to_str().unwrap();
    let dir = std::env::temp_dir().join(format!("lp-schema-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    path
}

#[test]
fn every_kubernetes_object_is_valid_for_the_pinned_release_with_no_unknown_field() {
    let (ok, output) = kubernetes_validate(&manifests());
    assert!(ok, "{output}");
    // every object found its schema and passed: none skipped for an unknown kind or version
    assert!(!output.contains("WARN"), "{output}");
    let passed = output
        .lines()
        .filter(|l| {
            l.contains("passed for resource")
                && l.ends_with(&format!("against version {KUBERNETES}"))
        })
        .count();
    assert_eq!(passed, kubernetes_objects().len(), "{output}");
}

#[test]
fn kubernetes_validation_rejects_a_misspelled_field_and_a_wrong_type() {
    let misspelled = broken_copy(
        "k8s/consumer.yaml",
        "terminationGracePeriodSeconds:",
        "terminationGracePeriodSecond:",
    );
    let (ok, output) = kubernetes_validate(std::slice::from_ref(&misspelled));
    assert!(!ok, "a misspelled field passed: {output}");
    assert!(
        output.contains("'terminationGracePeriodSecond' was unexpected"),
        "{output}"
    );

    let wrong_type = broken_copy("k8s/api.yaml", "replicas: 2", "replicas: two");
    let (ok, output) = kubernetes_validate(std::slice::from_ref(&wrong_type));
    assert!(!ok, "a string for replicas passed: {output}");
    assert!(
        output.contains("spec.replicas: 'two' is not of type 'integer'"),
        "{output}"
    );
    for file in [misspelled, wrong_type] {
        std::fs::remove_dir_all(file.parent().unwrap()).ok();
    }
}

/// kustomization.yaml is kustomize's, not an API object: it must name every manifest once,
/// nothing else, and the image the workloads use.
#[test]
fn the_kustomization_lists_every_manifest_and_the_services_image() {
    let kustomization = documents("k8s/kustomization.yaml").remove(0);
    assert_eq!(
        str_at(&kustomization, &["apiVersion"]),
        Some("kustomize.config.k8s.io/v1beta1")
    );
    assert_eq!(str_at(&kustomization, &["kind"]), Some("Kustomization"));
    let mut listed: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let files: Vec<String> = manifests()
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, files);
    let images = kustomization["images"].as_sequence().unwrap();
    assert!(
        images.iter().any(|i| i["name"] == "learning-progress"),
        "the service's image is not set"
    );
}

#[test]
fn the_compose_file_is_valid_against_the_compose_spec_schema() {
    let (ok, output) = run("compose_schema.py", &[&deploy_dir().join("compose.yaml")]);
    assert!(ok, "{output}");
    assert!(output.contains("compose.yaml: valid"), "{output}");
}

#[test]
fn compose_validation_rejects_a_misspelled_field_and_a_wrong_type() {
    let misspelled = broken_copy(
        "compose.yaml",
        "stop_grace_period: 45s\n    depends_on",
        "stop_grace_periode: 45s\n    depends_on",
    );
    let (ok, output) = run("compose_schema.py", &[&misspelled]);
    assert!(!ok, "a misspelled field passed: {output}");
    assert!(
        output
            .contains("services/consumer: 'stop_grace_periode' does not match any of the regexes"),
        "{output}"
    );

    let wrong_type = broken_copy("compose.yaml", "replicas: 2", "replicas: two");
    let (ok, output) = run("compose_schema.py", &[&wrong_type]);
    assert!(!ok, "a string for replicas passed: {output}");
    assert!(
        output.contains("/deploy/replicas: 'two' is not of type 'integer'"),
        "{output}"
    );
    for file in [misspelled, wrong_type] {
        std::fs::remove_dir_all(file.parent().unwrap()).ok();
    }
}
