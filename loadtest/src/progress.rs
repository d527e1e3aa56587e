//! Live progress on stderr while the replay runs (indicatif): applications accepted out of the
//! plan, with the crowd's state and the system's queue length beside it. Hidden when stderr is not
//! a terminal, so logs and CI output stay clean.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::metrics::Snapshot;
use crate::visitor::Live;

/// A progress bar over `total` applications, or a hidden one.
pub fn bar(total: u64, enabled: bool) -> ProgressBar {
    let target = if enabled && std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let pb = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} accepted {msg}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Refreshes `pb` from the counters until it is finished.
pub async fn drive(pb: ProgressBar, live: Arc<Live>, snapshots: Arc<Mutex<Vec<Snapshot>>>) {
    while !pb.is_finished() {
        let queue = snapshots.lock().unwrap_or_else(|e| e.into_inner()).last().and_then(|s| s.queue_length);
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        pb.set_position(get(&live.accepted));
        pb.set_message(format!(
            "| settled {} | joined {} waiting {} admitted {} abandoned {} | queue {} | refused {} gave up {}",
            get(&live.settled),
            get(&live.joined),
            get(&live.waiting),
            get(&live.admitted),
            get(&live.abandoned),
            queue.map_or("?".into(), |q| format!("{q:.0}")),
            get(&live.refused),
            get(&live.gave_up),
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
