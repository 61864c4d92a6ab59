//! Helpers shared by the section parsers: reading typed values out of the YAML tree and
//! reporting unknown keys, wrong types and bad values with the path of the key.

use std::collections::HashMap;

use super::diagnostics::Diagnostic;
use super::yaml::{Node, Value};

/// Collects diagnostics while one document is walked.
#[derive(Default)]
pub struct Walker {
    pub diagnostics: Vec<Diagnostic>,
}

/// One entry of a mapping, after key normalisation.
pub struct Entry<'a> {
    /// The key with '-' replaced by '_' (coreos-cloudinit accepts both spellings).
    pub key: String,
    /// The key as written.
    pub written: &'a str,
    pub key_line: usize,
    pub value: &'a Node,
}

/// `parent.key`, or just `key` at the top; a long key is cut, as paths only go in messages.
pub fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        truncate(key)
    } else {
        format!("{parent}.{}", truncate(key))
    }
}

pub fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

impl Walker {
    pub fn error(&mut self, line: usize, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(line, message));
    }

    pub fn warning(&mut self, line: usize, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::warning(line, message));
    }

    pub fn info(&mut self, line: usize, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::info(line, message));
    }

    pub fn wrong_type(&mut self, node: &Node, path: &str, wanted: &str) {
        self.warning(
            node.line,
            format!(
                "\"{path}\" should be {wanted}, not {}; ignored",
                node.describe()
            ),
        );
    }

    /// The entries of a map, keys normalised, later duplicates replacing earlier ones. An empty
    /// value (`coreos:` with nothing under it) is an empty map; anything else is a wrong type.
    pub fn mapping<'a>(&mut self, node: &'a Node, path: &str) -> Option<Vec<Entry<'a>>> {
        let entries = match &node.value {
            Value::Mapping(entries) => entries,
            _ if node.is_null() => return Some(Vec::new()),
            _ => {
                self.wrong_type(node, path, "a map");
                return None;
            }
        };
        // Slots in document order; a duplicate empties the earlier one's slot. Keys are found
        // through the index, so a map with many keys costs linear time, not quadratic.
        let mut slots: Vec<Option<Entry<'a>>> = Vec::with_capacity(entries.len());
        let mut index: HashMap<String, usize> = HashMap::with_capacity(entries.len());
        for (key, value) in entries {
            let Some(scalar) = key.as_scalar() else {
                self.warning(
                    key.line,
                    format!(
                        "a key under \"{path}\" is {}, not a name; ignored",
                        key.describe()
                    ),
                );
                continue;
            };
            let normalised = scalar.text.replace('-', "_");
            if let Some(earlier) = index.insert(normalised.clone(), slots.len()) {
                if let Some(replaced) = slots[earlier].take() {
                    self.warning(
                        key.line,
                        format!(
                            "duplicate key \"{}\"; this one replaces the one on line {}",
                            child_path(path, &scalar.text),
                            replaced.key_line
                        ),
                    );
                }
            }
            slots.push(Some(Entry {
                key: normalised,
                written: &scalar.text,
                key_line: key.line,
                value,
            }));
        }
        Some(slots.into_iter().flatten().collect())
    }

    /// Reports a key the section does not define, suggesting a close known one.
    pub fn unknown_key(&mut self, entry: &Entry<'_>, parent: &str, known: &[&str]) {
        let path = child_path(parent, entry.written);
        let message = match closest(&entry.key, known) {
            Some(suggestion) => {
                format!("unknown key \"{path}\" (did you mean \"{suggestion}\"?); ignored")
            }
            None => format!("unknown key \"{path}\"; ignored"),
        };
        self.warning(entry.key_line, message);
    }

    /// A scalar as text (numbers and booleans in their YAML spelling); empty values are absent.
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Scalar(scalar) if scalar.is_null() => None,
            Value::Scalar(scalar) => Some(scalar.text.clone()),
            _ => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    pub fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.as_scalar() {
            Some(scalar) if scalar.is_null() => None,
            Some(scalar) => match scalar.as_bool() {
                Some(value) => Some(value),
                None => {
                    self.warning(
                        node.line,
                        format!(
                            "\"{path}\" should be true or false, not {} \"{}\"; ignored",
                            node.describe(),
                            truncate(&scalar.text)
                        ),
                    );
                    None
                }
            },
            None => {
                self.wrong_type(node, path, "true or false");
                None
            }
        }
    }

    /// A list of scalars; non-scalar items are reported and skipped.
    pub fn string_list(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let items = match &node.value {
            Value::Sequence(items) => items,
            _ if node.is_null() => return None,
            _ => {
                self.wrong_type(node, path, "a list of strings");
                return None;
            }
        };
        let mut strings = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match item.as_scalar() {
                Some(scalar) if scalar.is_null() => {}
                Some(scalar) => strings.push(scalar.text.clone()),
                None => self.wrong_type(item, &index_path(path, index), "a string"),
            }
        }
        Some(strings)
    }

    /// The items of a list; an empty value is an empty list.
    pub fn sequence<'a>(&mut self, node: &'a Node, path: &str, wanted: &str) -> &'a [Node] {
        match &node.value {
            Value::Sequence(items) => items,
            _ if node.is_null() => &[],
            _ => {
                self.wrong_type(node, path, wanted);
                &[]
            }
        }
    }
}

/// Long values are cut in messages so a 10 MB scalar does not make a 10 MB diagnostic.
pub fn truncate(text: &str) -> String {
    const LIMIT: usize = 60;
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// The known key within edit distance 2 of `key`, if there is exactly one best.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    if key.len() > 64 {
        return None;
    }
    let mut best: Option<(usize, &str)> = None;
    let length = key.chars().count();
    for candidate in known {
        // The distance is at least the difference in length: most candidates stop here.
        if length.abs_diff(candidate.chars().count()) > 2 {
            continue;
        }
        let distance = edit_distance(key, candidate);
        if distance <= 2 && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = Vec::with_capacity(b.len() + 1);
    for (i, ca) in a.iter().enumerate() {
        current.clear();
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_keys() {
        assert_eq!(
            closest("comand", &["command", "content", "name"]),
            Some("command")
        );
        assert_eq!(closest("xyzzy", &["command", "content", "name"]), None);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let long = "é".repeat(100);
        assert!(truncate(&long).ends_with("..."));
        assert_eq!(truncate("short"), "short");
    }
}
