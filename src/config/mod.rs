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
pub mod error;
mod glob;
pub mod lexer;
pub mod model;
pub mod parse;
pub mod source;

pub use error::{ConfigError, ConfigErrors, ErrorKind};
pub use model::Config;
