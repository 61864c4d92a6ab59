//! The cluster's state in etcd v3, under fleet's key prefix (`/_coreos.com/fleet/` unless
//! `etcd_key_prefix` says otherwise):
//!
//! ```text
//! unit/<sha1>                   a unit file's text, stored once per content (fleet's layout)
//! job/<name>/object             {"name","unitHash"}: a unit the cluster knows
//! job/<name>/target-state       inactive | loaded | launched: what the operator asked for
//! job/<name>/target             the machine the engine scheduled it to (written only by the
//!                               elected engine, fenced by its leadership key)
//! machines/<id>/object          a live machine (fleet's JSON), bound to the machine's lease
//! state/<name>/<id>             what systemd on <id> says of <name>, bound to <id>'s lease
//! engine-leader                 the engine election (etcd's election API)
//! ```
//!
//! Keys a machine publishes live under its lease, so a machine that stops keeping the lease
//! alive disappears — with its unit states — within agent_ttl, and the engine moves its units.

use std::collections::BTreeMap;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, LeaderKey, PutOptions, Txn, TxnOp,
};
use serde::{Deserialize, Serialize};

use crate::model::{Machine, TargetState, UnitState};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("etcd: {0}")]
    Etcd(#[from] Box<etcd_client::Error>),
    #[error("unit {0} not found")]
    UnitNotFound(String),
    #[error("unit {0} already exists with a different unit file")]
    Conflict(String),
    #[error("machine {0} not found")]
    MachineNotFound(String),
    #[error("machine ID {0} is already registered by a live fleetd (two machines with one ID?)")]
    DuplicateMachine(String),
    #[error("lost the engine leadership")]
    NotLeader,
    #[error("corrupt registry entry {key}: {problem}")]
    Corrupt { key: String, problem: String },
}

impl From<etcd_client::Error> for RegistryError {
    fn from(e: etcd_client::Error) -> Self {
        RegistryError::Etcd(Box::new(e))
    }
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// fleet's default key prefix.
pub const DEFAULT_PREFIX: &str = "/_coreos.com/fleet/";

/// `job/<name>/object`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobObject {
    name: String,
    unit_hash: String,
}

/// A unit's keys as read: object, desired state, schedule.
type JobKeys = (Option<JobObject>, Option<TargetState>, Option<String>);

/// One unit as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub name: String,
    pub unit_hash: String,
    /// The unit file's text (empty if its blob is missing).
    pub unit_text: String,
    pub desired: TargetState,
    /// The machine the engine scheduled it to.
    pub target: Option<String>,
}

/// `state/<name>/<machine>`: the API's UnitState plus what the agent has made of the unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedState {
    #[serde(flatten)]
    pub state: UnitState,
    #[serde(rename = "currentState")]
    pub current: TargetState,
}

/// A handle on the registry: cheap to clone (etcd clients share one channel).
#[derive(Clone)]
pub struct Registry {
    client: Client,
    prefix: String,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Registry {
    /// `prefix` as configured; a missing trailing slash is added.
    pub fn new(client: Client, prefix: &str) -> Registry {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Registry { client, prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn job_key(&self, name: &str, leaf: &str) -> String {
        self.key(&format!("job/{name}/{leaf}"))
    }

    fn machine_key(&self, id: &str) -> String {
        self.key(&format!("machines/{id}/object"))
    }

    fn state_key(&self, name: &str, machine: &str) -> String {
        self.key(&format!("state/{name}/{machine}"))
    }

    pub fn election_name(&self) -> String {
        self.key("engine-leader")
    }

    // ----- units -------------------------------------------------------------------------

    /// Creates unit `name` from `unit_text` with `desired`; a unit that exists with the same
    /// text only gets `desired`. Returns true when it was created.
    pub async fn create_job(
        &self,
        name: &str,
        unit_text: &str,
        unit_hash: &str,
        desired: TargetState,
    ) -> Result<bool> {
        let mut kv = self.client.kv_client();
        let blob = self.key(&format!("unit/{unit_hash}"));
        let object_key = self.job_key(name, "object");
        let object = serde_json::to_string(&JobObject {
            name: name.to_string(),
            unit_hash: unit_hash.to_string(),
        })
        .expect("job object serialises");
        // The unit text first: a job never points at a blob that is not there.
        kv.txn(
            Txn::new()
                .when([Compare::create_revision(blob.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(blob, unit_text, None)]),
        )
        .await?;
        let created = kv
            .txn(
                Txn::new()
                    .when([Compare::create_revision(
                        object_key.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then([
                        TxnOp::put(object_key.clone(), object.clone(), None),
                        TxnOp::put(self.job_key(name, "target-state"), desired.as_str(), None),
                    ]),
            )
            .await?
            .succeeded();
        if created {
            return Ok(true);
        }
        // It exists: same file → only the desired state; another file → conflict.
        let same = kv
            .txn(
                Txn::new()
                    .when([Compare::value(object_key, CompareOp::Equal, object)])
                    .and_then([TxnOp::put(
                        self.job_key(name, "target-state"),
                        desired.as_str(),
                        None,
                    )]),
            )
            .await?
            .succeeded();
        if same {
            Ok(false)
        } else {
            Err(RegistryError::Conflict(name.to_string()))
        }
    }

    /// Sets an existing unit's desired state.
    pub async fn set_desired_state(&self, name: &str, desired: TargetState) -> Result<()> {
        let op = TxnOp::put(self.job_key(name, "target-state"), desired.as_str(), None);
        self.if_job_exists(name, op).await
    }

    /// Removes a unit (its object, desired state and schedule). Agents then stop and unload
    /// it; its text stays under `unit/` for any other unit with the same content.
    pub async fn destroy_job(&self, name: &str) -> Result<()> {
        let prefix = self.key(&format!("job/{name}/"));
        let op = TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix()));
        self.if_job_exists(name, op).await
    }

    /// Runs `op` in a transaction that first checks that unit `name` exists.
    async fn if_job_exists(&self, name: &str, op: TxnOp) -> Result<()> {
        let exists = Compare::create_revision(self.job_key(name, "object"), CompareOp::Greater, 0);
        let ok = self
            .client
            .kv_client()
            .txn(Txn::new().when([exists]).and_then([op]))
            .await?
            .succeeded();
        if ok {
            Ok(())
        } else {
            Err(RegistryError::UnitNotFound(name.to_string()))
        }
    }

    /// Every unit, sorted by name. Two prefix reads at one revision (units, then their texts)
    /// instead of a read per unit: every agent and the engine call this on every pass.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>> {
        let mut kv = self.client.kv_client();
        let job_prefix = self.key("job/");
        let resp = kv
            .get(job_prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut objects: BTreeMap<String, JobKeys> = BTreeMap::new();
        for kv in resp.kvs() {
            let key = text(kv.key());
            let Some(rest) = key.strip_prefix(&job_prefix) else {
                continue;
            };
            let Some((name, leaf)) = rest.rsplit_once('/') else {
                continue;
            };
            let entry = objects.entry(name.to_string()).or_default();
            match leaf {
                "object" => {
                    entry.0 = Some(serde_json::from_slice(kv.value()).map_err(|e| {
                        RegistryError::Corrupt {
                            key: key.clone(),
                            problem: e.to_string(),
                        }
                    })?)
                }
                "target-state" => entry.1 = TargetState::parse(&text(kv.value())),
                "target" => entry.2 = Some(text(kv.value())).filter(|m| !m.is_empty()),
                _ => {}
            }
        }
        let unit_prefix = self.key("unit/");
        let texts: BTreeMap<String, String> = kv
            .get(
                unit_prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_revision(revision)),
            )
            .await?
            .kvs()
            .iter()
            .filter_map(|kv| {
                let hash = text(kv.key()).strip_prefix(&unit_prefix)?.to_string();
                Some((hash, text(kv.value())))
            })
            .collect();
        Ok(objects
            .into_iter()
            // A half-destroyed or half-created job (no object) is not a unit.
            .filter_map(|(name, (object, desired, target))| {
                let object = object?;
                Some(JobRecord {
                    name,
                    unit_text: texts.get(&object.unit_hash).cloned().unwrap_or_default(),
                    unit_hash: object.unit_hash,
                    desired: desired.unwrap_or(TargetState::Inactive),
                    target,
                })
            })
            .collect())
    }

    pub async fn job(&self, name: &str) -> Result<Option<JobRecord>> {
        Ok(self.jobs().await?.into_iter().find(|j| j.name == name))
    }

    // ----- scheduling (engine only) ------------------------------------------------------

    /// Schedules `name` to `machine` if this engine still leads and the unit still exists.
    pub async fn schedule(&self, leader: &LeaderKey, name: &str, machine: &str) -> Result<()> {
        self.fenced(
            leader,
            name,
            TxnOp::put(self.job_key(name, "target"), machine, None),
        )
        .await
    }

    /// Unschedules `name` if this engine still leads.
    pub async fn unschedule(&self, leader: &LeaderKey, name: &str) -> Result<()> {
        self.fenced(
            leader,
            name,
            TxnOp::delete(self.job_key(name, "target"), None),
        )
        .await
    }

    /// Runs `op` only while `leader` is the election's current key (a deposed engine's late
    /// writes fail instead of fighting the new leader's) and the unit exists.
    async fn fenced(&self, leader: &LeaderKey, name: &str, op: TxnOp) -> Result<()> {
        let leader_key = leader.key().to_vec();
        let resp = self
            .client
            .kv_client()
            .txn(
                Txn::new()
                    .when([
                        Compare::create_revision(leader_key, CompareOp::Equal, leader.rev()),
                        Compare::create_revision(
                            self.job_key(name, "object"),
                            CompareOp::Greater,
                            0,
                        ),
                    ])
                    .and_then([op]),
            )
            .await?;
        if resp.succeeded() {
            return Ok(());
        }
        let still_leader = self
            .client
            .kv_client()
            .get(leader.key(), None)
            .await?
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == leader.rev());
        if still_leader {
            Err(RegistryError::UnitNotFound(name.to_string()))
        } else {
            Err(RegistryError::NotLeader)
        }
    }

    // ----- machines ----------------------------------------------------------------------

    /// Publishes `machine` under `lease` unless another live lease holds its ID.
    pub async fn register_machine(&self, machine: &Machine, lease: i64) -> Result<()> {
        let key = self.machine_key(&machine.id);
        let value = serde_json::to_string(machine).expect("machine serialises");
        let ok = self
            .client
            .kv_client()
            .txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key,
                        value,
                        Some(PutOptions::new().with_lease(lease)),
                    )]),
            )
            .await?
            .succeeded();
        if ok {
            Ok(())
        } else {
            Err(RegistryError::DuplicateMachine(machine.id.clone()))
        }
    }

    /// Every live machine, sorted by ID.
    pub async fn machines(&self) -> Result<Vec<Machine>> {
        let resp = self
            .client
            .kv_client()
            .get(self.key("machines/"), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut machines = Vec::new();
        for kv in resp.kvs() {
            let key = text(kv.key());
            if !key.ends_with("/object") {
                continue;
            }
            machines.push(serde_json::from_slice::<Machine>(kv.value()).map_err(|e| {
                RegistryError::Corrupt {
                    key,
                    problem: e.to_string(),
                }
            })?);
        }
        machines.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(machines)
    }

    /// Rewrites machine `id`'s metadata with `change`, keeping the machine's lease; retried
    /// when the machine object changed under it.
    pub async fn update_machine_metadata(
        &self,
        id: &str,
        change: impl Fn(&mut BTreeMap<String, String>),
    ) -> Result<()> {
        let key = self.machine_key(id);
        let mut kv = self.client.kv_client();
        loop {
            let resp = kv.get(key.clone(), None).await?;
            let Some(current) = resp.kvs().first() else {
                return Err(RegistryError::MachineNotFound(id.to_string()));
            };
            let mut machine: Machine =
                serde_json::from_slice(current.value()).map_err(|e| RegistryError::Corrupt {
                    key: key.clone(),
                    problem: e.to_string(),
                })?;
            change(&mut machine.metadata);
            let value = serde_json::to_string(&machine).expect("machine serialises");
            let ok = kv
                .txn(
                    Txn::new()
                        .when([Compare::mod_revision(
                            key.clone(),
                            CompareOp::Equal,
                            current.mod_revision(),
                        )])
                        .and_then([TxnOp::put(
                            key.clone(),
                            value,
                            Some(PutOptions::new().with_lease(current.lease())),
                        )]),
                )
                .await?
                .succeeded();
            if ok {
                return Ok(());
            }
        }
    }

    // ----- changes -----------------------------------------------------------------------

    /// Calls `notify.notify_waiters()` whenever units (`job/`) or machines change, for as long
    /// as the task runs; a broken watch (etcd restarting) is opened again. Unit states are not
    /// watched: agents write them on every change they see, and watching them would make the
    /// agents wake each other for nothing.
    pub async fn watch_changes(&self, notify: std::sync::Arc<tokio::sync::Notify>) {
        loop {
            let mut client = self.client.clone();
            let mut streams = Vec::new();
            for prefix in [self.key("job/"), self.key("machines/")] {
                match client
                    .watch(prefix, Some(etcd_client::WatchOptions::new().with_prefix()))
                    .await
                {
                    Ok(stream) => streams.push(stream),
                    Err(e) => tracing::debug!(error = %e, "watch failed; retrying"),
                }
            }
            if streams.len() == 2 {
                // Something may have changed while no watch was open.
                notify.notify_waiters();
                let [mut jobs, mut machines] = <[_; 2]>::try_from(streams).expect("two watches");
                loop {
                    let event = tokio::select! {
                        e = jobs.message() => e,
                        e = machines.message() => e,
                    };
                    match event {
                        Ok(Some(_)) => notify.notify_waiters(),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    // ----- unit states (agents) ----------------------------------------------------------

    pub async fn publish_state(&self, state: &PublishedState, lease: i64) -> Result<()> {
        let key = self.state_key(&state.state.name, &state.state.machine_id);
        let value = serde_json::to_string(state).expect("state serialises");
        self.client
            .kv_client()
            .put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await?;
        Ok(())
    }

    pub async fn remove_state(&self, name: &str, machine: &str) -> Result<()> {
        self.client
            .kv_client()
            .delete(self.state_key(name, machine), None)
            .await?;
        Ok(())
    }

    /// Every published unit state, sorted by unit name, then machine ID.
    pub async fn states(&self) -> Result<Vec<PublishedState>> {
        let resp = self
            .client
            .kv_client()
            .get(self.key("state/"), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut states = Vec::new();
        for kv in resp.kvs() {
            let key = text(kv.key());
            states.push(
                serde_json::from_slice::<PublishedState>(kv.value()).map_err(|e| {
                    RegistryError::Corrupt {
                        key,
                        problem: e.to_string(),
                    }
                })?,
            );
        }
        states.sort_by(|a, b| {
            (&a.state.name, &a.state.machine_id).cmp(&(&b.state.name, &b.state.machine_id))
        });
        Ok(states)
    }
}
