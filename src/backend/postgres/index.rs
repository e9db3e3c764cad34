//! Resuming a failed `CREATE INDEX CONCURRENTLY`.
//!
//! When a concurrent index build fails after its first phase (a lock timeout while it waits for
//! older snapshots, a duplicate in a unique index, a cancel), PostgreSQL leaves the index in the
//! catalog marked INVALID: it is maintained on every write but never used, and a plain retry
//! fails with "already exists". So before the statement runs again, the index it names is
//! looked up: INVALID → dropped (concurrently); valid → the build had finished before startgate
//! could record it, and the statement counts as done. An unnamed index cannot be looked up by
//! name; the INVALID indexes of its table are dropped instead.
//! <https://www.postgresql.org/docs/current/sql-createindex.html#SQL-CREATEINDEX-CONCURRENTLY>

use super::quote_ident;

/// What a `CREATE [UNIQUE] INDEX CONCURRENTLY` statement names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrentIndex {
    /// The index name, when the statement gives one.
    pub name: Option<String>,
    /// The table's schema, when the statement qualifies the table.
    pub schema: Option<String>,
    pub table: String,
}

impl ConcurrentIndex {
    /// The index as a quoted, qualified name for `to_regclass` and `DROP INDEX`: an index lives
    /// in its table's schema.
    pub fn qualified_index(&self) -> Option<String> {
        let name = quote_ident(self.name.as_deref()?);
        Some(match &self.schema {
            Some(schema) => format!("{}.{name}", quote_ident(schema)),
            None => name,
        })
    }

    pub fn qualified_table(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.table)),
            None => quote_ident(&self.table),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An identifier as PostgreSQL resolves it: unquoted ones folded to lower case.
    Word {
        text: String,
        quoted: bool,
    },
    Dot,
    Other,
}

/// Tokens of the statement's head, up to the first parenthesis.
fn tokens(sql: &str) -> Vec<Token> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        // Byte comparisons only: the text may hold multi-byte characters anywhere (in a comment,
        // say), and slicing a `str` inside one would panic.
        let rest = &bytes[i..];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if rest.starts_with(b"--") {
            i = rest
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |n| i + n + 1);
        } else if rest.starts_with(b"/*") {
            // Nested comments, as PostgreSQL reads them.
            let mut depth = 0usize;
            while i < bytes.len() {
                if bytes[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if bytes[i..].starts_with(b"*/") {
                    depth = depth.saturating_sub(1);
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'"' {
            let mut text = Vec::new();
            i += 1;
            while i < bytes.len() {
                if bytes[i..].starts_with(b"\"\"") {
                    text.push(b'"');
                    i += 2;
                } else if bytes[i] == b'"' {
                    i += 1;
                    break;
                } else {
                    text.push(bytes[i]);
                    i += 1;
                }
            }
            out.push(Token::Word {
                text: String::from_utf8_lossy(&text).into_owned(),
                quoted: true,
            });
        } else if c == b'.' {
            out.push(Token::Dot);
            i += 1;
        } else if c == b'(' {
            break;
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || bytes[i] == b'_'
                    || bytes[i] == b'$'
                    || bytes[i] >= 0x80)
            {
                i += 1;
            }
            out.push(Token::Word {
                text: String::from_utf8_lossy(&bytes[start..i]).to_ascii_lowercase(),
                quoted: false,
            });
        } else {
            out.push(Token::Other);
            i += 1;
        }
    }
    out
}

fn keyword(token: Option<&Token>, word: &str) -> bool {
    matches!(token, Some(Token::Word { text, quoted: false }) if text == word)
}

/// Reads `CREATE [UNIQUE] INDEX CONCURRENTLY [[IF NOT EXISTS] name] ON [ONLY] [schema.]table`.
pub fn parse(sql: &str) -> Option<ConcurrentIndex> {
    let t = tokens(sql);
    let mut i = 0;
    let expect = |word: &str, i: &mut usize| {
        let ok = keyword(t.get(*i), word);
        if ok {
            *i += 1;
        }
        ok
    };
    if !expect("create", &mut i) {
        return None;
    }
    expect("unique", &mut i);
    if !expect("index", &mut i) || !expect("concurrently", &mut i) {
        return None;
    }
    let name = if expect("on", &mut i) {
        None
    } else {
        if expect("if", &mut i) && !(expect("not", &mut i) && expect("exists", &mut i)) {
            return None;
        }
        let Some(Token::Word { text, .. }) = t.get(i) else {
            return None;
        };
        i += 1;
        if !expect("on", &mut i) {
            return None;
        }
        Some(text.clone())
    };
    expect("only", &mut i);
    let Some(Token::Word { text: first, .. }) = t.get(i) else {
        return None;
    };
    let (schema, table) = match (t.get(i + 1), t.get(i + 2)) {
        (Some(Token::Dot), Some(Token::Word { text, .. })) => (Some(first.clone()), text.clone()),
        _ => (None, first.clone()),
    };
    Some(ConcurrentIndex {
        name,
        schema,
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sql: &str, expected: Option<(Option<&str>, Option<&str>, &str)>) {
        let got = parse(sql);
        let got = got
            .as_ref()
            .map(|c| (c.name.as_deref(), c.schema.as_deref(), c.table.as_str()));
        assert_eq!(got, expected, "{sql}");
    }

    #[test]
    fn reads_the_index_and_table_names() {
        check(
            "CREATE INDEX CONCURRENTLY orders_user_idx ON orders (user_id)",
            Some((Some("orders_user_idx"), None, "orders")),
        );
        check(
            "create unique index concurrently if not exists Users_Email ON ONLY app.users USING btree (email)",
            Some((Some("users_email"), Some("app"), "users")),
        );
        check(
            "CREATE INDEX CONCURRENTLY \"Mixed\"\"Name\" ON \"My Schema\".\"T\" (a)",
            Some((Some("Mixed\"Name"), Some("My Schema"), "T")),
        );
        check(
            "/* unnamed */ CREATE INDEX CONCURRENTLY ON orders (created_at)",
            Some((None, None, "orders")),
        );
        check(
            "CREATE INDEX CONCURRENTLY -- why\n i ON t(a)",
            Some((Some("i"), None, "t")),
        );
        check(
            "CREATE INDEX CONCURRENTLY /* índice è */ \"ïx\" ON t (a)",
            Some((Some("ïx"), None, "t")),
        );
        check("CREATE INDEX i ON t (a)", None);
        check("DROP INDEX CONCURRENTLY i", None);
        check("CREATE INDEX CONCURRENTLY IF i ON t (a)", None);
    }

    #[test]
    fn qualifies_the_index_in_its_tables_schema() {
        let c = parse("CREATE INDEX CONCURRENTLY i ON s.t (a)").unwrap();
        assert_eq!(c.qualified_index().as_deref(), Some("\"s\".\"i\""));
        assert_eq!(c.qualified_table(), "\"s\".\"t\"");
        let c = parse("CREATE INDEX CONCURRENTLY ON t (a)").unwrap();
        assert_eq!(c.qualified_index(), None);
        assert_eq!(c.qualified_table(), "\"t\"");
    }
}
