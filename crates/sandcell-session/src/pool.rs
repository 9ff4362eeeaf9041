//! Sessions forked, sandboxed and ready before anyone asks for them, so that creating a
//! session never waits for a fork. A background task keeps the pool full.

use crate::error::SessionError;
use crate::limits::Limits;
use crate::session::{Session, SessionConfig, SessionFactory};
use sandcell_netproxy::NetPolicy;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

/// After a failed refill, wait this long before trying again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

pub(crate) struct Pool {
    /// The limits pooled sessions are created with; only requests for exactly these
    /// limits (and no particular directory) are served from the pool.
    pub(crate) limits: Limits,
    ready: Mutex<mpsc::Receiver<Result<Session, SessionError>>>,
    refill: tokio::task::JoinHandle<()>,
}

impl Pool {
    pub(crate) fn start(factory: Arc<SessionFactory>, size: usize, limits: Limits) -> Self {
        // The channel's capacity is the pool: the refill task waits while it is full.
        let (sender, ready) = mpsc::channel(size.max(1));
        let refill_limits = limits.clone();
        let refill = tokio::spawn(async move {
            loop {
                let config = SessionConfig {
                    workdir: None,
                    limits: refill_limits.clone(),
                    network: NetPolicy::None,
                    environment: None,
                };
                let session = factory.create(config).await;
                let failed = session.is_err();
                if sender.send(session).await.is_err() {
                    return; // the runtime is gone
                }
                if failed {
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        });
        Self {
            limits,
            ready: Mutex::new(ready),
            refill,
        }
    }

    /// A ready session, waiting for the refill task if the pool is momentarily empty.
    pub(crate) async fn take(&self) -> Result<Session, SessionError> {
        match self.ready.lock().await.recv().await {
            Some(session) => session,
            None => Err(SessionError::Closed),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.refill.abort();
    }
}
