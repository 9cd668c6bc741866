//! `learning-progress-bench` (`make bench`): runs the side-by-side benchmarks, prints the
//! table and writes the JSON results (BENCHMARKS.md).

use clap::Parser;
use learning_progress_bench::BenchConfig;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: BenchConfig,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    learning_progress::telemetry::init(learning_progress::config::LogFormat::Pretty, false);
    match learning_progress_bench::run(cli.config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
