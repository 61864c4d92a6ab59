//! The network in etcd v3, in flannel's layout (so upstream flanneld can share it):
//!
//! ```text
//! <prefix>/config               the network config (network.rs), written by the operator
//! <prefix>/subnets/A.B.C.D-LEN  one machine's lease: {"PublicIP","BackendType","BackendData"},
//!                               bound to an etcd lease (24 h unless --subnet-lease-ttl says
//!                               otherwise) that its holder renews
//! ```
//!
//! A subnet key is only ever created by a transaction that fails if it exists, so two machines
//! never hold one subnet however many start at once; the loser of a race picks again.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use tokio::sync::mpsc;

use crate::network::{NetworkConfig, NetworkConfigError};
use crate::subnet::{parse_subnet_key, subnet_key, Ipv4Net, Lease, LeaseAttrs, LeaseEvent};

/// How long a subnet lease lasts without renewal (flannel's `subnetTTL`).
pub const SUBNET_LEASE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How many subnets an acquisition tries before giving up. Each failed try means another
/// machine created that very key meanwhile, so this bounds only pathological contention.
const ACQUIRE_ATTEMPTS: usize = 64;

/// A new subnet is drawn at random from the first this-many free ones (as flannel does): low
/// subnets fill first, and machines starting together rarely pick the same one.
const RANDOM_POOL: usize = 100;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("etcd: {0}")]
    Etcd(#[from] Box<etcd_client::Error>),
    #[error("the network config at {key} is invalid: {source}")]
    InvalidNetworkConfig {
        key: String,
        #[source]
        source: NetworkConfigError,
    },
    #[error("no free subnet left: all {count} subnets from {min} to {max} are leased")]
    RangeExhausted {
        min: Ipv4Net,
        max: Ipv4Net,
        count: u64,
    },
    #[error("gave up acquiring a subnet after {0} tries: other machines took each one first")]
    Contention(usize),
    #[error("subnet {subnet} is no longer this machine's: {holder}")]
    LeaseLost { subnet: Ipv4Net, holder: String },
}

impl From<etcd_client::Error> for RegistryError {
    fn from(e: etcd_client::Error) -> Self {
        RegistryError::Etcd(Box::new(e))
    }
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// The prefix as flannel's `path.Join` leaves it: no trailing and no doubled '/'.
pub fn normalize_prefix(prefix: &str) -> String {
    let parts: Vec<&str> = prefix.split('/').filter(|part| !part.is_empty()).collect();
    let joined = parts.join("/");
    if prefix.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// One key under `subnets/` as read, whether or not its value is a valid lease: a subnet
/// with a garbled value is still taken.
struct SubnetEntry {
    subnet: Ipv4Net,
    key: String,
    attrs: Option<LeaseAttrs>,
    etcd_lease: i64,
    mod_revision: i64,
}

impl SubnetEntry {
    fn lease(&self) -> Option<Lease> {
        self.attrs.clone().map(|attrs| Lease {
            subnet: self.subnet,
            attrs,
            etcd_lease: self.etcd_lease,
        })
    }
}

/// The subnets in use, for overlap tests: those of the config's length in a set, any others
/// (left from an older config with another SubnetLen) in a list.
struct Occupancy {
    same_length: HashSet<Ipv4Net>,
    other_lengths: Vec<Ipv4Net>,
}

impl Occupancy {
    fn new(entries: &[SubnetEntry], subnet_len: u8) -> Occupancy {
        let mut occupancy = Occupancy {
            same_length: HashSet::new(),
            other_lengths: Vec::new(),
        };
        for entry in entries {
            if entry.subnet.prefix_len() == subnet_len {
                occupancy.same_length.insert(entry.subnet);
            } else {
                occupancy.other_lengths.push(entry.subnet);
            }
        }
        occupancy
    }

    fn overlaps(&self, subnet: Ipv4Net) -> bool {
        self.same_length.contains(&subnet)
            || self
                .other_lengths
                .iter()
                .any(|other| other.contains(&subnet.network()) || subnet.contains(&other.network()))
    }
}

/// Why following the watch stopped.
enum WatchEnd {
    /// The consumer dropped its receiver.
    ReceiverGone,
    /// etcd compacted past the watch's revision: the missed events are gone.
    Compacted(i64),
    Failed(String),
}

/// A handle on one network's keys: cheap to clone (etcd clients share one channel).
#[derive(Clone)]
pub struct SubnetRegistry {
    client: Client,
    prefix: String,
    lease_ttl: Duration,
}

impl SubnetRegistry {
    /// The network under `prefix` (`/coreos.com/network` by default), with flannel's 24 h
    /// subnet leases.
    pub fn new(client: Client, prefix: &str) -> SubnetRegistry {
        SubnetRegistry {
            client,
            prefix: normalize_prefix(prefix),
            lease_ttl: SUBNET_LEASE_TTL,
        }
    }

    /// Leases of `ttl` (whole seconds, at least one) instead of 24 h: flanneld's
    /// `--subnet-lease-ttl`, and tests of expiry.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> SubnetRegistry {
        self.lease_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// `<prefix>/config`.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `<prefix>/subnets/`, with the slash, so that a prefix never matches a neighbour's.
    pub fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    /// `<prefix>/subnets/A.B.C.D-LEN`.
    pub fn lease_key(&self, subnet: Ipv4Net) -> String {
        format!("{}{}", self.subnets_prefix(), subnet_key(subnet))
    }

    fn ttl_seconds(&self) -> i64 {
        self.lease_ttl.as_secs().max(1) as i64
    }

    // ----- network config ----------------------------------------------------------------

    /// The network config; None when nobody has written one yet.
    pub async fn get_network_config(&self) -> Result<Option<NetworkConfig>> {
        let key = self.config_key();
        let resp = self.client.kv_client().get(key.as_str(), None).await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => NetworkConfig::parse(kv.value())
                .map(Some)
                .map_err(|source| RegistryError::InvalidNetworkConfig { key, source }),
        }
    }

    /// Waits until a valid network config is in etcd and returns it, as flanneld waits at
    /// start. A missing or invalid config is logged once per change, with what is wrong; etcd
    /// being out of reach is logged and retried. Woken by a watch on the key, and every `poll`
    /// in any case.
    pub async fn wait_network_config(&self, poll: Duration) -> NetworkConfig {
        // A zero interval would read etcd in a tight loop.
        let poll = poll.max(Duration::from_millis(100));
        let key = self.config_key();
        // What was last logged: None for nothing yet, Some(0) for "missing", Some(revision)
        // for an invalid value written at that revision.
        let mut reported: Option<i64> = None;
        loop {
            let deadline = tokio::time::Instant::now() + poll;
            let read = self.client.kv_client().get(key.as_str(), None).await;
            let revision = match read {
                Ok(resp) => {
                    match resp.kvs().first() {
                        None if reported != Some(0) => {
                            tracing::info!(%key, "no network config in etcd yet; waiting for one");
                            reported = Some(0);
                        }
                        None => {}
                        Some(kv) => match NetworkConfig::parse(kv.value()) {
                            Ok(config) => return config,
                            Err(error) if reported != Some(kv.mod_revision()) => {
                                tracing::error!(%key, %error, "the network config is invalid; waiting for a valid one");
                                reported = Some(kv.mod_revision());
                            }
                            Err(_) => {}
                        },
                    }
                    resp.header().map(|h| h.revision())
                }
                Err(error) => {
                    tracing::warn!(%key, %error, "reading the network config failed; retrying");
                    None
                }
            };
            if let Some(revision) = revision {
                let changed =
                    tokio::time::timeout_at(deadline, self.wait_for_change(&key, revision + 1))
                        .await;
                if let Ok(true) = changed {
                    continue;
                }
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Returns true once `key` changes at or after `revision`; false at once when the watch
    /// cannot be kept (the caller then waits out its poll interval rather than spin).
    async fn wait_for_change(&self, key: &str, revision: i64) -> bool {
        let options = WatchOptions::new().with_start_revision(revision);
        let Ok(mut stream) = self.client.watch_client().watch(key, Some(options)).await else {
            return false;
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) if !resp.events().is_empty() => return true,
                Ok(Some(resp)) if resp.canceled() => return false,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return false,
            }
        }
    }

    // ----- leases --------------------------------------------------------------------------

    /// Every key under `subnets/` that names a subnet, and the revision read at.
    async fn read_subnets(&self) -> Result<(Vec<SubnetEntry>, i64)> {
        let prefix = self.subnets_prefix();
        let resp = self
            .client
            .kv_client()
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let entries = resp
            .kvs()
            .iter()
            .filter_map(|kv| self.entry(&prefix, kv))
            .collect();
        Ok((entries, revision))
    }

    fn entry(&self, prefix: &str, kv: &KeyValue) -> Option<SubnetEntry> {
        let (key, subnet) = subnet_of(prefix, kv)?;
        let attrs = match serde_json::from_slice::<LeaseAttrs>(kv.value()) {
            Ok(attrs) => Some(attrs),
            Err(error) => {
                tracing::warn!(%key, %error, "ignoring a subnet lease that is not flannel's JSON");
                None
            }
        };
        Some(SubnetEntry {
            subnet,
            key,
            attrs,
            etcd_lease: kv.lease(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// Every valid lease, in subnet order, and the revision they were read at (to watch
    /// from).
    pub async fn list_leases(&self) -> Result<(Vec<Lease>, i64)> {
        let (entries, revision) = self.read_subnets().await?;
        let mut leases: Vec<Lease> = entries.iter().filter_map(SubnetEntry::lease).collect();
        // etcd orders keys as text, where 10.5.200.0 comes before 10.5.45.0.
        leases.sort_by_key(|lease| lease.subnet);
        Ok((leases, revision))
    }

    /// Leases this machine a subnet, reusing what it had as flannel does: first a lease that
    /// already carries this machine's PublicIP (its own from before a restart; re-bound to a
    /// fresh etcd lease with `attrs` rewritten), then `previous` (the subnet in an old
    /// subnet.env) if it is free and the config allows it, else a random free subnet among
    /// the first free ones of SubnetMin..=SubnetMax. A lease with this PublicIP that the
    /// config no longer allows is deleted.
    pub async fn acquire_lease(
        &self,
        config: &NetworkConfig,
        attrs: &LeaseAttrs,
        previous: Option<Ipv4Net>,
    ) -> Result<Lease> {
        let value = serde_json::to_string(attrs).expect("lease attributes serialise");
        for _ in 0..ACQUIRE_ATTEMPTS {
            let (entries, _) = self.read_subnets().await?;
            let ours: Vec<&SubnetEntry> = entries
                .iter()
                .filter(|e| {
                    e.attrs
                        .as_ref()
                        .is_some_and(|a| a.public_ip == attrs.public_ip)
                })
                .collect();
            if let Some(entry) = ours.iter().find(|e| config.allows(e.subnet)) {
                tracing::info!(subnet = %entry.subnet, public_ip = %attrs.public_ip, "found this machine's lease; reusing it");
                match self.rebind(entry, attrs, &value).await? {
                    Some(lease) => return Ok(lease),
                    None => continue,
                }
            }
            if !ours.is_empty() {
                for entry in &ours {
                    tracing::info!(subnet = %entry.subnet, "this machine's lease does not fit the network config; deleting it");
                    self.delete_if_unchanged(entry).await?;
                }
                continue;
            }

            let occupancy = Occupancy::new(&entries, config.subnet_len);
            let wanted = previous.filter(|subnet| {
                let usable = config.allows(*subnet) && !occupancy.overlaps(*subnet);
                if !usable {
                    tracing::info!(%subnet, "the previous subnet is taken or outside the network config; picking another");
                }
                usable
            });
            let subnet = match wanted {
                Some(subnet) => subnet,
                None => pick_free(config, &occupancy)?,
            };
            if let Some(lease) = self.create(subnet, attrs, &value).await? {
                tracing::info!(%subnet, public_ip = %attrs.public_ip, "leased a subnet");
                return Ok(lease);
            }
            tracing::debug!(%subnet, "another machine took the subnet first; picking again");
        }
        Err(RegistryError::Contention(ACQUIRE_ATTEMPTS))
    }

    /// Grants an etcd lease of the configured TTL.
    async fn grant(&self) -> Result<i64> {
        Ok(self
            .client
            .lease_client()
            .grant(self.ttl_seconds(), None)
            .await?
            .id())
    }

    /// Revokes an etcd lease that ended up holding nothing; failures only cost an idle lease
    /// until it runs out.
    async fn discard(&self, etcd_lease: i64) {
        if etcd_lease != 0 {
            if let Err(error) = self.client.lease_client().revoke(etcd_lease).await {
                tracing::debug!(etcd_lease, %error, "revoking an unused etcd lease failed");
            }
        }
    }

    /// Puts `attrs` as `subnet`'s lease if `condition` holds, bound to a freshly granted etcd
    /// lease (`with_lease`) or to none; None, and the grant revoked, if it does not hold.
    async fn put_bound(
        &self,
        subnet: Ipv4Net,
        attrs: &LeaseAttrs,
        value: &str,
        condition: Compare,
        with_lease: bool,
    ) -> Result<Option<Lease>> {
        let etcd_lease = if with_lease { self.grant().await? } else { 0 };
        let key = self.lease_key(subnet);
        let options = (etcd_lease != 0).then(|| PutOptions::new().with_lease(etcd_lease));
        let txn = Txn::new()
            .when([condition])
            .and_then([TxnOp::put(key, value, options)]);
        match self.client.kv_client().txn(txn).await {
            Ok(resp) if resp.succeeded() => Ok(Some(Lease {
                subnet,
                attrs: attrs.clone(),
                etcd_lease,
            })),
            Ok(_) => {
                self.discard(etcd_lease).await;
                Ok(None)
            }
            Err(error) => {
                self.discard(etcd_lease).await;
                Err(error.into())
            }
        }
    }

    /// Creates `subnet`'s key if it does not exist; None if it does.
    async fn create(
        &self,
        subnet: Ipv4Net,
        attrs: &LeaseAttrs,
        value: &str,
    ) -> Result<Option<Lease>> {
        let absent = Compare::create_revision(self.lease_key(subnet), CompareOp::Equal, 0);
        self.put_bound(subnet, attrs, value, absent, true).await
    }

    /// Rewrites an existing lease with `attrs` under a fresh etcd lease, if nobody changed it
    /// since it was read; None if somebody did. A key without an etcd lease is a reservation
    /// an operator made (flannel's convention): it stays without one.
    async fn rebind(
        &self,
        entry: &SubnetEntry,
        attrs: &LeaseAttrs,
        value: &str,
    ) -> Result<Option<Lease>> {
        let unchanged =
            Compare::mod_revision(entry.key.as_str(), CompareOp::Equal, entry.mod_revision);
        self.put_bound(entry.subnet, attrs, value, unchanged, entry.etcd_lease != 0)
            .await
    }

    async fn delete_if_unchanged(&self, entry: &SubnetEntry) -> Result<()> {
        let unchanged =
            Compare::mod_revision(entry.key.as_str(), CompareOp::Equal, entry.mod_revision);
        let txn = Txn::new()
            .when([unchanged])
            .and_then([TxnOp::delete(entry.key.as_str(), None)]);
        self.client.kv_client().txn(txn).await?;
        Ok(())
    }

    /// Renews `lease` for another TTL. Where the key is still bound to the lease's etcd lease,
    /// that is one keep-alive of the etcd lease: nothing is written, so other machines see no
    /// event (flannel instead re-puts the key under a new etcd lease). Where the etcd lease ran
    /// out (etcd unreachable for longer than the TTL) the subnet is taken again if it is still
    /// free, and a key that another process of this machine re-bound is re-bound back. A
    /// subnet that another machine now holds is [`RegistryError::LeaseLost`]: the caller must
    /// acquire a new one. A reservation (etcd lease 0) needs no renewal.
    pub async fn renew_lease(&self, lease: &Lease) -> Result<Lease> {
        let key = self.lease_key(lease.subnet);
        let value = serde_json::to_string(&lease.attrs).expect("lease attributes serialise");
        for _ in 0..ACQUIRE_ATTEMPTS {
            let resp = self.client.kv_client().get(key.as_str(), None).await?;
            let Some(entry) = resp
                .kvs()
                .first()
                .and_then(|kv| self.entry(&self.subnets_prefix(), kv))
            else {
                tracing::warn!(subnet = %lease.subnet, "the subnet lease ran out; taking the subnet again");
                match self.create(lease.subnet, &lease.attrs, &value).await? {
                    Some(renewed) => return Ok(renewed),
                    None => continue,
                }
            };
            let holder = entry.attrs.as_ref().map(|a| a.public_ip);
            if holder != Some(lease.attrs.public_ip) {
                return Err(RegistryError::LeaseLost {
                    subnet: lease.subnet,
                    holder: match holder {
                        Some(ip) => format!("it is now leased to {ip}"),
                        None => "its key now holds something that is not a lease".to_string(),
                    },
                });
            }
            if entry.etcd_lease == 0 {
                return Ok(Lease {
                    etcd_lease: 0,
                    ..lease.clone()
                });
            }
            if entry.etcd_lease == lease.etcd_lease {
                match self
                    .client
                    .lease_client()
                    .keep_alive(lease.etcd_lease)
                    .await
                {
                    Ok(_) => return Ok(lease.clone()),
                    // The etcd lease ran out between the read and the keep-alive: its key is
                    // going; read again.
                    Err(etcd_client::Error::LeaseKeepAliveError(_)) => continue,
                    Err(error) => return Err(error.into()),
                }
            }
            if let Some(renewed) = self.rebind(&entry, &lease.attrs, &value).await? {
                return Ok(renewed);
            }
        }
        Err(RegistryError::Contention(ACQUIRE_ATTEMPTS))
    }

    /// How long after an acquisition or renewal to renew again: the TTL less `margin`
    /// (`--subnet-lease-renew-margin`), or half the TTL when the margin is not shorter than the
    /// TTL (with a short `--subnet-lease-ttl`, or in tests).
    pub fn renew_after(&self, margin: Duration) -> Duration {
        renew_delay(self.lease_ttl, margin)
    }

    /// What is left of `lease`'s etcd lease; None once it has run out (or for a reservation,
    /// which has none).
    pub async fn time_to_live(&self, lease: &Lease) -> Result<Option<Duration>> {
        if lease.etcd_lease == 0 {
            return Ok(None);
        }
        let resp = self
            .client
            .lease_client()
            .time_to_live(lease.etcd_lease, None)
            .await?;
        Ok((resp.ttl() > 0).then(|| Duration::from_secs(resp.ttl() as u64)))
    }

    /// Gives the subnet up at once (its etcd lease is revoked, so the key goes with it and
    /// other machines remove their routes). flanneld itself never does this on exit: the
    /// lease outlives it so that a restart finds its subnet again. A reservation is left.
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        if lease.etcd_lease == 0 {
            return Ok(());
        }
        match self.client.lease_client().revoke(lease.etcd_lease).await {
            Ok(_) => Ok(()),
            // Already gone: what releasing wanted.
            Err(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("not found") =>
            {
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    // ----- watching --------------------------------------------------------------------------

    /// Reports changes to the leases to `events` until its receiver is dropped. `known` and
    /// `after_revision` are what [`SubnetRegistry::list_leases`] returned (the consumer's
    /// picture); with `after_revision` 0 the watcher lists itself and reports every lease that
    /// is not in `known` as Added.
    ///
    /// Puts are Added (also when a lease is re-bound or its attributes change; an unchanged
    /// re-put is not repeated); deletes and expiries are Removed, with the lease as last known
    /// since etcd's event no longer holds the value. When etcd has compacted the revisions the
    /// watch needed, or the watch fails (etcd restarting), the leases are listed again, the
    /// difference to what was reported is reported, and the watch goes on from the listing.
    pub async fn watch_leases(
        &self,
        known: Vec<Lease>,
        after_revision: i64,
        events: mpsc::Sender<LeaseEvent>,
    ) {
        let mut known: BTreeMap<Ipv4Net, Lease> = known
            .into_iter()
            .map(|lease| (lease.subnet, lease))
            .collect();
        let mut revision = after_revision;
        let mut relist = after_revision <= 0;
        let mut backoff = BACKOFF_START;
        loop {
            if events.is_closed() {
                return;
            }
            if relist {
                match self.list_leases().await {
                    Ok((leases, listed_at)) => {
                        if !report_difference(&mut known, leases, &events).await {
                            return;
                        }
                        revision = listed_at;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "listing subnet leases failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
            let watched_since = tokio::time::Instant::now();
            match self.follow(&mut known, &mut revision, &events).await {
                WatchEnd::ReceiverGone => return,
                WatchEnd::Compacted(compacted) => {
                    tracing::warn!(
                        revision,
                        compacted,
                        "etcd compacted the lease history the watch needed; listing again"
                    );
                    backoff = BACKOFF_START;
                }
                WatchEnd::Failed(error) => {
                    tracing::warn!(%error, revision, "watching subnet leases failed; listing again");
                    // A watch that held for a while ended by a new failure, not the last one.
                    if watched_since.elapsed() > 2 * BACKOFF_MAX {
                        backoff = BACKOFF_START;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            relist = true;
        }
    }

    /// Watches from `revision` + 1, reporting events, until the watch ends.
    async fn follow(
        &self,
        known: &mut BTreeMap<Ipv4Net, Lease>,
        revision: &mut i64,
        events: &mpsc::Sender<LeaseEvent>,
    ) -> WatchEnd {
        let prefix = self.subnets_prefix();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(*revision + 1);
        let mut stream = match self
            .client
            .watch_client()
            .watch(prefix.as_str(), Some(options))
            .await
        {
            Ok(stream) => stream,
            Err(error) => return WatchEnd::Failed(error.to_string()),
        };
        loop {
            let message = tokio::select! {
                _ = events.closed() => return WatchEnd::ReceiverGone,
                message = stream.message() => message,
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => return WatchEnd::Failed("etcd ended the watch".to_string()),
                Err(error) => return WatchEnd::Failed(error.to_string()),
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    return WatchEnd::Compacted(resp.compact_revision());
                }
                return WatchEnd::Failed(format!(
                    "etcd canceled the watch: {}",
                    resp.cancel_reason()
                ));
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                *revision = (*revision).max(kv.mod_revision());
                let change = match event.event_type() {
                    EventType::Put => match self.entry(&prefix, kv) {
                        None => None,
                        Some(entry) => match entry.lease() {
                            Some(lease) if known.get(&lease.subnet) == Some(&lease) => None,
                            Some(lease) => {
                                known.insert(lease.subnet, lease.clone());
                                Some(LeaseEvent::Added(lease))
                            }
                            // Overwritten with something that is not a lease: as good as gone.
                            None => known.remove(&entry.subnet).map(LeaseEvent::Removed),
                        },
                    },
                    // A delete (or an expiry) carries only the key.
                    EventType::Delete => subnet_of(&prefix, kv)
                        .and_then(|(_, subnet)| known.remove(&subnet))
                        .map(LeaseEvent::Removed),
                };
                if let Some(change) = change {
                    if events.send(change).await.is_err() {
                        return WatchEnd::ReceiverGone;
                    }
                }
            }
        }
    }
}

/// The key, and the subnet it names if it is a lease's key under `prefix`.
fn subnet_of(prefix: &str, kv: &KeyValue) -> Option<(String, Ipv4Net)> {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let subnet = parse_subnet_key(key.strip_prefix(prefix)?)?;
    Some((key, subnet))
}

fn renew_delay(ttl: Duration, margin: Duration) -> Duration {
    if margin < ttl {
        ttl - margin
    } else {
        ttl / 2
    }
}

/// Picks a free subnet at random among the first free ones of the range.
fn pick_free(config: &NetworkConfig, occupancy: &Occupancy) -> Result<Ipv4Net> {
    let free: Vec<Ipv4Net> = config
        .subnets()
        .filter(|subnet| !occupancy.overlaps(*subnet))
        .take(RANDOM_POOL)
        .collect();
    if free.is_empty() {
        return Err(RegistryError::RangeExhausted {
            min: config.subnet_min,
            max: config.subnet_max,
            count: config.subnet_count(),
        });
    }
    Ok(free[fastrand::usize(..free.len())])
}

/// Reports what turns `known` into `current` (Removed first, then Added and changed) and
/// makes it so; false when the receiver is gone.
async fn report_difference(
    known: &mut BTreeMap<Ipv4Net, Lease>,
    current: Vec<Lease>,
    events: &mpsc::Sender<LeaseEvent>,
) -> bool {
    let current: BTreeMap<Ipv4Net, Lease> = current
        .into_iter()
        .map(|lease| (lease.subnet, lease))
        .collect();
    let mut changes = Vec::new();
    for (subnet, lease) in known.iter() {
        if !current.contains_key(subnet) {
            changes.push(LeaseEvent::Removed(lease.clone()));
        }
    }
    for (subnet, lease) in &current {
        if known.get(subnet) != Some(lease) {
            changes.push(LeaseEvent::Added(lease.clone()));
        }
    }
    *known = current;
    for change in changes {
        if events.send(change).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_cleaned_like_path_join() {
        assert_eq!(
            normalize_prefix("/coreos.com/network"),
            "/coreos.com/network"
        );
        assert_eq!(
            normalize_prefix("/coreos.com/network/"),
            "/coreos.com/network"
        );
        assert_eq!(
            normalize_prefix("//coreos.com//network//"),
            "/coreos.com/network"
        );
        assert_eq!(normalize_prefix("net"), "net");
        assert_eq!(normalize_prefix("/"), "/");
    }

    fn entry(subnet: &str) -> SubnetEntry {
        SubnetEntry {
            subnet: subnet.parse().unwrap(),
            key: String::new(),
            attrs: None,
            etcd_lease: 0,
            mod_revision: 0,
        }
    }

    #[test]
    fn occupancy_sees_overlaps_across_lengths() {
        let occupancy = Occupancy::new(
            &[
                entry("10.5.1.0/24"),
                entry("10.5.8.0/22"),
                entry("10.5.20.128/25"),
            ],
            24,
        );
        assert!(occupancy.overlaps("10.5.1.0/24".parse().unwrap()));
        assert!(!occupancy.overlaps("10.5.2.0/24".parse().unwrap()));
        assert!(occupancy.overlaps("10.5.9.0/24".parse().unwrap()));
        assert!(occupancy.overlaps("10.5.20.0/24".parse().unwrap()));
        assert!(!occupancy.overlaps("10.5.21.0/24".parse().unwrap()));
    }

    #[test]
    fn a_full_range_is_a_clear_error_and_the_pick_is_free() {
        let config =
            NetworkConfig::parse(br#"{"Network": "10.9.0.0/16", "SubnetMax": "10.9.3.0"}"#)
                .unwrap();
        let taken = [entry("10.9.1.0/24"), entry("10.9.3.0/24")];
        let occupancy = Occupancy::new(&taken, 24);
        for _ in 0..20 {
            assert_eq!(
                pick_free(&config, &occupancy).unwrap(),
                "10.9.2.0/24".parse().unwrap()
            );
        }
        let full = Occupancy::new(
            &[
                entry("10.9.1.0/24"),
                entry("10.9.2.0/24"),
                entry("10.9.3.0/24"),
            ],
            24,
        );
        let message = pick_free(&config, &full).unwrap_err().to_string();
        assert_eq!(
            message,
            "no free subnet left: all 3 subnets from 10.9.1.0/24 to 10.9.3.0/24 are leased"
        );
    }

    #[test]
    fn renewal_comes_a_margin_before_expiry() {
        let hour = Duration::from_secs(3600);
        assert_eq!(renew_delay(SUBNET_LEASE_TTL, hour), 23 * hour);
        assert_eq!(
            renew_delay(Duration::from_secs(4), hour),
            Duration::from_secs(2)
        );
        // --subnet-lease-ttl=30s with the default 60 minute margin.
        assert_eq!(
            renew_delay(Duration::from_secs(30), hour),
            Duration::from_secs(15)
        );
    }
}
