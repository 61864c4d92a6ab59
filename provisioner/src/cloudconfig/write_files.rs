//! `write_files:` — files to write, with their encodings, modes and owners.

use std::io::{self, Read, Write};

use base64::Engine;
use flate2::read::MultiGzDecoder;

use super::model::{Encoding, WriteFile};
use super::walk::{child_path, index_path, truncate, Walker};
use super::yaml::Node;

const WRITE_FILE_KEYS: &[&str] = &[
    "path",
    "content",
    "encoding",
    "permissions",
    "owner",
    "append",
];

/// The most a single file's content may decode to; beyond it the content is refused rather
/// than letting a small gzip bomb fill memory or the disk.
pub const MAX_DECODED_SIZE: u64 = 1 << 30;

/// Why a write_files entry's content could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("content is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("content is not valid gzip: {0}")]
    Gzip(io::Error),
    #[error("content decodes to more than {MAX_DECODED_SIZE} bytes")]
    TooLarge,
}

impl Encoding {
    /// The spellings coreos-cloudinit accepts.
    pub fn parse(text: &str) -> Option<Encoding> {
        Some(match text {
            "b64" | "base64" => Encoding::Base64,
            "gz" | "gzip" => Encoding::Gzip,
            "gz+b64" | "gz+base64" | "gzip+b64" | "gzip+base64" => Encoding::GzipBase64,
            _ => return None,
        })
    }
}

impl WriteFile {
    /// The bytes to write: `content` decoded according to `encoding`.
    pub fn decoded_content(&self) -> Result<Vec<u8>, DecodeError> {
        let mut bytes = Vec::new();
        decode_into(&self.content, self.encoding, &mut bytes)?;
        Ok(bytes)
    }
}

/// Decodes `content` into `sink`, so validation can check a file decodes without keeping it.
fn decode_into(
    content: &str,
    encoding: Option<Encoding>,
    sink: &mut impl Write,
) -> Result<u64, DecodeError> {
    match encoding {
        None => {
            write_all(sink, content.as_bytes())?;
            Ok(content.len() as u64)
        }
        Some(Encoding::Base64) => {
            let bytes = decode_base64(content)?;
            write_all(sink, &bytes)?;
            Ok(bytes.len() as u64)
        }
        Some(Encoding::Gzip) => gunzip(content.as_bytes(), sink),
        Some(Encoding::GzipBase64) => gunzip(&decode_base64(content)?, sink),
    }
}

fn write_all(sink: &mut impl Write, bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() as u64 > MAX_DECODED_SIZE {
        return Err(DecodeError::TooLarge);
    }
    // Sinks here are a Vec or io::sink, which cannot fail.
    sink.write_all(bytes).map_err(DecodeError::Gzip)
}

/// Base64 as Go's decoder reads it in coreos-cloudinit: line breaks (and here any whitespace,
/// as block scalars bring indentation) are skipped; padding may be missing.
pub(crate) fn decode_base64(content: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: Vec<u8> = content
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT.decode(compact)
}

fn gunzip(compressed: &[u8], sink: &mut impl Write) -> Result<u64, DecodeError> {
    let decoder = MultiGzDecoder::new(compressed);
    let mut limited = decoder.take(MAX_DECODED_SIZE + 1);
    let copied = io::copy(&mut limited, sink).map_err(DecodeError::Gzip)?;
    if copied > MAX_DECODED_SIZE {
        return Err(DecodeError::TooLarge);
    }
    Ok(copied)
}

pub fn parse_write_files(walker: &mut Walker, node: &Node, path: &str) -> Vec<WriteFile> {
    let items = walker.sequence(node, path, "a list of files");
    let mut files = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if let Some(file) = parse_write_file(walker, item, &index_path(path, index)) {
            files.push(file);
        }
    }
    files
}

fn parse_write_file(walker: &mut Walker, node: &Node, path: &str) -> Option<WriteFile> {
    let entries = walker.mapping(node, path)?;
    let mut file = WriteFile {
        line: node.line,
        path: String::new(),
        content: String::new(),
        encoding: None,
        permissions: None,
        owner: None,
        append: false,
    };
    let mut file_path = None;
    let mut content_node = None;
    let mut encoding_ok = true;
    for entry in &entries {
        let key_path = child_path(path, &entry.key);
        let value = entry.value;
        match entry.key.as_str() {
            "path" => file_path = walker.string(value, &key_path).map(|p| (p, value.line)),
            "content" => content_node = Some((value, key_path)),
            "encoding" => {
                let Some(text) = walker.string(value, &key_path) else {
                    continue;
                };
                match Encoding::parse(&text.to_ascii_lowercase()) {
                    Some(encoding) => file.encoding = Some(encoding),
                    None => {
                        encoding_ok = false;
                        walker.error(
                            value.line,
                            format!(
                                "\"{key_path}\" \"{}\" is not one of b64, base64, gz, gzip, \
                                 gz+b64, gz+base64, gzip+b64, gzip+base64",
                                truncate(&text)
                            ),
                        );
                    }
                }
            }
            "permissions" => {
                // Like coreos-cloudinit, the digits as written are octal: YAML 1.1 would read a
                // plain 0644 as the integer 420, so the raw scalar text is used, never its value.
                let Some(text) = walker.string(value, &key_path) else {
                    continue;
                };
                match parse_octal_mode(&text) {
                    Some(mode) => file.permissions = Some(mode),
                    None => walker.error(
                        value.line,
                        format!(
                            "\"{key_path}\" \"{}\" is not an octal file mode (like 0644)",
                            truncate(&text)
                        ),
                    ),
                }
            }
            "owner" => file.owner = walker.string(value, &key_path),
            "append" => file.append = walker.boolean(value, &key_path).unwrap_or(false),
            _ => walker.unknown_key(entry, path, WRITE_FILE_KEYS),
        }
    }

    if let Some((content, key_path)) = &content_node {
        if !read_content(walker, &mut file, content, key_path) {
            return None;
        }
    }

    let Some((file_path, path_line)) = file_path.filter(|(p, _)| !p.trim().is_empty()) else {
        walker.error(node.line, format!("\"{path}\" has no path"));
        return None;
    };
    if file_path.contains('\0') {
        walker.error(path_line, format!("\"{path}.path\" contains a NUL byte"));
        return None;
    }
    if !file_path.starts_with('/') {
        walker.warning(
            path_line,
            format!(
                "\"{path}.path\" \"{}\" is not absolute; it is written relative to /",
                truncate(&file_path)
            ),
        );
    }
    let normalised = normalise_path(&file_path);
    if normalised == "/usr" || normalised.starts_with("/usr/") {
        walker.error(
            path_line,
            format!(
                "\"{path}.path\" \"{}\" cannot be written: /usr is read-only on Keel",
                truncate(&file_path)
            ),
        );
        return None;
    }
    file.path = file_path;

    if encoding_ok {
        let content_line = content_node
            .as_ref()
            .map_or(node.line, |(content, _)| content.line);
        if let Err(error) = decode_into(&file.content, file.encoding, &mut io::sink()) {
            walker.error(
                content_line,
                format!("\"{path}.content\" cannot be decoded: {error}"),
            );
            return None;
        }
    } else {
        return None;
    }
    Some(file)
}

/// Fills `file.content` from the content node. `!!binary` content is base64 that YAML itself
/// decodes; the encoding then describes the decoded bytes, so the two layers are folded into
/// one so that `content` stays text. Returns false when the entry must be dropped.
fn read_content(walker: &mut Walker, file: &mut WriteFile, node: &Node, key_path: &str) -> bool {
    let Some(scalar) = node.as_scalar() else {
        walker.wrong_type(node, key_path, "a string");
        return true;
    };
    if scalar.is_null() {
        return true;
    }
    if !scalar.is_binary() {
        file.content = scalar.text.clone();
        return true;
    }
    match file.encoding {
        None => {
            file.content = scalar.text.clone();
            file.encoding = Some(Encoding::Base64);
        }
        Some(Encoding::Gzip) => {
            file.content = scalar.text.clone();
            file.encoding = Some(Encoding::GzipBase64);
        }
        Some(Encoding::Base64 | Encoding::GzipBase64) => {
            // Base64 inside !!binary: decode the YAML layer now; the rest must be text.
            match decode_base64(&scalar.text).map(String::from_utf8) {
                Ok(Ok(inner)) => file.content = inner,
                _ => {
                    walker.error(
                        node.line,
                        format!("\"{key_path}\" (!!binary) cannot be decoded"),
                    );
                    return false;
                }
            }
        }
    }
    true
}

/// "0644", "644", "0o644", "00644": octal digits only, at most 0o7777.
pub(crate) fn parse_octal_mode(text: &str) -> Option<u32> {
    let text = text.trim();
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    let mode = u32::from_str_radix(digits, 8).ok()?;
    (mode <= 0o7777).then_some(mode)
}

/// Lexically resolves "." and ".." (never above "/") so "/etc/../usr/x" is seen as "/usr/x".
fn normalise_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str, encoding: Option<Encoding>) -> WriteFile {
        WriteFile {
            line: 1,
            path: "/etc/x".into(),
            content: content.into(),
            encoding,
            permissions: None,
            owner: None,
            append: false,
        }
    }

    #[test]
    fn octal_modes() {
        assert_eq!(parse_octal_mode("0644"), Some(0o644));
        assert_eq!(parse_octal_mode("644"), Some(0o644));
        assert_eq!(parse_octal_mode("0o755"), Some(0o755));
        assert_eq!(parse_octal_mode("04755"), Some(0o4755));
        assert_eq!(parse_octal_mode("0999"), None);
        assert_eq!(parse_octal_mode("rw-r--r--"), None);
        assert_eq!(parse_octal_mode("77777"), None);
        assert_eq!(parse_octal_mode(""), None);
    }

    #[test]
    fn decodes_every_encoding() {
        assert_eq!(file("hi", None).decoded_content().unwrap(), b"hi");
        assert_eq!(
            file("aGVs\n  bG8=\n", Some(Encoding::Base64))
                .decoded_content()
                .unwrap(),
            b"hello"
        );
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"zipped").unwrap();
        let gz = base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap());
        let text = file(&gz, Some(Encoding::GzipBase64))
            .decoded_content()
            .unwrap();
        assert_eq!(text, b"zipped");
        assert!(file("not gzip", Some(Encoding::Gzip))
            .decoded_content()
            .is_err());
        assert!(file("!!!", Some(Encoding::Base64))
            .decoded_content()
            .is_err());
    }

    #[test]
    fn normalised_paths() {
        assert_eq!(normalise_path("/etc/../usr/x"), "/usr/x");
        assert_eq!(normalise_path("//usr"), "/usr");
        assert_eq!(normalise_path("/../../etc"), "/etc");
        assert_eq!(normalise_path("/usrlocal"), "/usrlocal");
    }
}
