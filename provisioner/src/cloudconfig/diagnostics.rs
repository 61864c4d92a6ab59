//! What the parser and validator report: `line N: error|warning|info: message`.

use std::fmt;

use serde::Serialize;

/// How serious a diagnostic is. An `Error` makes `keel-provision validate` exit with status 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Error,
    Warning,
    Info,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Error => "error",
            Kind::Warning => "warning",
            Kind::Info => "info",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding about the user-data, tied to the 1-based line it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    pub kind: Kind,
    pub line: usize,
    pub message: String,
}

impl Diagnostic {
    pub fn error(line: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            kind: Kind::Error,
            line,
            message: message.into(),
        }
    }

    pub fn warning(line: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            kind: Kind::Warning,
            line,
            message: message.into(),
        }
    }

    pub fn info(line: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            kind: Kind::Info,
            line,
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.kind == Kind::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.kind, self.message)
    }
}

/// True when any diagnostic is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}
