//! `#!` user-data and cloud-init's runcmd: written to /var/lib/keel/scripts/<hash>.sh for the
//! boot stage to run once as a transient unit; cloud-init's bootcmd: written to
//! /run/keel/scripts/<hash>.sh and run on every boot, before the others. Nothing is executed
//! here: applying works on a tree that may not be the running system. Naming a script by its
//! content's hash makes a second run find the same file, and lets the boot stage remember
//! which scripts already ran.

use super::fsutil::Attrs;
use super::Applier;
use crate::cloudconfig::model::{CloudConfig, Command, Located};
use sha2::Digest;

/// Run-once scripts, on STATE so the record that they ran survives reboots.
pub const SCRIPTS_DIR: &str = "/var/lib/keel/scripts";
/// Every-boot scripts (bootcmd), on /run: written again by each boot's stage.
pub const BOOT_SCRIPTS_DIR: &str = "/run/keel/scripts";
/// Hex digits of the SHA-256 kept in the file name: 64 bits, plenty to tell scripts apart.
const HASH_PREFIX_LEN: usize = 16;

pub fn apply_script(applier: &mut Applier, body: &[u8]) {
    write_script(applier, body, 0, When::Once);
}

/// When a script runs.
#[derive(Clone, Copy)]
enum When {
    /// Once per machine (runcmd, `#!` user-data).
    Once,
    /// On every boot (bootcmd).
    EveryBoot,
}

/// bootcmd and runcmd each become one /bin/sh script, each entry a line: a string as written,
/// a list as its words quoted for the shell (cloud-init's behaviour).
pub fn apply_commands(applier: &mut Applier, config: &CloudConfig) {
    if let Some(first) = config.bootcmd.first() {
        let body = shell_script(&config.bootcmd);
        write_script(applier, body.as_bytes(), first.line, When::EveryBoot);
    }
    if let Some(first) = config.runcmd.first() {
        let body = shell_script(&config.runcmd);
        write_script(applier, body.as_bytes(), first.line, When::Once);
    }
}

fn shell_script(commands: &[Located<Command>]) -> String {
    let mut body = String::from("#!/bin/sh\n");
    for command in commands {
        match &command.value {
            Command::Shell(text) => body.push_str(text),
            Command::Argv(words) => {
                let quoted: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
                body.push_str(&quoted.join(" "));
            }
        }
        body.push('\n');
    }
    body
}

fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn write_script(applier: &mut Applier, body: &[u8], line: usize, when: When) {
    let digest = sha2::Sha256::digest(body);
    let name: String = hex::encode(digest)[..HASH_PREFIX_LEN].to_string();
    let dir = match when {
        When::Once => SCRIPTS_DIR,
        When::EveryBoot => BOOT_SCRIPTS_DIR,
    };
    let path = format!("{dir}/{name}.sh");
    match applier.fs.write(&path, body, Attrs::root(0o700)) {
        Ok(changed) => {
            applier.outcome(changed, || format!("wrote script {path}"));
            match when {
                When::Once => applier.report.scripts.push(path),
                When::EveryBoot => applier.report.boot_scripts.push(path),
            }
        }
        Err(err) => applier.issue(line, format!("script: {err}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting() {
        assert_eq!(super::shell_quote("ls"), "ls");
        assert_eq!(super::shell_quote("a b"), "'a b'");
        assert_eq!(super::shell_quote("it's"), r"'it'\''s'");
        assert_eq!(super::shell_quote(""), "''");
    }
}
