//! users: accounts written straight into the tree's /etc/passwd, /etc/shadow, /etc/group and
//! /etc/gshadow, with what coreos-cloudinit's `useradd` call would have produced. There is no
//! useradd to run against a directory tree, and editing the files keeps their other lines and
//! their order untouched.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::fsutil::{copy_tree, Attrs, FsError};
use super::Applier;
use crate::cloudconfig::model::{CloudConfig, User};

const PASSWD: &str = "/etc/passwd";
const SHADOW: &str = "/etc/shadow";
const GROUP: &str = "/etc/group";
const GSHADOW: &str = "/etc/gshadow";

/// login.defs' UID_MIN/UID_MAX and SYS_UID_MIN/SYS_UID_MAX on Debian (GID ranges alike).
const FIRST_REGULAR_ID: u32 = 1000;
const LAST_REGULAR_ID: u32 = 59999;
const FIRST_SYSTEM_ID: u32 = 100;
const LAST_SYSTEM_ID: u32 = 999;

/// Debian's /etc/default/useradd GROUP: the primary group of users made with no_user_group.
const USERS_GROUP: &str = "users";
const USERS_GID: u32 = 100;

/// The shadow password of an account that has none. "*" matches no password, so the account
/// cannot log in with one, yet unlike "!" it is not "locked" in OpenSSH's eyes, so SSH keys
/// keep working even where sshd runs without PAM.
const NO_PASSWORD: &str = "*";

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {user}: {source}")]
    Fs {
        user: String,
        #[source]
        source: FsError,
    },
    #[error("user {user}: {file} has no entry for group {group}")]
    NoGroupEntry {
        user: String,
        file: &'static str,
        group: String,
    },
    #[error("user {user}: no free {kind} id left in {first}..={last}")]
    NoFreeId {
        user: String,
        kind: &'static str,
        first: u32,
        last: u32,
    },
    #[error("user {user}: {field} {value:?} contains ':' or a newline")]
    BadField {
        user: String,
        field: &'static str,
        value: String,
    },
}

/// One of the colon-separated account files: its lines as read, so what we do not touch is
/// written back byte for byte.
#[derive(Debug, Clone)]
pub struct Table {
    pub path: &'static str,
    lines: Vec<String>,
    pub exists: bool,
    dirty: bool,
}

impl Table {
    fn load(applier: &Applier, path: &'static str) -> Result<Table, FsError> {
        let text = applier.fs.read_string(path)?;
        Ok(Table {
            path,
            exists: text.is_some(),
            lines: text
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect(),
            dirty: false,
        })
    }

    pub fn find(&self, name: &str) -> Option<Vec<String>> {
        self.lines
            .iter()
            .find(|line| line.split(':').next() == Some(name))
            .map(|line| line.split(':').map(str::to_string).collect())
    }

    fn entries(&self) -> impl Iterator<Item = Vec<&str>> {
        self.lines
            .iter()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| line.split(':').collect())
    }

    fn ids(&self) -> BTreeSet<u32> {
        self.entries()
            .filter_map(|fields| fields.get(2).and_then(|id| id.parse().ok()))
            .collect()
    }

    fn replace(&mut self, name: &str, fields: &[String]) {
        let line = fields.join(":");
        if let Some(existing) = self
            .lines
            .iter_mut()
            .find(|line| line.split(':').next() == Some(name))
        {
            if *existing != line {
                *existing = line;
                self.dirty = true;
            }
        } else {
            self.lines.push(line);
            self.dirty = true;
        }
    }

    /// Writes the table back if it changed, keeping the file's mode and owner (or `fresh`
    /// for a file that did not exist).
    fn save(&self, applier: &mut Applier, fresh: Attrs) -> Result<(), FsError> {
        if !self.dirty {
            return Ok(());
        }
        let attrs = match applier.fs.resolve(self.path)? {
            Some(host) => match fs::metadata(&host) {
                Ok(meta) => Attrs {
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                },
                Err(_) => fresh,
            },
            None => fresh,
        };
        let mut text = self.lines.join("\n");
        text.push('\n');
        applier.fs.write(self.path, text.as_bytes(), attrs)?;
        applier.changed(format!("updated {}", self.path));
        Ok(())
    }
}

/// The four account files of the tree.
pub struct Accounts {
    pub passwd: Table,
    pub shadow: Table,
    pub group: Table,
    pub gshadow: Table,
}

impl Accounts {
    pub fn load(applier: &Applier) -> Result<Accounts, FsError> {
        Ok(Accounts {
            passwd: Table::load(applier, PASSWD)?,
            shadow: Table::load(applier, SHADOW)?,
            group: Table::load(applier, GROUP)?,
            gshadow: Table::load(applier, GSHADOW)?,
        })
    }

    pub fn save(&self, applier: &mut Applier) -> Result<(), FsError> {
        // Groups first: a passwd entry should never name a gid that is not written yet.
        let shadow_gid = self
            .group
            .find("shadow")
            .and_then(|fields| fields.get(2).and_then(|gid| gid.parse().ok()))
            .unwrap_or(0);
        let secret = Attrs {
            mode: 0o640,
            uid: 0,
            gid: shadow_gid,
        };
        self.group.save(applier, Attrs::root(0o644))?;
        if self.gshadow.exists {
            self.gshadow.save(applier, secret)?;
        }
        self.passwd.save(applier, Attrs::root(0o644))?;
        self.shadow.save(applier, secret)?;
        Ok(())
    }

    pub fn user(&self, name: &str) -> Option<Account> {
        let fields = self.passwd.find(name)?;
        Some(Account {
            uid: fields.get(2)?.parse().ok()?,
            gid: fields.get(3)?.parse().ok()?,
            home: fields.get(5)?.clone(),
        })
    }

    pub fn gid(&self, group: &str) -> Option<u32> {
        if let Ok(gid) = group.parse() {
            return Some(gid);
        }
        self.group.find(group)?.get(2)?.parse().ok()
    }

    pub fn uid(&self, user: &str) -> Option<u32> {
        if let Ok(uid) = user.parse() {
            return Some(uid);
        }
        self.user(user).map(|account| account.uid)
    }

    /// A free id: counting up from the first regular id past the highest one in use, as
    /// useradd does, or down from 999 for system accounts.
    fn free_id(&self, table_ids: &BTreeSet<u32>, system: bool) -> Option<u32> {
        if system {
            (FIRST_SYSTEM_ID..=LAST_SYSTEM_ID)
                .rev()
                .find(|id| !table_ids.contains(id))
        } else {
            let highest = table_ids
                .range(FIRST_REGULAR_ID..=LAST_REGULAR_ID)
                .next_back()
                .copied();
            match highest {
                Some(id) if id < LAST_REGULAR_ID => Some(id + 1),
                Some(_) => (FIRST_REGULAR_ID..=LAST_REGULAR_ID).find(|id| !table_ids.contains(id)),
                None => Some(FIRST_REGULAR_ID),
            }
        }
    }

    /// Makes `name` a group (a system group unless `regular`), returning its gid and whether
    /// it was created.
    fn ensure_group(
        &mut self,
        user: &str,
        name: &str,
        wanted_gid: Option<u32>,
        system: bool,
    ) -> Result<(u32, bool), UserError> {
        if let Some(gid) = self.gid(name) {
            return Ok((gid, false));
        }
        check_field(user, "group", name)?;
        let ids = self.group.ids();
        let gid = match wanted_gid.filter(|gid| !ids.contains(gid)) {
            Some(gid) => gid,
            None => self.free_id(&ids, system).ok_or(UserError::NoFreeId {
                user: user.to_string(),
                kind: "group",
                first: if system {
                    FIRST_SYSTEM_ID
                } else {
                    FIRST_REGULAR_ID
                },
                last: if system {
                    LAST_SYSTEM_ID
                } else {
                    LAST_REGULAR_ID
                },
            })?,
        };
        self.group.replace(
            name,
            &[name.into(), "x".into(), gid.to_string(), String::new()],
        );
        if self.gshadow.exists {
            self.gshadow.replace(
                name,
                &[name.into(), "!".into(), String::new(), String::new()],
            );
        }
        Ok((gid, true))
    }

    /// Adds `user` to the member list of `group` in group and gshadow; whether it was new.
    fn add_member(&mut self, user: &str, group: &str) -> Result<bool, UserError> {
        let mut added = false;
        for (table, members_at) in [(&mut self.group, 3), (&mut self.gshadow, 3)] {
            if !table.exists && table.path == GSHADOW {
                continue;
            }
            let Some(mut fields) = table.find(group) else {
                return Err(UserError::NoGroupEntry {
                    user: user.to_string(),
                    file: table.path,
                    group: group.to_string(),
                });
            };
            fields.resize(fields.len().max(members_at + 1), String::new());
            let mut members: Vec<String> = fields[members_at]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            if !members.iter().any(|m| m == user) {
                members.push(user.to_string());
                fields[members_at] = members.join(",");
                table.replace(group, &fields);
                added = true;
            }
        }
        Ok(added)
    }
}

/// What other sections need to know about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

fn check_field(user: &str, field: &'static str, value: &str) -> Result<(), UserError> {
    if value.contains(':') || value.contains('\n') {
        return Err(UserError::BadField {
            user: user.to_string(),
            field,
            value: value.to_string(),
        });
    }
    Ok(())
}

fn days_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0)
}

pub fn apply(applier: &mut Applier, config: &CloudConfig) {
    for user in &config.users {
        if let Err(err) = apply_user(applier, user) {
            applier.issue(user.line, err);
        }
    }
}

fn apply_user(applier: &mut Applier, user: &User) -> Result<(), UserError> {
    let fs_error = |source| UserError::Fs {
        user: user.name.clone(),
        source,
    };
    let mut accounts = Accounts::load(applier).map_err(fs_error)?;
    let mut lines = Vec::new();
    if accounts.user(&user.name).is_none() {
        create(applier, &mut accounts, user, &mut lines)?;
    } else {
        update(&mut accounts, user, &mut lines)?;
    }
    if lines.is_empty() {
        applier.unchanged();
    }
    for line in lines {
        applier.changed(line);
    }
    accounts.save(applier).map_err(fs_error)?;
    if !user.ssh_authorized_keys.is_empty() {
        applier.keys.add(
            &user.name,
            super::ssh_keys::CLOUDINIT_SOURCE,
            user.line,
            &user.ssh_authorized_keys,
        );
    }
    Ok(())
}

/// An existing account keeps everything useradd would have set at creation (as in
/// coreos-cloudinit, which only resets the password); the config can still give it a new
/// password and more supplementary groups.
fn update(accounts: &mut Accounts, user: &User, lines: &mut Vec<String>) -> Result<(), UserError> {
    if let Some(hash) = &user.passwd {
        check_field(&user.name, "passwd", hash)?;
        let mut fields = accounts
            .shadow
            .find(&user.name)
            .unwrap_or_else(|| shadow_entry(&user.name, NO_PASSWORD));
        fields.resize(fields.len().max(9), String::new());
        if fields[1] != *hash {
            fields[1] = hash.clone();
            fields[2] = days_since_epoch().to_string();
            accounts.shadow.replace(&user.name, &fields);
            lines.push(format!("set the password of user {}", user.name));
        }
    }
    add_groups(accounts, user, lines)
}

fn add_groups(
    accounts: &mut Accounts,
    user: &User,
    lines: &mut Vec<String>,
) -> Result<(), UserError> {
    for group in &user.groups {
        let (_, created) = accounts.ensure_group(&user.name, group, None, true)?;
        if created {
            lines.push(format!("created group {group}"));
        }
        if accounts.add_member(&user.name, group)? {
            lines.push(format!("added user {} to group {group}", user.name));
        }
    }
    Ok(())
}

fn shadow_entry(name: &str, hash: &str) -> Vec<String> {
    vec![
        name.to_string(),
        hash.to_string(),
        days_since_epoch().to_string(),
        "0".into(),
        "99999".into(),
        "7".into(),
        String::new(),
        String::new(),
        String::new(),
    ]
}

pub fn create(
    applier: &mut Applier,
    accounts: &mut Accounts,
    user: &User,
    lines: &mut Vec<String>,
) -> Result<(), UserError> {
    let name = &user.name;
    check_field(name, "name", name)?;
    for (field, value) in [
        ("gecos", &user.gecos),
        ("homedir", &user.homedir),
        ("shell", &user.shell),
        ("primary_group", &user.primary_group),
        ("passwd", &user.passwd),
    ] {
        if let Some(value) = value {
            check_field(name, field, value)?;
        }
    }
    let uid = accounts
        .free_id(&accounts.passwd.ids(), user.system)
        .ok_or(UserError::NoFreeId {
            user: name.clone(),
            kind: "user",
            first: if user.system {
                FIRST_SYSTEM_ID
            } else {
                FIRST_REGULAR_ID
            },
            last: if user.system {
                LAST_SYSTEM_ID
            } else {
                LAST_REGULAR_ID
            },
        })?;
    let gid = if let Some(group) = &user.primary_group {
        let (gid, created) = accounts.ensure_group(name, group, None, true)?;
        if created {
            lines.push(format!("created group {group}"));
        }
        gid
    } else if user.no_user_group {
        accounts.gid(USERS_GROUP).unwrap_or(USERS_GID)
    } else {
        // useradd's user private group: same name, and the same number when it is free.
        let (gid, created) = accounts.ensure_group(name, name, Some(uid), user.system)?;
        if created {
            lines.push(format!("created group {name}"));
        }
        gid
    };
    let home = user
        .homedir
        .clone()
        .unwrap_or_else(|| format!("/home/{name}"));
    let shell = user.shell.clone().unwrap_or_else(|| {
        if applier.fs.exists("/bin/bash") {
            "/bin/bash".into()
        } else {
            "/bin/sh".into()
        }
    });
    accounts.passwd.replace(
        name,
        &[
            name.clone(),
            "x".into(),
            uid.to_string(),
            gid.to_string(),
            user.gecos.clone().unwrap_or_default(),
            home.clone(),
            shell,
        ],
    );
    let hash = user.passwd.as_deref().unwrap_or(NO_PASSWORD);
    accounts.shadow.replace(name, &shadow_entry(name, hash));
    lines.push(format!("created user {name} (uid {uid})"));
    add_groups(accounts, user, lines)?;
    if !user.no_create_home {
        create_home(applier, name, &home, uid, gid, lines)?;
    }
    Ok(())
}

/// The home directory, 0755 and owned by the user, filled from /etc/skel when it is new (an
/// existing directory is left as it is, as useradd leaves it).
fn create_home(
    applier: &mut Applier,
    user: &str,
    home: &str,
    uid: u32,
    gid: u32,
    lines: &mut Vec<String>,
) -> Result<(), UserError> {
    let fs_error = |source| UserError::Fs {
        user: user.to_string(),
        source,
    };
    if applier.fs.exists(home) {
        return Ok(());
    }
    applier
        .fs
        .ensure_dir(
            home,
            Attrs {
                mode: 0o755,
                uid,
                gid,
            },
        )
        .map_err(fs_error)?;
    lines.push(format!("created {home}"));
    if let Some(skel) = applier.fs.resolve("/etc/skel").map_err(fs_error)? {
        if skel.is_dir() {
            let target = applier
                .fs
                .resolve(home)
                .map_err(fs_error)?
                .expect("the home directory was just created");
            copy_tree(&skel, &target, home, uid, gid).map_err(fs_error)?;
        }
    }
    Ok(())
}

/// Creates the default user `core` the way Container Linux ships it, for SSH keys given at the
/// top level or by metadata when the tree has no such user: in the admin and docker groups
/// the tree has.
pub fn ensure_default_user(
    applier: &mut Applier,
    name: &str,
) -> Result<Option<Account>, UserError> {
    let fs_error = |source| UserError::Fs {
        user: name.to_string(),
        source,
    };
    let mut accounts = Accounts::load(applier).map_err(fs_error)?;
    if let Some(account) = accounts.user(name) {
        return Ok(Some(account));
    }
    let groups = ["sudo", "wheel", "docker"]
        .into_iter()
        .filter(|group| accounts.gid(group).is_some())
        .map(str::to_string)
        .collect();
    let user = User {
        name: name.to_string(),
        gecos: Some("CoreOS Admin".into()),
        groups,
        ..User::default()
    };
    let mut lines = Vec::new();
    create(applier, &mut accounts, &user, &mut lines)?;
    for line in lines {
        applier.changed(line);
    }
    accounts.save(applier).map_err(fs_error)?;
    Ok(accounts.user(name))
}

/// The account `name` as the tree's /etc/passwd has it now.
pub fn lookup(applier: &Applier, name: &str) -> Result<Option<Account>, FsError> {
    Ok(Accounts::load(applier)?.user(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(lines: &[&str]) -> Table {
        Table {
            path: PASSWD,
            lines: lines.iter().map(|l| l.to_string()).collect(),
            exists: true,
            dirty: false,
        }
    }

    fn accounts(passwd: &[&str]) -> Accounts {
        Accounts {
            passwd: table(passwd),
            shadow: table(&[]),
            group: table(&[]),
            gshadow: table(&[]),
        }
    }

    #[test]
    fn regular_ids_count_up_past_the_highest() {
        let a = accounts(&[
            "root:x:0:0::/root:/bin/sh",
            "a:x:1000:1000::/h:/bin/sh",
            "nobody:x:65534:65534::/:/bin/false",
        ]);
        assert_eq!(a.free_id(&a.passwd.ids(), false), Some(1001));
        let empty = accounts(&["root:x:0:0::/root:/bin/sh"]);
        assert_eq!(empty.free_id(&empty.passwd.ids(), false), Some(1000));
    }

    #[test]
    fn system_ids_count_down_from_999() {
        let a = accounts(&["s:x:999:999::/:/bin/false"]);
        assert_eq!(a.free_id(&a.passwd.ids(), true), Some(998));
    }

    #[test]
    fn replace_keeps_other_lines_in_place() {
        let mut t = table(&["# comment", "a:x:1", "b:x:2"]);
        t.replace("a", &["a".into(), "y".into(), "1".into()]);
        assert_eq!(t.lines, vec!["# comment", "a:y:1", "b:x:2"]);
        assert!(t.dirty);
    }
}
