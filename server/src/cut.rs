//! The cut: what ends the answers still open when shutdown's grace period is over. Each answer
//! watches it while it waits for its upstream; once it fires, the answer ends at once with an
//! `error` event and is settled as interrupted at what it used so far, so that the final flush
//! finds its usage record (see `http::serve`).

use std::sync::Arc;

use tokio::sync::watch;

/// Fired once, by the server, when the grace period is over.
#[derive(Debug, Clone)]
pub struct Cut(Arc<watch::Sender<bool>>);

impl Cut {
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }

    /// Ends every answer that watches this cut.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    pub fn watch(&self) -> CutWatch {
        CutWatch(self.0.subscribe())
    }
}

impl Default for Cut {
    fn default() -> Self {
        Self::new()
    }
}

/// One answer's view of the [`Cut`].
#[derive(Debug, Clone)]
pub struct CutWatch(watch::Receiver<bool>);

impl CutWatch {
    /// Resolves once the cut has fired (at once if it already has).
    pub async fn fired(&mut self) {
        if self.0.wait_for(|cut| *cut).await.is_err() {
            // The server is gone without firing: nothing will cut this answer.
            std::future::pending::<()>().await;
        }
    }
}
