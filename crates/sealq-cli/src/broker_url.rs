//! Broker URLs: which backend a URL names, and opening it as `Arc<dyn Broker>`.

use std::path::PathBuf;
use std::sync::Arc;

use sealq::Broker;

use crate::error::{CliError, CliResult, context, msg};

/// The schemes this build understands, for error messages.
const SUPPORTED: &str = "this build supports the embedded SQLite broker: \
     `sqlite://PATH` or `sqlite:PATH`, optionally with `?synchronous=normal|full` \
     (e.g. sqlite://./sealq.db), and Redis: `redis://[user:password@]host[:port][/db]`, \
     `rediss://…[?ca=PEM&cert=PEM&key=PEM]`, `redis+cluster://host:port,host:port` and \
     `redis+sentinel://host:port,host:port/MASTER` (all take `?prefix=P`)";

/// What a broker URL names, before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BrokerUrl {
    /// The embedded SQLite broker, with the database file's path.
    Sqlite {
        /// The file.
        path: PathBuf,
    },
    /// A Redis server, cluster or Sentinel-managed master (see `sealq_redis`).
    Redis,
}

impl BrokerUrl {
    /// Parse a URL; unknown or not-yet-supported schemes are usage errors
    /// naming the supported ones.
    pub(crate) fn parse(url: &str) -> CliResult<Self> {
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(CliError::usage(msg(format!(
                "broker URL `{}` has no scheme; {SUPPORTED}",
                redact(url)
            ))));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let rest = rest.strip_prefix("//").unwrap_or(rest);
                let path = rest.split_once('?').map_or(rest, |(p, _)| p);
                if path.is_empty() {
                    return Err(CliError::usage(msg(format!(
                        "broker URL `{url}` names no file; {SUPPORTED}"
                    ))));
                }
                Ok(BrokerUrl::Sqlite {
                    path: PathBuf::from(path),
                })
            }
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" | "redis+sentinel"
            | "rediss+sentinel" => Ok(BrokerUrl::Redis),
            "postgres" | "postgresql" => Err(CliError::usage(msg(format!(
                "the {scheme} broker is not available in this build yet (Postgres \
                     support is coming); {SUPPORTED}"
            )))),
            other => Err(CliError::usage(msg(format!(
                "unknown broker scheme `{other}`; {SUPPORTED}"
            )))),
        }
    }
}

/// An opened broker.
#[derive(Debug, Clone)]
pub(crate) struct Opened {
    /// The broker.
    pub(crate) broker: Arc<dyn Broker>,
    /// The SQLite database file, for the SQLite broker.
    pub(crate) sqlite_path: Option<PathBuf>,
    /// The Redis broker, for its audit streams.
    pub(crate) redis: Option<sealq_redis::RedisBroker>,
}

impl Opened {
    /// Where this broker's audit log lives.
    pub(crate) fn audit_home(&self) -> AuditHome<'_> {
        AuditHome::of(self.sqlite_path.as_deref(), self.redis.as_ref())
    }
}

/// Where a broker keeps its audit log (see `cmd/audit.rs`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum AuditHome<'a> {
    /// Nowhere known.
    Nowhere,
    /// Beside (or in) the SQLite database file.
    Sqlite(&'a std::path::Path),
    /// In the Redis broker's audit streams.
    Redis(&'a sealq_redis::RedisBroker),
}

impl<'a> AuditHome<'a> {
    /// From what an [`Opened`] holds.
    pub(crate) fn of(
        sqlite_path: Option<&'a std::path::Path>,
        redis: Option<&'a sealq_redis::RedisBroker>,
    ) -> Self {
        match (sqlite_path, redis) {
            (Some(p), _) => AuditHome::Sqlite(p),
            (None, Some(r)) => AuditHome::Redis(r),
            (None, None) => AuditHome::Nowhere,
        }
    }
}

/// Open the broker a URL names.
pub(crate) fn open(url: &str) -> CliResult<Opened> {
    match BrokerUrl::parse(url)? {
        BrokerUrl::Sqlite { path } => {
            let broker = sealq_sqlite::SqliteBroker::open_url(url).map_err(|e| {
                let kind_config = e.kind == sealq::BrokerErrorKind::Config;
                let wrapped = context(format!("cannot open broker {}", redact(url)), e);
                if kind_config {
                    CliError::usage(wrapped)
                } else {
                    CliError::runtime(wrapped)
                }
            })?;
            Ok(Opened {
                broker: Arc::new(broker),
                sqlite_path: Some(path),
                redis: None,
            })
        }
        BrokerUrl::Redis => {
            let redis = open_redis(url, true)?;
            Ok(Opened {
                broker: Arc::new(redis.clone()),
                sqlite_path: None,
                redis: Some(redis),
            })
        }
    }
}

/// Connect to the Redis broker a URL names; with `check`, refuse to run
/// unless the loaded functions library is this build's version.
pub(crate) fn open_redis(url: &str, check: bool) -> CliResult<sealq_redis::RedisBroker> {
    let opts = sealq_redis::RedisOptions::default();
    // Commands open brokers synchronously from inside the (multi-threaded) runtime.
    let result = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            if check {
                sealq_redis::RedisBroker::connect_with(url, opts).await
            } else {
                sealq_redis::RedisBroker::connect_unchecked(url, opts).await
            }
        })
    });
    result.map_err(|e| {
        let usage = matches!(
            e.kind,
            sealq::BrokerErrorKind::Config | sealq::BrokerErrorKind::PermissionDenied
        );
        let wrapped = context(format!("cannot open broker {}", redact(url)), e);
        if usage {
            CliError::usage(wrapped)
        } else {
            CliError::runtime(wrapped)
        }
    })
}

/// A URL with any `user:password@` part removed, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_forms() {
        let p = |u: &str| match BrokerUrl::parse(u) {
            Ok(BrokerUrl::Sqlite { path }) => path,
            Ok(other) => panic!("{u}: parsed as {other:?}"),
            Err(e) => panic!("{u}: {}", e.render()),
        };
        assert_eq!(p("sqlite://./sealq.db"), PathBuf::from("./sealq.db"));
        assert_eq!(
            p("sqlite:///tmp/q.db?synchronous=normal"),
            PathBuf::from("/tmp/q.db")
        );
        assert_eq!(p("sqlite:q.db"), PathBuf::from("q.db"));
    }

    #[test]
    fn other_schemes_explain() {
        let e = BrokerUrl::parse("postgres://user:secret@host:5432").unwrap_err();
        let text = e.render();
        assert!(text.contains("coming"), "{text}");
        assert!(text.contains("sqlite://"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        let e = BrokerUrl::parse("mysql://x").unwrap_err();
        assert!(e.render().contains("unknown broker scheme `mysql`"));
        assert!(BrokerUrl::parse("sealq.db").is_err());
        assert!(BrokerUrl::parse("sqlite://").is_err());
        assert_eq!(e.exit_code(), std::process::ExitCode::from(2));
    }

    #[test]
    fn redis_forms() {
        for u in [
            "redis://u:p@h:6379/1",
            "rediss://h:6380?ca=/ca.pem",
            "redis+cluster://a:1,b:2",
            "redis+sentinel://s1:26379,s2:26379/mymaster",
        ] {
            assert_eq!(BrokerUrl::parse(u).unwrap(), BrokerUrl::Redis, "{u}");
        }
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact("redis://u:p@h:1"), "redis://…@h:1");
        assert_eq!(redact("sqlite://./a.db"), "sqlite://./a.db");
    }
}
