//! Shell-style name patterns as fleet matched `Conflicts` and `Replaces` against unit names
//! (Go's `path.Match`): `*` any run of characters, `?` one character, `[...]` a class with
//! ranges and `^` or `!` negation, `\` escaping the next character. Unit names never hold
//! a `/`, so the path-separator rule of `path.Match` never comes into play here.

/// Whether `name` matches `pattern` as a whole. A malformed pattern (an unclosed `[`, a
/// trailing `\`) matches nothing, as in fleet, where `path.Match`'s error meant "no match".
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains(['*', '?', '[', '\\']) {
        return pattern == name;
    }
    // Unit names are ASCII; matching bytes then avoids collecting characters.
    if pattern.is_ascii() && name.is_ascii() {
        return matches_from(pattern.as_bytes(), name.as_bytes()).unwrap_or(false);
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    matches_from(&pattern, &name).unwrap_or(false)
}

/// What the matcher needs of a character: bytes for ASCII text, `char` otherwise.
trait Symbol: Copy + Ord {
    fn is(self, c: char) -> bool;
}

impl Symbol for u8 {
    fn is(self, c: char) -> bool {
        char::from(self) == c
    }
}

impl Symbol for char {
    fn is(self, c: char) -> bool {
        self == c
    }
}

/// `None` when the pattern is malformed.
fn matches_from<T: Symbol>(pattern: &[T], name: &[T]) -> Option<bool> {
    // Iterative matching with one backtrack point (the last `*`) keeps this linear-ish and
    // free of recursion depth issues on long names.
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() {
            if pattern[p].is('*') {
                // Collapse runs of stars; remember where to resume if the rest fails.
                while p < pattern.len() && pattern[p].is('*') {
                    p += 1;
                }
                star = Some((p, n));
                continue;
            }
            if n < name.len() {
                let (matched, width) = single(&pattern[p..], name[n])?;
                if matched {
                    p += width;
                    n += 1;
                    continue;
                }
            } else {
                // The name ran out; a malformed remainder is still an error.
                validate(&pattern[p..])?;
            }
        } else if n == name.len() {
            return Some(true);
        }
        // Mismatch: let the last star swallow one more character, if there is one.
        match star {
            Some((star_p, star_n)) if star_n < name.len() => {
                star = Some((star_p, star_n + 1));
                p = star_p;
                n = star_n + 1;
            }
            _ => {
                validate(&pattern[p.min(pattern.len())..])?;
                return Some(false);
            }
        }
    }
}

/// Matches one pattern element (not `*`) at the start of `pattern` against `c`; returns
/// whether it matched and how many pattern characters the element spans.
fn single<T: Symbol>(pattern: &[T], c: T) -> Option<(bool, usize)> {
    let first = pattern[0];
    if first.is('?') {
        Some((true, 1))
    } else if first.is('\\') {
        let escaped = *pattern.get(1)?;
        Some((escaped == c, 2))
    } else if first.is('[') {
        class(pattern, c)
    } else {
        Some((first == c, 1))
    }
}

/// A `[...]` class at the start of `pattern`.
fn class<T: Symbol>(pattern: &[T], c: T) -> Option<(bool, usize)> {
    let mut i = 1;
    let negated = pattern.get(i).is_some_and(|s| s.is('^') || s.is('!'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let symbol = *pattern.get(i)?;
        // `]` right after the opening (or the negation) is a literal, as in fnmatch.
        if symbol.is(']') && !first {
            break;
        }
        let start = if symbol.is('\\') {
            i += 1;
            *pattern.get(i)?
        } else {
            symbol
        };
        i += 1;
        first = false;
        let mut end = start;
        if pattern.get(i).is_some_and(|s| s.is('-'))
            && pattern.get(i + 1).is_some_and(|s| !s.is(']'))
        {
            i += 1;
            let symbol = *pattern.get(i)?;
            end = if symbol.is('\\') {
                i += 1;
                *pattern.get(i)?
            } else {
                symbol
            };
            i += 1;
        }
        if start <= c && c <= end {
            matched = true;
        }
    }
    // `i` is at the closing `]`.
    Some((matched != negated, i + 1))
}

/// Checks that the rest of a pattern is well formed, so that malformed patterns never match
/// even when the name ran out before the bad part was reached.
fn validate<T: Symbol>(pattern: &[T]) -> Option<()> {
    let mut p = 0;
    while p < pattern.len() {
        if pattern[p].is('*') || pattern[p].is('?') {
            p += 1;
        } else {
            // Any symbol will do to measure the element's width.
            let (_, width) = single(&pattern[p..], pattern[p])?;
            p += width;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn literals_match_only_themselves() {
        assert!(glob_matches("web.service", "web.service"));
        assert!(!glob_matches("web.service", "web2.service"));
        assert!(!glob_matches("web.service", "web.servic"));
        assert!(glob_matches("", ""));
        assert!(!glob_matches("", "a"));
    }

    #[test]
    fn star_matches_any_run() {
        assert!(glob_matches("web@*.service", "web@1.service"));
        assert!(glob_matches("web@*.service", "web@.service"));
        assert!(glob_matches("web@*.service", "web@a.b.service"));
        assert!(!glob_matches("web@*.service", "db@1.service"));
        assert!(glob_matches("*", "anything.service"));
        assert!(glob_matches("**", ""));
        assert!(glob_matches("conflict*", "conflict.3.service"));
        assert!(glob_matches("*.service", "a.service"));
        assert!(!glob_matches("*.service", "a.socket"));
        assert!(glob_matches("a*b*c", "aXbYbZc"));
        assert!(!glob_matches("a*b*c", "aXbYbZ"));
    }

    #[test]
    fn question_mark_matches_one_character() {
        assert!(glob_matches("web?.service", "web1.service"));
        assert!(!glob_matches("web?.service", "web.service"));
        assert!(!glob_matches("web?.service", "web12.service"));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(glob_matches("web[0-9].service", "web7.service"));
        assert!(!glob_matches("web[0-9].service", "weba.service"));
        assert!(glob_matches("web[^0-9].service", "weba.service"));
        assert!(glob_matches("web[!0-9].service", "weba.service"));
        assert!(!glob_matches("web[!0-9].service", "web1.service"));
        assert!(glob_matches("web[abc].service", "webb.service"));
        assert!(glob_matches("[]]", "]"));
        assert!(glob_matches("[a-]", "-"));
    }

    #[test]
    fn escapes_make_metacharacters_literal() {
        assert!(glob_matches(r"web\*.service", "web*.service"));
        assert!(!glob_matches(r"web\*.service", "web1.service"));
        assert!(glob_matches(r"[\]]", "]"));
    }

    #[test]
    fn non_ascii_text_is_matched_by_character() {
        assert!(glob_matches("h?llo", "héllo"));
        assert!(glob_matches("[é]*", "été"));
        assert!(!glob_matches("h?llo", "hélélo"));
    }

    #[test]
    fn malformed_patterns_match_nothing() {
        assert!(!glob_matches("web[0-9.service", "web1.service"));
        assert!(!glob_matches("web\\", "web"));
        assert!(!glob_matches("a[", "a"));
        assert!(!glob_matches("*[", "abc"));
    }
}
