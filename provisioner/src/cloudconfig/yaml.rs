//! A small YAML tree that remembers where every node came from.
//!
//! yaml-rust2's own `Yaml` type drops positions and its loader recurses once per nesting level,
//! so this module pulls events from the (iterative) event parser and builds the tree with an
//! explicit stack. Nesting depth, node count and alias expansion are all bounded, so no input
//! can overflow the stack, loop, or blow up memory through aliases ("billion laughs").

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

use super::diagnostics::Diagnostic;

/// Deeper than any real cloud-config; shallow enough that recursive walks over the tree are safe.
pub const MAX_DEPTH: usize = 128;
/// Nodes in one document, counting every alias expansion.
pub const MAX_NODES: usize = 1_000_000;

/// How a scalar was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    /// The scalar's text after YAML unescaping and folding, before any typing.
    pub text: String,
    pub style: ScalarStyle,
    /// The resolved tag, e.g. "tag:yaml.org,2002:binary" for `!!binary`.
    pub tag: Option<String>,
}

const BINARY_TAG: &str = "tag:yaml.org,2002:binary";

impl Scalar {
    /// Quoted and block scalars are always strings; only plain ones can be null, bool or number.
    pub fn is_plain(&self) -> bool {
        self.style == ScalarStyle::Plain
    }

    pub fn is_null(&self) -> bool {
        self.is_plain()
            && self.tag.is_none()
            && matches!(self.text.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }

    /// YAML 1.1 booleans, as go-yaml (and so coreos-cloudinit) reads them.
    pub fn as_bool(&self) -> Option<bool> {
        if !self.is_plain() {
            return None;
        }
        match self.text.as_str() {
            "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => {
                Some(true)
            }
            "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n"
            | "N" => Some(false),
            _ => None,
        }
    }

    pub fn is_binary(&self) -> bool {
        self.tag.as_deref() == Some(BINARY_TAG)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Scalar(Scalar),
    Sequence(Vec<Node>),
    /// Entries in document order; keys may be any node (complex keys are reported by the walker).
    Mapping(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// 1-based line of the node's first character in the document.
    pub line: usize,
    pub value: Value,
}

impl Node {
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.as_scalar().is_some_and(Scalar::is_null)
    }

    /// "a string", "a list", ... for "should be X, not Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::Scalar(s) if s.is_null() => "empty",
            Value::Scalar(s) if s.as_bool().is_some() => "a boolean",
            Value::Scalar(s) if s.is_plain() && looks_numeric(&s.text) => "a number",
            Value::Scalar(_) => "a string",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "a map",
        }
    }
}

fn looks_numeric(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty()
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '_')
        && digits.chars().any(|c| c.is_ascii_digit())
}

/// A collection being built: its line, its anchor id (0 = none), and what it holds so far.
struct Frame {
    line: usize,
    anchor: usize,
    /// Nodes in this subtree so far (for charging alias expansions).
    size: usize,
    /// Height of the tallest child so far.
    child_height: usize,
    kind: FrameKind,
}

enum FrameKind {
    Sequence(Vec<Node>),
    Mapping {
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
    },
}

/// A finished anchored node, with what it costs to copy it in place of an alias.
struct Anchored {
    node: Node,
    size: usize,
    height: usize,
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    root: Option<Node>,
    nodes: usize,
}

/// Why building stopped early.
struct Stop(Diagnostic);

impl Builder {
    fn charge(&mut self, count: usize, line: usize) -> Result<(), Stop> {
        self.nodes = self.nodes.saturating_add(count);
        if self.nodes > MAX_NODES {
            return Err(Stop(Diagnostic::error(
                line,
                format!(
                    "the document has more than {MAX_NODES} YAML nodes (counting alias expansions)"
                ),
            )));
        }
        Ok(())
    }

    fn open(&mut self, line: usize, anchor: usize, kind: FrameKind) -> Result<(), Stop> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Stop(Diagnostic::error(
                line,
                format!("YAML nesting is deeper than {MAX_DEPTH} levels"),
            )));
        }
        self.charge(1, line)?;
        self.stack.push(Frame {
            line,
            anchor,
            size: 1,
            child_height: 0,
            kind,
        });
        Ok(())
    }

    fn close(&mut self, line: usize) -> Result<(), Stop> {
        let Some(frame) = self.stack.pop() else {
            return Err(Stop(Diagnostic::error(
                line,
                "unbalanced YAML collection end",
            )));
        };
        let value = match frame.kind {
            FrameKind::Sequence(items) => Value::Sequence(items),
            FrameKind::Mapping { entries, .. } => Value::Mapping(entries),
        };
        let node = Node {
            line: frame.line,
            value,
        };
        self.attach(node, frame.anchor, frame.size, frame.child_height + 1);
        Ok(())
    }

    fn attach(&mut self, node: Node, anchor: usize, size: usize, height: usize) {
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    size,
                    height,
                },
            );
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(parent) => {
                parent.size = parent.size.saturating_add(size);
                parent.child_height = parent.child_height.max(height);
                match &mut parent.kind {
                    FrameKind::Sequence(items) => items.push(node),
                    FrameKind::Mapping {
                        entries,
                        pending_key,
                    } => match pending_key.take() {
                        None => *pending_key = Some(node),
                        Some(key) => entries.push((key, node)),
                    },
                }
            }
        }
    }

    fn alias(&mut self, id: usize, line: usize) -> Result<(), Stop> {
        // An alias to an anchor whose node is still open (`&a [*a]`) is not in the map yet:
        // refusing it is what keeps recursive aliases from looping.
        let Some(anchored) = self.anchors.get(&id) else {
            return Err(Stop(Diagnostic::error(
                line,
                "YAML alias refers to a node that contains it (recursive aliases are not allowed)",
            )));
        };
        if self.stack.len() + anchored.height > MAX_DEPTH {
            return Err(Stop(Diagnostic::error(
                line,
                format!("YAML alias expands to nesting deeper than {MAX_DEPTH} levels"),
            )));
        }
        let (size, height) = (anchored.size, anchored.height);
        self.charge(size, line)?;
        let mut node = self.anchors[&id].node.clone();
        node.line = line;
        self.attach(node, 0, size, height);
        Ok(())
    }
}

fn style(style: TScalarStyle) -> ScalarStyle {
    match style {
        TScalarStyle::Plain => ScalarStyle::Plain,
        TScalarStyle::SingleQuoted => ScalarStyle::SingleQuoted,
        TScalarStyle::DoubleQuoted => ScalarStyle::DoubleQuoted,
        TScalarStyle::Literal => ScalarStyle::Literal,
        TScalarStyle::Folded => ScalarStyle::Folded,
    }
}

/// Parses the first YAML document of `text`. `None` means an empty document or a syntax error
/// (then reported in the diagnostics). `line_offset` lines come before `text` in the whole
/// document: it is added to every line, in the tree and in the diagnostics.
pub fn parse(text: &str, line_offset: usize) -> (Option<Node>, Vec<Diagnostic>) {
    // yaml-rust2 is not ours: should it ever panic on some input, report it instead of taking
    // the provisioner down with it.
    match catch_unwind(AssertUnwindSafe(|| parse_events(text, line_offset))) {
        Ok(result) => result,
        Err(_) => (
            None,
            vec![Diagnostic::error(
                1 + line_offset,
                "the YAML parser failed on this document",
            )],
        ),
    }
}

fn parse_events(text: &str, line_offset: usize) -> (Option<Node>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        nodes: 0,
    };
    let mut documents = 0usize;
    // At the end of the stream the scanner moves to a new line when the text does not end with
    // a line break: a line past the end of the document, which nothing should name.
    let last_line = 1 + text.bytes().filter(|&b| b == b'\n').count();
    let line_of = |line: usize| line.clamp(1, last_line) + line_offset;
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            Err(error) => {
                diagnostics.push(Diagnostic::error(
                    line_of(error.marker().line()),
                    format!("YAML syntax error: {}", error.info()),
                ));
                return (None, diagnostics);
            }
        };
        let line = line_of(mark.line());
        let step = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => Ok(()),
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    diagnostics.push(Diagnostic::warning(
                        line,
                        "only the first YAML document is used; the rest is ignored",
                    ));
                    break;
                }
                Ok(())
            }
            Event::Alias(id) => builder.alias(id, line),
            Event::Scalar(text, scalar_style, anchor, tag) => builder.charge(1, line).map(|()| {
                let tag = tag.map(|tag| format!("{}{}", tag.handle, tag.suffix));
                let node = Node {
                    line,
                    value: Value::Scalar(Scalar {
                        text,
                        style: style(scalar_style),
                        tag,
                    }),
                };
                builder.attach(node, anchor, 1, 1);
            }),
            Event::SequenceStart(anchor, _) => {
                builder.open(line, anchor, FrameKind::Sequence(Vec::new()))
            }
            Event::MappingStart(anchor, _) => builder.open(
                line,
                anchor,
                FrameKind::Mapping {
                    entries: Vec::new(),
                    pending_key: None,
                },
            ),
            Event::SequenceEnd | Event::MappingEnd => builder.close(line),
        };
        if let Err(Stop(diagnostic)) = step {
            diagnostics.push(diagnostic);
            return (None, diagnostics);
        }
    }
    (builder.root, diagnostics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        root_at(text, 0)
    }

    fn root_at(text: &str, line_offset: usize) -> Node {
        let (node, diagnostics) = parse(text, line_offset);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        node.expect("a document")
    }

    #[test]
    fn lines_are_one_based_and_follow_the_document() {
        let node = root("#cloud-config\nhostname: a\nusers:\n  - name: core\n");
        assert_eq!(node.line, 2);
        let Value::Mapping(entries) = &node.value else {
            panic!()
        };
        assert_eq!(entries[0].0.line, 2);
        assert_eq!(entries[1].1.line, 4);
    }

    #[test]
    fn scalars_keep_raw_text_and_style() {
        let node = root("a: 0644\nb: \"0644\"\nc: !!binary aGk=\n");
        let Value::Mapping(entries) = &node.value else {
            panic!()
        };
        let a = entries[0].1.as_scalar().unwrap();
        assert_eq!((a.text.as_str(), a.style), ("0644", ScalarStyle::Plain));
        let b = entries[1].1.as_scalar().unwrap();
        assert_eq!(b.style, ScalarStyle::DoubleQuoted);
        assert!(entries[2].1.as_scalar().unwrap().is_binary());
    }

    #[test]
    fn syntax_errors_carry_their_line() {
        let (node, diagnostics) = parse("#cloud-config\na: 1\nb: \"unclosed\n", 0);
        assert!(node.is_none());
        assert_eq!(diagnostics.len(), 1);
        assert!(diagnostics[0].is_error());
        assert!(diagnostics[0].line >= 3, "{diagnostics:?}");
    }

    #[test]
    fn an_error_at_the_end_names_the_last_line() {
        // Found by the fuzzer: with no final line break the scanner's end-of-stream mark is
        // on the line after the last one.
        let (node, diagnostics) = parse("#cloud-config\na: 1\nwrit", 0);
        assert!(node.is_none());
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert_eq!(diagnostics[0].line, 3, "{diagnostics:?}");
        // With the line break, the line after it is where the document ends.
        let (_, diagnostics) = parse("#cloud-config\na: 1\nwrit\n", 0);
        assert!((3..=4).contains(&diagnostics[0].line), "{diagnostics:?}");
    }

    #[test]
    fn lines_are_shifted_by_the_offset() {
        let node = root_at("#cloud-config\nhostname: a\n", 10);
        assert_eq!(node.line, 12);
        let (_, diagnostics) = parse("#cloud-config\na: [\n", 10);
        assert!((12..=13).contains(&diagnostics[0].line), "{diagnostics:?}");
        let (_, diagnostics) = parse("#cloud-config\na: b\nc", 10);
        assert_eq!(diagnostics[0].line, 13, "{diagnostics:?}");
    }

    #[test]
    fn aliases_resolve_and_recursion_is_refused() {
        let node = root("a: &x [1, 2]\nb: *x\n");
        let Value::Mapping(entries) = &node.value else {
            panic!()
        };
        assert_eq!(entries[0].1.value, entries[1].1.value);
        assert_eq!(entries[1].1.line, 2);

        let (node, diagnostics) = parse("a: &x [1, *x]\n", 0);
        assert!(node.is_none());
        assert!(diagnostics[0].is_error(), "{diagnostics:?}");
    }

    #[test]
    fn alias_bombs_hit_the_node_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..12 {
            let previous = format!("*a{}", level - 1);
            let items = [previous.as_str(); 10].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        let (node, diagnostics) = parse(&text, 0);
        assert!(node.is_none());
        assert!(
            diagnostics[0].message.contains("YAML nodes"),
            "{diagnostics:?}"
        );
    }

    #[test]
    fn deep_nesting_is_capped() {
        let text = "[".repeat(10_000);
        let (node, diagnostics) = parse(&text, 0);
        assert!(node.is_none());
        assert_eq!(diagnostics.len(), 1);
    }
}
