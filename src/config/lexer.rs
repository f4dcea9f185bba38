//! Text → tokens, by the rules of nginx's `ngx_conf_read_token`.
//!
//! - Space, tab, CR and LF separate words; `;`, `{` and `}` are tokens of their own.
//! - `#` starts a comment to the end of the line, but only where a token could start
//!   (`a#b` is one word).
//! - `"..."` and `'...'` quote a word only at its start; the closing quote must be followed by
//!   whitespace, `;`, `{`, `)` or the end of the text, else `unexpected "X"`.
//! - `\` makes the next character literal while scanning; the value then turns `\"` `\'` `\\`
//!   into the character, `\t` `\r` `\n` into tab, CR and LF, and keeps any other `\x` as is.
//! - A `{` right after `$` belongs to the word (`${host}`), and `}` never ends a word.
//!
//! Columns count characters, so a tab is one column.

use super::error::ErrorKind;
use super::source::{FileId, Span};

/// One token and where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A bare or quoted word, escapes resolved. A quoted word's span is its opening quote.
    Word {
        value: String,
        quoted: bool,
    },
    Semicolon,
    OpenBrace,
    CloseBrace,
    /// The end of the text; its span is just past the last character.
    Eof,
}

/// A token that cannot be read: an unterminated quote or escape, or a bad character after a
/// closing quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    pub kind: ErrorKind,
    pub span: Span,
}

/// Reads tokens from one file's text. After [`TokenKind::Eof`] it keeps returning `Eof`.
pub struct Lexer<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    file: FileId,
    line: u32,
    col: u32,
}

impl<'a> Lexer<'a> {
    pub fn new(text: &'a str, file: FileId) -> Self {
        Self {
            text,
            pos: 0,
            file,
            line: 1,
            col: 1,
        }
    }

    /// The next token, skipping whitespace and comments.
    pub fn next_token(&mut self) -> Result<Token, LexError> {
        loop {
            let span = self.span();
            let Some(c) = self.peek() else {
                return Ok(Token {
                    kind: TokenKind::Eof,
                    span,
                });
            };
            let kind = match c {
                c if is_space(c) => {
                    self.bump();
                    continue;
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                    continue;
                }
                ';' => TokenKind::Semicolon,
                '{' => TokenKind::OpenBrace,
                '}' => TokenKind::CloseBrace,
                '"' | '\'' => {
                    self.bump();
                    return self.quoted(c, span);
                }
                _ => return self.bare(span),
            };
            self.bump();
            return Ok(Token { kind, span });
        }
    }

    /// A word that does not start with a quote. It ends before whitespace, `;`, `{` (unless the
    /// `{` follows `$`) or the end of the text.
    fn bare(&mut self, span: Span) -> Result<Token, LexError> {
        let start = self.pos;
        let mut escaped = false;
        let mut variable = false;
        while let Some(c) = self.peek() {
            if escaped {
                escaped = false;
            } else if !(c == '{' && variable) {
                variable = false;
                match c {
                    '\\' => escaped = true,
                    '$' => variable = true,
                    ';' | '{' => break,
                    c if is_space(c) => break,
                    _ => {}
                }
            }
            self.bump();
        }
        if escaped {
            return Err(self.eof_error());
        }
        Ok(Token {
            kind: TokenKind::Word {
                value: unescape(&self.text[start..self.pos]),
                quoted: false,
            },
            span,
        })
    }

    /// A word after its opening `quote`, up to the matching unescaped quote.
    fn quoted(&mut self, quote: char, span: Span) -> Result<Token, LexError> {
        let start = self.pos;
        let mut escaped = false;
        let end = loop {
            let Some(c) = self.peek() else {
                return Err(self.eof_error());
            };
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == quote {
                break self.pos;
            }
            self.bump();
        };
        self.bump();
        match self.peek() {
            None | Some(';' | '{' | ')') => {}
            Some(c) if is_space(c) => {}
            Some(c) => {
                return Err(LexError {
                    kind: ErrorKind::Unexpected(c.to_string()),
                    span: self.span(),
                });
            }
        }
        Ok(Token {
            kind: TokenKind::Word {
                value: unescape(&self.text[start..end]),
                quoted: true,
            },
            span,
        })
    }

    /// The text ended inside a token; the caller has consumed everything.
    fn eof_error(&self) -> LexError {
        LexError {
            kind: ErrorKind::UnexpectedEofInDirective,
            span: self.span(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.col = 1;
            } else {
                self.col += 1;
            }
        }
    }

    fn span(&self) -> Span {
        Span {
            file: self.file,
            line: self.line,
            col: self.col,
        }
    }
}

/// nginx's word separators: exactly these four.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// A word's value from its raw text, as nginx's copy loop builds it.
fn unescape(raw: &str) -> String {
    let mut value = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let resolved = match chars.peek() {
                Some(&next @ ('"' | '\'' | '\\')) => Some(next),
                Some('t') => Some('\t'),
                Some('r') => Some('\r'),
                Some('n') => Some('\n'),
                _ => None,
            };
            if let Some(resolved) = resolved {
                chars.next();
                value.push(resolved);
                continue;
            }
        }
        value.push(c);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every token until `Eof` (excluded), or the first error.
    fn lex(text: &str) -> Result<Vec<Token>, LexError> {
        let mut lexer = Lexer::new(text, FileId(0));
        let mut tokens = Vec::new();
        loop {
            let token = lexer.next_token()?;
            if token.kind == TokenKind::Eof {
                return Ok(tokens);
            }
            tokens.push(token);
        }
    }

    /// Tokens as short strings: words as their value (`"v"` when quoted), punctuation as itself.
    fn show(text: &str) -> Vec<String> {
        lex(text)
            .expect("lexes")
            .into_iter()
            .map(|t| match t.kind {
                TokenKind::Word {
                    value,
                    quoted: false,
                } => value,
                TokenKind::Word {
                    value,
                    quoted: true,
                } => format!("\"{value}\""),
                TokenKind::Semicolon => ";".into(),
                TokenKind::OpenBrace => "{".into(),
                TokenKind::CloseBrace => "}".into(),
                TokenKind::Eof => unreachable!("lex() stops before Eof"),
            })
            .collect()
    }

    fn at(line: u32, col: u32) -> Span {
        Span {
            file: FileId(0),
            line,
            col,
        }
    }

    fn error(text: &str) -> (ErrorKind, u32, u32) {
        let e = lex(text).expect_err("must not lex");
        (e.kind, e.span.line, e.span.col)
    }

    #[test]
    fn punctuation_and_words() {
        assert_eq!(
            show("http {\n  server{listen 80;}\n}"),
            ["http", "{", "server", "{", "listen", "80", ";", "}", "}"]
        );
        assert_eq!(show("a;b\r\n"), ["a", ";", "b"]);
    }

    #[test]
    fn spans_count_characters_and_tabs_as_one_column() {
        let tokens = lex("\tlisten  80;\n  é x;").unwrap();
        let spans: Vec<_> = tokens.iter().map(|t| (t.span.line, t.span.col)).collect();
        assert_eq!(spans, [(1, 2), (1, 10), (1, 12), (2, 3), (2, 5), (2, 6)]);
        let mut lexer = Lexer::new("a;\n", FileId(3));
        lexer.next_token().unwrap();
        lexer.next_token().unwrap();
        let eof = lexer.next_token().unwrap();
        assert_eq!(eof.kind, TokenKind::Eof);
        assert_eq!(
            eof.span,
            Span {
                file: FileId(3),
                line: 2,
                col: 1
            }
        );
    }

    #[test]
    fn comments_only_at_token_start() {
        assert_eq!(
            show("# all\nlisten 80; # trailing {\nx a#b c #d ;\n"),
            ["listen", "80", ";", "x", "a#b", "c"]
        );
        assert_eq!(show("a;#c\nb{#c\n}"), ["a", ";", "b", "{", "}"]);
    }

    #[test]
    fn quoted_words() {
        assert_eq!(
            show(r#"add_header "X Y" 'a "b" c';"#),
            ["add_header", "\"X Y\"", "\"a \"b\" c\"", ";"]
        );
        let tokens = lex("x \"\" '';").unwrap();
        assert_eq!(
            tokens[1],
            Token {
                kind: TokenKind::Word {
                    value: String::new(),
                    quoted: true
                },
                span: at(1, 3)
            }
        );
        assert_eq!(
            tokens[2].kind,
            TokenKind::Word {
                value: String::new(),
                quoted: true
            }
        );
        // A quote inside a word is an ordinary character.
        assert_eq!(show("a\"b c'd;"), ["a\"b", "c'd", ";"]);
        // Quoted text may span lines and hold `;`, `{`, `}` and `#`.
        assert_eq!(show("'a;{}\n#b'"), ["\"a;{}\n#b\""]);
    }

    #[test]
    fn closing_quote_must_be_followed_by_a_separator() {
        assert_eq!(
            show("\"a\";\"b\"{'c'\t'd')"),
            ["\"a\"", ";", "\"b\"", "{", "\"c\"", "\"d\"", ")"]
        );
        assert_eq!(
            show("if ($a = \"b\") {"),
            ["if", "($a", "=", "\"b\"", ")", "{"]
        );
        assert_eq!(
            error("x \"a\"b;"),
            (ErrorKind::Unexpected("b".into()), 1, 6)
        );
        assert_eq!(error("x 'a'}"), (ErrorKind::Unexpected("}".into()), 1, 6));
        assert_eq!(
            error("x\n  \"a\"#"),
            (ErrorKind::Unexpected("#".into()), 2, 6)
        );
        assert_eq!(error("x \"a\"é"), (ErrorKind::Unexpected("é".into()), 1, 6));
    }

    #[test]
    fn escapes_follow_nginx_copy_loop() {
        assert_eq!(
            show(r#"a\;b "q\"q" 'q\'q' \\ \t\r\n \x\d \$ "\{";"#),
            [
                "a\\;b".to_string(),
                "\"q\"q\"".into(),
                "\"q'q\"".into(),
                "\\".into(),
                "\t\r\n".into(),
                "\\x\\d".into(),
                "\\$".into(),
                "\"\\{\"".into(),
                ";".into()
            ]
        );
        // An escaped separator does not end a word; an escaped quote does not open one.
        assert_eq!(show("a\\ b \\\"c;"), ["a\\ b", "\"c", ";"]);
        // `\\` is one escape, so the following `;` ends the word.
        assert_eq!(show("a\\\\;"), ["a\\", ";"]);
    }

    #[test]
    fn dollar_brace_stays_in_the_word() {
        assert_eq!(
            show("proxy_set_header X ${host}_x;"),
            ["proxy_set_header", "X", "${host}_x", ";"]
        );
        assert_eq!(show("set $a a${b}${c};"), ["set", "$a", "a${b}${c}", ";"]);
        // Without `$` a `{` ends the word and opens a block; `}` never ends a word.
        assert_eq!(show("a{b}c"), ["a", "{", "b}c"]);
        // `${` without `}` is still one word, as in nginx.
        assert_eq!(show("set $x ${y;"), ["set", "$x", "${y", ";"]);
    }

    #[test]
    fn unterminated_tokens_are_eof_errors() {
        let eof = ErrorKind::UnexpectedEofInDirective;
        assert_eq!(error("x \"abc"), (eof.clone(), 1, 7));
        assert_eq!(error("x 'a\nb"), (eof.clone(), 2, 2));
        assert_eq!(error("x \\"), (eof.clone(), 1, 4));
        assert_eq!(error("x \"a\\\""), (eof, 1, 7));
    }
}
