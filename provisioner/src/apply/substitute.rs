//! `$private_ipv4`, `$public_ipv4`, `$private_ipv6` and `$public_ipv6`, replaced as
//! coreos-cloudinit replaces them: a variable the metadata does not know becomes the empty
//! string, and `\$private_ipv4` (a backslash right before one of these four names) stands for
//! the name itself. Any other `\$` is left exactly as written, because it usually belongs to a
//! shell script inside the config.

use crate::cloudconfig::model::Metadata;

pub fn substitute(text: &str, metadata: &Metadata) -> String {
    let show = |value: Option<String>| value.unwrap_or_default();
    let variables = [
        (
            "$private_ipv4",
            show(metadata.private_ipv4.map(|a| a.to_string())),
        ),
        (
            "$public_ipv4",
            show(metadata.public_ipv4.map(|a| a.to_string())),
        ),
        (
            "$private_ipv6",
            show(metadata.private_ipv6.map(|a| a.to_string())),
        ),
        (
            "$public_ipv6",
            show(metadata.public_ipv6.map(|a| a.to_string())),
        ),
    ];
    if !text.contains('$') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while let Some(first) = rest.chars().next() {
        if let Some(after_backslash) = rest.strip_prefix('\\') {
            for (name, _) in &variables {
                if let Some(after) = after_backslash.strip_prefix(name) {
                    out.push_str(name);
                    rest = after;
                    continue 'scan;
                }
            }
        }
        for (name, value) in &variables {
            if let Some(after) = rest.strip_prefix(name) {
                out.push_str(value);
                rest = after;
                continue 'scan;
            }
        }
        out.push(first);
        rest = &rest[first.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> Metadata {
        Metadata {
            private_ipv4: Some("10.0.0.5".parse().unwrap()),
            public_ipv6: Some("2001:db8::1".parse().unwrap()),
            ..Metadata::default()
        }
    }

    #[test]
    fn replaces_known_and_blanks_unknown() {
        assert_eq!(
            substitute(
                "a=$private_ipv4 b=$public_ipv4 c=[$public_ipv6]",
                &metadata()
            ),
            "a=10.0.0.5 b= c=[2001:db8::1]"
        );
    }

    #[test]
    fn adjacent_occurrences_are_all_replaced() {
        assert_eq!(
            substitute("$private_ipv4$private_ipv4", &metadata()),
            "10.0.0.510.0.0.5"
        );
    }

    #[test]
    fn backslash_keeps_the_name_and_other_escapes_stay() {
        assert_eq!(
            substitute(r"x=\$private_ipv4 y=\$HOME z=\\$private_ipv4", &metadata()),
            r"x=$private_ipv4 y=\$HOME z=\$private_ipv4"
        );
    }

    #[test]
    fn non_ascii_text_survives() {
        assert_eq!(substitute("é $private_ipv4 ü", &metadata()), "é 10.0.0.5 ü");
    }
}
