//! `keel-provision validate`: every diagnostic for a user-data blob, in line order.

use super::diagnostics::Diagnostic;
use crate::userdata::parse_user_data;

/// Parses `bytes` as user-data and returns all diagnostics, sorted by line (diagnostics on
/// the same line keep the order they were found in).
pub fn validate(bytes: &[u8]) -> Vec<Diagnostic> {
    let (_, mut diagnostics) = parse_user_data(bytes);
    diagnostics.sort_by_key(|diagnostic| diagnostic.line);
    diagnostics
}
