//! The track catalogue: tracks and their ordered units.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct Track {
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    pub units: Vec<TrackUnit>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TrackUnit {
    pub id: Uuid,
    pub position: i32,
    pub title: String,
    pub kind: String,
}

/// Creates a track of `unit_count` units in one transaction. Every third unit is an
/// assessment, the rest are lessons.
pub async fn create_track(
    pool: &PgPool,
    title: &str,
    unit_count: usize,
) -> Result<Track, sqlx::Error> {
    let id = Uuid::new_v4();
    let slug = format!("{}-{}", slugify(title), &id.simple().to_string()[..8]);
    let units: Vec<TrackUnit> = (0..unit_count)
        .map(|i| {
            let kind = if i % 3 == 2 { "assessment" } else { "lesson" };
            TrackUnit {
                id: Uuid::new_v4(),
                position: i as i32,
                title: format!("{title} — unit {}", i + 1),
                kind: kind.to_owned(),
            }
        })
        .collect();

    let mut tx = pool.begin().await?;
    sqlx::query("insert into learning_tracks (id, slug, title) values ($1, $2, $3)")
        .bind(id)
        .bind(&slug)
        .bind(title)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into track_units (id, track_id, position, title, kind)
         select u.id, $1, u.position, u.title, u.kind
         from unnest($2::uuid[], $3::int[], $4::text[], $5::text[]) as u (id, position, title, kind)",
    )
    .bind(id)
    .bind(units.iter().map(|u| u.id).collect::<Vec<_>>())
    .bind(units.iter().map(|u| u.position).collect::<Vec<_>>())
    .bind(units.iter().map(|u| u.title.clone()).collect::<Vec<_>>())
    .bind(units.iter().map(|u| u.kind.clone()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Track {
        id,
        slug,
        title: title.to_owned(),
        units,
    })
}

/// The unit ids of a track in order; empty when the track does not exist.
pub async fn unit_ids<'e>(
    db: impl PgExecutor<'e>,
    track_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("select id from track_units where track_id = $1 order by position")
        .bind(track_id)
        .fetch_all(db)
        .await
}

/// The unit sets of several tracks at once; a track that does not exist is absent.
pub(crate) async fn unit_sets<'e>(
    db: impl PgExecutor<'e>,
    track_ids: &[Uuid],
) -> Result<HashMap<Uuid, HashSet<Uuid>>, sqlx::Error> {
    let rows: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "select t.id, u.id from learning_tracks t
         left join track_units u on u.track_id = t.id
         where t.id = any($1)",
    )
    .bind(track_ids)
    .fetch_all(db)
    .await?;
    let mut sets: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
    for (track, unit) in rows {
        let set = sets.entry(track).or_default();
        set.extend(unit);
    }
    Ok(sets)
}

fn slugify(title: &str) -> String {
    let slug: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    if slug.is_empty() {
        "track".to_owned()
    } else {
        slug
    }
}
