//! Unit name checks the API and fleetctl share, on top of [`crate::unit::UnitName`]
//! (systemd's `unit_name_is_valid` as fleet applied it): validity, fleetctl's "has a known
//! type" test, and the template of an instance.

use crate::unit::name::UNIT_TYPES;
use crate::unit::UnitName;

/// Why a unit name is not valid.
pub fn validate_name(name: &str) -> Result<(), String> {
    UnitName::parse(name).map(|_| ()).map_err(|e| e.to_string())
}

/// Whether `name` ends in a known unit type (`foo.service`, not `foo` or `foo.conf`).
pub fn recognized_unit_type(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, suffix)| UNIT_TYPES.contains(&suffix))
}

/// `foo@.service`: a template, which fleet never schedules itself.
pub fn is_template(name: &str) -> bool {
    UnitName::parse(name).is_ok_and(|n| n.is_template())
}

/// For an instance `foo@1.service`, its template `foo@.service`.
pub fn template_of(name: &str) -> Option<String> {
    UnitName::parse(name)
        .ok()?
        .template()
        .map(|t| t.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "foo.service",
            "foo@.service",
            "foo@1.service",
            "a-b_c:d\\x2d.e.timer",
        ] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "foo",
            "foo.",
            "foo.conf",
            "foo bar.service",
            "@foo.service",
            "foo/bar.service",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates() {
        assert!(is_template("foo@.service"));
        assert!(!is_template("foo@1.service"));
        assert_eq!(
            template_of("foo@1.service").as_deref(),
            Some("foo@.service")
        );
        assert_eq!(template_of("foo@.service"), None);
        assert_eq!(template_of("foo.service"), None);
        assert!(recognized_unit_type("a.socket"));
        assert!(!recognized_unit_type("a"));
    }
}
