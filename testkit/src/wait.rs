//! Polling for a positive event with a deadline: the only way the tests wait.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Polls every few milliseconds (5 ms, backing off to 50 ms) until `check` holds or `timeout`
/// passes; true if it held.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    wait_for_value(timeout, || check().then_some(())).is_some()
}

/// Like [`wait_until`], returning the first value `probe` yields.
pub fn wait_for_value<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Like [`wait_for_value`], with a timeout error naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> Result<T> {
    wait_for_value(timeout, probe).ok_or_else(|| Error::Timeout {
        what: what.to_string(),
        waited: timeout,
        detail: String::new(),
    })
}

/// The async form of [`wait_until`] for tokio tests: yields to the runtime between checks.
pub async fn wait_until_async(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if check() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// [`wait_until`], failing the calling test with `what` when `check` never holds.
pub fn assert_within(timeout: Duration, what: &str, check: impl FnMut() -> bool) {
    assert!(wait_until(timeout, check), "not within {timeout:?}: {what}");
}
