//! One line per boot step on the console, prefixed `keel-init: `.

use std::io::Write;

/// The prefix every line carries; boot tests look for it.
pub const PREFIX: &str = "keel-init: ";

/// Seconds since boot, from the clock the kernel log uses, so lines can be lined up with
/// kernel messages. Needs no /proc, which moves around during boot.
fn seconds_since_boot() -> Option<f64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    (ret == 0).then(|| now.tv_sec as f64 + now.tv_nsec as f64 / 1e9)
}

/// Writes one line. Errors are ignored: PID 1 has nowhere else to report them, and a
/// panicking `println!` would kill it.
fn write_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// Prints a progress line: `keel-init: <message> (<uptime>s)`.
pub fn say(message: &str) {
    match seconds_since_boot() {
        Some(t) => write_line(&format!("{PREFIX}{message} ({t:.3}s)\n")),
        None => write_line(&format!("{PREFIX}{message}\n")),
    }
}

/// Prints the fatal line: `keel-init: FATAL: <step>: <detail>`.
pub fn fatal(message: &str) {
    write_line(&format!("{PREFIX}FATAL: {message}\n"));
}

/// Makes sure fds 0, 1 and 2 are the console. The kernel opens /dev/console for init only
/// when the initramfs has that node; without it our lines would go nowhere. In that case
/// mount devtmpfs early (the mount step then finds it mounted) and open the console there.
pub fn ensure_console() {
    // SAFETY: F_GETFD only queries the descriptor.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } != -1 {
        return;
    }
    let _ = std::fs::create_dir_all("/dev");
    let _ = crate::init::mounts::mount_if_unmounted(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        0,
        Some("mode=0755"),
    );
    // SAFETY: plain open/dup2 on C strings we own.
    unsafe {
        let fd = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if fd >= 0 {
            for target in 0..3 {
                if fd != target {
                    libc::dup2(fd, target);
                }
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}
