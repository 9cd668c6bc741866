//! The pure core: progress commands, the progress snapshot, and the merge of one into the other.
//!
//! Nothing here does I/O. The applier, the CRUD layer, the workflow and the tests all share
//! these types and functions, so there is exactly one definition of what a command means.

mod command;
mod event;
mod progress;
mod reshape;
mod view;

pub use command::{
    Action, CommandError, MAX_SEQ, ProgressCommand, check_score, decode_command, now_micros,
};
pub use event::{ERASED, ErasedEvent, ProgressEvent};
pub use progress::{
    AssessmentResults, Attempt, MAX_ATTEMPTS_PER_UNIT, Status, UnitAttempts, UserProgress,
};
pub use view::{AssessmentSummary, ProgressView, ScoredAttempt};
