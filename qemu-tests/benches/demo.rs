//! The demo's figures: `cargo bench -p qemu-tests --bench demo` runs `make demo
//! DEMO_FAILOVER=1` from the repository's root, as a user would, and prints (TCG unless the
//! probe boot proves KVM: figures are emulated; nothing is asserted):
//!
//! - `demo.first_answer_s`: seconds from `make demo` to the application's first answer through
//!   the load balancer (the image is rebuilt by `make`, warm; the cluster boots and forms; the
//!   units start and pull their images);
//! - `demo.failover_gap_s`: the last good answer before the kill to the first good answer after;
//! - `demo.answering_again_s` and `demo.instance_moved_s`: from the kill to answers from the
//!   survivors only, and to the moved instance answering from its new machine.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use qemu_tests::workspace_root;

/// The number after `label` in `line` (`... answered again 3.2 s later ...`).
fn figure_after(line: &str, label: &str) -> Option<f64> {
    let rest = &line[line.find(label)? + label.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("demo bench: run it with `cargo bench -p qemu-tests --bench demo`");
        return Ok(());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let mut make = Command::new("make")
        .current_dir(workspace_root())
        .args(["--no-print-directory", "demo", "DEMO_FAILOVER=1"])
        .arg(format!("DEMO_PORT={port}"))
        .arg(format!("CLUSTER_DIR={}", dir.path().display()))
        .stdout(Stdio::piped())
        .spawn()
        .context("running make demo")?;
    let stdout = make.stdout.take().context("make's output")?;
    let mut first_answer = None;
    let mut failover_shown = false;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        eprintln!("{line}");
        if first_answer.is_none()
            && line.contains("the application answers through the load balancer")
        {
            first_answer = Some(started.elapsed());
        }
        // `up` prints the failover twice: as it happens and in its closing report.
        if line.starts_with("killed ") && !failover_shown {
            failover_shown = true;
            if let Some(gap) = figure_after(&line, "gap between good answers") {
                println!("demo.failover_gap_s {gap:.1}");
            }
            if let Some(again) = figure_after(&line, "answered again") {
                println!("demo.answering_again_s {again:.1}");
            }
            if let Some(moved) = figure_after(&line, "from its new machine after") {
                println!("demo.instance_moved_s {moved:.1}");
            }
        }
    }
    let status = make.wait()?;
    match first_answer {
        Some(t) => println!("demo.first_answer_s {:.1}", t.as_secs_f64()),
        None => bail!("make demo ({status}) never printed the application's first answer"),
    }
    if !status.success() {
        bail!("make demo failed: {status}");
    }
    Ok(())
}
