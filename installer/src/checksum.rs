//! SHA256SUMS in `sha256sum` format: `<64 hex digits>  <name>` (or ` *<name>` for binary
//! mode), one file a line, as `keel build` and coreutils write it.

/// The expected sha256 (lower-case hex) of `name`, if SHA256SUMS lists it. Entries are matched
/// on their last path component, so `./keel.raw` and `out/keel.raw` both name `keel.raw`.
pub(crate) fn lookup(sums: &str, name: &str) -> Option<String> {
    sums.lines().find_map(|line| {
        let (hash, listed) = parse_line(line)?;
        let listed_name = listed.rsplit('/').next().unwrap_or(listed);
        (listed_name == name).then(|| hash.to_ascii_lowercase())
    })
}

fn parse_line(line: &str) -> Option<(&str, &str)> {
    let line = line.trim_end_matches('\r');
    let (hash, rest) = line.split_once(' ')?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Text mode puts a second space before the name, binary mode a '*'.
    let name = rest
        .strip_prefix(' ')
        .or_else(|| rest.strip_prefix('*'))
        .unwrap_or(rest);
    (!name.is_empty()).then_some((hash, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "f764a52e48ac4cc059c7eccd6a9fd33b0d5e4a26d94b006b400606cafa048006";
    const B: &str = "334B03BC4ADA527976D45FE22F02A80D9F6163EAA24D1C131593933C19B2E269";

    #[test]
    fn finds_entries_in_both_modes_and_any_folder() {
        let sums = format!("{A}  keel.raw\r\n{B} *out/keel.raw.gz\n# comment\n\n");
        assert_eq!(lookup(&sums, "keel.raw").as_deref(), Some(A));
        assert_eq!(
            lookup(&sums, "keel.raw.gz"),
            Some(B.to_ascii_lowercase()),
            "upper-case hex is accepted"
        );
        assert_eq!(lookup(&sums, "keel.qcow2"), None);
        assert_eq!(lookup(&sums, "raw"), None, "no suffix matches");
    }

    #[test]
    fn ignores_malformed_lines() {
        let sums = format!("abc  keel.raw\n{A}\n{}  keel.raw\n", &A[1..]);
        assert_eq!(lookup(&sums, "keel.raw"), None);
    }
}
