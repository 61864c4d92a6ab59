//! Arbitrary bytes as user-data: `parse_user_data` and `validate` must return (no panic, no
//! hang, no stack overflow), and what they return must make sense: every line they name is a
//! line of the document, `validate` is the parser's diagnostics sorted by line, and no message
//! repeats a huge piece of the input.

#![no_main]

use std::io::Read;

use flate2::read::MultiGzDecoder;
use libfuzzer_sys::fuzz_target;
use provisioner::cloudconfig::{validate, CloudConfig, Diagnostic, UserData};
use provisioner::userdata::{parse_user_data, MAX_DECOMPRESSED_SIZE};

/// Longer than any message the parser writes by itself, far shorter than the inputs it quotes.
const MAX_MESSAGE: usize = 1024;

fuzz_target!(|bytes: &[u8]| {
    let (user_data, diagnostics) = parse_user_data(bytes);
    let last_line = last_line(bytes);

    for diagnostic in &diagnostics {
        check_diagnostic(diagnostic, last_line);
    }
    check_lines(&user_data, last_line);

    // validate = the same diagnostics, stably sorted by line.
    let mut sorted = diagnostics.clone();
    sorted.sort_by_key(|diagnostic| diagnostic.line);
    assert_eq!(validate(bytes), sorted);
});

/// The highest line a diagnostic may name: one past the last line break, of the document the
/// lines count in (gzip user-data's lines are those of its decompressed text).
fn last_line(bytes: &[u8]) -> usize {
    let mut document = bytes.to_vec();
    // The parser follows at most 8 levels of gzip; one more is harmless here.
    for _ in 0..9 {
        if !document.starts_with(&[0x1f, 0x8b]) {
            break;
        }
        let mut inner = Vec::new();
        match MultiGzDecoder::new(document.as_slice())
            .take(MAX_DECOMPRESSED_SIZE + 1)
            .read_to_end(&mut inner)
        {
            Ok(_) if inner.len() as u64 <= MAX_DECOMPRESSED_SIZE => document = inner,
            // Invalid or too big: reported at line 1.
            _ => break,
        }
    }
    1 + document.iter().filter(|&&b| b == b'\n').count()
}

fn check_diagnostic(diagnostic: &Diagnostic, last_line: usize) {
    assert!(
        (1..=last_line).contains(&diagnostic.line),
        "line {} outside 1..={last_line}: {diagnostic}",
        diagnostic.line
    );
    assert!(
        diagnostic.message.len() <= MAX_MESSAGE,
        "{}-byte message: {:.200}...",
        diagnostic.message.len(),
        diagnostic.message
    );
    assert!(!diagnostic.message.is_empty());
}

/// Every item of the model keeps a line of the document (0 is only for metadata).
fn check_lines(user_data: &UserData, last_line: usize) {
    match user_data {
        UserData::CloudConfig(config) => check_config(config, last_line),
        UserData::Multipart(parts) => {
            for part in parts {
                check_lines(part, last_line);
            }
        }
        UserData::Script(_) | UserData::Empty => {}
    }
}

fn check_config(config: &CloudConfig, last_line: usize) {
    let coreos = &config.coreos;
    let lines = config
        .hostname
        .iter()
        .map(|h| h.line)
        .chain(config.manage_etc_hosts.iter().map(|m| m.line))
        .chain(config.users.iter().map(|u| u.line))
        .chain(config.write_files.iter().map(|f| f.line))
        .chain(config.runcmd.iter().map(|c| c.line))
        .chain(config.bootcmd.iter().map(|c| c.line))
        .chain(
            [
                &coreos.etcd,
                &coreos.etcd2,
                &coreos.fleet,
                &coreos.flannel,
                &coreos.locksmith,
            ]
            .into_iter()
            .flatten()
            .map(|option| option.line),
        )
        .chain(coreos.update.iter().map(|u| u.line))
        .chain(coreos.oem.iter().map(|o| o.line))
        .chain(coreos.units.iter().map(|u| u.line))
        .chain(
            coreos
                .units
                .iter()
                .flat_map(|u| &u.drop_ins)
                .map(|d| d.line),
        );
    for line in lines {
        assert!(
            (1..=last_line).contains(&line),
            "model line {line} outside 1..={last_line}"
        );
    }
}
