//! Talking to the guest through the host's OpenSSH client.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::VmError;

/// Options for a throwaway guest: its host key changes with every image, so it is neither
/// checked nor remembered, and BatchMode makes a missing key fail instead of prompting.
pub fn options(key: Option<&Path>, port: u16, user: &str) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(key) = key {
        args.push("-i".to_string());
        args.push(key.display().to_string());
        // Only this key: an agent offering many keys can exhaust the server's MaxAuthTries.
        args.push("-o".to_string());
        args.push("IdentitiesOnly=yes".to_string());
    }
    args.push("-p".to_string());
    args.push(port.to_string());
    for opt in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "ConnectTimeout=5",
        "BatchMode=yes",
        "LogLevel=ERROR",
        // TCG guests can stall for seconds; these only end sessions that are really gone.
        "ServerAliveInterval=10",
        "ServerAliveCountMax=6",
    ] {
        args.push("-o".to_string());
        args.push(opt.to_string());
    }
    args.push(format!("{user}@127.0.0.1"));
    args
}

pub fn login_line(key: Option<&Path>, port: u16) -> String {
    let mut line = String::from("ssh");
    for arg in options(key, port, "root") {
        line.push(' ');
        line.push_str(&shell_quote(&arg));
    }
    line
}

fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=@:,+".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// ssh ignores private keys that others can read; the build's key may come with any mode, so
/// the VM uses its own 0600 copy.
pub fn private_copy_of_key(key: &Path, work_dir: &Path) -> Result<PathBuf, VmError> {
    use std::os::unix::fs::PermissionsExt;
    if !key.is_file() {
        return Err(VmError::KeyNotFound(key.to_path_buf()));
    }
    let copy = work_dir.join("ssh_key");
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(key, &copy).map_err(|e| VmError::io(format!("copying {}", key.display()), e))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| VmError::io(format!("chmod {}", copy.display()), e))?;
    Ok(copy)
}

pub enum RunError {
    Io(std::io::Error),
    TimedOut,
}

/// Runs `cmd` to completion, collecting its output, unless it takes longer than `timeout`, in
/// which case it is killed.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output, RunError> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RunError::Io)?;
    // Both pipes are drained on their own threads so a chatty command cannot block on a full
    // pipe while we poll for its exit.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(RunError::Io)? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunError::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_key_port_and_batch_mode() {
        let args = options(Some(Path::new("/k/id")), 2222, "root");
        let joined = args.join(" ");
        assert!(joined.starts_with("-i /k/id -o IdentitiesOnly=yes -p 2222 "));
        for needed in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "ConnectTimeout=5",
            "BatchMode=yes",
            "LogLevel=ERROR",
        ] {
            assert!(joined.contains(needed), "{needed} missing from {joined}");
        }
        assert_eq!(args.last().unwrap(), "root@127.0.0.1");
    }

    #[test]
    fn login_line_quotes_odd_paths() {
        let line = login_line(Some(Path::new("/tmp/my key")), 1);
        assert!(line.starts_with("ssh -i '/tmp/my key' "), "{line}");
    }

    #[test]
    fn run_with_timeout_collects_output_and_kills_slow_commands() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = run_with_timeout(cmd, Duration::from_secs(10)).ok().unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));

        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let started = Instant::now();
        assert!(matches!(
            run_with_timeout(cmd, Duration::from_millis(200)),
            Err(RunError::TimedOut)
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
