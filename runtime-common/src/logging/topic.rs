//! `log_dest topic`: log lines published by the broker under
//! `$SYS/broker/log/`, as Mosquitto publishes them: `E` for errors, `W`
//! for warnings, `N` for notices (Culex's info lines), `M/subscribe` and
//! `M/unsubscribe` for the lines of those log types, QoS 2, not retained;
//! debug lines are not published.
//!
//! A line can be logged anywhere, the broker task included, so it is not
//! published where it is logged: it waits here (at most [`MAX_WAITING`]
//! lines; more are dropped) and the broker task publishes what waits at
//! each turn ([`take`]), woken by the runtime's nudge ([`on_lines`]).
//! Lines logged while the broker task publishes them are not published:
//! each would log more.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use culex_core::log_type;
use tracing::Level;

/// Lines waiting for the broker task, at most.
pub const MAX_WAITING: usize = 1000;

/// A wake-up for the broker task.
pub type Nudge = Arc<dyn Fn() + Send + Sync>;

/// The lines waiting, and how to wake the broker task.
struct Waiting {
    lines: Mutex<VecDeque<(&'static str, String)>>,
    nudge: Mutex<Option<Nudge>>,
}

/// Set once by [`enable`]: without `log_dest topic` nothing waits.
static WAITING: OnceLock<Waiting> = OnceLock::new();

thread_local! {
    /// The broker task is publishing log lines on this thread.
    static PUBLISHING: Cell<bool> = const { Cell::new(false) };
}

/// Mosquitto's topic for a line of `level` logged for `target`; `None`
/// for debug lines.
pub fn topic(level: Level, target: &str) -> Option<&'static str> {
    match (target, level) {
        (log_type::SUBSCRIBE, _) => Some("$SYS/broker/log/M/subscribe"),
        (log_type::UNSUBSCRIBE, _) => Some("$SYS/broker/log/M/unsubscribe"),
        (_, level) => by_level(level),
    }
}

fn by_level(level: Level) -> Option<&'static str> {
    match level {
        Level::ERROR => Some("$SYS/broker/log/E"),
        Level::WARN => Some("$SYS/broker/log/W"),
        Level::INFO => Some("$SYS/broker/log/N"),
        Level::DEBUG | Level::TRACE => None,
    }
}

/// Starts keeping lines for the broker task (`log_dest topic`).
pub(super) fn enable() {
    let _ = WAITING.get_or_init(|| Waiting { lines: Mutex::new(VecDeque::new()), nudge: Mutex::new(None) });
}

/// Whether `log_dest topic` is on.
pub fn enabled() -> bool {
    WAITING.get().is_some()
}

/// Keeps `line` for the broker task, to be published on `topic`, and
/// nudges the task if it was not already told.
pub(super) fn push(topic: Option<&'static str>, line: &str) {
    let (Some(waiting), Some(topic)) = (WAITING.get(), topic) else { return };
    if PUBLISHING.get() {
        return;
    }
    let was_empty = {
        let Ok(mut lines) = waiting.lines.lock() else { return };
        if lines.len() >= MAX_WAITING {
            return;
        }
        lines.push_back((topic, line.to_owned()));
        lines.len() == 1
    };
    if was_empty {
        let nudge = waiting.nudge.lock().ok().and_then(|n| n.clone());
        if let Some(nudge) = nudge {
            nudge();
        }
    }
}

/// How the runtime wakes the broker task when lines start waiting.
pub fn on_lines(nudge: Nudge) {
    if let Some(waiting) = WAITING.get()
        && let Ok(mut slot) = waiting.nudge.lock()
    {
        *slot = Some(nudge);
    }
}

/// The lines waiting, oldest first, with their topics.
pub fn take() -> Vec<(&'static str, String)> {
    let Some(waiting) = WAITING.get() else { return Vec::new() };
    waiting.lines.lock().map(|mut lines| lines.drain(..).collect()).unwrap_or_default()
}

/// Runs `publish` with the lines it logs kept out of the topics.
pub fn publishing<R>(publish: impl FnOnce() -> R) -> R {
    PUBLISHING.set(true);
    let result = publish();
    PUBLISHING.set(false);
    result
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// One test: the queue is global to the process.
    #[test]
    fn lines_wait_for_the_broker_task_which_is_nudged_once() {
        enable();
        let nudges = Arc::new(AtomicUsize::new(0));
        let counted = nudges.clone();
        on_lines(Arc::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        }));
        let at = |level| topic(level, "culex_core::broker");
        push(at(Level::INFO), "1: New client connected");
        push(at(Level::ERROR), "1: Error");
        push(at(Level::DEBUG), "1: not published");
        publishing(|| push(at(Level::WARN), "1: logged while publishing"));
        assert_eq!(nudges.load(Ordering::Relaxed), 1);
        assert_eq!(
            take(),
            [("$SYS/broker/log/N", "1: New client connected".to_owned()), ("$SYS/broker/log/E", "1: Error".to_owned())]
        );
        for n in 0..MAX_WAITING + 10 {
            push(at(Level::WARN), &n.to_string());
        }
        assert_eq!(nudges.load(Ordering::Relaxed), 2);
        let kept = take();
        assert_eq!(kept.len(), MAX_WAITING);
        assert_eq!(kept[0], ("$SYS/broker/log/W", "0".to_owned()));
    }

    #[test]
    fn subscribe_lines_have_topics_of_their_own() {
        assert_eq!(topic(Level::INFO, log_type::SUBSCRIBE), Some("$SYS/broker/log/M/subscribe"));
        assert_eq!(topic(Level::INFO, log_type::UNSUBSCRIBE), Some("$SYS/broker/log/M/unsubscribe"));
        assert_eq!(topic(Level::INFO, "culex_core::broker"), Some("$SYS/broker/log/N"));
    }
}
