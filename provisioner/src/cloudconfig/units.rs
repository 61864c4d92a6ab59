//! `coreos.units` — systemd units, their drop-ins, and what to do with them.

use super::model::{DropIn, Unit, UnitCommand};
use super::walk::{child_path, index_path, truncate, Walker};
use super::yaml::Node;

const UNIT_KEYS: &[&str] = &[
    "name", "runtime", "enable", "mask", "content", "command", "drop_ins",
];
const DROP_IN_KEYS: &[&str] = &["name", "content"];

pub fn parse_units(walker: &mut Walker, node: &Node, path: &str) -> Vec<Unit> {
    let items = walker.sequence(node, path, "a list of units");
    let mut units = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if let Some(unit) = parse_unit(walker, item, &index_path(path, index)) {
            units.push(unit);
        }
    }
    units
}

fn parse_unit(walker: &mut Walker, node: &Node, path: &str) -> Option<Unit> {
    let entries = walker.mapping(node, path)?;
    let mut unit = Unit {
        line: node.line,
        ..Unit::default()
    };
    let mut name = None;
    for entry in &entries {
        let key_path = child_path(path, &entry.key);
        let value = entry.value;
        match entry.key.as_str() {
            "name" => name = walker.string(value, &key_path),
            "runtime" => unit.runtime = walker.boolean(value, &key_path).unwrap_or(false),
            "enable" => unit.enable = walker.boolean(value, &key_path).unwrap_or(false),
            "mask" => unit.mask = walker.boolean(value, &key_path).unwrap_or(false),
            "content" => unit.content = walker.string(value, &key_path),
            "command" => {
                let Some(command) = walker.string(value, &key_path) else {
                    continue;
                };
                match UnitCommand::parse(&command) {
                    Some(command) => unit.command = Some(command),
                    None => walker.error(
                        value.line,
                        format!(
                            "\"{key_path}\" \"{}\" is not one of start, stop, restart, reload, \
                             try-restart, reload-or-restart, reload-or-try-restart",
                            truncate(&command)
                        ),
                    ),
                }
            }
            "drop_ins" => {
                let items = walker.sequence(value, &key_path, "a list of drop-ins");
                for (index, item) in items.iter().enumerate() {
                    if let Some(drop_in) =
                        parse_drop_in(walker, item, &index_path(&key_path, index))
                    {
                        unit.drop_ins.push(drop_in);
                    }
                }
            }
            _ => walker.unknown_key(entry, path, UNIT_KEYS),
        }
    }
    let name = required_file_name(walker, node, path, name)?;
    if !name.contains('.') {
        walker.warning(
            node.line,
            format!(
                "\"{path}.name\" \"{}\" has no unit type suffix (.service, .timer, ...)",
                truncate(&name)
            ),
        );
    }
    unit.name = name;
    Some(unit)
}

/// The `name` of a unit or drop-in: present, and usable as one file name (it becomes a path
/// under the systemd folders). An error entry otherwise.
fn required_file_name(
    walker: &mut Walker,
    node: &Node,
    path: &str,
    name: Option<String>,
) -> Option<String> {
    let Some(name) = name.filter(|name| !name.trim().is_empty()) else {
        walker.error(node.line, format!("\"{path}\" has no name"));
        return None;
    };
    if let Some(problem) = file_name_problem(&name) {
        walker.error(
            node.line,
            format!("\"{path}.name\" \"{}\" {problem}", truncate(&name)),
        );
        return None;
    }
    Some(name)
}

fn parse_drop_in(walker: &mut Walker, node: &Node, path: &str) -> Option<DropIn> {
    let entries = walker.mapping(node, path)?;
    let mut name = None;
    let mut content = None;
    for entry in &entries {
        let key_path = child_path(path, &entry.key);
        match entry.key.as_str() {
            "name" => name = walker.string(entry.value, &key_path),
            "content" => content = walker.string(entry.value, &key_path),
            _ => walker.unknown_key(entry, path, DROP_IN_KEYS),
        }
    }
    let name = required_file_name(walker, node, path, name)?;
    if content.is_none() {
        walker.warning(
            node.line,
            format!("\"{path}\" has no content; an empty drop-in will be written"),
        );
    }
    Some(DropIn {
        line: node.line,
        name,
        content: content.unwrap_or_default(),
    })
}

/// Unit and drop-in names become file names under systemd's directories: they must not
/// name another directory.
fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.contains('/') {
        Some("must not contain '/'")
    } else if name == "." || name == ".." {
        Some("is not a file name")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    }
}
