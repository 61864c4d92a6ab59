//! Step display for long builds: an `indicatif` spinner or byte bar on a terminal, and one
//! log line per step everywhere (CI logs have no terminal).

use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

pub struct Steps {
    total: usize,
    done: usize,
    pub timings: Vec<(String, f64)>,
}

pub struct Step {
    name: String,
    started: Instant,
    bar: ProgressBar,
}

impl Steps {
    pub fn new(total: usize) -> Steps {
        Steps {
            total,
            done: 0,
            timings: Vec::new(),
        }
    }

    pub fn start(&mut self, name: &str) -> Step {
        self.done += 1;
        let label = format!("[{}/{}] {name}", self.done, self.total);
        tracing::info!("{label}");
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
        );
        bar.set_message(label);
        bar.enable_steady_tick(Duration::from_millis(120));
        Step {
            name: name.to_string(),
            started: Instant::now(),
            bar,
        }
    }

    pub fn finish(&mut self, step: Step, detail: &str) {
        let secs = step.started.elapsed().as_secs_f64();
        step.bar.finish_and_clear();
        tracing::info!(
            "    {} done in {secs:.1}s{}{detail}",
            step.name,
            if detail.is_empty() { "" } else { ": " }
        );
        self.timings.push((step.name, secs));
    }
}

impl Step {
    /// Switches the step's display to a byte bar of `total` bytes.
    pub fn bytes(&self, total: u64) {
        self.bar.set_length(total);
        self.bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
    }

    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }
}
