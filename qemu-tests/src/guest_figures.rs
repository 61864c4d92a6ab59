//! Reading figures out of a guest: keel-init's console lines and `systemctl show`, and putting
//! the guest's clock on QEMU's (for the provisioning benchmark).

use keel_image::vm::SerialLine;

use crate::INIT_PREFIX;

/// What keel-init's provisioning line ends with: the local stage's CPU time.
pub const KEEL_INIT_CPU: &str = "CPU time ";

/// Where the guest's clock started, in seconds from QEMU's start: keel-init's lines end with
/// the guest's uptime, and the line that reached the host fastest says it best. Add it to a
/// guest monotonic timestamp (systemd's `*TimestampMonotonic`) to count from QEMU's start.
pub fn guest_boot_offset(lines: &[SerialLine]) -> Option<f64> {
    lines
        .iter()
        .filter(|l| l.text.contains(INIT_PREFIX))
        .filter_map(|l| Some(l.at.as_secs_f64() - uptime_suffix(&l.text)?))
        .min_by(f64::total_cmp)
}

/// The `(12.345s)` keel-init puts at the end of its lines: seconds since the guest booted.
pub fn uptime_suffix(text: &str) -> Option<f64> {
    let inner = text.trim_end().strip_suffix("s)")?;
    let start = inner.rfind('(')?;
    inner[start + 1..].parse().ok()
}

/// The seconds after `CPU time ` in keel-init's provisioning line.
pub fn keel_init_cpu(text: &str) -> Option<f64> {
    let rest = &text[text.find(KEEL_INIT_CPU)? + KEEL_INIT_CPU.len()..];
    let number: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number.parse().ok()
}

/// One unit's figures from `systemctl show`.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitFigures {
    pub name: String,
    /// When the main process exited, in seconds of the guest's monotonic clock.
    pub exit_monotonic: Option<f64>,
    /// `CPUUsageNSec` in seconds.
    pub cpu: Option<f64>,
}

/// A shell line for the guest printing `Unit=<name>` and then the properties
/// [`parse_unit_figures`] reads, for each unit.
pub fn unit_figures_command(units: &[&str]) -> String {
    format!(
        "for u in {}; do echo \"Unit=$u\"; systemctl show -p ExecMainExitTimestampMonotonic -p CPUUsageNSec \"$u\"; done",
        units.join(" ")
    )
}

/// Parses what [`unit_figures_command`] printed.
pub fn parse_unit_figures(text: &str) -> Vec<UnitFigures> {
    let mut out: Vec<UnitFigures> = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        // systemd says `[not set]` without accounting, and 0 for a timestamp that never was.
        let number = value.parse::<u64>().ok().filter(|&n| n > 0);
        match (key, out.last_mut()) {
            ("Unit", _) => out.push(UnitFigures {
                name: value.to_string(),
                exit_monotonic: None,
                cpu: None,
            }),
            ("ExecMainExitTimestampMonotonic", Some(u)) => {
                u.exit_monotonic = number.map(|us| us as f64 / 1e6)
            }
            ("CPUUsageNSec", Some(u)) => u.cpu = number.map(|ns| ns as f64 / 1e9),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reads_keel_init_lines() {
        let line = "keel-init: provisioning: local stage: applied config from nocloud: 5 changes, 0 errors (details in /run/keel/provision.json), CPU time 0.034s (9.876s)";
        assert_eq!(uptime_suffix(line), Some(9.876));
        assert_eq!(keel_init_cpu(line), Some(0.034));
        assert_eq!(keel_init_cpu("keel-init: provisioning: off (1.000s)"), None);
        assert_eq!(uptime_suffix("keel-init: FATAL: no root"), None);
    }

    #[test]
    fn boot_offset_takes_the_least_delayed_line() {
        let line = |at: f64, text: &str| SerialLine {
            at: Duration::from_secs_f64(at),
            text: text.into(),
        };
        let lines = [
            line(1.0, "BdsDxe: loading Boot0001"),
            line(6.5, "keel-init: starting (keel-init 0.1.0) (1.000s)"),
            line(6.2, "keel-init: mounted /proc /sys /dev /run (1.100s)"),
            line(9.0, "Welcome (2.0s)"),
        ];
        let offset = guest_boot_offset(&lines).unwrap();
        assert!((offset - 5.1).abs() < 1e-9, "{offset}");
        assert_eq!(guest_boot_offset(&lines[..1]), None);
    }

    #[test]
    fn reads_systemctl_show() {
        assert!(unit_figures_command(&["a.service", "b.service"]).contains("a.service b.service"));
        let units = parse_unit_figures(
            "Unit=a.service\nExecMainExitTimestampMonotonic=12500000\nCPUUsageNSec=250000000\nUnit=b.service\nExecMainExitTimestampMonotonic=0\nCPUUsageNSec=[not set]\n",
        );
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].name, "a.service");
        assert_eq!(units[0].exit_monotonic, Some(12.5));
        assert_eq!(units[0].cpu, Some(0.25));
        assert_eq!(units[1].exit_monotonic, None);
        assert_eq!(units[1].cpu, None);
    }
}
