//! Behind a connection pooler, as on Supabase: a transaction pooler is refused at start-up
//! with a message naming what to use instead; a session pooler carries the service.
//!
//! Debian's `pgbouncer` stands in for Supavisor; the test installs it when missing.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use learning_progress::config::DbConfig;
use learning_progress::db::{self, tracks};
use sqlx::PgPool;
use tokio::net::TcpStream;
use uuid::Uuid;

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// Installs Debian's pgbouncer when it is missing. This file's tests run at once, each in its
/// own process: apt-get runs under the lock the setup scripts take too, and waits for dpkg's.
fn ensure_pgbouncer() {
    if std::path::Path::new(PGBOUNCER).exists() {
        return;
    }
    let apt = |args: &[&str]| {
        std::process::Command::new("flock")
            .args(["/tmp/learning-progress-apt.lock", "apt-get"])
            .args(["-o", "DPkg::Lock::Timeout=600", "-qq"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .expect("running apt-get")
            .success()
    };
    // a fresh machine's package lists may be empty
    let installed = std::path::Path::new(PGBOUNCER).exists()
        || apt(&["install", "-y", "pgbouncer"])
        || (apt(&["update"]) && apt(&["install", "-y", "pgbouncer"]));
    assert!(installed, "installing pgbouncer failed");
}

/// A pgbouncer of the test's own on a free port, in front of the local PostgreSQL.
struct Pooler {
    port: u16,
    dir: PathBuf,
    child: std::process::Child,
}

impl Pooler {
    async fn start(mode: &str) -> Pooler {
        ensure_pgbouncer();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("lp-pgbouncer-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host=127.0.0.1 port=5432\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {users}\n\
                 pool_mode = {mode}\ndefault_pool_size = 4\n\
                 ignore_startup_parameters = extra_float_digits,application_name\n\
                 logfile = {log}\n",
                users = dir.join("users.txt").display(),
                log = dir.join("pgbouncer.log").display(),
            ),
        )
        .unwrap();
        // pgbouncer will not run as root: as root it switches to postgres itself (`-u`), and
        // stays the process this test kills
        let mut command = std::process::Command::new(PGBOUNCER);
        if is_root() {
            let _ = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status();
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting pgbouncer");
        common::eventually(
            Duration::from_secs(10),
            "pgbouncer to accept connections",
            || async move {
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        Pooler { port, dir, child }
    }

    /// The URL of `pool`'s database through this pooler.
    async fn url(&self, pool: &PgPool) -> String {
        let database: String = sqlx::query_scalar("select current_database()")
            .fetch_one(pool)
            .await
            .unwrap();
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Pooler {
    /// Stops pgbouncer and waits until its server connections to `pool`'s database are gone,
    /// so the test's database can be dropped.
    async fn stop(mut self, pool: &PgPool) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        common::eventually(
            Duration::from_secs(10),
            "pgbouncer's server connections closed",
            || async {
                let others: i64 = sqlx::query_scalar(
                    "select count(*) from pg_stat_activity
                     where datname = current_database() and pid <> pg_backend_pid()",
                )
                .fetch_one(pool)
                .await
                .unwrap();
                (others == 0).then_some(())
            },
        )
        .await;
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

#[sqlx::test]
async fn a_transaction_pooler_is_refused_with_a_message_naming_the_session_pooler(pool: PgPool) {
    let pooler = Pooler::start("transaction").await;
    let config = DbConfig::new(pooler.url(&pool).await);
    let error = db::connect(&config).await.expect_err("refused");
    let message = format!("{error:#}");
    assert!(message.contains("transaction pooler"), "{message}");
    assert!(message.contains("session pooler"), "{message}");

    // the command a new user runs first says the same, and exits 1
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_learning-progress"))
        .arg("migrate")
        .env("DATABASE_URL", &config.database_url)
        .output()
        .unwrap();
    assert_eq!(migrate.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&migrate.stderr);
    assert!(stderr.contains("session pooler"), "{stderr}");
    pooler.stop(&pool).await;
}

#[tokio::test]
async fn supabases_transaction_pooler_is_known_by_its_address() {
    let config = DbConfig::new(
        "postgres://postgres.abcdefghijklmnop:secret@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
    );
    let error = db::connect(&config).await.expect_err("refused");
    assert!(format!("{error:#}").contains("port 5432"), "{error:#}");
}

#[sqlx::test]
async fn a_session_pooler_carries_the_service(pool: PgPool) {
    let pooler = Pooler::start("session").await;
    let config = DbConfig::new(pooler.url(&pool).await);
    let through = db::connect(&config)
        .await
        .expect("a session pooler is fine");
    let track = tracks::create_track(&through, "Pooled", 3).await.unwrap();
    let units = tracks::unit_ids(&through, track.id).await.unwrap();
    assert_eq!(units.len(), 3);
    through.close().await;
    pooler.stop(&pool).await;
}
