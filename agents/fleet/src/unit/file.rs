//! The text of a systemd unit file and its option list, the two forms fleet moves a unit in:
//! fleetctl reads text, the API carries `{section, name, value}` options, the agent writes
//! text for systemd, and the unit's hash is taken over the canonical text.

use std::fmt::Write as _;

use sha1::{Digest, Sha1};

use crate::model::UnitOption;

/// How many hex digits fleetctl shows of a unit hash.
pub const SHORT_HASH_LEN: usize = 7;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitFileError {
    #[error("line {line}: {name:?} is set outside of any [Section]")]
    OutsideSection { line: usize, name: String },
    #[error("line {line}: expected Name=Value or [Section], found {text:?}")]
    NotAnAssignment { line: usize, text: String },
    #[error("line {line}: an option needs a name before '='")]
    EmptyName { line: usize },
    #[error("line {line}: malformed section header {text:?}")]
    BadSectionHeader { line: usize, text: String },
}

/// A unit file as an ordered list of options. Options keep the order they were given in,
/// except that all options of one section are grouped together, sections in the order they
/// first appear: that is the order [`UnitFile::to_text`] writes, so parsing the text gives
/// back exactly [`UnitFile::options`]. A section with no options is not kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitFile {
    options: Vec<UnitOption>,
}

impl UnitFile {
    /// Parses systemd's unit syntax: `[Section]` headers, `Name=Value` with blanks around
    /// name and value trimmed, `#` and `;` comment lines, a trailing backslash continuing the
    /// value on the next line (the backslash read as a space, comment lines inside the
    /// continuation skipped, as systemd does). Repeated options and empty values are kept.
    pub fn parse(text: &str) -> Result<UnitFile, UnitFileError> {
        let mut options = Vec::new();
        let mut section: Option<String> = None;
        // An assignment being continued: its first line's number and the text so far.
        let mut pending: Option<(usize, String)> = None;

        for (index, raw) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = raw.trim();
            if let Some((start, mut joined)) = pending.take() {
                if line.starts_with('#') || line.starts_with(';') {
                    pending = Some((start, joined));
                    continue;
                }
                match line.strip_suffix('\\') {
                    Some(more) => {
                        joined.push_str(more);
                        joined.push(' ');
                        pending = Some((start, joined));
                    }
                    None => {
                        joined.push_str(line);
                        options.push(assignment(&section, start, &joined)?);
                    }
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                section = Some(section_header(line_number, line)?);
                continue;
            }
            match line.strip_suffix('\\') {
                Some(first) => pending = Some((line_number, format!("{first} "))),
                None => options.push(assignment(&section, line_number, line)?),
            }
        }
        // A continuation at the end of the file ends the value there.
        if let Some((start, joined)) = pending {
            options.push(assignment(&section, start, &joined)?);
        }
        Ok(UnitFile::from_options(&options))
    }

    /// A unit file from the API's option list, in canonical order (see [`UnitFile`]).
    pub fn from_options(options: &[UnitOption]) -> UnitFile {
        let mut sections: Vec<&str> = Vec::new();
        for option in options {
            if !sections.contains(&option.section.as_str()) {
                sections.push(&option.section);
            }
        }
        let grouped = sections
            .iter()
            .flat_map(|section| options.iter().filter(move |o| o.section == *section))
            .cloned()
            .collect();
        UnitFile { options: grouped }
    }

    /// The options, in canonical order.
    pub fn options(&self) -> Vec<UnitOption> {
        self.options.clone()
    }

    /// The options without copying them.
    pub fn iter(&self) -> impl Iterator<Item = &UnitOption> {
        self.options.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }

    /// The canonical text, as fleet serialized units: each section's header, its options one
    /// a line, a blank line between sections. This is what `fleetctl cat` prints, what the
    /// agent gives systemd, and what the hash is taken over. A value holding a newline is
    /// written as a continuation line, which systemd (and [`UnitFile::parse`]) read back as a
    /// space: such a value cannot round-trip.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let mut current: Option<&str> = None;
        for option in &self.options {
            if current != Some(option.section.as_str()) {
                if current.is_some() {
                    text.push('\n');
                }
                let _ = writeln!(text, "[{}]", option.section);
                current = Some(&option.section);
            }
            let value = option.value.replace('\n', "\\\n");
            let _ = writeln!(text, "{}={}", option.name, value);
        }
        text
    }

    /// fleet's unit hash: the SHA-1 of the canonical text, in lower-case hex.
    pub fn hash(&self) -> String {
        let digest = Sha1::digest(self.to_text().as_bytes());
        hex::encode(digest)
    }

    /// The first seven hex digits of [`UnitFile::hash`], as fleetctl shows them.
    pub fn short_hash(&self) -> String {
        let mut hash = self.hash();
        hash.truncate(SHORT_HASH_LEN);
        hash
    }

    /// Whether the unit has an `[Install]` section, so the agent enables it.
    pub fn has_install_section(&self) -> bool {
        self.options.iter().any(|o| o.section == "Install")
    }

    /// Every value of `name` in `section`, in order.
    pub fn values(&self, section: &str, name: &str) -> Vec<&str> {
        self.options
            .iter()
            .filter(|o| o.section == section && o.name == name)
            .map(|o| o.value.as_str())
            .collect()
    }

    /// The options of one section, in order.
    pub fn section(&self, section: &str) -> impl Iterator<Item = &UnitOption> {
        let section = section.to_string();
        self.options.iter().filter(move |o| o.section == section)
    }
}

fn section_header(line_number: usize, line: &str) -> Result<String, UnitFileError> {
    let bad = || UnitFileError::BadSectionHeader {
        line: line_number,
        text: line.to_string(),
    };
    let inner = line
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or_else(bad)?;
    if inner.is_empty() || inner.contains(['[', ']']) {
        return Err(bad());
    }
    Ok(inner.to_string())
}

fn assignment(
    section: &Option<String>,
    line_number: usize,
    text: &str,
) -> Result<UnitOption, UnitFileError> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(UnitFileError::NotAnAssignment {
            line: line_number,
            text: text.trim().to_string(),
        });
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(UnitFileError::EmptyName { line: line_number });
    }
    let Some(section) = section else {
        return Err(UnitFileError::OutsideSection {
            line: line_number,
            name: name.to_string(),
        });
    };
    Ok(UnitOption {
        section: section.clone(),
        name: name.to_string(),
        value: value.trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(section: &str, name: &str, value: &str) -> UnitOption {
        UnitOption {
            section: section.into(),
            name: name.into(),
            value: value.into(),
        }
    }

    const HELLO: &str = "\
# A comment before any section
[Unit]
Description = Hello World
After=docker.service
; another comment

[Service]
ExecStartPre=-/usr/bin/docker kill busybox1
ExecStartPre=-/usr/bin/docker rm busybox1
ExecStart=/usr/bin/docker run --name busybox1 busybox \\
    /bin/sh -c \"while true; do echo Hello; sleep 1; done\"
Environment=
ExecStop=/usr/bin/docker stop busybox1

[X-Fleet]
Conflicts=hello*
";

    #[test]
    fn parses_sections_options_comments_and_continuations() {
        let unit = UnitFile::parse(HELLO).unwrap();
        assert_eq!(
            unit.options(),
            vec![
                option("Unit", "Description", "Hello World"),
                option("Unit", "After", "docker.service"),
                option("Service", "ExecStartPre", "-/usr/bin/docker kill busybox1"),
                option("Service", "ExecStartPre", "-/usr/bin/docker rm busybox1"),
                option(
                    "Service",
                    "ExecStart",
                    "/usr/bin/docker run --name busybox1 busybox  /bin/sh -c \"while true; do echo Hello; sleep 1; done\""
                ),
                option("Service", "Environment", ""),
                option("Service", "ExecStop", "/usr/bin/docker stop busybox1"),
                option("X-Fleet", "Conflicts", "hello*"),
            ]
        );
        assert_eq!(unit.values("Service", "ExecStartPre").len(), 2);
        assert_eq!(unit.values("X-Fleet", "Conflicts"), vec!["hello*"]);
        assert!(unit.values("X-Fleet", "Global").is_empty());
        assert!(!unit.has_install_section());
    }

    #[test]
    fn comment_lines_inside_a_continuation_are_skipped() {
        let text = "[A]\nKey=value 3\\\n# ignored\n; ignored too\n       continued\n";
        let unit = UnitFile::parse(text).unwrap();
        assert_eq!(unit.values("A", "Key"), vec!["value 3 continued"]);
    }

    #[test]
    fn a_continuation_at_the_end_of_the_file_ends_the_value() {
        let unit = UnitFile::parse("[A]\nKey=last\\").unwrap();
        assert_eq!(unit.values("A", "Key"), vec!["last"]);
    }

    #[test]
    fn only_the_first_equals_sign_splits() {
        let unit = UnitFile::parse("[X-Fleet]\nMachineMetadata=region=us-east\n").unwrap();
        assert_eq!(
            unit.values("X-Fleet", "MachineMetadata"),
            vec!["region=us-east"]
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            UnitFile::parse("Description=x\n"),
            Err(UnitFileError::OutsideSection {
                line: 1,
                name: "Description".into()
            })
        );
        assert_eq!(
            UnitFile::parse("[Unit]\n\njust words\n"),
            Err(UnitFileError::NotAnAssignment {
                line: 3,
                text: "just words".into()
            })
        );
        assert_eq!(
            UnitFile::parse("[Unit]\n=x\n"),
            Err(UnitFileError::EmptyName { line: 2 })
        );
        assert_eq!(
            UnitFile::parse("[Unit\n"),
            Err(UnitFileError::BadSectionHeader {
                line: 1,
                text: "[Unit".into()
            })
        );
        assert!(UnitFile::parse("[]\n").is_err());
        let message = UnitFile::parse("[Unit]\nnope\n").unwrap_err().to_string();
        assert_eq!(
            message,
            "line 2: expected Name=Value or [Section], found \"nope\""
        );
        // A continued assignment is reported at its first line.
        assert_eq!(
            UnitFile::parse("[A]\nno equals \\\nhere\n"),
            Err(UnitFileError::NotAnAssignment {
                line: 2,
                text: "no equals  here".into()
            })
        );
    }

    #[test]
    fn canonical_text_and_round_trip() {
        let unit = UnitFile::parse(HELLO).unwrap();
        let text = unit.to_text();
        assert!(text
            .starts_with("[Unit]\nDescription=Hello World\nAfter=docker.service\n\n[Service]\n"));
        assert!(text.ends_with("\n\n[X-Fleet]\nConflicts=hello*\n"));
        let again = UnitFile::parse(&text).unwrap();
        assert_eq!(again.options(), unit.options());
        assert_eq!(again.to_text(), text);
        assert_eq!(again.hash(), unit.hash());
    }

    #[test]
    fn repeated_sections_are_grouped_in_order_of_first_appearance() {
        let unit = UnitFile::parse("[A]\nx=1\n[B]\ny=2\n[A]\nz=3\n").unwrap();
        assert_eq!(
            unit.options(),
            vec![
                option("A", "x", "1"),
                option("A", "z", "3"),
                option("B", "y", "2")
            ]
        );
        assert_eq!(unit.to_text(), "[A]\nx=1\nz=3\n\n[B]\ny=2\n");
        let from_options = UnitFile::from_options(&[
            option("A", "x", "1"),
            option("B", "y", "2"),
            option("A", "z", "3"),
        ]);
        assert_eq!(from_options, unit);
    }

    #[test]
    fn empty_units_have_empty_text() {
        let unit = UnitFile::parse("# nothing\n\n[Install]\n").unwrap();
        assert!(unit.is_empty());
        assert_eq!(unit.to_text(), "");
        assert!(!unit.has_install_section());
    }

    #[test]
    fn hash_is_sha1_of_the_canonical_text() {
        let unit = UnitFile::from_options(&[option("Service", "ExecStart", "/bin/true")]);
        assert_eq!(unit.to_text(), "[Service]\nExecStart=/bin/true\n");
        // sha1("[Service]\nExecStart=/bin/true\n"), computed independently.
        let expected = {
            let digest = Sha1::digest(b"[Service]\nExecStart=/bin/true\n");
            hex::encode(digest)
        };
        assert_eq!(unit.hash(), expected);
        assert_eq!(unit.hash().len(), 40);
        assert_eq!(unit.short_hash(), &expected[..7]);
        // The empty text's SHA-1 is well known.
        assert_eq!(
            UnitFile::default().hash(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        let other = UnitFile::from_options(&[option("Service", "ExecStart", "/bin/false")]);
        assert_ne!(unit.hash(), other.hash());
    }

    #[test]
    fn install_section_is_detected() {
        let unit = UnitFile::parse(
            "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        assert!(unit.has_install_section());
        assert_eq!(unit.section("Install").count(), 1);
    }

    #[test]
    fn newlines_in_values_become_continuations() {
        let unit = UnitFile::from_options(&[option("A", "Key", "one\ntwo")]);
        assert_eq!(unit.to_text(), "[A]\nKey=one\\\ntwo\n");
        assert_eq!(
            UnitFile::parse(&unit.to_text()).unwrap().values("A", "Key"),
            vec!["one two"]
        );
    }

    /// A small deterministic generator of option lists, to check the round trip over many
    /// shapes: names and values from a palette that includes blanks, '=', '#', ';' and '\'
    /// in places where the syntax keeps them.
    #[test]
    fn generated_option_lists_round_trip() {
        let sections = ["Unit", "Service", "X-Fleet", "Install"];
        let names = ["Description", "ExecStart", "Conflicts", "A-b_c.d"];
        let values = [
            "",
            "plain",
            "with spaces inside",
            "a=b=c",
            "x # not a comment",
            "semi;colon",
            "back\\slash in the middle",
            "\"quoted\" 'words'",
            "%i %n",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        for _ in 0..300 {
            let count = next(12);
            let options: Vec<UnitOption> = (0..count)
                .map(|_| {
                    option(
                        sections[next(sections.len())],
                        names[next(names.len())],
                        values[next(values.len())],
                    )
                })
                .collect();
            let unit = UnitFile::from_options(&options);
            let reparsed = UnitFile::parse(&unit.to_text()).unwrap();
            assert_eq!(reparsed.options(), unit.options(), "{}", unit.to_text());
            assert_eq!(reparsed.hash(), unit.hash());
            assert_eq!(unit.options().len(), options.len());
        }
    }
}
