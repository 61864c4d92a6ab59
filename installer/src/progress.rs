//! Byte progress bars on stderr, only when stderr is a terminal: logs and the step lines stay
//! clean when the installer runs unattended (from a cloud-config, under a test, in CI).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `total` bytes (a spinner with a byte count when the total is unknown, 0).
pub(crate) fn bytes_bar(total: u64, label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = if total == 0 {
        ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg} {bytes} {bytes_per_sec} {elapsed}")
                .expect("valid template"),
        )
    } else {
        ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        )
    };
    bar.with_message(label.to_owned())
}
