//! Splitting a zone file into entries and tokens, and reading the tokens that are plain values.
//!
//! **Owns:** the tokenizer ([`Lexer`]: quotes, escapes, comments, parentheses, blank owners, as
//! BIND reads them), which yields each entry's tokens as byte ranges into the file ([`tok_bytes`])
//! with their `line:col` (columns in characters) for error messages; and reading one token as a
//! TTL (BIND units such as `1h30m`, RFC 2181 range), a class, or a `$INCLUDE` file name.
//!
//! **Does not own:** what an entry means (directives, owner, type, which token is the TTL: the
//! loader in the parent module); record data and domain names (`render`, which hands them to
//! `domain`).

use std::path::PathBuf;

use super::{MAX_TTL, Problem};

//------------ Lexer ------------------------------------------------------------------------------

/// One token of an entry. `start..end` includes the quotes of a quoted token.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tok {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) line: u32,
    pub(super) col: u32,
    pub(super) quoted: bool,
    /// Whether white space (or a parenthesis, or a line break) comes right before the token.
    pub(super) spaced: bool,
}

/// One logical entry: its tokens, up to a line break outside parentheses.
#[derive(Debug)]
pub(super) struct RawEntry {
    pub(super) toks: Vec<Tok>,
    /// The entry's line starts with white space: the owner is the previous one.
    pub(super) indented: bool,
    pub(super) line: u32,
}

pub(super) fn tok_bytes<'a>(src: &'a [u8], tok: &Tok) -> &'a [u8] {
    src.get(tok.start..tok.end).unwrap_or_default()
}

/// Splits a zone file into entries the way BIND's lexer does: white space separates tokens,
/// `"…"` quotes, `\` escapes the next octet, `;` comments to the end of the line, and line breaks
/// inside `( … )` do not end the entry.
pub(super) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: u32,
    /// Where the current line starts, and a column cache on it (`col` is called in order).
    line_start: usize,
    col_pos: usize,
    col: u32,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(src: &'a [u8]) -> Self {
        Lexer { src, pos: 0, line: 1, line_start: 0, col_pos: 0, col: 1 }
    }

    /// The 1-based column (in characters) of `at`, which must be on the current line and not
    /// before the last position asked for.
    fn col(&mut self, at: usize) -> u32 {
        if at < self.col_pos {
            self.col_pos = self.line_start;
            self.col = 1;
        }
        let chars =
            self.src.get(self.col_pos..at).unwrap_or_default().iter().filter(|&&byte| byte & 0xc0 != 0x80).count();
        self.col = self.col.saturating_add(u32::try_from(chars).unwrap_or(u32::MAX));
        self.col_pos = at;
        self.col
    }

    fn newline(&mut self) {
        self.line = self.line.saturating_add(1);
        self.line_start = self.pos;
        self.col_pos = self.pos;
        self.col = 1;
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    /// Advances over an escape (`\` and the octet after it).
    fn skip_escape(&mut self) {
        self.pos += 1;
        if let Some(next) = self.peek() {
            self.pos += 1;
            if next == b'\n' {
                self.newline();
            }
        }
    }

    /// The next entry with at least one token; `Err` for an entry with a lexical problem (it is
    /// skipped as a whole). `None` at the end of the file.
    pub(super) fn next_entry(&mut self) -> Option<Result<RawEntry, Problem>> {
        loop {
            if self.pos >= self.src.len() {
                return None;
            }
            let line = self.line;
            let indented = matches!(self.peek(), Some(b' ' | b'\t'));
            let mut toks = Vec::new();
            let mut problem: Option<Problem> = None;
            let mut depth = 0usize;
            let mut open_paren = (0, 0);
            let mut spaced = true;
            loop {
                let Some(byte) = self.peek() else {
                    if depth > 0 && problem.is_none() {
                        problem = Some(Problem {
                            line: open_paren.0,
                            col: open_paren.1,
                            message: "`(` is never closed".into(),
                        });
                    }
                    break;
                };
                match byte {
                    b' ' | b'\t' | b'\r' => {
                        self.pos += 1;
                        spaced = true;
                    }
                    b'(' => {
                        if depth == 0 {
                            open_paren = (self.line, self.col(self.pos));
                        }
                        depth += 1;
                        self.pos += 1;
                        spaced = true;
                    }
                    b')' => {
                        if depth == 0 {
                            if problem.is_none() {
                                problem = Some(Problem {
                                    line: self.line,
                                    col: self.col(self.pos),
                                    message: "`)` without `(`".into(),
                                });
                            }
                        } else {
                            depth -= 1;
                        }
                        self.pos += 1;
                        spaced = true;
                    }
                    b';' => {
                        while self.peek().is_some_and(|byte| byte != b'\n') {
                            self.pos += 1;
                        }
                    }
                    b'\n' => {
                        self.pos += 1;
                        self.newline();
                        if depth == 0 {
                            break;
                        }
                        spaced = true;
                    }
                    b'"' => {
                        let start = self.pos;
                        let (line, col) = (self.line, self.col(start));
                        self.pos += 1;
                        let mut closed = false;
                        while let Some(byte) = self.peek() {
                            match byte {
                                b'\\' => self.skip_escape(),
                                b'"' => {
                                    self.pos += 1;
                                    closed = true;
                                    break;
                                }
                                b'\n' => {
                                    self.pos += 1;
                                    self.newline();
                                }
                                _ => self.pos += 1,
                            }
                        }
                        if !closed {
                            problem.get_or_insert(Problem {
                                line,
                                col,
                                message: "quoted string is never closed".into(),
                            });
                        }
                        toks.push(Tok { start, end: self.pos, line, col, quoted: true, spaced });
                        spaced = false;
                    }
                    _ => {
                        let start = self.pos;
                        let (line, col) = (self.line, self.col(start));
                        while let Some(byte) = self.peek() {
                            match byte {
                                b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b';' | b'"' => break,
                                b'\\' => self.skip_escape(),
                                _ => self.pos += 1,
                            }
                        }
                        toks.push(Tok { start, end: self.pos, line, col, quoted: false, spaced });
                        spaced = false;
                    }
                }
            }
            if let Some(problem) = problem {
                return Some(Err(problem));
            }
            if !toks.is_empty() {
                return Some(Ok(RawEntry { toks, indented, line }));
            }
        }
    }
}

//------------ Token values -----------------------------------------------------------------------

/// Reads a record TTL token (BIND syntax, units allowed) and checks the RFC 2181 range.
pub(super) fn record_ttl(src: &[u8], tok: &Tok) -> Result<u32, Problem> {
    let text = tok_bytes(src, tok);
    let shown = String::from_utf8_lossy(text);
    match parse_ttl(text) {
        Some(ttl) if ttl <= MAX_TTL => Ok(ttl),
        Some(_) => Err(Problem::at(tok, format!("ttl `{shown}` is larger than {MAX_TTL}"))),
        None => Err(Problem::at(tok, format!("invalid ttl `{shown}`"))),
    }
}

/// The file name of a `$INCLUDE`, unquoted and unescaped.
pub(super) fn include_path(src: &[u8], tok: &Tok) -> Result<PathBuf, Problem> {
    let raw = tok_bytes(src, tok);
    let raw = if tok.quoted { raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default() } else { raw };
    let mut bytes = Vec::with_capacity(raw.len());
    let mut iter = raw.iter();
    while let Some(&b) = iter.next() {
        bytes.push(if b == b'\\' { iter.next().copied().unwrap_or(b) } else { b });
    }
    match String::from_utf8(bytes) {
        Ok(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(Problem::at(tok, "invalid `$INCLUDE` file name")),
    }
}

/// A TTL in BIND syntax: seconds, or numbers with units `w`, `d`, `h`, `m`, `s` (`1h30m`).
pub(super) fn parse_ttl(raw: &[u8]) -> Option<u32> {
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for &byte in raw {
        if byte.is_ascii_digit() {
            let so_far = number.unwrap_or(0);
            number = Some(so_far.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?);
            continue;
        }
        let unit = match byte.to_ascii_lowercase() {
            b'w' => 604_800,
            b'd' => 86_400,
            b'h' => 3_600,
            b'm' => 60,
            b's' => 1,
            _ => return None,
        };
        total = total.checked_add(number.take()?.checked_mul(unit)?)?;
    }
    if raw.is_empty() {
        return None;
    }
    if let Some(number) = number {
        total = total.checked_add(number)?;
    }
    u32::try_from(total).ok()
}

/// `Some(true)` for class IN, `Some(false)` for another class, `None` if the token is no class.
pub(super) fn class_of(raw: &[u8]) -> Option<bool> {
    const OTHERS: [&[u8]; 7] = [b"CH", b"CHAOS", b"HS", b"HESIOD", b"CS", b"NONE", b"ANY"];
    if raw.eq_ignore_ascii_case(b"IN") {
        return Some(true);
    }
    if OTHERS.iter().any(|other| raw.eq_ignore_ascii_case(other)) {
        return Some(false);
    }
    let digits = raw.get(..5).filter(|prefix| prefix.eq_ignore_ascii_case(b"CLASS")).and_then(|_| raw.get(5..))?;
    let number: u16 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(number == 1)
}

//------------ Tests ------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_syntax() {
        assert_eq!(parse_ttl(b"300"), Some(300));
        assert_eq!(parse_ttl(b"1h30m"), Some(5400));
        assert_eq!(parse_ttl(b"1W2D"), Some(777_600));
        assert_eq!(parse_ttl(b"1h30"), Some(3630));
        assert_eq!(parse_ttl(b""), None);
        assert_eq!(parse_ttl(b"h"), None);
        assert_eq!(parse_ttl(b"1x"), None);
        assert_eq!(parse_ttl(b"99999999999999999999999"), None);
    }
}
