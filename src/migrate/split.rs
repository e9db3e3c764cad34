//! Splitting the text of a migration file into the statements psql would send one at a time.
//!
//! Migration files are written for, and usually tested with, `psql -f`, so a statement ends
//! exactly where psql's lexer (`src/fe_utils/psqlscan.l`) says it does: at a `;` that is outside
//! quotes, comments and parentheses, and outside a `BEGIN ATOMIC … END` body of a
//! `CREATE [OR REPLACE] {FUNCTION|PROCEDURE}`. Any other rule would sooner or later cut a
//! dollar-quoted function body or an escape string in two, and the server would then report a
//! confusing syntax error about a fragment the author never wrote. The lexer below is a small
//! hand-written scanner that mirrors psql's rules token by token, including the odd corners
//! (psql reading the file line by line, numbers that swallow a following identifier, the
//! `BEGIN ATOMIC` heuristic), with `standard_conforming_strings` on as on every supported server.
//! One addition for SQLite, whose files go through the same splitter: the body of
//! `CREATE [TEMP|TEMPORARY] TRIGGER … BEGIN …; END` is balanced the same way as a `BEGIN ATOMIC`
//! body (SQLite's own `sqlite3_complete` keeps a trigger whole too). PostgreSQL's `CREATE
//! TRIGGER` has no body, so this changes nothing there unless an unquoted identifier of the
//! trigger (its name, table or function) is spelt `begin`, which would have to be quoted.
//! What it leaves out is psql's own command language: a `\` outside quotes is an ordinary
//! character here, not a meta-command (so `\;` does not glue statements together), and
//! `:name` is not a variable. Migrations are sent to the server, which knows neither.
//!
//! The result is a list of [`Piece`]s that cover the input byte for byte, with no gaps and no
//! overlaps. Callers rely on that: nothing in a file can be silently dropped, byte offsets map
//! straight back to the file for error messages, and the text of every piece joined together is
//! the file itself. The statement inside a piece excludes the leading whitespace and comments so
//! that an error can name the line where the failing statement really starts.

use std::ops::Range;

/// One piece of the input: leading whitespace/comments, then (maybe) a statement, up to and
/// including its terminating `;`, or to the end of input for the last piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Byte range of the whole piece in the input. Pieces are contiguous, in order, and cover the input exactly.
    pub range: Range<usize>,
    /// Byte range of the statement inside the piece: from its first token up to, not including,
    /// the terminating `;`, with trailing whitespace trimmed (trailing comments before the `;` stay).
    /// `None` when the piece holds only whitespace and comments (or is a lone `;`).
    pub statement: Option<Range<usize>>,
    /// 1-based line of the statement's first token (of the piece's start when there is no statement).
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub pieces: Vec<Piece>,
    /// Set when the input ends inside a quoted string, quoted identifier, dollar quote or block comment.
    pub unterminated: Option<Unterminated>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unterminated {
    /// What was left open, for a message: "quoted string", "quoted identifier",
    /// "dollar-quoted string $body$" (with its actual tag), "block comment".
    pub what: String,
    /// 1-based line where the unterminated construct starts (lines counted by `\n`).
    pub line: u32,
    /// Byte offset where it starts, for callers that count lines differently.
    pub offset: usize,
}

/// Splits `sql` into pieces the way psql splits a file it runs with `-f`.
///
/// Input without any terminating `;` is one piece, because psql sends whatever is left at the
/// end of the file. When the input ends inside a quote or comment, the last piece runs to the
/// end of the input, carries a statement range, and [`Split::unterminated`] says what was open.
pub fn split(sql: &str) -> Split {
    let mut pieces = Vec::new();
    let mut lines = LineCounter::new(sql.as_bytes());
    let mut unterminated = None;

    // The piece being built: where it starts, the line of that start, the statement found in
    // it so far (start of its first token up to the end of its last non-whitespace token), the
    // line of the statement's first token, and psql's nesting counters for it.
    let mut piece_start = 0;
    let mut piece_line = 1;
    let mut statement: Option<Range<usize>> = None;
    let mut statement_line = 1;
    let mut state = StatementState::default();

    for token in Lexer::new(sql) {
        match &token.kind {
            Kind::Space => {}
            Kind::LineComment | Kind::BlockComment => {
                // A comment before the first token is not part of the statement (the error line
                // must be that of the statement itself), but one after it stays, just as the
                // author wrote it.
                if let Some(statement) = statement.as_mut() {
                    statement.end = token.range.end;
                }
            }
            Kind::Semicolon if state.ends_statement() => {
                pieces.push(Piece {
                    range: piece_start..token.range.end,
                    line: if statement.is_some() {
                        statement_line
                    } else {
                        piece_line
                    },
                    statement: statement.take(),
                });
                piece_start = token.range.end;
                piece_line = lines.line_at(piece_start);
                state = StatementState::default();
            }
            Kind::Unterminated(open) => {
                // The open construct swallows everything up to the end of the input. If nothing
                // came before it in this piece (an unterminated block comment after the last
                // statement), it still counts as the statement: psql would send it too, and the
                // caller needs a range to point at.
                let start = token.range.start;
                let line = lines.line_at(start);
                if statement.is_none() {
                    statement_line = line;
                }
                statement.get_or_insert(start..start).end = sql.len();
                unterminated = Some(Unterminated {
                    what: open.describe(sql),
                    line,
                    offset: start,
                });
            }
            kind => {
                let text = sql.as_bytes().get(token.range.clone()).unwrap_or_default();
                state.observe(kind, text);
                match statement.as_mut() {
                    Some(statement) => statement.end = token.range.end,
                    None => {
                        statement_line = lines.line_at(token.range.start);
                        statement = Some(token.range.clone());
                    }
                }
            }
        }
    }

    if piece_start < sql.len() {
        pieces.push(Piece {
            range: piece_start..sql.len(),
            line: if statement.is_some() {
                statement_line
            } else {
                piece_line
            },
            statement,
        });
    }

    Split {
        pieces,
        unterminated,
    }
}

/// The first `n` keywords of a statement, lowercased, skipping leading whitespace and comments
/// (`--` and nested `/* */`); stops early at the first token that is not a plain (unquoted)
/// identifier. E.g. `leading_keywords("/* x */ CREATE  INDEX CONCURRENTLY i ON t(a)", 3)` is
/// `["create", "index", "concurrently"]`; `leading_keywords("ROLLBACK TO s", 2)` is `["rollback", "to"]`;
/// `leading_keywords("(select 1)", 2)` is `[]`.
pub fn leading_keywords(sql: &str, n: usize) -> Vec<String> {
    let mut words = Vec::new();
    if n == 0 {
        return words;
    }
    for token in Lexer::new(sql) {
        match token.kind {
            Kind::Space | Kind::LineComment | Kind::BlockComment => {}
            Kind::Identifier => {
                // PostgreSQL folds unquoted identifiers to lower case in ASCII only, so the same
                // folding is used here; keywords are ASCII anyway.
                let Some(word) = sql.get(token.range) else {
                    break;
                };
                words.push(word.to_ascii_lowercase());
                if words.len() >= n {
                    break;
                }
            }
            _ => break,
        }
    }
    words
}

/// psql's per-statement counters that decide whether a `;` ends the statement.
#[derive(Debug, Default)]
struct StatementState {
    paren_depth: usize,
    begin_depth: usize,
    /// How many plain identifiers (keywords included) the statement has had so far, outside
    /// parentheses.
    identifier_count: usize,
    /// For the first four identifiers: the lowercased first letter when the identifier is one of
    /// `create`, `function`, `procedure`, `or`, `replace`, and 0 otherwise. This is how psql
    /// recognises `CREATE [OR REPLACE] {FUNCTION|PROCEDURE}` without a parser.
    identifiers: [u8; 4],
    /// SQLite's `CREATE [TEMP|TEMPORARY] TRIGGER` so far: `Some(true)` once seen, `None` while
    /// the first identifiers may still make one, `Some(false)` once they cannot.
    trigger: Option<bool>,
}

impl StatementState {
    fn ends_statement(&self) -> bool {
        self.paren_depth == 0 && self.begin_depth == 0
    }

    fn observe(&mut self, kind: &Kind, text: &[u8]) {
        match kind {
            Kind::OpenParen => self.paren_depth = self.paren_depth.saturating_add(1),
            // psql ignores an unbalanced `)` rather than going negative.
            Kind::CloseParen => self.paren_depth = self.paren_depth.saturating_sub(1),
            Kind::Identifier => self.identifier(text),
            _ => {}
        }
    }

    /// The identifier rule of psqlscan.l, step by step: it is a heuristic, and replicating it
    /// exactly (rather than improving on it) is what keeps us splitting where psql splits.
    fn identifier(&mut self, word: &[u8]) {
        const ROUTINE_WORDS: [&[u8]; 5] = [b"create", b"function", b"procedure", b"or", b"replace"];
        let is = |keyword: &[u8]| word.eq_ignore_ascii_case(keyword);

        // Current psql releases ignore identifiers inside parentheses altogether: they neither
        // take one of the first positions nor open or close a body. (Early releases of the
        // heuristic counted them; psql 15.20 and master do not, and neither do we.)
        if self.paren_depth != 0 {
            return;
        }

        if ROUTINE_WORDS.iter().any(|keyword| is(keyword))
            && let (Some(slot), Some(first)) = (
                self.identifiers.get_mut(self.identifier_count),
                word.first(),
            )
        {
            *slot = first.to_ascii_lowercase();
        }
        if self.trigger.is_none() {
            self.trigger = match (self.identifier_count, word.to_ascii_lowercase().as_slice()) {
                (0, b"create") | (1, b"temp" | b"temporary") => None,
                (1 | 2, b"trigger") => Some(true),
                _ => Some(false),
            };
        }
        self.identifier_count = self.identifier_count.saturating_add(1);

        if self.in_routine_definition() || self.trigger == Some(true) {
            if is(b"begin") {
                self.begin_depth = self.begin_depth.saturating_add(1);
            } else if is(b"case") {
                // CASE also ends with END, so it must be counted, but only inside a BEGIN: a
                // CASE in `RETURN CASE … END` has no BEGIN to balance.
                if self.begin_depth >= 1 {
                    self.begin_depth = self.begin_depth.saturating_add(1);
                }
            } else if is(b"end") {
                self.begin_depth = self.begin_depth.saturating_sub(1);
            }
        }
    }

    /// `CREATE FUNCTION`, `CREATE PROCEDURE`, `CREATE OR REPLACE FUNCTION` or
    /// `CREATE OR REPLACE PROCEDURE` at the start of the statement.
    fn in_routine_definition(&self) -> bool {
        let [first, second, third, fourth] = self.identifiers;
        first == b'c'
            && (second == b'f'
                || second == b'p'
                || (second == b'o' && third == b'r' && (fourth == b'f' || fourth == b'p')))
    }
}

/// Counts lines up to a byte offset, remembering where it stopped so that a pass over the
/// input in order stays linear.
struct LineCounter<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: u32,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        LineCounter {
            bytes,
            pos: 0,
            line: 1,
        }
    }

    /// The 1-based line of `offset`. Only `\n` counts, so a CRLF file numbers its lines the
    /// same way an editor does.
    fn line_at(&mut self, offset: usize) -> u32 {
        if offset < self.pos {
            // Not needed by `split`, which asks in order, but cheap insurance against a wrong
            // answer if that ever changes.
            self.pos = 0;
            self.line = 1;
        }
        let end = offset.min(self.bytes.len());
        let newlines = self
            .bytes
            .get(self.pos..end)
            .map_or(0, |s| s.iter().filter(|&&b| b == b'\n').count());
        self.line = self
            .line
            .saturating_add(u32::try_from(newlines).unwrap_or(u32::MAX));
        self.pos = end;
        self.line
    }
}

/// What a token is, as far as statement splitting cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Spaces, tabs, newlines, carriage returns and form feeds.
    Space,
    /// `--` up to (not including) the end of the line.
    LineComment,
    /// A complete, possibly nested, `/* */` comment.
    BlockComment,
    /// A plain (unquoted) identifier or keyword.
    Identifier,
    OpenParen,
    CloseParen,
    Semicolon,
    /// Anything else that is complete: strings, quoted identifiers, dollar quotes, numbers,
    /// parameters, operators and single characters.
    Other,
    /// A quote or comment still open at the end of the input; the token runs to the end.
    Unterminated(Open),
}

/// The kind of construct left open at the end of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Open {
    String,
    QuotedIdentifier,
    /// The byte range of the opening delimiter, e.g. `$body$`.
    DollarQuote(Range<usize>),
    BlockComment,
}

impl Open {
    fn describe(&self, sql: &str) -> String {
        match self {
            Open::String => "quoted string".to_string(),
            Open::QuotedIdentifier => "quoted identifier".to_string(),
            Open::DollarQuote(delimiter) => {
                let delimiter = sql.get(delimiter.clone()).unwrap_or("$");
                format!("dollar-quoted string {delimiter}")
            }
            Open::BlockComment => "block comment".to_string(),
        }
    }
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    range: Range<usize>,
}

/// psql's SQL lexer reduced to what splitting needs. Every token starts and ends on a char
/// boundary: every byte of a multi-byte UTF-8 character (all >= 0x80) is an identifier
/// character, so identifiers and dollar-quote tags always take whole characters, and every other
/// rule starts and stops at ASCII bytes.
struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            src,
            bytes: src.as_bytes(),
            pos: 0,
        }
    }

    fn byte(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The first index at or after `i` whose byte does not satisfy `keep`.
    fn skip_while(&self, mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
        while self.byte(i).is_some_and(&keep) {
            i += 1;
        }
        i.min(self.len())
    }

    /// One token starting at `start`, whose first byte is `first`: its kind and end.
    fn token_at(&self, start: usize, first: u8) -> (Kind, usize) {
        let next = self.byte(start + 1);
        match first {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                (Kind::Space, self.skip_while(start, is_space))
            }
            // psql ends a `--` comment at either newline character, for old Mac files.
            b'-' if next == Some(b'-') => (Kind::LineComment, self.line_comment_end(start)),
            b'/' if next == Some(b'*') => self.block_comment(start),
            b'\'' => self.quoted_string(start + 1, false),
            b'"' => self.quoted_identifier(start + 1),
            b'$' => self.dollar(start),
            b'(' => (Kind::OpenParen, start + 1),
            b')' => (Kind::CloseParen, start + 1),
            b';' => (Kind::Semicolon, start + 1),
            b'0'..=b'9' => (Kind::Other, self.number(start)),
            b'.' if next.is_some_and(|c| c.is_ascii_digit()) => (Kind::Other, self.number(start)),
            // A letter directly followed by a quote is a string prefix only at the start of a
            // token; inside an identifier (`type'x'`) the identifier rule has already taken the
            // letter and the quote starts a standard string.
            b'e' | b'E' if next == Some(b'\'') => self.quoted_string(start + 2, true),
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if next == Some(b'\'') => {
                self.quoted_string(start + 2, false)
            }
            b'u' | b'U' if next == Some(b'&') => match self.byte(start + 2) {
                Some(b'\'') => self.quoted_string(start + 3, false),
                Some(b'"') => self.quoted_identifier(start + 3),
                // psql's `xufailed` rule: the `u` becomes a token of its own, not an identifier,
                // and scanning resumes at the `&`.
                _ => (Kind::Other, start + 1),
            },
            c if is_ident_start(c) => (Kind::Identifier, self.skip_while(start + 1, is_ident_cont)),
            _ => (Kind::Other, start + 1),
        }
    }

    /// A `/* */` comment starting at `start`. Comments nest, and only the `*/` that closes the
    /// outermost one ends the comment.
    fn block_comment(&self, start: usize) -> (Kind, usize) {
        let mut depth = 0usize;
        let mut i = start + 2;
        loop {
            match (self.byte(i), self.byte(i + 1)) {
                (None, _) => return (Kind::Unterminated(Open::BlockComment), self.len()),
                (Some(b'/'), Some(b'*')) => {
                    depth = depth.saturating_add(1);
                    i += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    if depth == 0 {
                        return (Kind::BlockComment, i + 2);
                    }
                    depth -= 1;
                    i += 2;
                }
                _ => i += 1,
            }
        }
    }

    /// The rest of a single-quoted string whose body starts at `i`. `''` is a quote inside the
    /// string; with `escapes` (an `E'…'` string) a backslash also escapes the next byte. Every
    /// other prefix form (`N`, `B`, `X`, `U&`) scans like a standard string.
    fn quoted_string(&self, mut i: usize, escapes: bool) -> (Kind, usize) {
        loop {
            match self.byte(i) {
                None => return (Kind::Unterminated(Open::String), self.len()),
                Some(b'\\') if escapes => i += 2,
                Some(b'\'') if self.byte(i + 1) == Some(b'\'') => i += 2,
                Some(b'\'') => match self.quote_continuation(i + 1) {
                    // A continued literal keeps the escape rules of its first part.
                    Some(quote) => i = quote + 1,
                    None => return (Kind::Other, i + 1),
                },
                Some(_) => i += 1,
            }
        }
    }

    /// psql's `{quotecontinue}` rule, as psql really applies it to a file. SQL joins
    /// `'a'<newline>'b'` into one literal that keeps the escape rules of the first part, but psql
    /// hands its lexer one line at a time, without the `\n`, and a lookahead cannot cross the end
    /// of a line. So the newline the rule requires can only be a bare `\r`, and with `\n` or
    /// `\r\n` line endings psql never joins the parts: it lexes `'b'` as a string of its own. We
    /// split where psql splits, so this follows psql, not the server.
    ///
    /// The pattern: optional spaces, tabs and `--` comments, a `\r`, then any spaces, tabs, form
    /// feeds, `\r`s and `--` comments each ending in a `\r`, then the quote that continues the
    /// literal. Returns the index of that quote.
    fn quote_continuation(&self, mut i: usize) -> Option<usize> {
        // When the closing quote ends its line, psql carries the pending lookahead over to the
        // next line, skipping empty lines, which it never hands to the lexer.
        while self.byte(i) == Some(b'\n') {
            i += 1;
        }
        loop {
            match self.byte(i) {
                Some(b' ' | b'\t' | b'\x0c') => i += 1,
                Some(b'-') if self.byte(i + 1) == Some(b'-') => i = self.line_comment_end(i),
                _ => break,
            }
        }
        if self.byte(i) != Some(b'\r') {
            return None;
        }
        i += 1;
        loop {
            match self.byte(i) {
                Some(b' ' | b'\t' | b'\r' | b'\x0c') => i += 1,
                Some(b'-') if self.byte(i + 1) == Some(b'-') => {
                    i = self.line_comment_end(i);
                    // Here a comment must itself be followed by a newline.
                    if self.byte(i) != Some(b'\r') {
                        return None;
                    }
                    i += 1;
                }
                _ => break,
            }
        }
        (self.byte(i) == Some(b'\'')).then_some(i)
    }

    fn line_comment_end(&self, start: usize) -> usize {
        self.skip_while(start, |c| c != b'\n' && c != b'\r')
    }

    /// The rest of a `"…"` identifier whose body starts at `i`; `""` is a quote inside it.
    fn quoted_identifier(&self, mut i: usize) -> (Kind, usize) {
        loop {
            match self.byte(i) {
                None => return (Kind::Unterminated(Open::QuotedIdentifier), self.len()),
                Some(b'"') if self.byte(i + 1) == Some(b'"') => i += 2,
                Some(b'"') => return (Kind::Other, i + 1),
                Some(_) => i += 1,
            }
        }
    }

    /// A token starting with `$` (one that does not continue an identifier: that case was
    /// consumed by the identifier rule). It is a parameter `$1`, a dollar quote `$tag$…$tag$`,
    /// or a lone `$`.
    fn dollar(&self, start: usize) -> (Kind, usize) {
        match self.byte(start + 1) {
            Some(c) if c.is_ascii_digit() => {
                let mut end = self.skip_while(start + 1, |c| c.is_ascii_digit());
                // psql's `param_junk`: an identifier glued to a parameter belongs to the token.
                if self.byte(end).is_some_and(is_ident_start) {
                    end = self.skip_while(end + 1, is_ident_cont);
                }
                (Kind::Other, end)
            }
            Some(b'$') => self.dollar_quote(start, start + 2),
            Some(c) if is_ident_start(c) => {
                let tag_end = self.skip_while(start + 1, is_dollar_tag_cont);
                if self.byte(tag_end) == Some(b'$') {
                    self.dollar_quote(start, tag_end + 1)
                } else {
                    // psql's `dolqfailed`: only the `$` is consumed and the word after it is
                    // scanned again as an ordinary identifier.
                    (Kind::Other, start + 1)
                }
            }
            _ => (Kind::Other, start + 1),
        }
    }

    /// The body of a dollar quote whose opening delimiter is `start..body`; it ends only at the
    /// same delimiter, byte for byte. Searching for the delimiter as a substring finds the same
    /// end as psql's rescanning at every `$`, because a tag can never contain a `$`.
    fn dollar_quote(&self, start: usize, body: usize) -> (Kind, usize) {
        let (Some(delimiter), Some(rest)) = (self.bytes.get(start..body), self.bytes.get(body..))
        else {
            return (Kind::Other, self.len());
        };
        match rest
            .windows(delimiter.len())
            .position(|window| window == delimiter)
        {
            Some(found) => (Kind::Other, body + found + delimiter.len()),
            None => (
                Kind::Unterminated(Open::DollarQuote(start..body)),
                self.len(),
            ),
        }
    }

    /// A numeric literal starting at a digit, or at a `.` followed by a digit, with flex's
    /// longest-match rules as in psql 15 and later. Two things matter for splitting. First, `1..`
    /// is an integer followed by `..`, and `1e+` without digits is a token of its own, so the `-`
    /// in `1e--` cannot start a comment. Second, psql's `*_junk` rules glue an identifier to any
    /// digit group it touches, and an identifier runs through digits and `$`: so `1e1$$` and
    /// `1_0$$` are single (invalid) tokens, while `1$$` and `1.5$$` start a dollar quote.
    fn number(&self, start: usize) -> usize {
        // The end of an identifier glued on at `from`, which holds an identifier start.
        let glued = |from: usize| self.skip_while(from, is_ident_cont);
        let mut longest = start;

        let (int_end, underscore) = self.decimal_integer(start);
        if let Some(at) = underscore {
            longest = longest.max(glued(at));
        }
        if int_end > start
            && self.byte(int_end) == Some(b'.')
            && self.byte(int_end + 1) == Some(b'.')
        {
            return longest.max(int_end);
        }
        let mut end = int_end;
        if self.byte(end) == Some(b'.') {
            let (fraction_end, underscore) = self.decimal_integer(end + 1);
            if let Some(at) = underscore {
                longest = longest.max(glued(at));
            }
            end = fraction_end;
        }
        if matches!(self.byte(end), Some(b'e' | b'E')) {
            let mut digits = end + 1;
            let signed = matches!(self.byte(digits), Some(b'+' | b'-'));
            if signed {
                digits += 1;
            } else {
                // Without a sign the `e` can also start a glued identifier.
                longest = longest.max(glued(end));
            }
            let (exponent_end, underscore) = self.decimal_integer(digits);
            if exponent_end > digits {
                if let Some(at) = underscore {
                    longest = longest.max(glued(at));
                }
                end = exponent_end;
            } else if signed {
                // psql's `realfail`: `1e-` is one token and whatever follows is scanned afresh.
                return longest.max(digits);
            }
        }
        if self.byte(end).is_some_and(is_ident_start) {
            end = glued(end);
        }
        longest.max(end)
    }

    /// Digits with single underscores between them (`1_000`), from `i`: where they end (`i`
    /// itself if there are none), and the first underscore among them, where a glued identifier
    /// could start instead.
    fn decimal_integer(&self, mut i: usize) -> (usize, Option<usize>) {
        let mut underscore = None;
        if !self.byte(i).is_some_and(|c| c.is_ascii_digit()) {
            return (i, underscore);
        }
        i += 1;
        loop {
            match (self.byte(i), self.byte(i + 1)) {
                (Some(c), _) if c.is_ascii_digit() => i += 1,
                (Some(b'_'), Some(c)) if c.is_ascii_digit() => {
                    underscore.get_or_insert(i);
                    i += 2;
                }
                (Some(b'_'), _) => {
                    // An underscore not followed by a digit can still start a glued identifier.
                    underscore.get_or_insert(i);
                    return (i, underscore);
                }
                _ => return (i, underscore),
            }
        }
    }

    /// `end`, or the next char boundary after `start` if `end` would not make progress or would
    /// split a character. The scanner never needs this; it guards against looping forever or
    /// producing an invalid range should a rule above ever be wrong.
    fn settle(&self, start: usize, end: usize) -> usize {
        let mut end = end.max(start + 1).min(self.len());
        while end < self.len() && !self.src.is_char_boundary(end) {
            end += 1;
        }
        end
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let start = self.pos;
        let first = self.byte(start)?;
        let (kind, end) = self.token_at(start, first);
        let end = self.settle(start, end);
        self.pos = end;
        Some(Token {
            kind,
            range: start..end,
        })
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

/// Letters, `_`, and every byte of a non-ASCII character, as in psql's `ident_start`.
fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

/// psql's `ident_cont`: an identifier may also contain digits and `$`.
fn is_ident_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// psql's `dolq_cont`: like an identifier, but without `$`, which would end the tag.
fn is_dollar_tag_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The `(line, statement text)` pairs of a split.
    fn statements(sql: &str, split: &Split) -> Vec<(u32, String)> {
        split
            .pieces
            .iter()
            .filter_map(|piece| {
                let range = piece.statement.clone()?;
                Some((piece.line, sql[range].to_string()))
            })
            .collect()
    }

    fn expected(pairs: &[(u32, &str)]) -> Vec<(u32, String)> {
        pairs
            .iter()
            .map(|&(line, text)| (line, text.to_string()))
            .collect()
    }

    /// Asserts the statements of a well-formed input, and the invariants of every split.
    fn check(sql: &str, want: &[(u32, &str)]) {
        let split = split(sql);
        assert_invariants(sql, &split);
        assert_eq!(split.unterminated, None, "input: {sql:?}");
        assert_eq!(statements(sql, &split), expected(want), "input: {sql:?}");
    }

    /// Asserts the statements of an input that ends inside a quote or comment, and what was left
    /// open where.
    fn check_unterminated(sql: &str, want: &[(u32, &str)], what: &str, line: u32) {
        let split = split(sql);
        assert_invariants(sql, &split);
        assert_eq!(
            split
                .unterminated
                .as_ref()
                .map(|u| (u.what.as_str(), u.line)),
            Some((what, line)),
            "input: {sql:?}"
        );
        let offset = split.unterminated.as_ref().map_or(0, |u| u.offset);
        assert_eq!(
            sql[..offset].matches('\n').count() as u32 + 1,
            line,
            "the offset is on the reported line: {sql:?}"
        );
        assert_eq!(statements(sql, &split), expected(want), "input: {sql:?}");
    }

    fn line_of(sql: &str, offset: usize) -> u32 {
        let newlines = sql.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        u32::try_from(newlines).unwrap() + 1
    }

    /// What must hold for every input, well-formed or not.
    fn assert_invariants(sql: &str, split: &Split) {
        let mut expected_start = 0;
        let mut joined = String::new();
        for (i, piece) in split.pieces.iter().enumerate() {
            let is_last = i + 1 == split.pieces.len();
            assert_eq!(
                piece.range.start, expected_start,
                "pieces must be contiguous"
            );
            assert!(
                piece.range.start < piece.range.end,
                "pieces must not be empty"
            );
            let text = sql
                .get(piece.range.clone())
                .expect("piece on char boundaries");
            joined.push_str(text);
            if !is_last {
                assert!(text.ends_with(';'), "only the last piece may lack a `;`");
            }
            match &piece.statement {
                Some(statement) => {
                    assert!(piece.range.start <= statement.start);
                    assert!(statement.start < statement.end, "statements are not empty");
                    assert!(statement.end <= piece.range.end);
                    let statement_text = sql
                        .get(statement.clone())
                        .expect("statement on char boundaries");
                    assert!(!statement_text.starts_with(is_space_char));
                    if split.unterminated.is_none() || !is_last {
                        // Only whitespace and the `;` may follow the statement in its piece.
                        let after = &sql[statement.end..piece.range.end];
                        let after = after.trim_matches(is_space_char);
                        assert!(
                            after.is_empty() || after == ";",
                            "after statement: {after:?}"
                        );
                    }
                    assert_eq!(piece.line, line_of(sql, statement.start));
                }
                None => assert_eq!(piece.line, line_of(sql, piece.range.start)),
            }
            assert!(piece.line >= 1);
            expected_start = piece.range.end;
        }
        assert_eq!(expected_start, sql.len(), "pieces must reach the end");
        assert_eq!(joined, sql);
        if let Some(open) = &split.unterminated {
            assert!(open.line >= 1);
            let last = split
                .pieces
                .last()
                .expect("an unterminated input is not empty");
            assert!(last.statement.is_some());
        }

        // Each piece, split on its own, is one piece with the same statement: splitting starts
        // every piece from a clean state and never looks past the `;` that ends it.
        for piece in &split.pieces {
            let text = &sql[piece.range.clone()];
            let alone = super::split(text);
            assert_eq!(alone.pieces.len(), 1, "piece {text:?} of {sql:?}");
            let shifted = piece
                .statement
                .clone()
                .map(|s| s.start - piece.range.start..s.end - piece.range.start);
            assert_eq!(
                alone.pieces[0].statement, shifted,
                "piece {text:?} of {sql:?}"
            );
        }
    }

    fn is_space_char(c: char) -> bool {
        c.is_ascii() && is_space(c as u8)
    }

    #[test]
    fn simple_statements() {
        check("SELECT 1;", &[(1, "SELECT 1")]);
        check("SELECT 1; SELECT 2;", &[(1, "SELECT 1"), (1, "SELECT 2")]);
        check(
            "CREATE TABLE t (a int);\n\nINSERT INTO t VALUES (1);\n",
            &[
                (1, "CREATE TABLE t (a int)"),
                (3, "INSERT INTO t VALUES (1)"),
            ],
        );
        check("  \n  SELECT 1  \n ;", &[(2, "SELECT 1")]);
    }

    #[test]
    fn semicolons_inside_quotes_and_comments() {
        check(
            "SELECT ';'; SELECT 2;",
            &[(1, "SELECT ';'"), (1, "SELECT 2")],
        );
        check(
            "SELECT \"a;b\" FROM t; SELECT 2;",
            &[(1, "SELECT \"a;b\" FROM t"), (1, "SELECT 2")],
        );
        check(
            "SELECT 1 -- ; not here\n;",
            &[(1, "SELECT 1 -- ; not here")],
        );
        check(
            "SELECT /* ; */ 1; SELECT 2;",
            &[(1, "SELECT /* ; */ 1"), (1, "SELECT 2")],
        );
        check(
            "SELECT $$;$$; SELECT 2;",
            &[(1, "SELECT $$;$$"), (1, "SELECT 2")],
        );
    }

    #[test]
    fn nested_block_comments() {
        check(
            "SELECT /* a /* b; */ c; */ 1; SELECT 2;",
            &[(1, "SELECT /* a /* b; */ c; */ 1"), (1, "SELECT 2")],
        );
        check("/**/SELECT 1;/***/", &[(1, "SELECT 1")]);
        // `*/*` closes the comment first; the `*` after it is an ordinary operator.
        check("SELECT 2 /* x */* 3;", &[(1, "SELECT 2 /* x */* 3")]);
        // Operators glued to a comment start do not hide it.
        check("SELECT 1 +/* ; */ 2;", &[(1, "SELECT 1 +/* ; */ 2")]);
        check("SELECT 1 =-- ;\n;", &[(1, "SELECT 1 =-- ;")]);
    }

    #[test]
    fn escape_strings() {
        check(
            "SELECT E'it\\'s; fine'; SELECT 2;",
            &[(1, "SELECT E'it\\'s; fine'"), (1, "SELECT 2")],
        );
        check(
            "SELECT e'a\\\\'; SELECT 2;",
            &[(1, "SELECT e'a\\\\'"), (1, "SELECT 2")],
        );
        check(
            "SELECT E'a''b;'; SELECT 2;",
            &[(1, "SELECT E'a''b;'"), (1, "SELECT 2")],
        );
        // The `E` is only a prefix at the start of a token: here the identifier `abcE` is
        // followed by a standard string, in which a backslash is an ordinary character.
        check(
            "SELECT abcE'x\\'; SELECT 2;",
            &[(1, "SELECT abcE'x\\'"), (1, "SELECT 2")],
        );
        check(
            "SELECT 1E'x\\'; SELECT 2;",
            &[(1, "SELECT 1E'x\\'"), (1, "SELECT 2")],
        );
    }

    #[test]
    fn standard_strings() {
        check(
            "SELECT 'it''s; fine'; SELECT 2;",
            &[(1, "SELECT 'it''s; fine'"), (1, "SELECT 2")],
        );
        check(
            "SELECT 'a\\'; SELECT 2;",
            &[(1, "SELECT 'a\\'"), (1, "SELECT 2")],
        );
        check(
            "SELECT type'x\\'; SELECT 2;",
            &[(1, "SELECT type'x\\'"), (1, "SELECT 2")],
        );
        check(
            "SELECT B'01;', X'f;', N'x;y', U&'d;a\\'; SELECT 2;",
            &[
                (1, "SELECT B'01;', X'f;', N'x;y', U&'d;a\\'"),
                (1, "SELECT 2"),
            ],
        );
        check(
            "SELECT ''; SELECT '''';",
            &[(1, "SELECT ''"), (1, "SELECT ''''")],
        );
    }

    #[test]
    fn string_continuation_as_psql_sees_it() {
        // psql reads a file line by line and never shows its lexer the `\n`, so 'a'<newline>'b'
        // is two literals to it: the second part is a standard string, and `\'` ends it.
        check(
            "SELECT E'a'\n'\\'; SELECT ';';",
            &[(1, "SELECT E'a'\n'\\'"), (2, "SELECT ';'")],
        );
        check(
            "SELECT E'a'\r\n'\\'; SELECT ';';",
            &[(1, "SELECT E'a'\r\n'\\'"), (2, "SELECT ';'")],
        );
        // A bare `\r` is a newline inside one line, so there the literal continues, escape rules
        // and all, even across comments, and even after the end of the closing quote's line.
        check(
            "SELECT E'a'\r'\\';'; SELECT 2;",
            &[(1, "SELECT E'a'\r'\\';'"), (1, "SELECT 2")],
        );
        check(
            "SELECT E'a' -- c\r  -- d\r'\\';'; SELECT 2;",
            &[(1, "SELECT E'a' -- c\r  -- d\r'\\';'"), (1, "SELECT 2")],
        );
        check(
            "SELECT E'a'\n\n  \r'\\';'; SELECT 2;",
            &[(1, "SELECT E'a'\n\n  \r'\\';'"), (3, "SELECT 2")],
        );
        // Without any newline there is no continuation: the second part is a standard string.
        check(
            "SELECT E'a' '\\'; SELECT 2;",
            &[(1, "SELECT E'a' '\\'"), (1, "SELECT 2")],
        );
        check(
            "SELECT E'a' \r\n'\\'; SELECT 2;",
            &[(1, "SELECT E'a' \r\n'\\'"), (2, "SELECT 2")],
        );
    }

    #[test]
    fn quoted_identifiers() {
        check(
            "CREATE TABLE \"a;\"\"b\" (x int); SELECT 2;",
            &[(1, "CREATE TABLE \"a;\"\"b\" (x int)"), (1, "SELECT 2")],
        );
        check(
            "SELECT U&\"d;a\"; SELECT 2;",
            &[(1, "SELECT U&\"d;a\""), (1, "SELECT 2")],
        );
        check(
            "SELECT \"it's\"; SELECT 2;",
            &[(1, "SELECT \"it's\""), (1, "SELECT 2")],
        );
        check(
            "SELECT u&x; SELECT 2;",
            &[(1, "SELECT u&x"), (1, "SELECT 2")],
        );
    }

    #[test]
    fn dollar_quotes() {
        check(
            "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\nSELECT 2;",
            &[
                (
                    1,
                    "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql",
                ),
                (2, "SELECT 2"),
            ],
        );
        check(
            "SELECT $b$ $a$ ; $a$ ; $B$ ; $b$; SELECT 2;",
            &[(1, "SELECT $b$ $a$ ; $a$ ; $B$ ; $b$"), (1, "SELECT 2")],
        );
        check(
            "SELECT $$a$b;$$; SELECT 2;",
            &[(1, "SELECT $$a$b;$$"), (1, "SELECT 2")],
        );
        check(
            "SELECT $é$;$é$; SELECT 2;",
            &[(1, "SELECT $é$;$é$"), (1, "SELECT 2")],
        );
        check("SELECT $_1$;$_1$;", &[(1, "SELECT $_1$;$_1$")]);
    }

    #[test]
    fn dollar_signs_that_are_not_quotes() {
        check(
            "PREPARE p AS SELECT $1; EXECUTE p(1);",
            &[(1, "PREPARE p AS SELECT $1"), (1, "EXECUTE p(1)")],
        );
        check(
            "SELECT foo$bar$ FROM t; SELECT $bar$;$bar$;",
            &[(1, "SELECT foo$bar$ FROM t"), (1, "SELECT $bar$;$bar$")],
        );
        // `$a` without a closing `$` is a lone `$` followed by the identifier `a`.
        check("SELECT $a; SELECT 2;", &[(1, "SELECT $a"), (1, "SELECT 2")]);
        check(
            "SELECT $1$a$; SELECT 2;$a$;",
            &[(1, "SELECT $1$a$; SELECT 2;$a$")],
        );
        // A number does not continue into a `$`, so as in psql this starts a dollar quote...
        check(
            "SELECT 1$a$; SELECT 2;$a$;",
            &[(1, "SELECT 1$a$; SELECT 2;$a$")],
        );
        // ...while psql 16 and later glue an identifier to the number before it
        // (`integer_junk`), and the identifier takes the `$`s with it.
        check(
            "SELECT 1a$b$; SELECT 2;",
            &[(1, "SELECT 1a$b$"), (1, "SELECT 2")],
        );
        check("SELECT $ 1;", &[(1, "SELECT $ 1")]);
    }

    #[test]
    fn numbers() {
        check(
            "SELECT 1..2; SELECT .5e-3;",
            &[(1, "SELECT 1..2"), (1, "SELECT .5e-3")],
        );
        // `1e-` is a complete (invalid) token, so the `-` after it cannot start a comment.
        check("SELECT 1e--';\n';", &[(1, "SELECT 1e--';\n'")]);
        check("SELECT 1_000.5E+10x;", &[(1, "SELECT 1_000.5E+10x")]);
        // A glued identifier takes the `$`s with it, so none of these start a dollar quote...
        for number in [
            "1e1$$", "1.5e1$$", "1e$$", "0x1$$", "1_0$$", "1e1_$$", "1e1x$$",
        ] {
            let sql = format!("SELECT {number}; SELECT 2;");
            check(&sql, &[(1, &format!("SELECT {number}")), (1, "SELECT 2")]);
        }
        // ...while after a bare digit group, or a signed exponent, the `$$` opens one.
        for number in ["1$$", "1.$$", ".5$$", "1E+1$$", "12$$"] {
            let sql = format!("SELECT {number}; $$;");
            check(&sql, &[(1, &format!("SELECT {number}; $$"))]);
        }
    }

    #[test]
    fn parentheses() {
        check(
            "SELECT (1;2); SELECT 2;",
            &[(1, "SELECT (1;2)"), (1, "SELECT 2")],
        );
        check(
            "SELECT ((1);); SELECT 2;",
            &[(1, "SELECT ((1);)"), (1, "SELECT 2")],
        );
        // An unbalanced `)` is ignored rather than making the depth negative.
        check(
            "SELECT 1); SELECT (2;",
            &[(1, "SELECT 1)"), (1, "SELECT (2;")],
        );
    }

    #[test]
    fn begin_atomic_bodies() {
        check(
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END;",
            &[(
                1,
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END",
            )],
        );
        check(
            "CREATE PROCEDURE p()\nLANGUAGE sql\nBEGIN ATOMIC\n  INSERT INTO t VALUES (1);\n  INSERT INTO t VALUES (2);\nEND;\nCALL p();",
            &[
                (
                    1,
                    "CREATE PROCEDURE p()\nLANGUAGE sql\nBEGIN ATOMIC\n  INSERT INTO t VALUES (1);\n  INSERT INTO t VALUES (2);\nEND",
                ),
                (7, "CALL p()"),
            ],
        );
        check(
            "create or replace function f(x int) returns int language sql\nbegin atomic\n  select case when x > 0 then case when x > 1 then 2 else 1 end else 0 end;\nend;\nselect f(1);",
            &[
                (
                    1,
                    "create or replace function f(x int) returns int language sql\nbegin atomic\n  select case when x > 0 then case when x > 1 then 2 else 1 end else 0 end;\nend",
                ),
                (5, "select f(1)"),
            ],
        );
        check(
            "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2;",
            &[
                (
                    1,
                    "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
                ),
                (1, "SELECT 2"),
            ],
        );
        // A CASE outside a BEGIN has no BEGIN to balance and does not hold the `;` back.
        check(
            "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql RETURN CASE WHEN x > 0 THEN 1 END; SELECT 2;",
            &[
                (
                    1,
                    "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql RETURN CASE WHEN x > 0 THEN 1 END",
                ),
                (1, "SELECT 2"),
            ],
        );
        // Identifiers inside parentheses, quoted identifiers and other statements do not count.
        check(
            "CREATE FUNCTION f(begin int) RETURNS int LANGUAGE sql RETURN 1; SELECT 2;",
            &[
                (
                    1,
                    "CREATE FUNCTION f(begin int) RETURNS int LANGUAGE sql RETURN 1",
                ),
                (1, "SELECT 2"),
            ],
        );
        // Identifiers inside parentheses take no position either, so these are routine
        // definitions to psql...
        check(
            "CREATE (x) FUNCTION f() BEGIN; SELECT 1; END; SELECT 2;",
            &[
                (1, "CREATE (x) FUNCTION f() BEGIN; SELECT 1; END"),
                (1, "SELECT 2"),
            ],
        );
        check(
            "(x) CREATE FUNCTION f() BEGIN; SELECT 1; END; SELECT 2;",
            &[
                (1, "(x) CREATE FUNCTION f() BEGIN; SELECT 1; END"),
                (1, "SELECT 2"),
            ],
        );
        // ...and these are not.
        check(
            "(CREATE FUNCTION f()) BEGIN; SELECT 2;",
            &[(1, "(CREATE FUNCTION f()) BEGIN"), (1, "SELECT 2")],
        );
        check(
            "x CREATE FUNCTION f() BEGIN; SELECT 2;",
            &[(1, "x CREATE FUNCTION f() BEGIN"), (1, "SELECT 2")],
        );
        check(
            "CREATE FUNCTION \"begin\"() RETURNS int LANGUAGE sql RETURN 1; SELECT 2;",
            &[
                (
                    1,
                    "CREATE FUNCTION \"begin\"() RETURNS int LANGUAGE sql RETURN 1",
                ),
                (1, "SELECT 2"),
            ],
        );
        check(
            "CREATE TABLE \"begin\"(a int); SELECT 1;",
            &[(1, "CREATE TABLE \"begin\"(a int)"), (1, "SELECT 1")],
        );
        check(
            "CREATE TABLE begin_log(a int); CREATE TABLE x(a int);",
            &[
                (1, "CREATE TABLE begin_log(a int)"),
                (1, "CREATE TABLE x(a int)"),
            ],
        );
    }

    #[test]
    fn sqlite_trigger_bodies() {
        check(
            "CREATE TRIGGER t_touch AFTER UPDATE ON t FOR EACH ROW\nBEGIN\n  UPDATE t SET n = n + 1 WHERE id = NEW.id;\n  INSERT INTO log VALUES (CASE WHEN NEW.n > 1 THEN 'many' ELSE 'one' END);\nEND;\nSELECT 1;",
            &[
                (
                    1,
                    "CREATE TRIGGER t_touch AFTER UPDATE ON t FOR EACH ROW\nBEGIN\n  UPDATE t SET n = n + 1 WHERE id = NEW.id;\n  INSERT INTO log VALUES (CASE WHEN NEW.n > 1 THEN 'many' ELSE 'one' END);\nEND",
                ),
                (6, "SELECT 1"),
            ],
        );
        check(
            "create temp trigger if not exists x before delete on t when old.id > 0 begin delete from u; end; select 2;",
            &[
                (
                    1,
                    "create temp trigger if not exists x before delete on t when old.id > 0 begin delete from u; end",
                ),
                (1, "select 2"),
            ],
        );
        check(
            "CREATE TEMPORARY TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END;",
            &[(
                1,
                "CREATE TEMPORARY TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END",
            )],
        );
        // PostgreSQL's trigger has no body; the words are not a trigger elsewhere.
        check(
            "CREATE TRIGGER t BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch(); BEGIN; SELECT 1;",
            &[
                (
                    1,
                    "CREATE TRIGGER t BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch()",
                ),
                (1, "BEGIN"),
                (1, "SELECT 1"),
            ],
        );
        check(
            "CREATE TABLE trigger (a int); BEGIN; DROP TRIGGER x; END;",
            &[
                (1, "CREATE TABLE trigger (a int)"),
                (1, "BEGIN"),
                (1, "DROP TRIGGER x"),
                (1, "END"),
            ],
        );
    }

    #[test]
    fn transaction_blocks_stay_separate() {
        check(
            "BEGIN;\nCREATE TABLE t(a int);\nCOMMIT;\n",
            &[(1, "BEGIN"), (2, "CREATE TABLE t(a int)"), (3, "COMMIT")],
        );
        // The counters reset after every statement, so a BEGIN in an earlier statement does not
        // leak into a later function definition, nor the other way round.
        check(
            "BEGIN; CREATE FUNCTION f() RETURNS int LANGUAGE sql RETURN 1; END;",
            &[
                (1, "BEGIN"),
                (1, "CREATE FUNCTION f() RETURNS int LANGUAGE sql RETURN 1"),
                (1, "END"),
            ],
        );
    }

    #[test]
    fn do_blocks() {
        check(
            "DO $$\nBEGIN\n  RAISE NOTICE 'x;';\nEND\n$$;\nSELECT 1;",
            &[
                (1, "DO $$\nBEGIN\n  RAISE NOTICE 'x;';\nEND\n$$"),
                (6, "SELECT 1"),
            ],
        );
        check(
            "DO LANGUAGE plpgsql $do$ BEGIN PERFORM 1; END $do$;",
            &[(1, "DO LANGUAGE plpgsql $do$ BEGIN PERFORM 1; END $do$")],
        );
    }

    #[test]
    fn psql_meta_commands_are_not_interpreted() {
        // psql would glue these two into one query with `\;` and read `:v` as a variable; here a
        // backslash outside quotes is an ordinary character and the server gets to reject it.
        check(
            "SELECT 1 \\; SELECT :v;",
            &[(1, "SELECT 1 \\"), (1, "SELECT :v")],
        );
        check("\\set x 1\nSELECT 1;", &[(1, "\\set x 1\nSELECT 1")]);
    }

    #[test]
    fn leading_and_trailing_text() {
        check(
            "-- lead\n/* lead */ SELECT 1 /* trail */ -- trail\n;",
            &[(2, "SELECT 1 /* trail */ -- trail")],
        );
        check("SELECT 1;\nSELECT 2", &[(1, "SELECT 1"), (2, "SELECT 2")]);
        check("SELECT 1  \n\n", &[(1, "SELECT 1")]);
        check(
            "SELECT 1 -- no newline at the end",
            &[(1, "SELECT 1 -- no newline at the end")],
        );
    }

    #[test]
    fn only_comments_and_empty_input() {
        check("-- just a comment\n/* and another */\n", &[]);
        assert_eq!(
            split("-- c\n").pieces,
            vec![Piece {
                range: 0..5,
                statement: None,
                line: 1
            }]
        );
        check("", &[]);
        assert_eq!(split("").pieces, vec![]);
        check("   \n\t", &[]);
    }

    #[test]
    fn pieces_cover_everything() {
        assert_eq!(
            split("SELECT 1;;"),
            Split {
                pieces: vec![
                    Piece {
                        range: 0..9,
                        statement: Some(0..8),
                        line: 1
                    },
                    Piece {
                        range: 9..10,
                        statement: None,
                        line: 1
                    },
                ],
                unterminated: None,
            }
        );
        assert_eq!(
            split("  SELECT 1 ;\n-- end\n").pieces,
            vec![
                Piece {
                    range: 0..12,
                    statement: Some(2..10),
                    line: 1
                },
                Piece {
                    range: 12..20,
                    statement: None,
                    line: 1
                },
            ]
        );
        assert_eq!(
            split("SELECT 1;\n/* c */ ;").pieces,
            vec![
                Piece {
                    range: 0..9,
                    statement: Some(0..8),
                    line: 1
                },
                Piece {
                    range: 9..19,
                    statement: None,
                    line: 1
                },
            ]
        );
    }

    #[test]
    fn crlf_line_numbers() {
        check(
            "SELECT 1;\r\n\r\nSELECT 2;\r\n-- c\r\nSELECT 3",
            &[(1, "SELECT 1"), (3, "SELECT 2"), (5, "SELECT 3")],
        );
        check("SELECT 1 -- c\r\n;", &[(1, "SELECT 1 -- c")]);
    }

    #[test]
    fn multi_byte_characters() {
        check(
            "SELECT 'héllo;'; SELECT ünïcode FROM tàble;\nSELECT '日本' AS \"名前\"; -- ☃\n",
            &[
                (1, "SELECT 'héllo;'"),
                (1, "SELECT ünïcode FROM tàble"),
                (2, "SELECT '日本' AS \"名前\""),
            ],
        );
        check("SELECT é;é", &[(1, "SELECT é"), (1, "é")]);
    }

    #[test]
    fn unterminated_constructs() {
        check_unterminated(
            "SELECT 1;\nSELECT 'abc;\n",
            &[(1, "SELECT 1"), (2, "SELECT 'abc;\n")],
            "quoted string",
            2,
        );
        check_unterminated(
            "SELECT\n1,\nE'it\\'s",
            &[(1, "SELECT\n1,\nE'it\\'s")],
            "quoted string",
            3,
        );
        check_unterminated("SELECT 'a\\", &[(1, "SELECT 'a\\")], "quoted string", 1);
        check_unterminated("SELECT E'a\\", &[(1, "SELECT E'a\\")], "quoted string", 1);
        check_unterminated(
            "SELECT 'a'\n'b",
            &[(1, "SELECT 'a'\n'b")],
            "quoted string",
            2,
        );
        check_unterminated(
            "SELECT 'a'\r'b",
            &[(1, "SELECT 'a'\r'b")],
            "quoted string",
            1,
        );
        check_unterminated(
            "SELECT 1;\nSELECT \"abc; x",
            &[(1, "SELECT 1"), (2, "SELECT \"abc; x")],
            "quoted identifier",
            2,
        );
        check_unterminated(
            "SELECT 1;\n\nDO $body$ BEGIN; END $bod$;",
            &[(1, "SELECT 1"), (3, "DO $body$ BEGIN; END $bod$;")],
            "dollar-quoted string $body$",
            3,
        );
        check_unterminated("DO $$ x", &[(1, "DO $$ x")], "dollar-quoted string $$", 1);
        check_unterminated(
            "SELECT 1;\n/* a /* b */\nSELECT 2;",
            &[(1, "SELECT 1"), (2, "/* a /* b */\nSELECT 2;")],
            "block comment",
            2,
        );
        check_unterminated(
            "SELECT 1 /* x\n",
            &[(1, "SELECT 1 /* x\n")],
            "block comment",
            1,
        );
    }

    #[test]
    fn leading_keywords_table() {
        let cases: &[(&str, usize, &[&str])] = &[
            (
                "/* x */ CREATE  INDEX CONCURRENTLY i ON t(a)",
                3,
                &["create", "index", "concurrently"],
            ),
            ("ROLLBACK TO s", 2, &["rollback", "to"]),
            ("(select 1)", 2, &[]),
            ("-- c\nVacuum", 2, &["vacuum"]),
            (
                "CREATE /* nested /* c */ */ Unique INDEX",
                4,
                &["create", "unique", "index"],
            ),
            (
                "ALTER TYPE mood ADD VALUE 'x'",
                10,
                &["alter", "type", "mood", "add", "value"],
            ),
            ("\"Create\" TABLE", 2, &[]),
            ("E'x' y", 2, &[]),
            ("begin;", 5, &["begin"]),
            ("SELECT 1", 0, &[]),
            ("", 3, &[]),
            ("  \n ", 3, &[]),
            ("/* open", 1, &[]),
            ("set$x ÜBER", 2, &["set$x", "Über"]),
        ];
        for &(sql, n, want) in cases {
            assert_eq!(
                leading_keywords(sql, n),
                want,
                "leading_keywords({sql:?}, {n})"
            );
        }
    }

    /// Fragments that exercise every rule of the lexer when strung together at random.
    #[rustfmt::skip]
    const FRAGMENTS: &[&str] = &[
        "'", "\"", "$", ";", "-", "/", "*", "(", ")", "E", "b", "e", "g", "i", "n", "u", "&", "x",
        "\n", "\r", " ", "\\", "é", "日", "1", ".", "_", "+", "$a$", "$$", "$1", "--", "/*", "*/",
        "E'", "U&", "1e1", "\r'", "create ", "function ", "procedure ", "or ", "replace ",
        "begin ", "case ", "end ", "atomic ",
    ];

    fn sqlish() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(FRAGMENTS), 0..64)
            .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn any_string_splits_cleanly(sql in any::<String>()) {
            let split = split(&sql);
            assert_invariants(&sql, &split);
            let _ = leading_keywords(&sql, 4);
        }

        #[test]
        fn sql_like_strings_split_cleanly(sql in sqlish()) {
            let split = split(&sql);
            assert_invariants(&sql, &split);
            for word in leading_keywords(&sql, 4) {
                prop_assert!(!word.is_empty());
            }
        }
    }
}
