//! The guest's serial console as QEMU prints it on stdout: split into lines, cleared of terminal
//! escape sequences, timestamped relative to QEMU's start, mirrored to `serial.log`, and kept in
//! memory so that tests can wait for a line and later look back over everything printed.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many trailing lines an error message quotes: enough to see where a boot stopped
/// without burying the message.
pub const TAIL_LINES: usize = 30;

/// One line of console output and when it arrived, measured from QEMU's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialLine {
    pub at: Duration,
    pub text: String,
}

/// A line that matched a wait, with its position so callers can continue after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialMatch {
    pub index: usize,
    pub text: String,
    pub at: Duration,
}

/// Why a wait ended without a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFailure {
    TimedOut,
    /// QEMU closed its stdout (it exited), so no further line can come.
    Closed,
}

#[derive(Default)]
struct State {
    lines: Vec<SerialLine>,
    closed: bool,
}

/// Lines shared between the reader thread and the waiters.
#[derive(Default)]
pub struct SerialBuffer {
    state: Mutex<State>,
    grew: Condvar,
}

impl SerialBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking reader must not take every later wait down with it: the data is still
        // a plain list of lines, valid as it stands.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, line: SerialLine) {
        self.lock().lines.push(line);
        self.grew.notify_all();
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.grew.notify_all();
    }

    /// A new QEMU process (after a reboot) writes to the buffer again.
    pub fn reopen(&self) {
        self.lock().closed = false;
    }

    #[cfg(test)]
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    pub fn lines(&self) -> Vec<SerialLine> {
        self.lock().lines.clone()
    }

    /// The last `n` lines joined with newlines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let state = self.lock();
        let start = state.lines.len().saturating_sub(n);
        state.lines[start..]
            .iter()
            .map(|l| format!("[{:7.2}] {}", l.at.as_secs_f64(), l.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Finds the first line at or after `from` containing `needle`, waiting up to `timeout`
    /// for it to arrive.
    #[cfg(test)]
    pub fn wait_for(
        &self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<SerialMatch, WaitFailure> {
        self.wait_for_any(from, &[needle], timeout)
    }

    /// Like `wait_for`, but any of `needles` ends the wait: a test can wait for success and
    /// for the known signs of failure at once instead of sitting out the whole timeout.
    pub fn wait_for_any(
        &self,
        from: usize,
        needles: &[&str],
        timeout: Duration,
    ) -> Result<SerialMatch, WaitFailure> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        let mut scanned = from;
        loop {
            // Only lines not looked at yet are scanned, so long boots do not go quadratic.
            while scanned < state.lines.len() {
                let line = &state.lines[scanned];
                if needles.iter().any(|n| line.text.contains(n)) {
                    return Ok(SerialMatch {
                        index: scanned,
                        text: line.text.clone(),
                        at: line.at,
                    });
                }
                scanned += 1;
            }
            if state.closed {
                return Err(WaitFailure::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitFailure::TimedOut);
            }
            state = self
                .grew
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Turns a raw console byte stream into lines. Console output is not guaranteed to be UTF-8
/// (firmware, half-written escape sequences), so bytes are decoded lossily, and the `\r` of the
/// serial line discipline is dropped.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(String)) {
        for &b in bytes {
            if b == b'\n' {
                emit(Self::decode(&self.pending));
                self.pending.clear();
            } else {
                self.pending.push(b);
            }
        }
    }

    /// Emits what is left without a newline (a login prompt, the last words before a crash).
    pub fn finish(&mut self, mut emit: impl FnMut(String)) {
        if !self.pending.is_empty() {
            emit(Self::decode(&self.pending));
            self.pending.clear();
        }
    }

    fn decode(bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes);
        strip_escapes(&text).replace('\r', "")
    }
}

/// Removes terminal escape sequences. systemd colours the unit name inside its status lines
/// ("Reached target ESC[0;1;39mmulti-user.target ESC[0m"), and the firmware clears the screen,
/// so without this a plain substring would not match what a person reads on the console.
pub fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters and intermediates, then one final byte in @..~.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ESC \.
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' {
                        chars.next_if_eq(&'\\');
                        break;
                    }
                }
            }
            // Two-byte sequences (ESC c, ESC 7, charset selections' first byte).
            _ => {}
        }
    }
    out
}

/// Body of the reader thread: reads until EOF, timestamps each line, mirrors it to `log`.
pub fn pump(mut source: impl Read, buffer: &SerialBuffer, started: Instant, log: Option<File>) {
    let mut log = log.map(BufWriter::new);
    let mut splitter = LineSplitter::default();
    let mut chunk = [0u8; 4096];
    let mut record = |text: String| {
        if let Some(log) = log.as_mut() {
            // The log is a convenience copy; a full disk must not stop the console reader,
            // which the VM's waits depend on.
            let _ = writeln!(log, "{text}");
            let _ = log.flush();
        }
        buffer.push(SerialLine {
            at: started.elapsed(),
            text,
        });
    };
    loop {
        match source.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => splitter.feed(&chunk[..n], &mut record),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    splitter.finish(&mut record);
    buffer.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn line(text: &str) -> SerialLine {
        SerialLine {
            at: Duration::from_millis(1),
            text: text.to_string(),
        }
    }

    #[test]
    fn splitter_handles_crlf_partial_chunks_and_bad_utf8() {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        s.feed(b"keel-init: sta", |l| out.push(l));
        s.feed(b"rting\r\n\xffok\r\nlogin: ", |l| out.push(l));
        s.finish(|l| out.push(l));
        assert_eq!(out, vec!["keel-init: starting", "\u{fffd}ok", "login: "]);
    }

    #[test]
    fn escape_sequences_are_stripped() {
        assert_eq!(
            strip_escapes(
                "[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mmulti-user.target\x1b[0m - Multi-User System."
            ),
            "[  OK  ] Reached target multi-user.target - Multi-User System."
        );
        assert_eq!(
            strip_escapes("\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: x\x1b]0;title\x07!"),
            "BdsDxe: x!"
        );
        assert_eq!(strip_escapes("cut off \x1b[0;1"), "cut off ");
    }

    #[test]
    fn wait_starts_at_cursor_so_a_second_boot_can_be_awaited() {
        let buf = SerialBuffer::new();
        buf.push(line("Reached target multi-user.target"));
        buf.push(line("reboot"));
        buf.push(line("Reached target multi-user.target again"));
        let first = buf.wait_for(0, "multi-user", Duration::ZERO).unwrap();
        assert_eq!(first.index, 0);
        let second = buf
            .wait_for(first.index + 1, "multi-user", Duration::ZERO)
            .unwrap();
        assert_eq!(second.index, 2);
        assert_eq!(second.text, "Reached target multi-user.target again");
        assert_eq!(
            buf.wait_for(3, "multi-user", Duration::from_millis(20)),
            Err(WaitFailure::TimedOut)
        );
    }

    #[test]
    fn wait_wakes_up_for_a_line_pushed_later() {
        let buf = Arc::new(SerialBuffer::new());
        let writer = Arc::clone(&buf);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.push(line("noise"));
            writer.push(line("keel-init: starting"));
        });
        let m = buf
            .wait_for(0, "keel-init:", Duration::from_secs(10))
            .unwrap();
        assert_eq!(m.index, 1);
        t.join().unwrap();
    }

    #[test]
    fn wait_for_any_stops_at_the_first_of_several_needles() {
        let buf = SerialBuffer::new();
        buf.push(line("keel-init: starting"));
        buf.push(line("keel-init: FATAL: verity: hash mismatch"));
        buf.push(line("Reached target multi-user.target"));
        let m = buf
            .wait_for_any(0, &["multi-user.target", "FATAL"], Duration::ZERO)
            .unwrap();
        assert_eq!(m.index, 1);
    }

    #[test]
    fn wait_fails_fast_when_the_console_closed() {
        let buf = SerialBuffer::new();
        buf.push(line("bye"));
        buf.close();
        let started = Instant::now();
        assert_eq!(
            buf.wait_for(0, "never", Duration::from_secs(30)),
            Err(WaitFailure::Closed)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let buf = SerialBuffer::new();
        for i in 0..40 {
            buf.push(line(&format!("line {i}")));
        }
        let tail = buf.tail(TAIL_LINES);
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(tail.ends_with("line 39"));
        assert!(!tail.contains("line 9\n"));
    }

    #[test]
    fn pump_records_lines_to_buffer_and_log() {
        let dir = std::env::temp_dir().join(format!("keel-serial-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("serial.log");
        let buf = SerialBuffer::new();
        let src: &[u8] = b"a\r\nb\nc";
        pump(
            src,
            &buf,
            Instant::now(),
            Some(File::create(&path).unwrap()),
        );
        let texts: Vec<_> = buf.lines().into_iter().map(|l| l.text).collect();
        assert_eq!(texts, vec!["a", "b", "c"]);
        assert!(buf.is_closed());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\nc\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
