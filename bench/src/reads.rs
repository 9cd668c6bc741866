//! The read path, against API replicas running as their own processes. P3: cached progress
//! reads against a static authenticated route on the same server, and against a replica with
//! no cache; P5: 1,000 concurrent reads of a cold key; P7: resident memory with 100,000
//! cached snapshots.

use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt as _;
use uuid::Uuid;

use crate::api_process::{ApiProcess, admin_token};
use crate::report::BenchResult;
use crate::setup::{self, BenchDb, say};
use crate::{BenchConfig, Scale, load};
use learning_progress::db::tracks::Track;

/// Distinct keys the cached and uncached runs cycle through.
const KEYS: usize = 1_000;
const PROGRESS_QUERIES: &str = "db_queries_total{query=\"progress\"}";

/// The service's binary: `--api-bin`, or `learning-progress` beside this one (cargo builds
/// both into the same directory).
pub fn api_bin(config: &BenchConfig) -> anyhow::Result<PathBuf> {
    if let Some(bin) = &config.api_bin {
        return Ok(bin.clone());
    }
    let beside = std::env::current_exe()?.with_file_name("learning-progress");
    anyhow::ensure!(
        beside.exists(),
        "no {} (build it with `cargo build --bins`, or pass --api-bin)",
        beside.display()
    );
    Ok(beside)
}

pub fn progress_path(user: Uuid, track: Uuid) -> String {
    format!("/api/v1/users/{user}/tracks/{track}/progress")
}

/// What the API benches start from: the binary replicas run from, an admin token, and a
/// database of their own holding a 7-unit track.
pub struct ApiFixture {
    pub bin: PathBuf,
    pub token: String,
    pub track: Track,
    pub db: BenchDb,
}

impl ApiFixture {
    pub async fn create(config: &BenchConfig) -> anyhow::Result<ApiFixture> {
        let track = setup::track(7);
        let db = BenchDb::create(&config.db, 10).await?;
        setup::insert_track(&db.pool, &track).await?;
        Ok(ApiFixture {
            bin: api_bin(config)?,
            token: admin_token()?,
            track,
            db,
        })
    }
}

pub async fn run(config: &BenchConfig, scale: &Scale) -> anyhow::Result<Vec<BenchResult>> {
    let ApiFixture {
        bin,
        token,
        track,
        db,
    } = ApiFixture::create(config).await?;
    let users = seed_rows(&db, &track, scale.snapshots.max(KEYS + 1)).await?;
    let (nats, js) = setup::isolated_nats(&config.nats_url, "bench-reads").await?;
    let paths: Vec<String> = users[..KEYS]
        .iter()
        .map(|u| progress_path(*u, track.id))
        .collect();

    let api = ApiProcess::spawn(&bin, &db.url, &nats, 100_000).await?;
    touch(&api.base, &paths, &token).await?;
    let before = api.metric(PROGRESS_QUERIES).await?;
    say(format!("P3: static /api/v1/me, {} s", scale.http.as_secs()));
    let stat = load::run(
        &config.wrk,
        &api.base,
        &["/api/v1/me".to_owned()],
        &token,
        scale.http,
    )
    .await?;
    say(format!(
        "  {:.0} req/s; cached progress over {KEYS} keys",
        stat.rps
    ));
    let cached = load::run(&config.wrk, &api.base, &paths, &token, scale.http).await?;
    let cached_queries = api.metric(PROGRESS_QUERIES).await? - before;
    say(format!("  {:.0} req/s", cached.rps));
    let cold = cold_key(&api, &users[KEYS], &track, &token).await?;
    api.stop().await;

    say("P3: the same reads with the cache off");
    let api = ApiProcess::spawn(&bin, &db.url, &nats, 0).await?;
    let before = api.metric(PROGRESS_QUERIES).await?;
    let uncached = load::run(&config.wrk, &api.base, &paths, &token, scale.http).await?;
    let uncached_queries = api.metric(PROGRESS_QUERIES).await? - before;
    api.stop().await;
    say(format!("  {:.0} req/s", uncached.rps));

    let rss = memory(&bin, &db, &nats, &users[..scale.snapshots], &track, &token).await?;
    setup::delete_streams(&js, &nats).await;
    db.drop().await?;

    let generator = stat.generator;
    Ok(vec![
        BenchResult::ratio(
            "P3",
            "cached GET …/progress with a valid token",
            (cached.rps, "req/s"),
            ("static GET /api/v1/me, same auth and middleware, same server", stat.rps),
            0.8,
        )
        .detail(format!(
            "{generator}, {} s each; p99 {:.2} ms cached vs {:.2} ms static; {cached_queries} database queries during the cached run; errors {}/{}",
            scale.http.as_secs(), cached.p99_ms, stat.p99_ms, cached.errors, stat.errors
        )),
        BenchResult::ratio(
            "P3.uncached",
            "cached GET …/progress vs the same with the cache off",
            (cached.rps, "req/s"),
            ("cache capacity 0, every read from PostgreSQL", uncached.rps),
            10.0,
        )
        .detail(format!(
            "uncached p50 {:.2} ms, p99 {:.2} ms; {uncached_queries} database queries ({:.0}/s)",
            uncached.p50_ms,
            uncached.p99_ms,
            uncached_queries / scale.http.as_secs_f64()
        )),
        cold,
        rss,
    ])
}

/// P5: 1,000 GETs at once on a key nobody has read; counts the replica's database queries.
async fn cold_key(
    api: &ApiProcess,
    user: &Uuid,
    track: &Track,
    token: &str,
) -> anyhow::Result<BenchResult> {
    say("P5: 1000 concurrent GETs on a cold key");
    let url = format!("{}{}", api.base, progress_path(*user, track.id));
    let before = api.metric(PROGRESS_QUERIES).await?;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let reads = (0..1000).map(|_| {
        let request = http.get(&url).bearer_auth(token).send();
        async move { request.await.map(|r| r.status().is_success()) }
    });
    let ok = futures::future::join_all(reads)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count();
    let elapsed = started.elapsed();
    let queries = api.metric(PROGRESS_QUERIES).await? - before;
    say(format!("  {queries} queries, {ok}/1000 answered 200"));
    Ok(BenchResult::absolute(
        "P5",
        "1,000 concurrent GETs on a cold key",
        (queries, "queries"),
        "exactly 1",
        queries == 1.0 && ok == 1000,
    )
    .detail(format!(
        "{ok}/1000 answered 200 in {:.0} ms, one connection each",
        elapsed.as_secs_f64() * 1000.0
    )))
}

/// P7: a fresh replica's resident memory before and after every snapshot is cached.
async fn memory(
    bin: &std::path::Path,
    db: &BenchDb,
    nats: &learning_progress::messaging::NatsConfig,
    users: &[Uuid],
    track: &Track,
    token: &str,
) -> anyhow::Result<BenchResult> {
    say(format!(
        "P7: caching {} snapshots in a fresh replica",
        users.len()
    ));
    let api = ApiProcess::spawn(bin, &db.url, nats, 100_000).await?;
    let idle = api.rss_mib()?;
    let paths: Vec<String> = users.iter().map(|u| progress_path(*u, track.id)).collect();
    let started = Instant::now();
    for chunk in paths.chunks(20_000) {
        touch(&api.base, chunk, token).await?;
        say(format!(
            "  touched {} more in {:.1} s",
            chunk.len(),
            started.elapsed().as_secs_f64()
        ));
    }
    // a second pass that makes no database query proves every snapshot is cached
    let before = api.metric(PROGRESS_QUERIES).await?;
    touch(&api.base, &paths, token).await?;
    let entries = paths.len() as f64 - (api.metric(PROGRESS_QUERIES).await? - before);
    let rss = api.rss_mib()?;
    api.stop().await;
    say(format!(
        "  RSS {rss:.1} MiB ({idle:.1} MiB idle), {entries} entries"
    ));
    Ok(BenchResult::absolute(
        "P7",
        "RSS of the API with 100,000 cached snapshots",
        (rss, "MiB"),
        "<= 150 MB",
        // the goal is in MB (10^6 bytes), the measurement in MiB
        rss * 1.048_576 <= 150.0,
    )
    .detail(format!(
        "{entries} cached snapshots (7-unit track, 4 units done, one assessment attempt); {idle:.1} MiB right after start"
    )))
}

/// GETs every path once, 32 at a time, and insists on 200s.
async fn touch(base: &str, paths: &[String], token: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let statuses: Vec<_> = futures::stream::iter(paths)
        .map(|path| {
            let request = http.get(format!("{base}{path}")).bearer_auth(token).send();
            async move { request.await.map(|r| r.status()) }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for status in statuses {
        anyhow::ensure!(status?.is_success(), "a warm-up read failed");
    }
    Ok(())
}

/// `count` learners with realistic rows (one statement); returns their ids.
async fn seed_rows(db: &BenchDb, track: &Track, count: usize) -> anyhow::Result<Vec<Uuid>> {
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let salt = Uuid::new_v4().to_string();
    let users: Vec<Uuid> = sqlx::query_scalar(
        "insert into user_progress (user_id, track_id, status, current_unit_id, completed_unit_ids,
             assessment_results, started_at, updated_at, last_seq, version)
         select md5($6 || g::text)::uuid, $1, 'in_progress', $2, $3,
                jsonb_build_object($4::text, jsonb_build_object('attempts',
                    jsonb_build_object(md5($6 || 'attempt' || g::text)::uuid::text,
                        jsonb_build_object('score', 8.0, 'max_score', 10.0, 'passed', true, 'at', $7::timestamptz)))),
                $7, $7, 5, 6
         from generate_series(1, $5) as g
         returning user_id",
    )
    .bind(track.id)
    .bind(units[4])
    .bind(&units[..4])
    .bind(units[2].to_string())
    .bind(count as i64)
    .bind(salt)
    .bind(chrono::Utc::now())
    .fetch_all(&db.pool)
    .await?;
    say(format!("seeded {} progress rows", users.len()));
    Ok(users)
}
