//! What a unit's `[X-Fleet]` section asks of the machine it runs on: fleet's scheduling
//! requirements, with the specifiers of the unit's name expanded, the deprecated spellings of
//! fleet ≤ 0.8 understood, and the combinations fleet refused refused.

use std::collections::{BTreeMap, BTreeSet};

use super::file::UnitFile;
use super::glob::glob_matches;
use super::name::UnitName;

/// The section fleet reads its options from.
pub const FLEET_SECTION: &str = "X-Fleet";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementsError {
    #[error("unrecognized requirement in [X-Fleet] section: {0:?}")]
    UnknownOption(String),
    #[error("MachineMetadata {0:?} is not key=value")]
    BadMetadata(String),
    #[error("{0} cannot be used with Global")]
    NotWithGlobal(&'static str),
    #[error("MachineID cannot be used with MachineOf")]
    MachineIdWithMachineOf,
    #[error("unresolvable requirements: MachineOf {machine_of:?} matches Conflicts {conflict:?}")]
    MachineOfConflicts {
        machine_of: String,
        conflict: String,
    },
}

/// What a unit requires of its machine. The default requires nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requirements {
    /// `MachineID`: the one machine the unit may run on.
    pub machine_id: Option<String>,
    /// `MachineOf`: units (exact names) whose machine this unit must share.
    pub machine_of: Vec<String>,
    /// `MachineMetadata`: for every key, the values a machine may have; values of one key are
    /// alternatives (OR), different keys must all hold (AND).
    pub machine_metadata: BTreeMap<String, BTreeSet<String>>,
    /// `Conflicts`: glob patterns of units this unit must not share a machine with.
    pub conflicts: Vec<String>,
    /// `Global`: runs on every machine that qualifies instead of being scheduled.
    pub global: bool,
    /// `Replaces`: glob patterns of units this unit takes the machine of.
    pub replaces: Vec<String>,
}

/// The options `[X-Fleet]` may hold, with what each spelling means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    MachineId,
    MachineOf,
    MachineMetadata,
    Conflicts,
    Global,
    Replaces,
}

/// Every spelling fleet accepted: the current one, then its deprecated forms (fleet ≤ 0.8
/// prefixed them with `X-Condition` or `X-`; `X-ConditionMachineBootID` is older still and
/// was matched against the machine ID).
const SPELLINGS: &[(&str, Key, Option<&str>)] = &[
    ("MachineID", Key::MachineId, None),
    ("X-ConditionMachineID", Key::MachineId, Some("MachineID")),
    (
        "X-ConditionMachineBootID",
        Key::MachineId,
        Some("MachineID"),
    ),
    ("MachineOf", Key::MachineOf, None),
    ("X-ConditionMachineOf", Key::MachineOf, Some("MachineOf")),
    ("MachineMetadata", Key::MachineMetadata, None),
    (
        "X-ConditionMachineMetadata",
        Key::MachineMetadata,
        Some("MachineMetadata"),
    ),
    ("Conflicts", Key::Conflicts, None),
    ("X-Conflicts", Key::Conflicts, Some("Conflicts")),
    ("Global", Key::Global, None),
    ("Replaces", Key::Replaces, None),
];

impl Requirements {
    /// Reads the `[X-Fleet]` section of `file` for the unit called `name`, expanding `%n %N
    /// %p %i` from `name`. For an instance of a template (`web@1.service`), pass the
    /// instance's name with the template's file: the requirements are the template's, with
    /// the instance's specifiers. Returns the requirements and warnings (deprecated
    /// spellings, a repeated MachineID, a Global value that is not a boolean).
    ///
    /// List options (MachineOf, MachineMetadata, Conflicts, Replaces) may be repeated and
    /// may hold several blank-separated, optionally double-quoted values on one line:
    /// `MachineMetadata="region=us-east-1" "disk=ssd"`.
    pub fn from_unit(
        name: &UnitName,
        file: &UnitFile,
    ) -> Result<(Requirements, Vec<String>), RequirementsError> {
        let mut requirements = Requirements::default();
        let mut warnings = Vec::new();
        let mut deprecated_seen = BTreeSet::new();

        for option in file.section(FLEET_SECTION) {
            let Some((_, key, replacement)) = SPELLINGS
                .iter()
                .find(|(spelling, _, _)| *spelling == option.name)
            else {
                return Err(RequirementsError::UnknownOption(option.name.clone()));
            };
            if let Some(replacement) = replacement {
                if deprecated_seen.insert(option.name.clone()) {
                    warnings.push(format!(
                        "[X-Fleet] {} is deprecated; use {}",
                        option.name, replacement
                    ));
                }
            }
            let value = name.expand_specifiers(&option.value);
            match key {
                Key::MachineId => {
                    let value = value.trim().to_string();
                    match &requirements.machine_id {
                        None => requirements.machine_id = Some(value),
                        // fleet used the first MachineID it found.
                        Some(first) if *first != value => warnings.push(format!(
                            "[X-Fleet] MachineID is given more than once; using {first:?}"
                        )),
                        Some(_) => {}
                    }
                }
                Key::MachineOf => requirements.machine_of.extend(split_values(&value)),
                Key::Conflicts => requirements.conflicts.extend(split_values(&value)),
                Key::Replaces => requirements.replaces.extend(split_values(&value)),
                Key::MachineMetadata => {
                    for pair in split_values(&value) {
                        let (key, wanted) = match pair.split_once('=') {
                            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                                (k.trim(), v.trim())
                            }
                            _ => return Err(RequirementsError::BadMetadata(pair)),
                        };
                        requirements
                            .machine_metadata
                            .entry(key.to_string())
                            .or_default()
                            .insert(wanted.to_string());
                    }
                }
                Key::Global => {
                    // As fleet: the last value wins, and anything not truthy is false.
                    let word = value.trim().to_ascii_lowercase();
                    requirements.global =
                        matches!(word.as_str(), "true" | "yes" | "1" | "on" | "t");
                    if !requirements.global
                        && !matches!(word.as_str(), "false" | "no" | "0" | "off" | "f")
                    {
                        warnings.push(format!(
                            "[X-Fleet] Global={:?} is not a boolean; taken as false",
                            option.value
                        ));
                    }
                }
            }
        }
        requirements.validate()?;
        Ok((requirements, warnings))
    }

    /// The combinations fleet's API refused. Global units are placed by every agent, not by
    /// the engine, so only the options an agent can check locally may come with them.
    pub fn validate(&self) -> Result<(), RequirementsError> {
        if self.global {
            if self.machine_id.is_some() {
                return Err(RequirementsError::NotWithGlobal("MachineID"));
            }
            if !self.machine_of.is_empty() {
                return Err(RequirementsError::NotWithGlobal("MachineOf"));
            }
            if !self.replaces.is_empty() {
                return Err(RequirementsError::NotWithGlobal("Replaces"));
            }
        }
        if self.machine_id.is_some() && !self.machine_of.is_empty() {
            return Err(RequirementsError::MachineIdWithMachineOf);
        }
        for machine_of in &self.machine_of {
            if let Some(conflict) = self
                .conflicts
                .iter()
                .find(|pattern| glob_matches(pattern, machine_of))
            {
                return Err(RequirementsError::MachineOfConflicts {
                    machine_of: machine_of.clone(),
                    conflict: conflict.clone(),
                });
            }
        }
        Ok(())
    }

    pub fn is_global(&self) -> bool {
        self.global
    }

    /// Whether a machine with `metadata` qualifies: every required key present with one of
    /// its allowed values.
    pub fn matches_metadata(&self, metadata: &BTreeMap<String, String>) -> bool {
        self.machine_metadata
            .iter()
            .all(|(key, allowed)| metadata.get(key).is_some_and(|have| allowed.contains(have)))
    }

    /// Whether this unit's Conflicts patterns match the unit `other_name`. Only this side:
    /// callers check both units (fleet's conflicts hold in both directions) and skip the
    /// unit itself.
    pub fn conflicts_with(&self, other_name: &str) -> bool {
        self.conflicts
            .iter()
            .any(|pattern| glob_matches(pattern, other_name))
    }

    /// Whether this unit's Replaces patterns match the unit `other_name`.
    pub fn replaces(&self, other_name: &str) -> bool {
        self.replaces
            .iter()
            .any(|pattern| glob_matches(pattern, other_name))
    }
}

/// Splits a value into blank-separated words, double quotes grouping (and removed), empty
/// words dropped.
fn split_values(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Result<(Requirements, Vec<String>), RequirementsError> {
        Requirements::from_unit(
            &UnitName::parse(name).unwrap(),
            &UnitFile::parse(text).unwrap(),
        )
    }

    fn requirements(name: &str, text: &str) -> Requirements {
        let (requirements, warnings) = parse(name, text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        requirements
    }

    fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_unit_without_x_fleet_requires_nothing() {
        let r = requirements("a.service", "[Service]\nExecStart=/bin/true\n");
        assert_eq!(r, Requirements::default());
        assert!(r.matches_metadata(&BTreeMap::new()));
        assert!(!r.conflicts_with("b.service"));
        assert!(!r.replaces("b.service"));
    }

    #[test]
    fn every_option_is_read() {
        let r = requirements(
            "a.service",
            "[X-Fleet]\nMachineOf=b.service\nMachineOf=c.service d.service\n\
             MachineMetadata=region=us-east\nConflicts=x* y?.service\nConflicts=z.service\n\
             Replaces=old.service\n",
        );
        assert_eq!(r.machine_of, vec!["b.service", "c.service", "d.service"]);
        assert_eq!(r.conflicts, vec!["x*", "y?.service", "z.service"]);
        assert_eq!(r.replaces, vec!["old.service"]);
        assert!(!r.global);
        assert_eq!(r.machine_id, None);
        assert_eq!(
            r.machine_metadata,
            BTreeMap::from([(
                "region".to_string(),
                BTreeSet::from(["us-east".to_string()])
            )])
        );
        let pinned = requirements("a.service", "[X-Fleet]\nMachineID=abc123\n");
        assert_eq!(pinned.machine_id.as_deref(), Some("abc123"));
    }

    #[test]
    fn metadata_same_key_is_or_different_keys_are_and() {
        let r = requirements(
            "a.service",
            "[X-Fleet]\nMachineMetadata=\"region=us-east-1\" \"diskType=SSD\"\n\
             MachineMetadata=region=us-west-1\n",
        );
        assert!(r.matches_metadata(&metadata(&[("region", "us-east-1"), ("diskType", "SSD")])));
        assert!(r.matches_metadata(&metadata(&[("region", "us-west-1"), ("diskType", "SSD")])));
        assert!(!r.matches_metadata(&metadata(&[("region", "us-west-1")])));
        assert!(!r.matches_metadata(&metadata(&[("region", "eu"), ("diskType", "SSD")])));
        assert!(!r.matches_metadata(&metadata(&[("diskType", "SSD")])));
        assert!(r.matches_metadata(&metadata(&[
            ("region", "us-east-1"),
            ("diskType", "SSD"),
            ("extra", "x")
        ])));
    }

    #[test]
    fn quoted_metadata_values_may_hold_blanks() {
        let r = requirements(
            "a.service",
            "[X-Fleet]\nMachineMetadata=\"room=big hall\"\n",
        );
        assert!(r.matches_metadata(&metadata(&[("room", "big hall")])));
        assert!(!r.matches_metadata(&metadata(&[("room", "big")])));
    }

    #[test]
    fn bad_metadata_is_an_error() {
        assert_eq!(
            parse("a.service", "[X-Fleet]\nMachineMetadata=region\n").unwrap_err(),
            RequirementsError::BadMetadata("region".into())
        );
        assert!(parse("a.service", "[X-Fleet]\nMachineMetadata==x\n").is_err());
        assert!(parse("a.service", "[X-Fleet]\nMachineMetadata=k=\n").is_err());
    }

    #[test]
    fn deprecated_spellings_work_and_warn_once() {
        let (r, warnings) = parse(
            "a.service",
            "[X-Fleet]\nX-ConditionMachineOf=b.service\nX-ConditionMachineMetadata=role=db\n\
             X-Conflicts=c*\nX-Conflicts=d*\n",
        )
        .unwrap();
        assert_eq!(r.machine_of, vec!["b.service"]);
        assert!(r.matches_metadata(&metadata(&[("role", "db")])));
        assert_eq!(r.conflicts, vec!["c*", "d*"]);
        assert_eq!(
            warnings,
            vec![
                "[X-Fleet] X-ConditionMachineOf is deprecated; use MachineOf",
                "[X-Fleet] X-ConditionMachineMetadata is deprecated; use MachineMetadata",
                "[X-Fleet] X-Conflicts is deprecated; use Conflicts",
            ]
        );

        let (r, warnings) = parse("a.service", "[X-Fleet]\nX-ConditionMachineID=m1\n").unwrap();
        assert_eq!(r.machine_id.as_deref(), Some("m1"));
        assert_eq!(warnings.len(), 1);
        let (r, warnings) = parse("a.service", "[X-Fleet]\nX-ConditionMachineBootID=m2\n").unwrap();
        assert_eq!(r.machine_id.as_deref(), Some("m2"));
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn the_first_machine_id_wins() {
        let (r, warnings) = parse("a.service", "[X-Fleet]\nMachineID=m1\nMachineID=m2\n").unwrap();
        assert_eq!(r.machine_id.as_deref(), Some("m1"));
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn unknown_options_are_refused() {
        assert_eq!(
            parse("a.service", "[X-Fleet]\nMachineId=m1\n").unwrap_err(),
            RequirementsError::UnknownOption("MachineId".into())
        );
        assert_eq!(
            parse("a.service", "[X-Fleet]\nFoo=bar\n")
                .unwrap_err()
                .to_string(),
            "unrecognized requirement in [X-Fleet] section: \"Foo\""
        );
    }

    #[test]
    fn global_takes_the_last_truthy_value() {
        for word in ["true", "yes", "1", "on", "t", "TRUE", "Yes"] {
            let r = requirements("g.service", &format!("[X-Fleet]\nGlobal={word}\n"));
            assert!(r.global, "{word}");
            assert!(r.is_global());
        }
        for word in ["false", "no", "0", "off", "f"] {
            assert!(!requirements("g.service", &format!("[X-Fleet]\nGlobal={word}\n")).global);
        }
        assert!(!requirements("g.service", "[X-Fleet]\nGlobal=true\nGlobal=false\n").global);
        let (r, warnings) = parse("g.service", "[X-Fleet]\nGlobal=maybe\n").unwrap();
        assert!(!r.global);
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn global_combines_only_with_metadata_and_conflicts() {
        let r = requirements(
            "g.service",
            "[X-Fleet]\nGlobal=true\nMachineMetadata=role=web\nConflicts=other*\n",
        );
        assert!(r.global);
        assert_eq!(
            parse("g.service", "[X-Fleet]\nGlobal=true\nMachineID=m1\n").unwrap_err(),
            RequirementsError::NotWithGlobal("MachineID")
        );
        assert_eq!(
            parse("g.service", "[X-Fleet]\nGlobal=true\nMachineOf=a.service\n").unwrap_err(),
            RequirementsError::NotWithGlobal("MachineOf")
        );
        assert_eq!(
            parse("g.service", "[X-Fleet]\nGlobal=true\nReplaces=a.service\n")
                .unwrap_err()
                .to_string(),
            "Replaces cannot be used with Global"
        );
        // Global=false with anything is fine.
        assert!(parse("g.service", "[X-Fleet]\nGlobal=false\nMachineID=m1\n").is_ok());
    }

    #[test]
    fn unresolvable_combinations_are_refused() {
        assert_eq!(
            parse(
                "a.service",
                "[X-Fleet]\nMachineID=m1\nMachineOf=b.service\n"
            )
            .unwrap_err(),
            RequirementsError::MachineIdWithMachineOf
        );
        assert_eq!(
            parse(
                "a.service",
                "[X-Fleet]\nMachineOf=b.service\nConflicts=b*\n"
            )
            .unwrap_err(),
            RequirementsError::MachineOfConflicts {
                machine_of: "b.service".into(),
                conflict: "b*".into()
            }
        );
    }

    #[test]
    fn specifiers_are_expanded_from_the_unit_name() {
        let r = requirements(
            "foo.service",
            "[X-Fleet]\nMachineOf=%p.socket\nConflicts=%N-*\nReplaces=%n.old\n",
        );
        assert_eq!(r.machine_of, vec!["foo.socket"]);
        assert_eq!(r.conflicts, vec!["foo-*"]);
        assert_eq!(r.replaces, vec!["foo.service.old"]);
        let bar = requirements("bar.service", "[X-Fleet]\nMachineOf=%p.socket\n");
        assert_eq!(bar.machine_of, vec!["bar.socket"]);
    }

    #[test]
    fn template_instances_use_the_template_file_with_their_own_specifiers() {
        let template =
            "[X-Fleet]\nConflicts=web@*.service\nMachineOf=data@%i.service\nMachineMetadata=slot=%i\n";
        let instance = UnitName::parse("web@2.service").unwrap();
        let file = UnitFile::parse(template).unwrap();
        let (r, _) = Requirements::from_unit(&instance, &file).unwrap();
        assert_eq!(r.machine_of, vec!["data@2.service"]);
        assert!(r.matches_metadata(&metadata(&[("slot", "2")])));
        assert!(r.conflicts_with("web@1.service"));
        assert!(r.conflicts_with("web@2.service"));
        assert!(!r.conflicts_with("data@2.service"));
    }

    #[test]
    fn conflicts_and_replaces_match_globs() {
        let r = requirements(
            "a.service",
            "[X-Fleet]\nConflicts=conflict*\nReplaces=old-[0-9].service\n",
        );
        assert!(r.conflicts_with("conflict.1.service"));
        assert!(!r.conflicts_with("other.service"));
        assert!(r.replaces("old-3.service"));
        assert!(!r.replaces("old-x.service"));
    }
}
