//! A batch's place among batches committing at once.
//!
//! A batch takes its learners' locks only after the batch pulled before it holds theirs, so
//! for a learner in both the earlier batch commits first and the later one finds its
//! commands in the ledger. (A batch that fails and retries takes its locks again, possibly
//! after a later batch: that later batch then defers the learner's next seqs, which are
//! redelivered, so seq order holds all the same.)

use tokio::sync::watch;

#[derive(Debug, Default)]
pub(super) struct LockTurn {
    previous: Option<watch::Receiver<bool>>,
    mine: Option<watch::Sender<bool>>,
}

impl LockTurn {
    /// The turn after `previous` (a batch's locks-taken signal), and this turn's own signal.
    pub(super) fn after(
        previous: Option<watch::Receiver<bool>>,
    ) -> (LockTurn, watch::Receiver<bool>) {
        let (mine, locked) = watch::channel(false);
        let turn = LockTurn {
            previous,
            mine: Some(mine),
        };
        (turn, locked)
    }

    pub(super) async fn wait(&self) {
        if let Some(previous) = &self.previous {
            // a batch that ended without locking (shutdown) drops its sender: go ahead
            let _ = previous.clone().wait_for(|locked| *locked).await;
        }
    }

    pub(super) fn taken(&self) {
        if let Some(mine) = &self.mine {
            mine.send_replace(true);
        }
    }
}
