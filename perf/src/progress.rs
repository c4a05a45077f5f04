//! Step lines with an ETA on stderr while a run goes on.

use std::time::Instant;

#[derive(Debug)]
pub struct Progress {
    started: Instant,
    /// Estimated seconds of the families still to run.
    remaining_estimate: f64,
    /// Estimated seconds of what has finished.
    done_estimate: f64,
    /// Elapsed seconds when the last family finished.
    done_elapsed: f64,
    step: usize,
    quiet: bool,
}

/// Remaining time: the estimate of the unfinished families, scaled by how far off the
/// estimates of the finished ones were, minus the time already spent in the current family.
pub fn eta(done_elapsed: f64, done_estimate: f64, remaining_estimate: f64, in_family: f64) -> f64 {
    let scale = if done_estimate > 1.0 {
        (done_elapsed / done_estimate).clamp(0.25, 4.0)
    } else {
        1.0
    };
    (remaining_estimate * scale - in_family).max(0.0)
}

impl Progress {
    pub fn new(total_estimate: f64, quiet: bool) -> Self {
        Progress {
            started: Instant::now(),
            remaining_estimate: total_estimate,
            done_estimate: 0.0,
            done_elapsed: 0.0,
            step: 0,
            quiet,
        }
    }

    /// A line for one step inside a family.
    pub fn step(&mut self, what: &str) {
        self.step += 1;
        if self.quiet {
            return;
        }
        let e = self.started.elapsed().as_secs_f64();
        eprintln!(
            "[{:>6.1} s | ETA ~{:>4.0} s] {:>3}. {what}",
            e,
            eta(
                self.done_elapsed,
                self.done_estimate,
                self.remaining_estimate,
                e - self.done_elapsed
            ),
            self.step
        );
    }

    /// A family with estimate `est` finished.
    pub fn family_done(&mut self, est: f64) {
        self.done_estimate += est;
        self.done_elapsed = self.started.elapsed().as_secs_f64();
        self.remaining_estimate = (self.remaining_estimate - est).max(0.0);
    }

    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::eta;

    #[test]
    fn eta_scales_with_observed_speed() {
        assert_eq!(eta(0.0, 0.0, 100.0, 0.0), 100.0);
        assert_eq!(eta(20.0, 10.0, 100.0, 0.0), 200.0);
        assert_eq!(eta(1000.0, 10.0, 100.0, 0.0), 400.0);
        assert_eq!(eta(20.0, 10.0, 100.0, 50.0), 150.0);
        assert_eq!(eta(10.0, 10.0, 10.0, 50.0), 0.0);
    }
}
