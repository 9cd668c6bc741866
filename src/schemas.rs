//! The agents' contract as JSON Schemas: the command and event payloads, generated from the
//! model types (serde attributes included), checked in under `docs/schemas/`.
//!
//! `learning-progress schemas --out docs/schemas` writes them; `--check` (and
//! `tests/schemas.rs`) fails when the checked-in files differ from what the types generate.

use std::path::{Path, PathBuf};

use schemars::{JsonSchema, generate::SchemaSettings};

use crate::model::{ErasedEvent, ProgressCommand, ProgressEvent};

/// Where the schemas are checked in, relative to the repository root.
pub const DEFAULT_DIR: &str = "docs/schemas";

/// How to bring checked-in schemas up to date, for error messages.
pub const REGENERATE: &str = "cargo run -- schemas --out docs/schemas";

/// One schema document: its file name and its text (pretty JSON, ending in a newline).
pub(crate) struct Document {
    pub file: &'static str,
    pub text: String,
}

/// Every schema of the contract.
pub(crate) fn documents() -> Vec<Document> {
    vec![
        document::<ProgressCommand>(
            "progress-command.schema.json",
            "A progress command, as published on <prefix>.cmd.<user_id>.<track_id>",
        ),
        document::<ProgressEvent>(
            "progress-event.schema.json",
            "A progress event, as published on <prefix>.evt.<user_id>.<track_id>",
        ),
        document::<ErasedEvent>(
            "progress-erased.schema.json",
            "An erasure event (ce-type learning.progress.event.erased.v1), as published on \
             <prefix>.evt.<user_id>.<track_id> when the learner was erased",
        ),
    ]
}

fn document<T: JsonSchema>(file: &'static str, description: &str) -> Document {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    // the type's own doc comment speaks to Rust readers; the schema's readers get the subject
    schema.insert("description".to_owned(), description.into());
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    Document { file, text }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemasError {
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} differ from what the model types generate (missing or changed); regenerate with `{REGENERATE}`", .files.join(", "))]
    Drift { files: Vec<String> },
}

/// Writes every schema into `dir` (created if missing); returns the paths written.
pub fn write(dir: &Path) -> Result<Vec<PathBuf>, SchemasError> {
    std::fs::create_dir_all(dir).map_err(|source| SchemasError::Write {
        path: dir.to_owned(),
        source,
    })?;
    documents()
        .into_iter()
        .map(|doc| {
            let path = dir.join(doc.file);
            std::fs::write(&path, doc.text)
                .map(|()| path.clone())
                .map_err(|source| SchemasError::Write { path, source })
        })
        .collect()
}

/// Fails, naming the files, when a schema in `dir` is missing or differs from the types'.
pub fn check(dir: &Path) -> Result<(), SchemasError> {
    let files: Vec<String> = documents()
        .into_iter()
        .filter(|doc| std::fs::read_to_string(dir.join(doc.file)).ok() != Some(doc.text.clone()))
        .map(|doc| dir.join(doc.file).display().to_string())
        .collect();
    if files.is_empty() {
        Ok(())
    } else {
        Err(SchemasError::Drift { files })
    }
}
