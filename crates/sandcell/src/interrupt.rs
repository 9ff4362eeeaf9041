//! Ctrl-C in the commands that run code: the first one stops what is running (the
//! session and its state stay); a second one within two seconds ends sandcell.

use std::time::{Duration, Instant};

/// Calls `on_interrupt` at each Ctrl-C, and exits with status 130 at a second Ctrl-C
/// that follows the first within two seconds.
pub fn on_ctrl_c(on_interrupt: impl Fn() + Send + 'static) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<Instant> = None;
        while tokio::signal::ctrl_c().await.is_ok() {
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(2)) {
                eprintln!("sandcell: stopped");
                std::process::exit(130);
            }
            last = Some(Instant::now());
            on_interrupt();
        }
    })
}
