//! Unit names as systemd and fleet accept them (`prefix.type` or `prefix@instance.type`),
//! template and instance names, and the specifiers fleet expands in `[X-Fleet]` values.

use std::fmt;

/// The unit types fleet's API accepted (systemd's, as of fleet's last release).
pub const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "busname",
    "target",
    "snapshot",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// systemd's limit on a unit name (its UNIT_NAME_MAX less the terminating NUL).
pub const MAX_UNIT_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitNameError {
    #[error("unit name cannot be empty")]
    Empty,
    #[error("unit name {name:?} is longer than {MAX_UNIT_NAME_LEN} characters")]
    TooLong { name: String },
    #[error("unit name {name:?} must end in a unit type such as \".service\"")]
    NoType { name: String },
    #[error("unit name {name:?} has an unknown unit type {unit_type:?}")]
    UnknownType { name: String, unit_type: String },
    #[error("unit name {name:?} has an invalid character {character:?}")]
    InvalidCharacter { name: String, character: char },
    #[error("unit name {name:?} cannot start with \"@\"")]
    StartsWithAt { name: String },
}

/// A valid unit name, with its parts located once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitName {
    full: String,
    /// Byte index of the last '.', where the type suffix starts.
    dot: usize,
    /// Byte index of the first '@' before the suffix, if any.
    at: Option<usize>,
}

impl UnitName {
    /// Validates as systemd's `unit_name_is_valid` (and fleet's API) did: a prefix of
    /// `[A-Za-z0-9:_.@\-\\]`, not starting with `@`, then `.` and a known unit type.
    pub fn parse(name: &str) -> Result<UnitName, UnitNameError> {
        if name.is_empty() {
            return Err(UnitNameError::Empty);
        }
        if name.len() > MAX_UNIT_NAME_LEN {
            return Err(UnitNameError::TooLong {
                name: name.to_string(),
            });
        }
        let Some(dot) = name.rfind('.') else {
            return Err(UnitNameError::NoType {
                name: name.to_string(),
            });
        };
        let unit_type = &name[dot + 1..];
        if unit_type.is_empty() {
            return Err(UnitNameError::NoType {
                name: name.to_string(),
            });
        }
        if !UNIT_TYPES.contains(&unit_type) {
            return Err(UnitNameError::UnknownType {
                name: name.to_string(),
                unit_type: unit_type.to_string(),
            });
        }
        let stem = &name[..dot];
        if let Some(character) = stem.chars().find(|c| !is_valid_name_char(*c)) {
            return Err(UnitNameError::InvalidCharacter {
                name: name.to_string(),
                character,
            });
        }
        if stem.is_empty() {
            return Err(UnitNameError::NoType {
                name: name.to_string(),
            });
        }
        if stem.starts_with('@') {
            return Err(UnitNameError::StartsWithAt {
                name: name.to_string(),
            });
        }
        Ok(UnitName {
            full: name.to_string(),
            dot,
            at: stem.find('@'),
        })
    }

    /// The whole name (`%n`).
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The unit type without the dot: "service".
    pub fn unit_type(&self) -> &str {
        &self.full[self.dot + 1..]
    }

    /// The name without its type suffix (`%N`): "foo@1" for "foo@1.service".
    pub fn without_type(&self) -> &str {
        &self.full[..self.dot]
    }

    /// The part before the '@' (`%p`); the whole name without suffix when there is no '@'.
    pub fn prefix(&self) -> &str {
        match self.at {
            Some(at) => &self.full[..at],
            None => self.without_type(),
        }
    }

    /// The instance (`%i`): "1" for "foo@1.service", "" for the template "foo@.service",
    /// None for a plain name.
    pub fn instance(&self) -> Option<&str> {
        self.at.map(|at| &self.full[at + 1..self.dot])
    }

    /// A template such as "foo@.service".
    pub fn is_template(&self) -> bool {
        self.instance() == Some("")
    }

    /// An instance of a template such as "foo@1.service".
    pub fn is_instance(&self) -> bool {
        self.instance().is_some_and(|i| !i.is_empty())
    }

    /// The template an instance comes from ("foo@.service" for "foo@1.service"); None for
    /// plain names and for templates themselves.
    pub fn template(&self) -> Option<UnitName> {
        if !self.is_instance() {
            return None;
        }
        let at = self.at?;
        let full = format!("{}@.{}", &self.full[..at], self.unit_type());
        Some(UnitName {
            dot: at + 1,
            at: Some(at),
            full,
        })
    }

    /// The instance `instance` of this template ("foo@.service" + "1" → "foo@1.service").
    pub fn instantiate(&self, instance: &str) -> Result<UnitName, UnitNameError> {
        let at = self.at.unwrap_or(self.dot);
        UnitName::parse(&format!(
            "{}@{}.{}",
            &self.full[..at],
            instance,
            self.unit_type()
        ))
    }

    /// Expands the specifiers fleet supports in `[X-Fleet]` values, in one pass as systemd
    /// does (so "%%i" is a literal "%i"): `%n` the full name, `%N` the name without its type,
    /// `%p` the prefix, `%i` the instance, `%%` a percent sign. Other specifiers are left as
    /// they are, as fleet left them.
    pub fn expand_specifiers(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push_str(self.as_str()),
                Some('N') => out.push_str(self.without_type()),
                Some('p') => out.push_str(self.prefix()),
                Some('i') => out.push_str(self.instance().unwrap_or("")),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }
}

fn is_valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '@' | '\\')
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl std::str::FromStr for UnitName {
    type Err = UnitNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnitName::parse(s)
    }
}

impl AsRef<str> for UnitName {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> UnitName {
        UnitName::parse(s).unwrap()
    }

    #[test]
    fn plain_names_have_parts() {
        let n = name("hello.service");
        assert_eq!(n.as_str(), "hello.service");
        assert_eq!(n.unit_type(), "service");
        assert_eq!(n.without_type(), "hello");
        assert_eq!(n.prefix(), "hello");
        assert_eq!(n.instance(), None);
        assert!(!n.is_template());
        assert!(!n.is_instance());
        assert_eq!(n.template(), None);
    }

    #[test]
    fn dotted_prefixes_split_at_the_last_dot() {
        let n = name("conflict.1.service");
        assert_eq!(n.without_type(), "conflict.1");
        assert_eq!(n.unit_type(), "service");
    }

    #[test]
    fn instances_know_their_template() {
        let n = name("foo@1.service");
        assert!(n.is_instance());
        assert!(!n.is_template());
        assert_eq!(n.prefix(), "foo");
        assert_eq!(n.instance(), Some("1"));
        assert_eq!(n.without_type(), "foo@1");
        let template = n.template().unwrap();
        assert_eq!(template.as_str(), "foo@.service");
        assert_eq!(template, name("foo@.service"));
        assert!(template.is_template());
        assert_eq!(template.instance(), Some(""));
        assert_eq!(template.template(), None);
    }

    #[test]
    fn instances_may_hold_dots_and_at_signs() {
        let n = name("web@a.b@c.socket");
        assert_eq!(n.prefix(), "web");
        assert_eq!(n.instance(), Some("a.b@c"));
        assert_eq!(n.template().unwrap().as_str(), "web@.socket");
    }

    #[test]
    fn templates_instantiate() {
        let t = name("web@.service");
        assert_eq!(t.instantiate("8080").unwrap().as_str(), "web@8080.service");
        assert!(t.instantiate("bad name").is_err());
        let plain = name("web.service");
        assert_eq!(plain.instantiate("1").unwrap().as_str(), "web@1.service");
    }

    #[test]
    fn invalid_names_are_refused_with_reasons() {
        assert_eq!(UnitName::parse(""), Err(UnitNameError::Empty));
        assert!(matches!(
            UnitName::parse("hello"),
            Err(UnitNameError::NoType { .. })
        ));
        assert!(matches!(
            UnitName::parse("hello."),
            Err(UnitNameError::NoType { .. })
        ));
        assert!(matches!(
            UnitName::parse(".service"),
            Err(UnitNameError::NoType { .. })
        ));
        assert!(matches!(
            UnitName::parse("hello.exe"),
            Err(UnitNameError::UnknownType { .. })
        ));
        assert!(matches!(
            UnitName::parse("hel lo.service"),
            Err(UnitNameError::InvalidCharacter { character: ' ', .. })
        ));
        assert!(matches!(
            UnitName::parse("héllo.service"),
            Err(UnitNameError::InvalidCharacter { .. })
        ));
        assert!(matches!(
            UnitName::parse("@foo.service"),
            Err(UnitNameError::StartsWithAt { .. })
        ));
        let long = format!("{}.service", "a".repeat(250));
        assert!(matches!(
            UnitName::parse(&long),
            Err(UnitNameError::TooLong { .. })
        ));
        let error = UnitName::parse("hello.exe").unwrap_err().to_string();
        assert_eq!(
            error,
            "unit name \"hello.exe\" has an unknown unit type \"exe\""
        );
    }

    #[test]
    fn every_fleet_unit_type_is_accepted() {
        for unit_type in UNIT_TYPES {
            let n = format!("x.{unit_type}");
            assert_eq!(name(&n).unit_type(), *unit_type);
        }
        assert!(UnitName::parse("a:b_c-d\\x2d.mount").is_ok());
    }

    #[test]
    fn specifiers_expand_in_one_pass() {
        let n = name("foo@bar.service");
        assert_eq!(n.expand_specifiers("%n"), "foo@bar.service");
        assert_eq!(n.expand_specifiers("%N"), "foo@bar");
        assert_eq!(n.expand_specifiers("%p.socket"), "foo.socket");
        assert_eq!(n.expand_specifiers("db@%i.service"), "db@bar.service");
        assert_eq!(n.expand_specifiers("100%%"), "100%");
        assert_eq!(n.expand_specifiers("%%i"), "%i");
        assert_eq!(n.expand_specifiers("%x %"), "%x %");
        let plain = name("web.service");
        assert_eq!(plain.expand_specifiers("[%i]%p"), "[]web");
    }
}
