//! The migrations on plain PostgreSQL and on a database with Supabase's `auth` schema.

use learning_progress::db::MIGRATOR;
use sqlx::PgPool;
use uuid::Uuid;

async fn row_security(pool: &PgPool, table: &str) -> bool {
    sqlx::query_scalar("select relrowsecurity from pg_class where relname = $1 and relkind = 'r'")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn migrations_run_on_plain_postgres_without_row_security(pool: PgPool) {
    MIGRATOR.run(&pool).await.unwrap();
    for table in [
        "learning_tracks",
        "track_units",
        "user_progress",
        "progress_ledger",
        "track_changes",
        "track_change_events",
    ] {
        assert!(
            !row_security(&pool, table).await,
            "{table} has row security on plain PostgreSQL"
        );
    }
    // running them again is a no-op
    MIGRATOR.run(&pool).await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn with_an_auth_schema_a_user_reads_only_their_own_progress(pool: PgPool) {
    sqlx::raw_sql(
        "create schema auth;
         create function auth.uid() returns uuid language sql stable as
           $$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;",
    )
    .execute(&pool)
    .await
    .unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    for table in [
        "learning_tracks",
        "track_units",
        "user_progress",
        "progress_ledger",
        "track_changes",
        "track_change_events",
    ] {
        assert!(
            row_security(&pool, table).await,
            "{table} has no row security under Supabase"
        );
    }

    let track = learning_progress::db::tracks::create_track(&pool, "RLS", 2)
        .await
        .unwrap();
    let (me, other) = (Uuid::new_v4(), Uuid::new_v4());
    for user in [me, other] {
        sqlx::query("insert into user_progress (user_id, track_id) values ($1, $2)")
            .bind(user)
            .bind(track.id)
            .execute(&pool)
            .await
            .unwrap();
    }

    // roles are cluster-wide: a unique name, dropped at the end
    let role = format!("rls_reader_{}", Uuid::new_v4().simple());
    sqlx::raw_sql(&format!(
        "create role {role} nologin; grant usage on schema auth to {role};
         grant select on user_progress, learning_tracks to {role};"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(&format!(
        "set local role {role}; select set_config('request.jwt.claim.sub', '{me}', true);"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    let visible: Vec<Uuid> = sqlx::query_scalar("select user_id from user_progress")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let tracks: i64 = sqlx::query_scalar("select count(*) from learning_tracks")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    sqlx::raw_sql(&format!("drop owned by {role}; drop role {role};"))
        .execute(&pool)
        .await
        .unwrap();

    assert_eq!(visible, vec![me]);
    assert_eq!(tracks, 1);
}
