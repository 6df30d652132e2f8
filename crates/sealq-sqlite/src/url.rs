//! `sqlite://` URLs: the one-string form of a path plus options.
//!
//! Accepted forms:
//! - `sqlite:///var/lib/app/queue.db` (absolute path)
//! - `sqlite://queue.db`, `sqlite:queue.db`, `sqlite:./data/queue.db` (relative)
//! - query options: `synchronous=full|normal`, `busy_timeout_ms=N`,
//!   `watch_interval_ms=N`, `page_size=N` (bytes, for a database the open
//!   creates), for example `sqlite://queue.db?synchronous=normal`.
//!
//! `%XX` escapes in the path are decoded.

use std::path::PathBuf;
use std::time::Duration;

use sealq::{BrokerError, BrokerErrorKind};

use crate::options::{SqliteOptions, Synchronous};

fn config(msg: String) -> BrokerError {
    BrokerError::new(BrokerErrorKind::Config, msg)
}

/// Split `url` into a path and `base` updated with the URL's options.
pub(crate) fn parse(
    url: &str,
    mut base: SqliteOptions,
) -> Result<(PathBuf, SqliteOptions), BrokerError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            config(format!(
                "`{url}` is not an SQLite URL; write sqlite:///absolute/path.db or sqlite://relative.db"
            ))
        })?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(config(format!(
            "`{url}` names no file; write sqlite:///absolute/path.db or sqlite://relative.db"
        )));
    }
    let path = PathBuf::from(
        percent_decode(path)
            .ok_or_else(|| config(format!("`{url}` has a malformed %-escape in its path")))?,
    );
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let ms = || {
            value
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| {
                    config(format!(
                        "`{key}={value}` in `{url}`: expected a number of milliseconds"
                    ))
                })
        };
        match key {
            "synchronous" => {
                base.synchronous = match value.to_ascii_lowercase().as_str() {
                    "full" => Synchronous::Full,
                    "normal" => Synchronous::Normal,
                    _ => {
                        return Err(config(format!(
                            "`synchronous={value}` in `{url}`: use `full` (default) or `normal`"
                        )));
                    }
                }
            }
            "busy_timeout_ms" => base.busy_timeout = ms()?,
            "watch_interval_ms" => base.watch_interval = ms()?,
            "page_size" => {
                base.page_size = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| crate::schema::valid_page_size(*n))
                    .ok_or_else(|| {
                        config(format!(
                            "`page_size={value}` in `{url}`: expected a power of two from 512 to 65536 (bytes)"
                        ))
                    })?;
            }
            _ => {
                return Err(config(format!(
                    "unknown option `{key}` in `{url}`; known: synchronous, busy_timeout_ms, watch_interval_ms, page_size"
                )));
            }
        }
    }
    Ok((path, base))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(url: &str) -> Result<(PathBuf, SqliteOptions), BrokerError> {
        parse(url, SqliteOptions::default())
    }

    #[test]
    fn forms() {
        assert_eq!(
            p("sqlite:///var/q.db").unwrap().0,
            PathBuf::from("/var/q.db")
        );
        assert_eq!(p("sqlite://q.db").unwrap().0, PathBuf::from("q.db"));
        assert_eq!(p("sqlite:q.db").unwrap().0, PathBuf::from("q.db"));
        assert_eq!(p("sqlite:./d/q.db").unwrap().0, PathBuf::from("./d/q.db"));
        assert_eq!(p("sqlite:///a%20b.db").unwrap().0, PathBuf::from("/a b.db"));
    }

    #[test]
    fn options() {
        let (_, o) = p("sqlite://q.db?synchronous=normal&busy_timeout_ms=1500").unwrap();
        assert_eq!(o.synchronous, Synchronous::Normal);
        assert_eq!(o.busy_timeout, Duration::from_millis(1500));
        let (_, o) = p("sqlite:q.db?synchronous=FULL").unwrap();
        assert_eq!(o.synchronous, Synchronous::Full);
        assert_eq!(o.page_size, 8192, "the default");
        let (_, o) = p("sqlite:q.db?page_size=4096").unwrap();
        assert_eq!(o.page_size, 4096);
    }

    #[test]
    fn errors() {
        for bad in [
            "postgres://x",
            "sqlite://",
            "sqlite:q.db?synchronous=off",
            "sqlite:q.db?nope=1",
            "sqlite:q.db?busy_timeout_ms=x",
            "sqlite:q.db?page_size=5000",
            "sqlite:q.db?page_size=256",
            "sqlite:q.db?page_size=131072",
            "sqlite:q.db?page_size=",
            "sqlite:%zz",
        ] {
            let e = p(bad).unwrap_err();
            assert_eq!(e.kind, BrokerErrorKind::Config, "{bad}");
        }
    }
}
