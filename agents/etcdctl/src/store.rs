//! etcd's v2 keyspace, kept in the v3 store.
//!
//! A v2 key is the v3 key of the same bytes (`/services/web/a`). A v2 directory is every key
//! under `DIR/`: v3 has no directories, so `mkdir` writes nothing and an empty directory does
//! not exist. A TTL is a v3 lease of that many seconds granted for the write; when it runs out
//! etcd deletes the key, and watchers see `expire`. Indexes are v3 revisions. As in v2, names
//! that begin with `_` are hidden from `ls` (fleet's `/_coreos.com` among them).

use std::future::Future;
use std::time::Duration;

use agent_common::EtcdConfig;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use serde_json::{json, Value};

use crate::args::GlobalOptions;

/// An error as etcd's v2 API reports it (`errorCode`, `message`, `cause`, `index`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message} ({cause}) [{index}]")]
pub struct V2Error {
    pub code: u32,
    pub message: &'static str,
    pub cause: String,
    pub index: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    V2(#[from] V2Error),
    /// etcd did not answer: v2 etcdctl's wording, which scripts match on.
    #[error("client: etcd cluster is unavailable or misconfigured; error #0: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Config(String),
}

fn v2_error(code: u32, cause: &str, index: i64) -> StoreError {
    let message = match code {
        100 => "Key not found",
        101 => "Compare failed",
        102 => "Not a file",
        104 => "Not a directory",
        105 => "Key already exists",
        108 => "Directory not empty",
        _ => "Raft Internal Error",
    };
    StoreError::V2(V2Error {
        code,
        message,
        cause: cause.to_string(),
        index,
    })
}

/// A v2 node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    pub key: String,
    pub value: String,
    pub dir: bool,
    pub nodes: Vec<Node>,
    pub created_index: i64,
    pub modified_index: i64,
    /// Seconds left of the key's lease.
    pub ttl: Option<i64>,
}

impl Node {
    pub fn to_json(&self) -> Value {
        let mut node = json!({ "key": self.key });
        if self.dir {
            node["dir"] = json!(true);
            if !self.nodes.is_empty() {
                node["nodes"] = self.nodes.iter().map(Node::to_json).collect();
            }
        } else {
            node["value"] = json!(self.value);
        }
        if let Some(ttl) = self.ttl {
            node["ttl"] = json!(ttl);
        }
        if self.modified_index > 0 {
            node["modifiedIndex"] = json!(self.modified_index);
            node["createdIndex"] = json!(self.created_index);
        }
        node
    }
}

/// A v2 response: `action` is `get`, `set`, `create`, `update`, `delete`, `expire`,
/// `compareAndSwap` or `compareAndDelete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub action: &'static str,
    pub node: Node,
    pub prev_node: Option<Node>,
    /// The store's revision when it answered (v2's `X-Etcd-Index`).
    pub index: i64,
}

impl Response {
    pub fn to_json(&self) -> Value {
        let mut out = json!({ "action": self.action, "node": self.node.to_json() });
        if let Some(prev) = &self.prev_node {
            out["prevNode"] = prev.to_json();
        }
        out
    }
}

/// `path.Clean` as v2 applies it to keys: one leading slash, no empty, `.` or `..`
/// components, no trailing slash.
pub fn clean_key(key: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in key.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The v3 prefix of the keys inside directory `key`.
fn dir_prefix(key: &str) -> String {
    if key == "/" {
        "/".to_string()
    } else {
        format!("{key}/")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn node_of(kv: &KeyValue) -> Node {
    Node {
        key: text(kv.key()),
        value: text(kv.value()),
        created_index: kv.create_revision(),
        modified_index: kv.mod_revision(),
        ..Node::default()
    }
}

pub struct V2Store {
    client: Client,
    timeout: Duration,
}

impl V2Store {
    pub async fn connect(global: &GlobalOptions) -> Result<V2Store, StoreError> {
        if global.username.is_some() {
            return Err(StoreError::Config(
                "--username: etcd authentication is not supported by this etcdctl's v2 commands; use ETCDCTL_API=3 etcdctl --user".into(),
            ));
        }
        let config = EtcdConfig {
            endpoints: global.endpoints.clone(),
            ca_file: global.ca_file.clone().map(Into::into),
            cert_file: global.cert_file.clone().map(Into::into),
            key_file: global.key_file.clone().map(Into::into),
            request_timeout: global.timeout,
        };
        let client = config.connect().await.map_err(|e| match e {
            agent_common::EtcdError::Client { source, endpoints } => {
                StoreError::Unavailable(format!("{endpoints}: {source}"))
            }
            other => StoreError::Config(other.to_string()),
        })?;
        Ok(V2Store {
            client,
            timeout: global.total_timeout,
        })
    }

    /// One request, bounded by `--total-timeout`.
    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {:?} (--total-timeout)",
                self.timeout
            ))),
        }
    }

    async fn revision(&self) -> Result<i64, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = self
            .call(kv.get("/", Some(GetOptions::new().with_count_only())))
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Whether any key lies under `key/`.
    async fn is_dir(&self, key: &str) -> Result<bool, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = self
            .call(kv.get(
                dir_prefix(key),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ))
            .await?;
        Ok(resp.count() > 0)
    }

    async fn ttl_of(&self, lease: i64) -> Result<Option<i64>, StoreError> {
        if lease == 0 {
            return Ok(None);
        }
        let mut leases = self.client.lease_client();
        let resp = self.call(leases.time_to_live(lease, None)).await?;
        Ok((resp.ttl() >= 0).then_some(resp.ttl()))
    }

    async fn lease_for(&self, ttl: Option<i64>) -> Result<i64, StoreError> {
        match ttl {
            Some(ttl) if ttl > 0 => {
                let mut leases = self.client.lease_client();
                Ok(self.call(leases.grant(ttl, None)).await?.id())
            }
            _ => Ok(0),
        }
    }

    /// Puts `key` if `compares` hold; on success the response for the new value.
    async fn put_if(
        &self,
        key: &str,
        value: &str,
        ttl: Option<i64>,
        compares: Vec<Compare>,
    ) -> Result<Option<(Node, Option<Node>, i64)>, StoreError> {
        let lease = self.lease_for(ttl).await?;
        let put = TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease).with_prev_key()),
        );
        let txn = Txn::new()
            .when(compares)
            .and_then([put, TxnOp::get(key, None)]);
        let mut kv = self.client.kv_client();
        let resp = self.call(kv.txn(txn)).await?;
        let index = resp.header().map_or(0, |h| h.revision());
        if !resp.succeeded() {
            return Ok(None);
        }
        let mut prev = None;
        let mut node = Node::default();
        for op in resp.op_responses() {
            match op {
                TxnOpResponse::Put(put) => prev = put.prev_key().map(node_of),
                TxnOpResponse::Get(get) => {
                    if let Some(kv) = get.kvs().first() {
                        node = node_of(kv);
                    }
                }
                _ => {}
            }
        }
        node.ttl = ttl.filter(|t| *t > 0);
        Ok(Some((node, prev, index)))
    }

    pub async fn get(&self, key: &str) -> Result<Response, StoreError> {
        let key = clean_key(key);
        let mut kv = self.client.kv_client();
        let resp = self.call(kv.get(key.as_str(), None)).await?;
        let index = resp.header().map_or(0, |h| h.revision());
        if let Some(found) = resp.kvs().first() {
            let mut node = node_of(found);
            node.ttl = self.ttl_of(found.lease()).await?;
            return Ok(Response {
                action: "get",
                node,
                prev_node: None,
                index,
            });
        }
        if self.is_dir(&key).await? || key == "/" {
            return Ok(Response {
                action: "get",
                node: Node {
                    key,
                    dir: true,
                    ..Node::default()
                },
                prev_node: None,
                index,
            });
        }
        Err(v2_error(100, &key, index))
    }

    pub async fn set(
        &self,
        key: &str,
        value: &str,
        ttl: Option<i64>,
        swap_with_value: Option<&str>,
        swap_with_index: Option<i64>,
    ) -> Result<Response, StoreError> {
        let key = clean_key(key);
        if self.is_dir(&key).await? {
            return Err(v2_error(102, &key, self.revision().await?));
        }
        let mut compares = Vec::new();
        if let Some(expected) = swap_with_value {
            compares.push(Compare::value(key.as_str(), CompareOp::Equal, expected));
        }
        if let Some(index) = swap_with_index {
            compares.push(Compare::mod_revision(key.as_str(), CompareOp::Equal, index));
        }
        let swapping = !compares.is_empty();
        match self.put_if(&key, value, ttl, compares).await? {
            Some((node, prev_node, index)) => Ok(Response {
                action: if swapping { "compareAndSwap" } else { "set" },
                node,
                prev_node,
                index,
            }),
            None => Err(self
                .compare_failed(&key, swap_with_value, swap_with_index)
                .await),
        }
    }

    async fn compare_failed(
        &self,
        key: &str,
        value: Option<&str>,
        index: Option<i64>,
    ) -> StoreError {
        let current = match self.get(key).await {
            Ok(resp) => resp,
            Err(e) => return e,
        };
        let mut causes = Vec::new();
        if let Some(v) = value {
            causes.push(format!("{v} != {}", current.node.value));
        }
        if let Some(i) = index {
            causes.push(format!("{i} != {}", current.node.modified_index));
        }
        v2_error(101, &format!("[{}]", causes.join("] [")), current.index)
    }

    /// `mk` (only if absent: v2's `create`, else 105) and `update` (only if present, else
    /// 100): one put guarded by the key's create revision.
    async fn put_guarded(
        &self,
        key: &str,
        value: &str,
        ttl: Option<i64>,
        must_exist: bool,
    ) -> Result<Response, StoreError> {
        let key = clean_key(key);
        let (op, action, code) = if must_exist {
            (CompareOp::Greater, "update", 100)
        } else {
            (CompareOp::Equal, "create", 105)
        };
        let guard = Compare::create_revision(key.as_str(), op, 0);
        match self.put_if(&key, value, ttl, vec![guard]).await? {
            Some((node, prev_node, index)) => Ok(Response {
                action,
                node,
                prev_node: prev_node.filter(|_| must_exist),
                index,
            }),
            None => Err(v2_error(code, &key, self.revision().await?)),
        }
    }

    pub async fn mk(
        &self,
        key: &str,
        value: &str,
        ttl: Option<i64>,
    ) -> Result<Response, StoreError> {
        self.put_guarded(key, value, ttl, false).await
    }

    pub async fn update(
        &self,
        key: &str,
        value: &str,
        ttl: Option<i64>,
    ) -> Result<Response, StoreError> {
        self.put_guarded(key, value, ttl, true).await
    }

    /// v3 has no directories: succeeds without writing, unless a key or (for `mkdir`) a
    /// directory is already there.
    pub async fn mkdir(&self, key: &str, existing_ok: bool) -> Result<(), StoreError> {
        let key = clean_key(key);
        let mut kv = self.client.kv_client();
        let resp = self.call(kv.get(key.as_str(), None)).await?;
        let index = resp.header().map_or(0, |h| h.revision());
        if !resp.kvs().is_empty() {
            return Err(v2_error(if existing_ok { 102 } else { 105 }, &key, index));
        }
        if !existing_ok && self.is_dir(&key).await? {
            return Err(v2_error(105, &key, index));
        }
        Ok(())
    }

    pub async fn rm(
        &self,
        key: &str,
        dir: bool,
        recursive: bool,
        with_value: Option<&str>,
        with_index: Option<i64>,
    ) -> Result<Response, StoreError> {
        let key = clean_key(key);
        let mut kv = self.client.kv_client();
        let mut compares = Vec::new();
        if let Some(v) = with_value {
            compares.push(Compare::value(key.as_str(), CompareOp::Equal, v));
        }
        if let Some(i) = with_index {
            compares.push(Compare::mod_revision(key.as_str(), CompareOp::Equal, i));
        }
        let comparing = !compares.is_empty();
        let mut ops = vec![TxnOp::delete(
            key.as_str(),
            Some(DeleteOptions::new().with_prev_key()),
        )];
        if recursive {
            ops.push(TxnOp::delete(
                dir_prefix(&key),
                Some(DeleteOptions::new().with_prefix()),
            ));
        } else if !comparing && self.is_dir(&key).await? {
            let index = self.revision().await?;
            // `rm --dir` removes only an empty directory, and an empty one does not exist here.
            return Err(v2_error(if dir { 108 } else { 102 }, &key, index));
        }
        let resp = self
            .call(kv.txn(Txn::new().when(compares).and_then(ops)))
            .await?;
        let index = resp.header().map_or(0, |h| h.revision());
        if !resp.succeeded() {
            return Err(self.compare_failed(&key, with_value, with_index).await);
        }
        let mut deleted = 0;
        let mut prev_node = None;
        for op in resp.op_responses() {
            if let TxnOpResponse::Delete(d) = op {
                deleted += d.deleted();
                if prev_node.is_none() {
                    prev_node = d.prev_kvs().first().map(node_of);
                }
            }
        }
        if deleted == 0 {
            return Err(v2_error(100, &key, index));
        }
        let prev_node = prev_node.or_else(|| {
            Some(Node {
                key: key.clone(),
                dir: true,
                ..Node::default()
            })
        });
        Ok(Response {
            action: if comparing {
                "compareAndDelete"
            } else {
                "delete"
            },
            node: Node {
                key,
                dir: recursive && prev_node.as_ref().is_some_and(|p| p.dir),
                modified_index: index,
                created_index: prev_node.as_ref().map_or(0, |p| p.created_index),
                ..Node::default()
            },
            prev_node,
            index,
        })
    }

    /// A directory is only ever non-empty here (see the module's doc).
    pub async fn rmdir(&self, key: &str) -> Result<(), StoreError> {
        let key = clean_key(key);
        let index = self.revision().await?;
        if self.is_dir(&key).await? {
            return Err(v2_error(108, &key, index));
        }
        let mut kv = self.client.kv_client();
        let resp = self.call(kv.get(key.as_str(), None)).await?;
        Err(v2_error(
            if resp.kvs().is_empty() { 100 } else { 104 },
            &key,
            index,
        ))
    }

    /// The keys `ls` lists under `key`: its children, or with `recursive` everything below,
    /// directories included, sorted. A key that is a file lists as itself.
    pub async fn ls(&self, key: &str, recursive: bool) -> Result<Vec<Node>, StoreError> {
        let key = clean_key(key);
        let prefix = dir_prefix(&key);
        let mut kv = self.client.kv_client();
        let resp = self
            .call(kv.get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ))
            .await?;
        let index = resp.header().map_or(0, |h| h.revision());
        let mut listed = std::collections::BTreeMap::<String, bool>::new();
        for found in resp.kvs() {
            let full = text(found.key());
            let rest = &full[prefix.len()..];
            let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
            if parts.is_empty() || parts.iter().any(|p| p.starts_with('_')) {
                continue;
            }
            let depth = if recursive { parts.len() } else { 1 };
            for level in 1..=depth {
                let path = format!("{prefix}{}", parts[..level].join("/"));
                let is_dir = level < parts.len();
                let entry = listed.entry(path).or_insert(is_dir);
                *entry |= is_dir;
            }
        }
        if listed.is_empty() {
            if key != "/" {
                let own = self.call(kv.get(key.as_str(), None)).await?;
                if let Some(found) = own.kvs().first() {
                    return Ok(vec![node_of(found)]);
                }
                return Err(v2_error(100, &key, index));
            }
            return Ok(Vec::new());
        }
        Ok(listed
            .into_iter()
            .map(|(key, dir)| Node {
                key,
                dir,
                ..Node::default()
            })
            .collect())
    }

    /// Calls `on_change` for every change to `key` (with `recursive`, to everything under it)
    /// after revision `after_index` (default: now), until it returns false.
    pub async fn watch(
        &self,
        key: &str,
        recursive: bool,
        after_index: Option<i64>,
        mut on_change: impl FnMut(Response) -> bool,
    ) -> Result<(), StoreError> {
        let key = clean_key(key);
        let start = match after_index {
            Some(i) => i + 1,
            None => self.revision().await? + 1,
        };
        let mut options = WatchOptions::new()
            .with_prev_key()
            .with_start_revision(start);
        let watched = if recursive {
            options = options.with_prefix();
            dir_prefix(&key)
        } else {
            key.clone()
        };
        let mut watch = self.client.watch_client();
        let mut stream = self
            .call(watch.watch(watched.as_str(), Some(options)))
            .await?;
        loop {
            let message = stream
                .message()
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let Some(message) = message else {
                return Err(StoreError::Unavailable("the watch was closed".into()));
            };
            let index = message.header().map_or(0, |h| h.revision());
            for event in message.events() {
                let Some(kv) = event.kv() else { continue };
                let prev_node = event.prev_kv().map(node_of);
                let (action, node) = match event.event_type() {
                    EventType::Put => ("set", node_of(kv)),
                    EventType::Delete => {
                        // A delete whose key had a lease that no longer exists is the
                        // lease running out: v2's `expire`.
                        let lease = event.prev_kv().map_or(0, KeyValue::lease);
                        let expired = lease != 0 && self.ttl_of(lease).await?.is_none();
                        let mut node = node_of(kv);
                        node.modified_index = kv.mod_revision();
                        (if expired { "expire" } else { "delete" }, node)
                    }
                };
                let response = Response {
                    action,
                    node,
                    prev_node,
                    index,
                };
                if !on_change(response) {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_cleaned_as_v2_cleans_them() {
        assert_eq!(clean_key("services//web/"), "/services/web");
        assert_eq!(clean_key("/a/./b/../c"), "/a/c");
        assert_eq!(clean_key(""), "/");
    }

    #[test]
    fn errors_print_as_v2_prints_them() {
        let StoreError::V2(e) = v2_error(100, "/foo", 12) else {
            panic!()
        };
        assert_eq!(e.to_string(), "100: Key not found (/foo) [12]");
    }

    #[test]
    fn nodes_serialise_as_v2_json() {
        let node = Node {
            key: "/a".into(),
            value: "1".into(),
            created_index: 3,
            modified_index: 4,
            ttl: Some(60),
            ..Node::default()
        };
        assert_eq!(
            node.to_json(),
            json!({"key":"/a","value":"1","ttl":60,"modifiedIndex":4,"createdIndex":3})
        );
    }
}
