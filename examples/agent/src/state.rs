//! The agent's memory across restarts: the last version it acted on per track, in a JSON file
//! replaced atomically (write beside it, fsync, rename), so a crash leaves the old or the new.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    /// The learner this file is about; another learner's file is refused.
    pub user_id: Uuid,
    /// Track id → the last version acted on.
    pub last_versions: BTreeMap<Uuid, i64>,
    /// Track id → the `event_id` of the last erasure acted on, so a redelivered one is not
    /// taken for a new erasure.
    #[serde(default)]
    pub erasures: BTreeMap<Uuid, Uuid>,
}

/// Reads the state at `path`, or starts afresh when there is no file yet.
pub fn load(path: &Path, user_id: Uuid) -> anyhow::Result<State> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(State {
                user_id,
                last_versions: BTreeMap::new(),
                erasures: BTreeMap::new(),
            });
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let state: State = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an agent state file", path.display()))?;
    if state.user_id != user_id {
        bail!(
            "{} is the state of learner {}, not {user_id}: give each learner its own --state-file",
            path.display(),
            state.user_id
        );
    }
    Ok(state)
}

/// Replaces the file at `path` with `state`.
pub async fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let text = serde_json::to_vec_pretty(state).expect("the state is JSON");
    let file = tokio::fs::File::create(&partial).await;
    let written = async {
        let mut file = file?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &text).await?;
        file.sync_all().await?;
        tokio::fs::rename(&partial, path).await
    };
    written
        .await
        .with_context(|| format!("writing {}", path.display()))
}
