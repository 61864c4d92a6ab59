//! fleetctl's listings as pure functions: the columns (`--fields`) of list-machines, list-units
//! and list-unit-files, the machine legends (`113f16a7.../172.17.8.103`), and the table layout
//! of Go's `tabwriter` as fleetctl configured it (minimum width 0, tab width 8, padding 1,
//! padded with tabs): every column but the last is followed by tabs up to the next multiple
//! of 8 past its widest cell, so the output lines up in a terminal and splits on tabs.

use std::collections::BTreeMap;

use crate::model::{Machine, TargetState, Unit, UnitState};
use crate::unit::{Requirements, UnitFile, UnitName};

/// How many characters of a machine ID fleetctl shows without `--full`.
pub const SHORT_ID_LEN: usize = 8;

/// How many hex digits of a hash fleetctl shows without `--full`.
pub const SHORT_HASH_LEN: usize = 7;

pub const DEFAULT_LIST_MACHINES_FIELDS: &str = "machine,ip,metadata";
pub const DEFAULT_LIST_UNITS_FIELDS: &str = "unit,machine,active,sub";
pub const DEFAULT_LIST_UNIT_FILES_FIELDS: &str = "unit,hash,dstate,state,target";

pub const LIST_MACHINES_FIELDS: &[&str] = &["ip", "machine", "metadata"];
pub const LIST_UNITS_FIELDS: &[&str] = &["active", "hash", "load", "machine", "sub", "unit"];
pub const LIST_UNIT_FILES_FIELDS: &[&str] = &[
    "desc", "dstate", "global", "hash", "state", "target", "tmachine", "unit",
];

/// Lays out rows as fleetctl's tabwriter did. Widths count characters, not bytes.
pub fn render(rows: &[Vec<String>]) -> String {
    const TAB_WIDTH: usize = 8;
    const PADDING: usize = 1;
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    // Width of each tab-terminated column (all but each row's last cell).
    let mut widths = vec![0usize; columns.saturating_sub(1)];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let cell_width = (widths[i] + PADDING).div_ceil(TAB_WIDTH) * TAB_WIDTH;
                let padding = cell_width - cell.chars().count();
                for _ in 0..padding.div_ceil(TAB_WIDTH) {
                    out.push('\t');
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The legend line and the rows, in one table.
pub fn table(fields: &[&str], legend: bool, rows: Vec<Vec<String>>) -> String {
    let mut all = Vec::with_capacity(rows.len() + 1);
    if legend {
        all.push(fields.iter().map(|f| f.to_uppercase()).collect());
    }
    all.extend(rows);
    render(&all)
}

/// Splits and checks `--fields` against a command's valid fields, in fleetctl's words.
pub fn parse_fields<'a>(spec: &'a str, valid: &[&str]) -> Result<Vec<&'a str>, String> {
    if spec.is_empty() {
        return Err("Must define output format".into());
    }
    let fields: Vec<&str> = spec.split(',').collect();
    for f in &fields {
        if !valid.contains(f) {
            return Err(format!("Invalid key in output format: {f:?}"));
        }
    }
    Ok(fields)
}

/// `113f16a7...` (or the whole ID with `--full`).
pub fn machine_id_legend(id: &str, full: bool) -> String {
    if full {
        id.to_string()
    } else {
        let short: String = id.chars().take(SHORT_ID_LEN).collect();
        format!("{short}...")
    }
}

/// `113f16a7.../172.17.8.103`: the ID legend and the machine's IP when it has one.
pub fn machine_full_legend(id: &str, ip: &str, full: bool) -> String {
    let legend = machine_id_legend(id, full);
    if ip.is_empty() {
        legend
    } else {
        format!("{legend}/{ip}")
    }
}

/// The legend of a machine known by ID only: with its IP when `machines` has it.
pub fn machine_legend_by_id(id: &str, machines: &BTreeMap<String, Machine>, full: bool) -> String {
    let ip = machines.get(id).map(|m| m.public_ip.as_str()).unwrap_or("");
    machine_full_legend(id, ip, full)
}

/// `k=v,k2=v2` sorted by key; a value that begins with a comparison operator is written
/// without `=` (`cpus>=4`), as fleetctl did.
pub fn format_metadata(metadata: &BTreeMap<String, String>) -> String {
    if metadata.is_empty() {
        return "-".into();
    }
    metadata
        .iter()
        .map(|(k, v)| {
            let has_operator = ["<=", ">=", "!=", "==", "<", ">"]
                .iter()
                .any(|op| v.starts_with(op));
            if has_operator {
                format!("{k}{v}")
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

pub fn machine_field(field: &str, m: &Machine, full: bool) -> String {
    match field {
        "machine" => machine_id_legend(&m.id, full),
        "ip" => or_dash(&m.public_ip),
        "metadata" => format_metadata(&m.metadata),
        _ => "-".into(),
    }
}

pub fn unit_state_field(
    field: &str,
    s: &UnitState,
    machines: &BTreeMap<String, Machine>,
    full: bool,
) -> String {
    match field {
        "unit" => s.name.clone(),
        "load" => or_dash(&s.load_state),
        "active" => or_dash(&s.active_state),
        "sub" => or_dash(&s.sub_state),
        "machine" if s.machine_id.is_empty() => "-".into(),
        "machine" => machine_legend_by_id(&s.machine_id, machines, full),
        "hash" if s.hash.is_empty() => "-".into(),
        "hash" if full => s.hash.clone(),
        "hash" => s.hash.chars().take(SHORT_HASH_LEN).collect(),
        _ => "-".into(),
    }
}

/// Whether a unit is global (`[X-Fleet] Global=true`), as the engine reads its requirements.
pub fn is_global(unit: &Unit) -> bool {
    let Ok(name) = UnitName::parse(&unit.name) else {
        return false;
    };
    Requirements::from_unit(&name, &UnitFile::from_options(&unit.options))
        .is_ok_and(|(r, _)| r.is_global())
}

pub fn unit_file_field(
    field: &str,
    u: &Unit,
    machines: &BTreeMap<String, Machine>,
    full: bool,
) -> String {
    match field {
        "unit" => u.name.clone(),
        "global" => is_global(u).to_string(),
        "dstate" => u.desired_state.as_str().to_string(),
        "target" | "tmachine" => {
            if is_global(u) {
                "global".into()
            } else {
                match &u.machine_id {
                    Some(id) if !id.is_empty() => machine_legend_by_id(id, machines, full),
                    _ => "-".into(),
                }
            }
        }
        "state" => match u.current_state {
            Some(s) if !is_global(u) => s.as_str().to_string(),
            _ => "-".into(),
        },
        "hash" => {
            let file = UnitFile::from_options(&u.options);
            if full {
                file.hash()
            } else {
                file.short_hash()
            }
        }
        "desc" => {
            let file = UnitFile::from_options(&u.options);
            let description = file
                .values("Unit", "Description")
                .last()
                .copied()
                .unwrap_or("");
            or_dash(description)
        }
        _ => "-".into(),
    }
}

/// The state fleetctl compares when it waits: a global unit's desired state (it never gets a
/// current one), else its current state, an unscheduled unit counting as inactive.
pub fn effective_state(u: &Unit) -> TargetState {
    if is_global(u) {
        u.desired_state
    } else {
        u.current_state.unwrap_or(TargetState::Inactive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UnitOption;

    #[test]
    fn tabwriter_layout() {
        let rows = vec![
            vec![
                "UNIT".to_string(),
                "MACHINE".into(),
                "ACTIVE".into(),
                "SUB".into(),
            ],
            vec![
                "goodbye.service".to_string(),
                "85c0c595.../172.17.8.102".into(),
                "active".into(),
                "running".into(),
            ],
            vec![
                "hello.service".to_string(),
                "113f16a7.../172.17.8.103".into(),
                "inactive".into(),
                "dead".into(),
            ],
        ];
        // Column widths 15+1→16, 24+1→32, 8+1→16.
        assert_eq!(
            render(&rows),
            "UNIT\t\tMACHINE\t\t\t\tACTIVE\t\tSUB\n\
             goodbye.service\t85c0c595.../172.17.8.102\tactive\t\trunning\n\
             hello.service\t113f16a7.../172.17.8.103\tinactive\tdead\n"
        );
        // A cell exactly a multiple of 8 wide still gets a tab (the padding).
        assert_eq!(
            render(&[
                vec!["12345678".into(), "x".into()],
                vec!["a".into(), "y".into()]
            ]),
            "12345678\tx\na\t\ty\n"
        );
        // Characters, not bytes.
        assert_eq!(
            render(&[vec!["ééééééé".into(), "x".into()]]),
            "ééééééé\tx\n"
        );
        assert_eq!(render(&[vec!["only".into()]]), "only\n");
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn legends() {
        assert_eq!(machine_id_legend("113f16a7b2c94a8c", false), "113f16a7...");
        assert_eq!(
            machine_id_legend("113f16a7b2c94a8c", true),
            "113f16a7b2c94a8c"
        );
        assert_eq!(machine_id_legend("abc", false), "abc...");
        assert_eq!(
            machine_full_legend("113f16a7b2c94a8c", "172.17.8.103", false),
            "113f16a7.../172.17.8.103"
        );
        assert_eq!(
            machine_full_legend("113f16a7b2c94a8c", "", false),
            "113f16a7..."
        );
    }

    #[test]
    fn metadata() {
        let mut m = BTreeMap::new();
        assert_eq!(format_metadata(&m), "-");
        m.insert("region".to_string(), "us-west".to_string());
        m.insert("az".to_string(), "us-west-1b".to_string());
        m.insert("cpus".to_string(), ">=4".to_string());
        assert_eq!(format_metadata(&m), "az=us-west-1b,cpus>=4,region=us-west");
    }

    #[test]
    fn fields() {
        assert_eq!(
            parse_fields("unit,machine", LIST_UNITS_FIELDS).unwrap(),
            vec!["unit", "machine"]
        );
        assert_eq!(
            parse_fields("", LIST_UNITS_FIELDS).unwrap_err(),
            "Must define output format"
        );
        assert_eq!(
            parse_fields("unit,bogus", LIST_UNITS_FIELDS).unwrap_err(),
            "Invalid key in output format: \"bogus\""
        );
        for spec in [
            DEFAULT_LIST_MACHINES_FIELDS,
            DEFAULT_LIST_UNITS_FIELDS,
            DEFAULT_LIST_UNIT_FILES_FIELDS,
        ] {
            let valid = [
                LIST_MACHINES_FIELDS,
                LIST_UNITS_FIELDS,
                LIST_UNIT_FILES_FIELDS,
            ]
            .concat();
            assert!(parse_fields(spec, &valid).is_ok());
        }
    }

    fn unit(options: Vec<UnitOption>, current: Option<TargetState>, machine: Option<&str>) -> Unit {
        Unit {
            name: "hello.service".into(),
            options,
            desired_state: TargetState::Launched,
            current_state: current,
            machine_id: machine.map(str::to_string),
        }
    }

    fn opt(section: &str, name: &str, value: &str) -> UnitOption {
        UnitOption {
            section: section.into(),
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn unit_file_fields() {
        let mut machines = BTreeMap::new();
        machines.insert(
            "113f16a7b2c94a8c".to_string(),
            Machine {
                id: "113f16a7b2c94a8c".into(),
                public_ip: "172.17.8.103".into(),
                metadata: BTreeMap::new(),
            },
        );
        let u = unit(
            vec![
                opt("Unit", "Description", "Hello World"),
                opt("Service", "ExecStart", "/bin/true"),
            ],
            Some(TargetState::Launched),
            Some("113f16a7b2c94a8c"),
        );
        let f = |field: &str, full: bool| unit_file_field(field, &u, &machines, full);
        assert_eq!(f("unit", false), "hello.service");
        assert_eq!(f("dstate", false), "launched");
        assert_eq!(f("state", false), "launched");
        assert_eq!(f("target", false), "113f16a7.../172.17.8.103");
        assert_eq!(f("tmachine", true), "113f16a7b2c94a8c/172.17.8.103");
        assert_eq!(f("global", false), "false");
        assert_eq!(f("desc", false), "Hello World");
        assert_eq!(f("hash", false).len(), SHORT_HASH_LEN);
        assert_eq!(f("hash", true).len(), 40);
        assert!(f("hash", true).starts_with(&f("hash", false)));

        let g = unit(
            vec![
                opt("Service", "ExecStart", "/bin/true"),
                opt("X-Fleet", "Global", "true"),
            ],
            None,
            None,
        );
        assert_eq!(unit_file_field("target", &g, &machines, false), "global");
        assert_eq!(unit_file_field("state", &g, &machines, false), "-");
        assert_eq!(unit_file_field("desc", &g, &machines, false), "-");
        assert_eq!(effective_state(&g), TargetState::Launched);

        let idle = unit(vec![opt("Service", "ExecStart", "/bin/true")], None, None);
        assert_eq!(unit_file_field("target", &idle, &machines, false), "-");
        assert_eq!(unit_file_field("state", &idle, &machines, false), "-");
        assert_eq!(effective_state(&idle), TargetState::Inactive);
        // A machine no longer listed: its ID alone.
        let gone = unit(vec![], Some(TargetState::Loaded), Some("deadbeefcafe"));
        assert_eq!(
            unit_file_field("target", &gone, &machines, false),
            "deadbeef..."
        );
    }

    #[test]
    fn unit_state_fields() {
        let machines = BTreeMap::new();
        let s = UnitState {
            name: "hello.service".into(),
            hash: "e55c0ae2d8a34d2bbd0d3fe3e8b7c2f14e4f1a61".into(),
            machine_id: "113f16a7b2c94a8c".into(),
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
        };
        let f = |field: &str, full: bool| unit_state_field(field, &s, &machines, full);
        assert_eq!(f("hash", false), "e55c0ae");
        assert_eq!(f("hash", true), s.hash);
        assert_eq!(f("machine", false), "113f16a7...");
        assert_eq!(f("load", false), "loaded");
        assert_eq!(f("sub", false), "running");
    }

    #[test]
    fn legend_and_rows() {
        let text = table(
            &["machine", "ip", "metadata"],
            true,
            vec![vec![
                "113f16a7...".into(),
                "172.17.8.103".into(),
                "az=us-west-1b".into(),
            ]],
        );
        assert_eq!(
            text,
            "MACHINE\t\tIP\t\tMETADATA\n113f16a7...\t172.17.8.103\taz=us-west-1b\n"
        );
        let text = table(
            &["machine"],
            false,
            vec![vec!["a...".into()], vec!["b...".into()]],
        );
        assert_eq!(text, "a...\nb...\n");
    }
}
