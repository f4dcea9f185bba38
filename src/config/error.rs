//! Configuration errors in nginx's words, located at `file:line:col`.

use std::fmt;

/// One problem in the configuration.
///
/// `Display` gives nginx's wording with a column added:
/// `unknown directive "proxy_pas" in /etc/imbang/site.conf:7:5`.
/// The `imbang: [emerg] ` prefix is added by whoever prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ErrorKind,
    /// `path:line:col`, resolved from a span by the source map; `None` for errors with no place
    /// (for example a missing main file, where nginx names the file in the message).
    pub location: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("open() \"{path}\" failed ({reason})")]
    Open { path: String, reason: String },
    #[error("unexpected \"{0}\"")]
    Unexpected(String),
    #[error("unexpected end of file, expecting \"{0}\"")]
    UnexpectedEof(&'static str),
    /// The text ended after a directive's words, or inside a quote or escape.
    #[error("unexpected end of file, expecting \";\" or \"}}\"")]
    UnexpectedEofInDirective,
    /// Not in nginx (which has no limit): blocks nested deeper than this many levels.
    #[error("too many nested blocks (more than {0})")]
    TooDeep(usize),
    #[error("unknown directive \"{0}\"")]
    UnknownDirective(String),
    /// A directive of an nginx module imbang does not have (named from nginx's own table).
    #[error("unknown directive \"{0}\" ({1} is not part of imbang)")]
    NotInImbang(String, &'static str),
    #[error("\"{0}\" directive is not allowed here")]
    NotAllowedHere(String),
    #[error("\"{0}\" directive is duplicate")]
    Duplicate(String),
    #[error("invalid number of arguments in \"{0}\" directive")]
    Arity(String),
    #[error("directive \"{0}\" has no opening \"{{\"")]
    NoOpeningBrace(String),
    #[error("directive \"{0}\" is not terminated by \";\"")]
    NotTerminated(String),
    #[error("include cycle: \"{0}\" includes itself")]
    IncludeCycle(String),
    #[error("host not found in upstream \"{0}\"")]
    HostNotFound(String),
    /// Any other message, already worded as nginx words it.
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    pub fn new(kind: ErrorKind, location: Option<String>) -> Self {
        Self { kind, location }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(at) => write!(f, "{} in {}", self.kind, at),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in one pass over the configuration, in the order found (a block's own
/// directives before its inner blocks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn push(&mut self, error: ConfigError) {
        self.0.push(error);
    }
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
