//! The JSON documents of fleet's API v1 that are not model objects: the pages of the three
//! collections, the error entity, the body of a unit PUT, the machine metadata PATCH operations,
//! and the page token.

use serde::{Deserialize, Serialize};

use crate::model::{Machine, TargetState, Unit, UnitOption, UnitState};

/// fleet's page size (its `token_limit` default): at most this many entities per page.
pub const DEFAULT_TOKEN_LIMIT: u16 = 100;

/// `GET /fleet/v1/units`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitPage {
    #[serde(default)]
    pub units: Vec<Unit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `GET /fleet/v1/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatePage {
    #[serde(default)]
    pub states: Vec<UnitState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `GET /fleet/v1/machines`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachinePage {
    #[serde(default)]
    pub machines: Vec<Machine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// The body of every 4xx/5xx answer: `{"error":{"code":N,"message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorEntity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEntity {
    pub code: u16,
    #[serde(default)]
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: u16, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorEntity {
                code,
                message: message.into(),
            },
        }
    }
}

/// One option as a client may send it. fleet's own client drops empty fields (Go's
/// `omitempty`), so an option whose value is empty (`ExecStartPre=`) arrives without `value`:
/// every field defaults to the empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionBody {
    #[serde(default)]
    pub section: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

impl From<OptionBody> for UnitOption {
    fn from(o: OptionBody) -> UnitOption {
        UnitOption {
            section: o.section,
            name: o.name,
            value: o.value,
        }
    }
}

impl From<&UnitOption> for OptionBody {
    fn from(o: &UnitOption) -> OptionBody {
        OptionBody {
            section: o.section.clone(),
            name: o.name.clone(),
            value: o.value.clone(),
        }
    }
}

/// The body of `PUT /fleet/v1/units/<name>`: a partial Unit. `name`, when given, must match the
/// URL; `currentState` and `machineID` are read-only and ignored, as fleet ignored them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<OptionBody>,
    /// Kept as text so that a wrong word is the API's 400 rather than a decoding error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_state: Option<String>,
}

impl UnitRequest {
    /// A request that creates `name` with `options` in state `desired`.
    pub fn create(name: &str, options: &[UnitOption], desired: TargetState) -> UnitRequest {
        UnitRequest {
            name: Some(name.to_string()),
            options: options.iter().map(OptionBody::from).collect(),
            desired_state: Some(desired.as_str().to_string()),
        }
    }

    /// A request that only changes the desired state of an existing unit.
    pub fn desired(name: &str, desired: TargetState) -> UnitRequest {
        UnitRequest {
            name: Some(name.to_string()),
            options: Vec::new(),
            desired_state: Some(desired.as_str().to_string()),
        }
    }
}

/// One operation of `PATCH /fleet/v1/machines`, JSON-Patch style:
/// `{"op":"add"|"remove"|"replace","path":"/<machineID>/metadata/<key>","value":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataOp {
    pub op: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

impl MetadataOp {
    /// Sets `key` on `machine_id` to `value` (fleet's "add"; "replace" does the same).
    pub fn set(machine_id: &str, key: &str, value: &str) -> MetadataOp {
        MetadataOp {
            op: "add".to_string(),
            path: format!("/{machine_id}/metadata/{key}"),
            value: value.to_string(),
        }
    }

    pub fn remove(machine_id: &str, key: &str) -> MetadataOp {
        MetadataOp {
            op: "remove".to_string(),
            path: format!("/{machine_id}/metadata/{key}"),
            value: String::new(),
        }
    }

    /// Splits the path into machine ID and key, as fleet's `^/([^/]+)/metadata/([A-Za-z0-9_.-]+)$`.
    pub fn target(&self) -> Option<(&str, &str)> {
        let rest = self.path.strip_prefix('/')?;
        let (machine, key) = rest.split_once("/metadata/")?;
        if machine.is_empty() || machine.contains('/') || key.is_empty() {
            return None;
        }
        let key_ok = key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        key_ok.then_some((machine, key))
    }
}

/// fleet's page token: the page size and the 1-based page number, encoded as fleet did
/// (little-endian u16 limit, u16 page, URL-safe base64), so tokens are opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    pub limit: u16,
    pub page: u16,
}

impl PageToken {
    pub fn first(limit: u16) -> PageToken {
        PageToken { limit, page: 1 }
    }

    pub fn next(self) -> PageToken {
        PageToken {
            limit: self.limit,
            page: self.page.saturating_add(1),
        }
    }

    pub fn encode(self) -> String {
        let l = self.limit.to_le_bytes();
        let p = self.page.to_le_bytes();
        base64url_encode(&[l[0], l[1], p[0], p[1]])
    }

    pub fn decode(text: &str) -> Option<PageToken> {
        let bytes = base64url_decode(text)?;
        if bytes.len() != 4 {
            return None;
        }
        Some(PageToken {
            limit: u16::from_le_bytes([bytes[0], bytes[1]]),
            page: u16::from_le_bytes([bytes[2], bytes[3]]),
        })
    }

    /// The items of this page and the token of the next one. As fleet, a page that ends exactly
    /// at the end of the collection still names a next page (which is then empty).
    pub fn slice<T: Clone>(self, all: &[T]) -> (Vec<T>, Option<PageToken>) {
        let limit = usize::from(self.limit);
        let start = usize::from(self.page.saturating_sub(1)) * limit;
        let stop = usize::from(self.page) * limit;
        if start >= all.len() {
            return (Vec::new(), None);
        }
        if stop > all.len() {
            (all[start..].to_vec(), None)
        } else {
            (all[start..stop].to_vec(), Some(self.next()))
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding, and a lone 6-bit group is not a byte.
    (acc == 0 && bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fleets_encoding() {
        // limit 100 (0x64 0x00), page 2 (0x02 0x00)
        assert_eq!(
            PageToken {
                limit: 100,
                page: 2
            }
            .encode(),
            "ZAACAA=="
        );
        assert_eq!(
            PageToken::decode("ZAACAA=="),
            Some(PageToken {
                limit: 100,
                page: 2
            })
        );
        assert_eq!(
            PageToken::decode("ZAACAA"),
            Some(PageToken {
                limit: 100,
                page: 2
            })
        );
        assert_eq!(PageToken::decode("not a token"), None);
        assert_eq!(PageToken::decode("ZAAC"), None);
        for page in [1u16, 7, 300, u16::MAX] {
            let t = PageToken { limit: 100, page };
            assert_eq!(PageToken::decode(&t.encode()), Some(t));
        }
    }

    #[test]
    fn slicing_follows_fleet() {
        let all: Vec<u32> = (0..250).collect();
        let (items, next) = PageToken::first(100).slice(&all);
        assert_eq!(items.len(), 100);
        let (items, next) = next.unwrap().slice(&all);
        assert_eq!(items[0], 100);
        let (items, next) = next.unwrap().slice(&all);
        assert_eq!(items.len(), 50);
        assert!(next.is_none());
        // exactly one full page: a token for an empty next page
        let (items, next) = PageToken::first(100).slice(&all[..100]);
        assert_eq!(items.len(), 100);
        let (items, next) = next.unwrap().slice(&all[..100]);
        assert!(items.is_empty() && next.is_none());
    }

    #[test]
    fn metadata_paths() {
        let op = MetadataOp::set("abc", "region", "us");
        assert_eq!(op.target(), Some(("abc", "region")));
        for bad in [
            "abc/metadata/k",
            "/abc/metadata/",
            "//metadata/k",
            "/a/b/metadata/k",
            "/abc/metadata/k/x",
            "/abc/meta/k",
            "/abc/metadata/k!",
        ] {
            let op = MetadataOp {
                op: "add".into(),
                path: bad.into(),
                value: "v".into(),
            };
            assert_eq!(op.target(), None, "{bad}");
        }
    }

    #[test]
    fn request_options_tolerate_omitted_fields() {
        let r: UnitRequest = serde_json::from_str(
            r#"{"desiredState":"launched","options":[{"section":"Service","name":"ExecStartPre"}],"machineID":"x"}"#,
        )
        .unwrap();
        assert_eq!(r.options[0].value, "");
        assert_eq!(r.desired_state.as_deref(), Some("launched"));
    }
}
