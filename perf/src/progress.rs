//! Step lines with an ETA on stderr while a run goes on.

use std::time::Instant;

#[derive(Debug)]
pub struct Progress {
    started: Instant,
    /// Estimated seconds of the families still to run.
    remaining_estimate: f64,
    /// Estimated seconds of what has finished.
    done_estimate: f64,
    step: usize,
    quiet: bool,
}

/// Remaining time: the estimate left, scaled by how far off the estimates were so far.
pub fn eta(elapsed: f64, done_estimate: f64, remaining_estimate: f64) -> f64 {
    let scale = if done_estimate > 1.0 {
        (elapsed / done_estimate).clamp(0.25, 4.0)
    } else {
        1.0
    };
    remaining_estimate * scale
}

impl Progress {
    pub fn new(total_estimate: f64, quiet: bool) -> Self {
        Progress {
            started: Instant::now(),
            remaining_estimate: total_estimate,
            done_estimate: 0.0,
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
            eta(e, self.done_estimate, self.remaining_estimate),
            self.step
        );
    }

    /// A family with estimate `est` finished.
    pub fn family_done(&mut self, est: f64) {
        self.done_estimate += est;
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
        assert_eq!(eta(0.0, 0.0, 100.0), 100.0);
        assert_eq!(eta(20.0, 10.0, 100.0), 200.0);
        assert_eq!(eta(1000.0, 10.0, 100.0), 400.0);
    }
}
