//! Syntax only: what the text says, with where it says it. No meaning yet.

use super::source::Span;

/// One argument of a directive: a bare word or a quoted string, escapes resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    pub value: String,
    /// True for `"..."` and `'...'` arguments (an empty quoted string is a real argument).
    pub quoted: bool,
    pub span: Span,
}

/// `name arg1 arg2 ... ;` or `name args... { block }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<Arg>,
    /// `Some` for a block directive (`http { ... }`), even when the block is empty.
    pub block: Option<Vec<Directive>>,
    /// Where the directive's name starts.
    pub span: Span,
}
