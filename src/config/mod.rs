//! Configuration: nginx-syntax text → a validated [`Config`].
//!
//! Pure: depends on std and thiserror only (no tokio, hyper or rustls), so it can become a crate
//! of its own unchanged.
//!
//! | stage | module | output |
//! |---|---|---|
//! | read | [`source`] | every file read, so a span becomes `path:line:col` |
//! | syntax | [`lexer`], [`parse`] | [`ast::Directive`] trees, `include` expanded |
//! | meaning | [`directives`], [`lower`] | [`model::Config`]: typed, defaults applied, all errors collected |

pub mod ast;
pub mod directives;
pub mod error;
mod glob;
pub mod lexer;
pub mod lower;
pub mod model;
pub mod nginx;
pub mod parse;
pub mod source;
pub mod values;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{ConfigError, ConfigErrors, ErrorKind};
pub use lower::LoadOptions;
pub use model::Config;

/// Where the configuration comes from: nginx's `-c`, `-p` and `-g`.
#[derive(Clone, Debug)]
pub struct Source {
    /// The main file, absolute (relative `-c` paths are resolved against the prefix, as nginx).
    pub conf_file: PathBuf,
    /// Directives given with `-g`, read before the main file.
    pub globals: Option<String>,
    pub options: LoadOptions,
}

impl Source {
    /// The directory `include` paths are relative to: the main file's (nginx's conf prefix).
    pub fn conf_prefix(&self) -> &Path {
        self.conf_file.parent().unwrap_or(Path::new("/"))
    }
}

/// Reads, parses and validates the whole configuration.
pub fn load(source: &Source) -> Result<Config, ConfigErrors> {
    let mut sources = source::SourceMap::default();
    let mut directives = Vec::new();
    if let Some(globals) = &source.globals {
        directives = parse::parse_str("command line", globals, source.conf_prefix(), &mut sources)?;
        if let Some(d) = directives.iter().find(|d| d.block.is_some()) {
            return Err(ConfigError::new(
                ErrorKind::Invalid("block directives are not supported in -g option".to_owned()),
                Some(sources.location(d.span)),
            )
            .into());
        }
    }
    directives.extend(parse::parse_file(
        &source.conf_file,
        source.conf_prefix(),
        &mut sources,
    )?);
    lower::lower(&directives, Arc::new(sources), &source.options)
}

/// Parses and validates `text` as a main configuration file named `name` (tests, `demo`).
pub fn parse_str(name: &str, text: &str, options: &LoadOptions) -> Result<Config, ConfigErrors> {
    let mut sources = source::SourceMap::default();
    let prefix = Path::new(name)
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let directives = parse::parse_str(name, text, &prefix, &mut sources)?;
    lower::lower(&directives, Arc::new(sources), options)
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_directives;
