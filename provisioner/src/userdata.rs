//! What a user-data blob is: a `#cloud-config` document, a `#!` script, gzip of either, or
//! multipart MIME holding several of them (coreos-cloudinit's formats, plus cloud-init's
//! multipart that Container Linux users also feed it).

use std::io::Read;

use flate2::read::MultiGzDecoder;

use crate::cloudconfig::write_files::decode_base64;
use crate::cloudconfig::{parse_cloud_config_at, truncate, CloudConfig, Diagnostic, UserData};

/// Gzip user-data may not decompress to more than this.
pub const MAX_DECOMPRESSED_SIZE: u64 = 64 << 20;
/// Gzip inside multipart inside gzip...: deeper than this is refused.
const MAX_NESTING: usize = 8;

const UNRECOGNISED: &str =
    "user-data must start with #cloud-config or #!, or be gzip or multipart MIME";

/// Detects the format of `bytes` and parses it. Never fails and never panics: whatever is
/// wrong is in the diagnostics (lines are 1-based lines of `bytes`, or of the decompressed
/// text for gzip user-data).
pub fn parse_user_data(bytes: &[u8]) -> (UserData, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let user_data = parse_nested(bytes, 0, 0, &mut diagnostics);
    (user_data, diagnostics)
}

/// `line_offset` is how many lines of the whole document come before `bytes`, so that every
/// line reported (and stored in the model) is a line of the whole document.
fn parse_nested(
    bytes: &[u8],
    depth: usize,
    line_offset: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> UserData {
    if depth > MAX_NESTING {
        diagnostics.push(Diagnostic::error(
            1 + line_offset,
            format!("user-data is nested (gzip, multipart) more than {MAX_NESTING} levels deep"),
        ));
        return UserData::Empty;
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return match gunzip(bytes) {
            // Lines of compressed user-data are lines of the decompressed text.
            Ok(inner) => parse_nested(&inner, depth + 1, 0, diagnostics),
            Err(message) => {
                diagnostics.push(Diagnostic::error(1 + line_offset, message));
                UserData::Empty
            }
        };
    }
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return UserData::Empty;
    }
    let first_line = first_line(bytes);
    if first_line.trim_ascii_end() == b"#cloud-config" {
        return UserData::CloudConfig(cloud_config(bytes, line_offset, diagnostics));
    }
    if first_line.starts_with(b"#!") {
        return UserData::Script(bytes.to_vec());
    }
    if looks_like_mime(first_line) {
        if let Some((headers, body_offset)) = parse_headers(bytes) {
            let entity = Entity {
                bytes,
                headers: &headers,
                body_offset,
                part_number: 1,
                line_offset,
            };
            return mime_entity(&entity, depth, diagnostics).unwrap_or(UserData::Empty);
        }
    }
    diagnostics.push(Diagnostic::error(1 + line_offset, UNRECOGNISED));
    UserData::Empty
}

fn first_line(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(end) => &bytes[..end],
        None => bytes,
    }
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut inner = Vec::new();
    MultiGzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED_SIZE + 1)
        .read_to_end(&mut inner)
        .map_err(|error| format!("user-data is not valid gzip: {error}"))?;
    if inner.len() as u64 > MAX_DECOMPRESSED_SIZE {
        return Err(format!(
            "gzip user-data decompresses to more than {} MiB",
            MAX_DECOMPRESSED_SIZE >> 20
        ));
    }
    Ok(inner)
}

/// A cloud-config from raw bytes. Invalid UTF-8 or a NUL byte (which YAML does not allow
/// anywhere, and go-yaml refuses) is an error at the line where it is; the rest is still
/// parsed for diagnostics, but nothing from it is applied.
fn cloud_config(
    bytes: &[u8],
    line_offset: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> CloudConfig {
    // Every YAML line (model and diagnostics alike) is shifted to its line in the whole
    // document.
    let (offset, problem) = match std::str::from_utf8(bytes) {
        Ok(text) => match text.find('\0') {
            None => {
                let (config, mut found) = parse_cloud_config_at(text, line_offset);
                diagnostics.append(&mut found);
                return config;
            }
            Some(offset) => (
                offset,
                format!("NUL byte at byte {offset}; a cloud-config must be text"),
            ),
        },
        Err(error) => {
            let offset = error.valid_up_to();
            (
                offset,
                format!("invalid UTF-8 at byte {offset}; a cloud-config must be UTF-8 text"),
            )
        }
    };
    let line = 1 + line_offset + lines_before(bytes, offset);
    diagnostics.push(Diagnostic::error(line, problem));
    let (_, mut found) = parse_cloud_config_at(&String::from_utf8_lossy(bytes), line_offset);
    diagnostics.append(&mut found);
    CloudConfig::default()
}

fn looks_like_mime(first_line: &[u8]) -> bool {
    let lower = first_line.to_ascii_lowercase();
    lower.starts_with(b"content-type:") || lower.starts_with(b"mime-version:")
}

/// MIME headers up to the first empty line: (lower-case name, value) pairs and where the body
/// starts. None when the text before the empty line is not a header block.
fn parse_headers(bytes: &[u8]) -> Option<(Vec<(String, String)>, usize)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let end = bytes[offset..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |p| offset + p);
        let line = bytes[offset..end].trim_ascii_end();
        let next = (end + 1).min(bytes.len());
        if line.is_empty() {
            return Some((headers, next));
        }
        let line = std::str::from_utf8(line).ok()?;
        if line.starts_with([' ', '\t']) {
            // A folded header continues the previous one.
            let (_, value) = headers.last_mut()?;
            value.push(' ');
            value.push_str(line.trim());
        } else {
            let (name, value) = line.split_once(':')?;
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            {
                return None;
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        offset = next;
    }
    // Headers with no body at all.
    Some((headers, bytes.len()))
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(header, _)| header == name)
        .map(|(_, value)| value.as_str())
}

/// "multipart/mixed; boundary=\"xyz\"" → ("multipart/mixed", [("boundary", "xyz")]).
fn parse_content_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut pieces = value.split(';');
    let media_type = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
    let parameters = pieces
        .filter_map(|piece| {
            let (name, value) = piece.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((name.trim().to_ascii_lowercase(), value.to_string()))
        })
        .collect();
    (media_type, parameters)
}

/// Number of line breaks before `offset`: added to a part's own line numbers.
fn lines_before(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// One MIME entity (the whole message or one part).
struct Entity<'a> {
    /// The entity: its headers, then its body from `body_offset` on.
    bytes: &'a [u8],
    headers: &'a [(String, String)],
    body_offset: usize,
    /// Names the part in messages.
    part_number: usize,
    /// Lines of the whole document before `bytes`.
    line_offset: usize,
}

/// Parses one MIME entity; None when it is skipped.
fn mime_entity(
    entity: &Entity<'_>,
    depth: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<UserData> {
    let Entity {
        bytes,
        headers,
        body_offset,
        part_number,
        line_offset,
    } = *entity;
    let body = &bytes[body_offset.min(bytes.len())..];
    let body_line = 1 + line_offset + lines_before(bytes, body_offset);
    if depth > MAX_NESTING {
        diagnostics.push(Diagnostic::error(
            body_line,
            format!("user-data is nested (gzip, multipart) more than {MAX_NESTING} levels deep"),
        ));
        return None;
    }
    let (media_type, parameters) =
        parse_content_type(header(headers, "content-type").unwrap_or(""));

    if media_type.starts_with("multipart/") {
        let Some(boundary) = parameters
            .iter()
            .find(|(name, _)| name == "boundary")
            .map(|(_, value)| value.as_str())
            .filter(|b| !b.is_empty())
        else {
            diagnostics.push(Diagnostic::error(
                body_line.saturating_sub(1).max(1),
                format!(
                    "{} user-data has no boundary parameter",
                    truncate(&media_type)
                ),
            ));
            return None;
        };
        return Some(multipart(entity, boundary, depth, diagnostics));
    }

    let encoding = header(headers, "content-transfer-encoding")
        .unwrap_or("")
        .to_ascii_lowercase();
    let decoded;
    let (content, encoded) = match encoding.as_str() {
        "" | "7bit" | "8bit" | "binary" => (body, false),
        "base64" => match std::str::from_utf8(body)
            .ok()
            .and_then(|t| decode_base64(t).ok())
        {
            Some(bytes) => {
                decoded = bytes;
                (decoded.as_slice(), true)
            }
            None => {
                diagnostics.push(Diagnostic::error(
                    body_line,
                    format!("MIME part {part_number} is not valid base64"),
                ));
                return None;
            }
        },
        other => {
            diagnostics.push(Diagnostic::warning(
                body_line,
                format!(
                    "MIME part {part_number} has Content-Transfer-Encoding \"{}\", which Keel \
                     does not decode; ignored",
                    truncate(other)
                ),
            ));
            return None;
        }
    };
    let encoded = encoded || content.starts_with(&[0x1f, 0x8b]);

    // Decoded content has no lines in the document: it is parsed on its own and reported at
    // the part's first line, naming the line inside the part.
    let content_offset = if encoded { 0 } else { body_line - 1 };
    let mut found = Vec::new();
    let mut user_data = match media_type.as_str() {
        "text/cloud-config" => Some(UserData::CloudConfig(cloud_config(
            content,
            content_offset,
            &mut found,
        ))),
        "text/x-shellscript" => Some(UserData::Script(content.to_vec())),
        ""
        | "text/plain"
        | "application/octet-stream"
        | "application/gzip"
        | "application/x-gzip" => {
            Some(parse_nested(content, depth + 1, content_offset, &mut found))
        }
        other => {
            diagnostics.push(Diagnostic::warning(
                body_line,
                format!(
                    "MIME part {part_number} has Content-Type \"{}\", which Keel does not \
                     handle; ignored",
                    truncate(other)
                ),
            ));
            None
        }
    };
    for mut diagnostic in found {
        if encoded {
            diagnostic.message = format!(
                "MIME part {part_number} (decoded), line {}: {}",
                diagnostic.line, diagnostic.message
            );
            diagnostic.line = body_line;
        }
        diagnostics.push(diagnostic);
    }
    if encoded {
        // Likewise what is applied from it: an apply error names the part's first line, not
        // a line of the decoded text that the document does not have.
        if let Some(user_data) = &mut user_data {
            relocate(user_data, body_line);
        }
    }
    user_data
}

/// Sets the line of every item in `user_data` to `line`.
fn relocate(user_data: &mut UserData, line: usize) {
    match user_data {
        UserData::CloudConfig(config) => {
            let coreos = &mut config.coreos;
            let lines = config
                .hostname
                .iter_mut()
                .map(|hostname| &mut hostname.line)
                .chain(
                    config
                        .manage_etc_hosts
                        .iter_mut()
                        .map(|hosts| &mut hosts.line),
                )
                .chain(config.users.iter_mut().map(|user| &mut user.line))
                .chain(config.write_files.iter_mut().map(|file| &mut file.line))
                .chain(config.runcmd.iter_mut().map(|command| &mut command.line))
                .chain(config.bootcmd.iter_mut().map(|command| &mut command.line))
                .chain(
                    [
                        &mut coreos.etcd,
                        &mut coreos.etcd2,
                        &mut coreos.fleet,
                        &mut coreos.flannel,
                        &mut coreos.locksmith,
                    ]
                    .into_iter()
                    .flatten()
                    .map(|option| &mut option.line),
                )
                .chain(coreos.update.iter_mut().map(|update| &mut update.line))
                .chain(coreos.oem.iter_mut().map(|oem| &mut oem.line));
            for item_line in lines {
                *item_line = line;
            }
            for unit in &mut coreos.units {
                unit.line = line;
                for drop_in in &mut unit.drop_ins {
                    drop_in.line = line;
                }
            }
        }
        UserData::Multipart(parts) => {
            for part in parts {
                relocate(part, line);
            }
        }
        UserData::Script(_) | UserData::Empty => {}
    }
}

/// Splits a multipart body at `--boundary` lines and parses each part.
fn multipart(
    entity: &Entity<'_>,
    boundary: &str,
    depth: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> UserData {
    let (bytes, body_offset, line_offset) = (entity.bytes, entity.body_offset, entity.line_offset);
    let delimiter = format!("--{boundary}");
    let close = format!("--{boundary}--");
    // (start, end, line breaks in `bytes` before start): lines are counted once, as the body
    // is scanned, so that many parts cost linear time.
    let mut parts: Vec<(usize, usize, usize)> = Vec::new();
    let mut part_start: Option<(usize, usize)> = None;
    let mut closed = false;
    let mut offset = body_offset.min(bytes.len());
    let header_lines = lines_before(bytes, offset);
    // Line breaks before `offset`.
    let mut breaks = header_lines;
    while offset < bytes.len() {
        let end = bytes[offset..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |p| offset + p);
        let line = bytes[offset..end].trim_ascii_end();
        let is_close = line == close.as_bytes();
        if is_close || line == delimiter.as_bytes() {
            if let Some((start, start_breaks)) = part_start.take() {
                parts.push((start, strip_line_break(bytes, start, offset), start_breaks));
            }
            if is_close {
                closed = true;
                break;
            }
            part_start = Some(((end + 1).min(bytes.len()), breaks + 1));
        }
        offset = end + 1;
        breaks += 1;
    }
    if let Some((start, start_breaks)) = part_start {
        parts.push((start, bytes.len(), start_breaks));
    }
    let boundary_line = line_offset + header_lines.max(1);
    if parts.is_empty() {
        diagnostics.push(Diagnostic::error(
            boundary_line,
            format!(
                "multipart user-data has no parts (no \"--{}\" line)",
                truncate(boundary)
            ),
        ));
        return UserData::Multipart(Vec::new());
    }
    if !closed {
        diagnostics.push(Diagnostic::warning(
            1 + line_offset + lines_before(bytes, bytes.len()),
            format!(
                "multipart user-data does not end with \"--{}--\"",
                truncate(boundary)
            ),
        ));
    }

    let mut results = Vec::new();
    for (index, (start, end, start_breaks)) in parts.into_iter().enumerate() {
        // The part's lines stay lines of the whole document through its line offset.
        let part = &bytes[start..end];
        let (headers, body_offset) = parse_headers(part).unwrap_or((Vec::new(), 0));
        let part = Entity {
            bytes: part,
            headers: &headers,
            body_offset,
            part_number: index + 1,
            line_offset: line_offset + start_breaks,
        };
        if let Some(user_data) = mime_entity(&part, depth + 1, diagnostics) {
            results.push(user_data);
        }
    }
    UserData::Multipart(results)
}

/// The end of a part: the line break before the next delimiter belongs to the delimiter.
fn strip_line_break(bytes: &[u8], start: usize, mut end: usize) -> usize {
    if end > start && bytes[end - 1] == b'\n' {
        end -= 1;
        if end > start && bytes[end - 1] == b'\r' {
            end -= 1;
        }
    }
    end
}
