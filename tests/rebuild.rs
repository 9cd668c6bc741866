//! `verify` and `rebuild` against the real stack: rows applied by the applier agree with their
//! ledger; a damaged row, a lost row and a row without history are found; `rebuild` restores
//! the first two from the ledger, announces them, and leaves the third alone.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use learning_progress::applier::{self, ApplierConfig, Seams};
use learning_progress::db::progress::{
    UserProgressCreate, create_user_progress, get_user_progress,
};
use learning_progress::db::tracks::create_track;
use learning_progress::messaging::NatsConfig;
use learning_progress::model::{Action, ProgressEvent, UserProgress};
use learning_progress::ops::rebuild::{self, Difference, Scope};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use common::binary::{cli, stdout};
use common::commands::{command, publish};
use common::{eventually, isolated_nats, read_stream, stream_len};

const WAIT: Duration = Duration::from_secs(15);

/// Three learners part-way through a two-unit track, applied by a real applier.
async fn three_learners(
    pool: &PgPool,
    js: &jetstream::Context,
    nats: &NatsConfig,
) -> (Uuid, [Uuid; 3]) {
    let track = create_track(pool, "Rebuilt", 2).await.unwrap();
    let (first, second) = (track.units[0].id, track.units[1].id);
    let users = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    for user in users {
        let commands = [
            command(
                user,
                track.id,
                1,
                Action::TrackStarted {
                    current_unit_id: Some(first),
                },
            ),
            command(
                user,
                track.id,
                2,
                Action::UnitCompleted {
                    unit_id: first,
                    next_unit_id: Some(second),
                },
            ),
        ];
        for command in &commands {
            publish(js, nats, command).await;
        }
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(applier::run(
        js.clone(),
        pool.clone(),
        nats.clone(),
        ApplierConfig::default(),
        Seams::default(),
        shutdown.clone(),
    ));
    let _stop = shutdown.drop_guard();
    eventually(WAIT, "every command applied", || async {
        let applied: i64 = sqlx::query_scalar(
            "select count(*) from progress_ledger where outcome = 'applied' and announced",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (applied == 6).then_some(())
    })
    .await;
    (track.id, users)
}

async fn row(pool: &PgPool, user: Uuid, track: Uuid) -> Option<UserProgress> {
    get_user_progress(pool, user, track).await.unwrap()
}

#[sqlx::test]
async fn rows_the_applier_wrote_verify_clean(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let (_, users) = three_learners(&pool, &js, &nats).await;

    let report = rebuild::verify(&pool, Scope::default(), 2, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(report.learners, 3, "batches of 2 visit every learner once");
    assert!(report.differences.is_empty(), "{:?}", report.differences);

    let verified = cli(&pool, &nats, &["verify"]).await;
    assert!(verified.status.success(), "{}", stdout(&verified));
    assert!(
        stdout(&verified).contains("verify: 3 learners, 0 differing"),
        "{}",
        stdout(&verified)
    );
    let one = cli(&pool, &nats, &["verify", "--user", &users[0].to_string()]).await;
    assert!(
        stdout(&one).contains("verify: 1 learners"),
        "{}",
        stdout(&one)
    );
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn rebuild_restores_damaged_and_lost_rows_from_the_ledger_and_announces_them(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let (track, [damaged, lost, intact]) = three_learners(&pool, &js, &nats).await;
    let before = row(&pool, damaged, track).await.unwrap();
    let lost_before = row(&pool, lost, track).await.unwrap();
    sqlx::query(
        "update user_progress set completed_unit_ids = '{}' where user_id = $1 and track_id = $2",
    )
    .bind(damaged)
    .bind(track)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("delete from user_progress where user_id = $1 and track_id = $2")
        .bind(lost)
        .bind(track)
        .execute(&pool)
        .await
        .unwrap();
    // a row no command made: nothing says what it should be
    let stranger = Uuid::new_v4();
    create_user_progress(
        &pool,
        &UserProgressCreate {
            user_id: stranger,
            track_id: track,
            current_unit_id: None,
            started_at: Utc::now(),
        },
    )
    .await
    .unwrap();

    let verified = cli(&pool, &nats, &["verify"]).await;
    assert!(!verified.status.success(), "differences exit 1");
    let text = stdout(&verified);
    assert!(
        text.contains(&format!(
            "user {damaged} track {track}: row differs from its ledger in completed_unit_ids"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "user {lost} track {track}: applied commands in the ledger, no row"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "user {stranger} track {track}: a row, nothing applied"
        )),
        "{text}"
    );
    assert!(text.contains("verify: 4 learners, 3 differing"), "{text}");

    let events_before = stream_len(&js, &nats.events_stream).await;
    let dry = cli(&pool, &nats, &["rebuild", "--dry-run"]).await;
    assert!(dry.status.success(), "{}", stdout(&dry));
    assert!(
        stdout(&dry).contains("would rewrite 2 rows"),
        "{}",
        stdout(&dry)
    );
    assert!(
        row(&pool, lost, track).await.is_none(),
        "a dry run writes nothing"
    );
    assert_eq!(stream_len(&js, &nats.events_stream).await, events_before);

    let rebuilt = cli(&pool, &nats, &["rebuild"]).await;
    assert!(
        rebuilt.status.success(),
        "{}{}",
        stdout(&rebuilt),
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert!(
        stdout(&rebuilt).contains("rewrote 2 rows"),
        "{}",
        stdout(&rebuilt)
    );

    let restored = row(&pool, damaged, track).await.unwrap();
    assert!(restored.content_eq(&before), "{restored:?} != {before:?}");
    assert_eq!(
        restored.version,
        before.version + 1,
        "a rewrite is a new version"
    );
    assert_eq!(row(&pool, lost, track).await.unwrap(), lost_before);
    assert!(
        row(&pool, stranger, track).await.is_some(),
        "left as it was"
    );
    assert_eq!(
        row(&pool, intact, track).await.unwrap().version,
        before.version,
        "an agreeing row is not touched"
    );

    let events: Vec<ProgressEvent> =
        read_stream(&js, &nats.events_stream, events_before as usize + 2, WAIT)
            .await
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .filter(|e: &ProgressEvent| e.kind == rebuild::REBUILT)
            .collect();
    let mut announced: Vec<(Uuid, i64)> = events
        .iter()
        .map(|e| (e.progress.progress.user_id, e.version))
        .collect();
    announced.sort();
    let mut expected = vec![(damaged, restored.version), (lost, lost_before.version)];
    expected.sort();
    assert_eq!(announced, expected);

    let report = rebuild::verify(&pool, Scope::default(), 500, &mut |_| {})
        .await
        .unwrap();
    assert!(
        matches!(report.differences.as_slice(), [Difference::NoHistory { user_id, .. }] if *user_id == stranger),
        "{:?}",
        report.differences
    );
    common::delete_streams(&js, &nats).await;
}
