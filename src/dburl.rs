//! Database URLs: `postgres://…`, `postgresql://…`, `sqlite://PATH`, `sqlite:PATH` and
//! `sqlite::memory:`, parsed once and shown only without their password.
//!
//! A [`DatabaseUrl`] is the one place that holds a database credential. Its `Display` and
//! `Debug` print the redacted form, so logs, errors, `/status` and the termination log can
//! mention the database freely; only [`DatabaseUrl::expose`] hands out the raw text, for the
//! driver. [`DbUrlError`] never repeats the input: a URL that does not parse cannot be
//! redacted reliably, so its errors name only the scheme, or nothing.
//!
//! SQLite URLs follow sqlx's reading (so a URL that works with sqlx works here): the scheme
//! is removed as `sqlite://` or `sqlite:`, the rest up to `?` is a percent-decoded path, so
//! `sqlite:///abs/path` is `/abs/path` and `sqlite://data/app.db` is the relative
//! `data/app.db`.

use std::fmt;
use std::path::PathBuf;

/// The accepted forms, repeated in every error that refuses a URL.
const ACCEPTED: &str = "expected postgres://USER:PASSWORD@HOST:PORT/DATABASE, \
                        postgresql://…, sqlite://PATH, sqlite:PATH or sqlite::memory:";

/// How to write the characters that break a URL when they appear in a password.
const ENCODE_HINT: &str = "@ as %40, # as %23, / as %2F, ? as %3F, % as %25";

/// Query parameters of a PostgreSQL URL that carry a secret and are left out of the
/// redacted form (`sslpassword` unlocks the client key).
const SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

/// Which engine a URL names; the backend module is chosen by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a database URL was refused. No variant holds any part of the input that could be a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbUrlError {
    #[error("empty database URL ({ACCEPTED})")]
    Empty,
    /// The text has no `scheme://` and is not a `sqlite:` URL. Nothing of it is shown: it
    /// might be a bare password put into the wrong variable or file.
    #[error("not a database URL ({ACCEPTED})")]
    NotAUrl,
    #[error("unsupported scheme {scheme:?} ({ACCEPTED})")]
    UnsupportedScheme { scheme: String },
    /// libpq accepts `host1:5432,host2:5432`; the URL parser (and sqlx) do not.
    #[error(
        "several hosts in one PostgreSQL URL are not supported; name one host, or use the host= parameter"
    )]
    SeveralHosts,
    /// Something that belongs in the password (`#`, `/`, `?`) cut the URL short, so that
    /// the rest of the password would be read as the path, query or fragment — and shown in
    /// the redacted form. Refused rather than half-redacted.
    #[error(
        "the PostgreSQL URL has \"@\" or \"#\" after its host; percent-encode special characters \
         in the user name and password ({ENCODE_HINT})"
    )]
    UnencodedCredentials,
    #[error(
        "invalid PostgreSQL URL (percent-encode special characters in the password: {ENCODE_HINT})"
    )]
    InvalidPostgres(#[source] url::ParseError),
    #[error("the sqlite URL names no file ({ACCEPTED})")]
    SqliteNoPath,
    #[error("the sqlite path is not valid UTF-8 once percent-decoded")]
    SqlitePathNotUtf8,
}

/// A parsed database URL. Holds the raw text for the driver and the parsed form for
/// everything else.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    /// Exactly what the operator wrote; may contain the password.
    raw: String,
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Postgres(url::Url),
    Sqlite(SqliteTarget),
}

#[derive(Clone, PartialEq, Eq)]
enum SqliteTarget {
    Memory,
    File(PathBuf),
}

impl DatabaseUrl {
    /// Parses one of the accepted forms (see the module doc).
    pub fn parse(text: &str) -> Result<DatabaseUrl, DbUrlError> {
        if text.trim().is_empty() {
            return Err(DbUrlError::Empty);
        }
        let kind = match scheme_of(text) {
            Some(scheme) if scheme.eq_ignore_ascii_case("sqlite") => {
                Kind::Sqlite(parse_sqlite(text)?)
            }
            Some(scheme)
                if scheme.eq_ignore_ascii_case("postgres")
                    || scheme.eq_ignore_ascii_case("postgresql") =>
            {
                Kind::Postgres(parse_postgres(text)?)
            }
            Some(scheme) => {
                return Err(DbUrlError::UnsupportedScheme {
                    scheme: scheme.to_string(),
                });
            }
            None => return Err(DbUrlError::NotAUrl),
        };
        Ok(DatabaseUrl {
            raw: text.to_string(),
            kind,
        })
    }

    pub fn backend(&self) -> Backend {
        match self.kind {
            Kind::Postgres(_) => Backend::Postgres,
            Kind::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The URL without its password (and without `password=`/`sslpassword=` query
    /// parameters): `postgres://app@db:5432/app?sslmode=require`. Safe to log and show.
    pub fn redacted(&self) -> String {
        match &self.kind {
            Kind::Postgres(url) => {
                let mut url = url.clone();
                // Cannot fail: a postgres URL that parsed has an authority.
                let _ = url.set_password(None);
                if url.query().is_some() {
                    let kept: Vec<(String, String)> = url
                        .query_pairs()
                        .filter(|(k, _)| !is_secret_param(k))
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                    let had = url.query_pairs().count();
                    if kept.len() != had {
                        if kept.is_empty() {
                            url.set_query(None);
                        } else {
                            url.query_pairs_mut().clear().extend_pairs(kept);
                        }
                    }
                }
                url.to_string()
            }
            // A SQLite URL carries no credential.
            Kind::Sqlite(_) => self.raw.clone(),
        }
    }

    /// The URL exactly as configured, password included. For the database driver only:
    /// never log, format or store it anywhere else.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The password, percent-decoded (`p%40ss` is `p@ss`), from the authority or a
    /// `password=` parameter. Used to mask it in text startgate repeats (a migrate
    /// command's output, the app's stderr).
    pub fn password(&self) -> Option<String> {
        let Kind::Postgres(url) = &self.kind else {
            return None;
        };
        query_param(url, "password")
            .or_else(|| url.password().map(percent_decode_lossy))
            .filter(|p| !p.is_empty())
    }

    /// Every form the credentials of this URL can take in text that startgate repeats (a
    /// driver error, a migrate command's output): the password as written (percent-encoded)
    /// and decoded, and the values of `password=`/`sslpassword=` parameters in both forms.
    /// For registering with the masker; empty for SQLite.
    pub fn secret_forms(&self) -> Vec<String> {
        let Kind::Postgres(url) = &self.kind else {
            return Vec::new();
        };
        let mut forms = Vec::new();
        if let Some(raw) = url.password() {
            forms.push(raw.to_string());
            forms.push(percent_decode_lossy(raw));
        }
        for pair in url.query().unwrap_or("").split('&') {
            if let Some((key, raw)) = pair.split_once('=')
                && is_secret_param(&percent_decode_lossy(key))
            {
                forms.push(raw.to_string());
                // Query strings also write a space as `+`.
                forms.push(percent_decode_lossy(&raw.replace('+', " ")));
            }
        }
        forms.retain(|f| !f.is_empty());
        forms.sort();
        forms.dedup();
        forms
    }

    /// The host as libpq reads it: a `host=` parameter (how a unix socket directory is
    /// usually given) wins over the authority; percent-decoded; IPv6 without brackets.
    pub fn host(&self) -> Option<String> {
        let Kind::Postgres(url) = &self.kind else {
            return None;
        };
        if let Some(host) = query_param(url, "host").filter(|h| !h.is_empty()) {
            return Some(host);
        }
        match url.host()? {
            url::Host::Domain("") => None,
            url::Host::Domain(d) => Some(percent_decode_lossy(d)),
            url::Host::Ipv4(ip) => Some(ip.to_string()),
            url::Host::Ipv6(ip) => Some(ip.to_string()),
        }
    }

    /// The port named by the URL (a `port=` parameter wins), or `None` when it names none
    /// and the driver uses 5432.
    pub fn port(&self) -> Option<u16> {
        let Kind::Postgres(url) = &self.kind else {
            return None;
        };
        query_param(url, "port")
            .and_then(|p| p.parse().ok())
            .or_else(|| url.port())
    }

    /// The database name (a `dbname=` parameter wins), or for SQLite the file path
    /// (`:memory:` for an in-memory database).
    pub fn database(&self) -> Option<String> {
        match &self.kind {
            Kind::Postgres(url) => query_param(url, "dbname")
                .or_else(|| Some(percent_decode_lossy(url.path().trim_start_matches('/'))))
                .filter(|d| !d.is_empty()),
            Kind::Sqlite(SqliteTarget::Memory) => Some(":memory:".to_string()),
            Kind::Sqlite(SqliteTarget::File(path)) => Some(path.display().to_string()),
        }
    }

    /// The SQLite database file; `None` for PostgreSQL and for `sqlite::memory:`.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match &self.kind {
            Kind::Sqlite(SqliteTarget::File(path)) => Some(path.clone()),
            _ => None,
        }
    }

    /// True for `sqlite::memory:`, which a backup cannot copy and which does not outlive
    /// the process.
    pub fn is_sqlite_memory(&self) -> bool {
        matches!(self.kind, Kind::Sqlite(SqliteTarget::Memory))
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = DbUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DatabaseUrl::parse(s)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

/// The scheme of `text`, when it has one we are willing to repeat: `sqlite:` in any form,
/// or a well-formed scheme followed by `://`. A colon alone is not enough, since a bare
/// `user:password` pair must not be echoed as a "scheme".
fn scheme_of(text: &str) -> Option<&str> {
    if let Some(scheme) = text
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("sqlite:"))
        .and_then(|p| p.get(..6))
    {
        return Some(scheme);
    }
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    well_formed.then_some(scheme)
}

fn parse_postgres(text: &str) -> Result<url::Url, DbUrlError> {
    // The authority is everything between `://` and the next `/`, `?` or `#`. An `@` after
    // it, or any `#` (libpq URLs have no fragment), means a password character cut the
    // authority short: `postgres://app:pa/ss@db/app` would otherwise parse, with `ss@db/app`
    // as the database name.
    let after = text.split_once("://").map_or("", |(_, rest)| rest);
    let authority_len = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(authority_len);
    if rest.contains(['@', '#']) {
        return Err(DbUrlError::UnencodedCredentials);
    }
    let url = url::Url::parse(text).map_err(|err| {
        // A comma in the authority is libpq's multi-host syntax, which the parser reports
        // as a bad port.
        let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if hosts.contains(',') {
            DbUrlError::SeveralHosts
        } else {
            DbUrlError::InvalidPostgres(err)
        }
    })?;
    // Without ports, `h1,h2` parses as one opaque host name that no resolver would find.
    if url.host_str().is_some_and(|h| h.contains(',')) {
        return Err(DbUrlError::SeveralHosts);
    }
    Ok(url)
}

fn parse_sqlite(text: &str) -> Result<SqliteTarget, DbUrlError> {
    // Same order as sqlx: `sqlite://` first, so that `sqlite:///abs` keeps its leading `/`.
    // `get` rather than indexing: the caller checked only that `sqlite:` (ASCII) leads.
    let rest = match (text.get(..9), text.get(9..)) {
        (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case("sqlite://") => rest,
        _ => text.get(7..).unwrap_or(""),
    };
    let path = rest.split('?').next().unwrap_or("");
    if path == ":memory:" {
        return Ok(SqliteTarget::Memory);
    }
    if path.is_empty() {
        return Err(DbUrlError::SqliteNoPath);
    }
    // Percent-decoding lets a file name contain `?` or `#`, as with sqlx.
    let decoded =
        String::from_utf8(percent_decode(path)).map_err(|_| DbUrlError::SqlitePathNotUtf8)?;
    Ok(SqliteTarget::File(PathBuf::from(decoded)))
}

fn is_secret_param(key: &str) -> bool {
    SECRET_PARAMS.iter().any(|s| key.eq_ignore_ascii_case(s))
}

/// The last value of a query parameter (libpq lets a later one override an earlier one).
fn query_param(url: &url::Url, key: &str) -> Option<String> {
    url.query_pairs()
        .filter(|(k, _)| k == key)
        .last()
        .map(|(_, v)| v.into_owned())
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn percent_decode_lossy(text: &str) -> String {
    String::from_utf8_lossy(&percent_decode(text)).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a URL parses to, in the terms the rest of startgate uses.
    #[derive(Debug, PartialEq)]
    struct Seen {
        backend: Backend,
        redacted: String,
        host: Option<String>,
        port: Option<u16>,
        database: Option<String>,
        password: Option<String>,
        sqlite_path: Option<PathBuf>,
    }

    fn check(input: &str, expected: Result<Seen, DbUrlError>) {
        let got = DatabaseUrl::parse(input).map(|u| {
            assert_eq!(u.expose(), input, "expose() returns the raw text");
            Seen {
                backend: u.backend(),
                redacted: u.redacted(),
                host: u.host(),
                port: u.port(),
                database: u.database(),
                password: u.password(),
                sqlite_path: u.sqlite_path(),
            }
        });
        assert_eq!(got, expected, "input {input:?}");
    }

    fn pg(redacted: &str, host: Option<&str>, port: Option<u16>, db: Option<&str>) -> Seen {
        Seen {
            backend: Backend::Postgres,
            redacted: redacted.into(),
            host: host.map(Into::into),
            port,
            database: db.map(Into::into),
            password: None,
            sqlite_path: None,
        }
    }

    fn with_password(seen: Seen, password: &str) -> Seen {
        Seen {
            password: Some(password.into()),
            ..seen
        }
    }

    fn sqlite(path: Option<&str>, database: &str, raw: &str) -> Seen {
        Seen {
            backend: Backend::Sqlite,
            redacted: raw.into(),
            host: None,
            port: None,
            database: Some(database.into()),
            password: None,
            sqlite_path: path.map(PathBuf::from),
        }
    }

    #[test]
    fn postgres_urls() {
        check(
            "postgres://app:hunter2@db:5432/app?sslmode=require",
            Ok(with_password(
                pg(
                    "postgres://app@db:5432/app?sslmode=require",
                    Some("db"),
                    Some(5432),
                    Some("app"),
                ),
                "hunter2",
            )),
        );
        check(
            "postgresql://app@db/app",
            Ok(pg("postgresql://app@db/app", Some("db"), None, Some("app"))),
        );
        check(
            "postgres://app:p%40ss@db/app",
            Ok(with_password(
                pg("postgres://app@db/app", Some("db"), None, Some("app")),
                "p@ss",
            )),
        );
        check(
            "postgres://:onlypw@db/app",
            Ok(with_password(
                pg("postgres://db/app", Some("db"), None, Some("app")),
                "onlypw",
            )),
        );
        check(
            "postgres://app@[::1]:6432/app",
            Ok(pg(
                "postgres://app@[::1]:6432/app",
                Some("::1"),
                Some(6432),
                Some("app"),
            )),
        );
        check(
            "postgres:///app?host=/var/run/postgresql",
            Ok(pg(
                "postgres:///app?host=/var/run/postgresql",
                Some("/var/run/postgresql"),
                None,
                Some("app"),
            )),
        );
        check(
            "postgres://%2Fvar%2Frun%2Fpg/app",
            Ok(pg(
                "postgres://%2Fvar%2Frun%2Fpg/app",
                Some("/var/run/pg"),
                None,
                Some("app"),
            )),
        );
        check(
            "postgres://app@db/?dbname=other&port=6543",
            Ok(pg(
                "postgres://app@db/?dbname=other&port=6543",
                Some("db"),
                Some(6543),
                Some("other"),
            )),
        );
        check(
            "postgres://db",
            Ok(pg("postgres://db", Some("db"), None, None)),
        );
    }

    #[test]
    fn password_query_parameters_are_redacted() {
        check(
            "postgres://app@db/app?password=qwerty9",
            Ok(with_password(
                pg("postgres://app@db/app", Some("db"), None, Some("app")),
                "qwerty9",
            )),
        );
        check(
            "postgres://app@db/app?sslmode=verify-full&password=qwerty9&sslpassword=keypw7&application_name=x",
            Ok(with_password(
                pg(
                    "postgres://app@db/app?sslmode=verify-full&application_name=x",
                    Some("db"),
                    None,
                    Some("app"),
                ),
                "qwerty9",
            )),
        );
    }

    #[test]
    fn sqlite_urls() {
        check(
            "sqlite:///abs/path/app.db",
            Ok(sqlite(
                Some("/abs/path/app.db"),
                "/abs/path/app.db",
                "sqlite:///abs/path/app.db",
            )),
        );
        check(
            "sqlite://data/app.db",
            Ok(sqlite(
                Some("data/app.db"),
                "data/app.db",
                "sqlite://data/app.db",
            )),
        );
        check(
            "sqlite:data/app.db?mode=rwc",
            Ok(sqlite(
                Some("data/app.db"),
                "data/app.db",
                "sqlite:data/app.db?mode=rwc",
            )),
        );
        check(
            "sqlite:/abs.db",
            Ok(sqlite(Some("/abs.db"), "/abs.db", "sqlite:/abs.db")),
        );
        check(
            "sqlite://my%3Fdb.sqlite",
            Ok(sqlite(
                Some("my?db.sqlite"),
                "my?db.sqlite",
                "sqlite://my%3Fdb.sqlite",
            )),
        );
        check(
            "sqlite::memory:",
            Ok(sqlite(None, ":memory:", "sqlite::memory:")),
        );
        check(
            "SQLite://:memory:",
            Ok(sqlite(None, ":memory:", "SQLite://:memory:")),
        );
        assert!(
            DatabaseUrl::parse("sqlite::memory:")
                .unwrap()
                .is_sqlite_memory()
        );
    }

    #[test]
    fn refused_urls() {
        check("", Err(DbUrlError::Empty));
        check("  ", Err(DbUrlError::Empty));
        check("sqlite:", Err(DbUrlError::SqliteNoPath));
        check("sqlite://", Err(DbUrlError::SqliteNoPath));
        check("sqlite://?mode=rwc", Err(DbUrlError::SqliteNoPath));
        check("sqlite://bad%FF", Err(DbUrlError::SqlitePathNotUtf8));
        check(
            "mysql://app:pw@db/app",
            Err(DbUrlError::UnsupportedScheme {
                scheme: "mysql".into(),
            }),
        );
        check("db.example.com/app", Err(DbUrlError::NotAUrl));
        // Multi-byte text near the scheme must not split a character.
        check("sqlit€:x", Err(DbUrlError::NotAUrl));
        check("ééééé://x", Err(DbUrlError::NotAUrl));
        check("sqlite:€", Ok(sqlite(Some("€"), "€", "sqlite:€")));
        check("app:hunter2", Err(DbUrlError::NotAUrl));
        check(
            "postgres://app:pw@db:99999/app",
            Err(DbUrlError::InvalidPostgres(url::ParseError::InvalidPort)),
        );
        check(
            "postgres://app:pw@h1:5432,h2:5432/app",
            Err(DbUrlError::SeveralHosts),
        );
        check("postgres://app:pw@h1,h2/app", Err(DbUrlError::SeveralHosts));
        check(
            "postgres://app:12/34@db/app",
            Err(DbUrlError::UnencodedCredentials),
        );
        check(
            "postgres://app:12?34@db/app",
            Err(DbUrlError::UnencodedCredentials),
        );
        check(
            "postgres://app:12#34@db/app",
            Err(DbUrlError::UnencodedCredentials),
        );
        check("postgres://db/app#x", Err(DbUrlError::UnencodedCredentials));
        check(
            "postgres://app:pa%2Fs%23s@db/app",
            Ok(with_password(
                pg("postgres://app@db/app", Some("db"), None, Some("app")),
                "pa/s#s",
            )),
        );
    }

    #[test]
    fn no_password_in_display_debug_or_errors() {
        let secret = "Tr0ub4dor";
        for input in [
            format!("postgres://app:{secret}@db:5432/app?sslmode=require"),
            format!("postgres://app@db/app?password={secret}"),
            format!("postgresql://app:{secret}@[::1]/app"),
        ] {
            let url = DatabaseUrl::parse(&input).unwrap();
            for text in [
                url.to_string(),
                format!("{url:?}"),
                format!("{url:#?}"),
                url.redacted(),
            ] {
                assert!(!text.contains(secret), "{text:?} leaks the password");
            }
            assert_eq!(url.password().as_deref(), Some(secret));
        }
        for bad in [
            format!("postgres://app:{secret}@db:99999/app"),
            format!("postgres://app:1/{secret}@db/app"),
            format!("postgres://app:1#{secret}@db/app"),
            format!("postgres://app:1?{secret}@db/app"),
            format!("postgres://app:{secret}/x@db/app"),
            format!("postgres://app:{secret}@a:1,b:2/app"),
            format!("mysql://app:{secret}@db/app"),
            format!("app:{secret}"),
            format!("{secret}:{secret}@db"),
        ] {
            let err = DatabaseUrl::parse(&bad).unwrap_err();
            let mut text = format!("{err} {err:?}");
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                text.push_str(&s.to_string());
                source = s.source();
            }
            assert!(!text.contains(secret), "{text:?} leaks the password");
        }
    }

    #[test]
    fn secret_forms_cover_encoded_and_decoded_passwords() {
        let check_forms = |input: &str, expected: &[&str]| {
            let url = DatabaseUrl::parse(input).unwrap();
            assert_eq!(url.secret_forms(), expected, "{input:?}");
        };
        check_forms("postgres://app:p%40ss@db/app", &["p%40ss", "p@ss"]);
        check_forms("postgres://app:plain@db/app", &["plain"]);
        check_forms(
            "postgres://app@db/app?sslpassword=k%2By+z&password=q",
            &["k%2By+z", "k+y z", "q"],
        );
        check_forms("postgres://app@db/app", &[]);
        check_forms("sqlite://app.db", &[]);
    }

    #[test]
    fn error_messages_list_the_accepted_forms() {
        let err = DatabaseUrl::parse("mysql://db/app")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("unsupported scheme \"mysql\""), "{err}");
        assert!(err.contains("sqlite::memory:"), "{err}");
        assert!(err.contains("postgres://"), "{err}");
    }
}
