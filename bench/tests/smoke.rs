//! The benchmark harness at a tiny scale, so it keeps working. Benchmarks are not tests: this
//! asserts only that every result was produced with a positive value, never a timing.

use learning_progress::config::DbConfig;
use learning_progress::workflow::TemporalConfig;
use learning_progress_bench::{self as bench, BenchConfig, ScaleName};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_produces_every_result_at_a_tiny_scale() {
    let out = std::env::temp_dir().join(format!("bench-smoke-{}.json", uuid::Uuid::new_v4()));
    let config = BenchConfig {
        scale: ScaleName::Tiny,
        only: Vec::new(),
        out: out.clone(),
        api_bin: Some(service_binary()),
        nats_server_bin: env("NATS_SERVER_BIN", "nats-server").into(),
        wrk: "wrk".into(),
        nats_url: env("NATS_URL", "nats://127.0.0.1:4222"),
        db: DbConfig::new(env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/learning_progress",
        )),
        temporal: TemporalConfig::new(env("TEMPORAL_ADDRESS", "127.0.0.1:7233"), "unused"),
    };
    let results = bench::run_benches(&config).await.expect("the harness ran");
    let ids: Vec<&str> = results.iter().map(|r| r.id.as_str()).collect();
    for id in [
        "P1",
        "P2",
        "P1.fsync",
        "P1.publish",
        "P3",
        "P3.uncached",
        "P4",
        "P5",
        "P6",
        "P7",
    ] {
        assert!(ids.contains(&id), "no result {id} in {ids:?}");
    }
    for result in &results {
        assert!(
            result.value > 0.0,
            "{} has no positive value: {result:?}",
            result.id
        );
        if let Some(anchor) = result.anchor_value {
            assert!(
                anchor > 0.0,
                "{} has no positive anchor: {result:?}",
                result.id
            );
        }
    }
    bench::Report::new(&config, results)
        .save(&out)
        .expect("results written");
    std::fs::remove_file(out).ok();
}

/// The service's binary, which `cargo build --workspace` (and `make test`) puts beside this
/// test's directory: `target/<profile>/learning-progress`.
fn service_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("learning-progress");
    assert!(
        bin.exists(),
        "{} is not built: run the workspace's tests (`make test`), which build it",
        bin.display()
    );
    bin
}
