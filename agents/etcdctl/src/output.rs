//! What v2 etcdctl prints for a response (its `printResponseKey`), in its three formats.

use crate::args::Output;
use crate::store::{Node, Response};

/// The lines for one response, without the final newline.
pub fn response(resp: &Response, format: Output) -> String {
    match format {
        Output::Simple => {
            if resp.action == "delete" {
                let prev = resp.prev_node.as_ref().map_or("", |p| p.value.as_str());
                format!("PrevNode.Value: {prev}")
            } else {
                resp.node.value.clone()
            }
        }
        Output::Extended => {
            let mut out = format!(
                "Key: {}\nCreated-Index: {}\nModified-Index: {}\n",
                resp.node.key, resp.node.created_index, resp.node.modified_index
            );
            if let Some(prev) = &resp.prev_node {
                out.push_str(&format!("PrevNode.Value: {}\n", prev.value));
            }
            out.push_str(&format!(
                "TTL: {}\nIndex: {}",
                resp.node.ttl.unwrap_or(0),
                resp.index
            ));
            if resp.action != "delete" {
                out.push_str(&format!("\n\n{}", resp.node.value));
            }
            out
        }
        Output::Json => resp.to_json().to_string(),
    }
}

/// One line of `ls`: the key, with a slash after a directory when `-p` asks for it.
pub fn ls_line(node: &Node, slash_dirs: bool) -> String {
    if slash_dirs && node.dir {
        format!("{}/", node.key)
    } else {
        node.key.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(action: &'static str, value: &str, prev: Option<&str>) -> Response {
        Response {
            action,
            node: Node {
                key: "/k".into(),
                value: value.into(),
                created_index: 5,
                modified_index: 7,
                ..Node::default()
            },
            prev_node: prev.map(|v| Node {
                key: "/k".into(),
                value: v.into(),
                ..Node::default()
            }),
            index: 7,
        }
    }

    #[test]
    fn simple_prints_the_value_or_the_value_deleted() {
        assert_eq!(response(&resp("set", "v", None), Output::Simple), "v");
        assert_eq!(
            response(&resp("delete", "", Some("old")), Output::Simple),
            "PrevNode.Value: old"
        );
    }

    #[test]
    fn extended_prints_indexes_and_ttl() {
        assert_eq!(
            response(&resp("set", "v", Some("u")), Output::Extended),
            "Key: /k\nCreated-Index: 5\nModified-Index: 7\nPrevNode.Value: u\nTTL: 0\nIndex: 7\n\nv"
        );
    }
}
