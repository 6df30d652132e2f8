//! [`Scheme`]: which backend a URL names, before anything is opened.

use std::path::PathBuf;

use crate::error::ConnectError;
use crate::redact;

/// The URL forms this build understands, for error messages.
pub const SUPPORTED: &str = "this build supports the embedded SQLite broker: \
     `sqlite://PATH` or `sqlite:PATH`, optionally with `?synchronous=normal|full` \
     (e.g. sqlite://./sealq.db), and Redis: `redis://[user:password@]host[:port][/db]`, \
     `rediss://…[?ca=PEM&cert=PEM&key=PEM]`, `redis+cluster://host:port,host:port` and \
     `redis+sentinel://host:port,host:port/MASTER` (all take `?prefix=P`), and Postgres: \
     `postgres://[user[:password]@]host[:port]/DATABASE` or `postgresql://…` \
     (`?sslmode=disable|require|verify-full&sslrootcert=PEM`, `&poll_only=true` behind PgBouncer)";

/// What a broker URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// The embedded SQLite broker, with the database file's path.
    Sqlite {
        /// The file.
        path: PathBuf,
    },
    /// A Redis server, cluster or Sentinel-managed master.
    Redis,
    /// A PostgreSQL database.
    Postgres,
}

impl Scheme {
    /// Parse a URL; unknown or not-yet-supported schemes are
    /// [`ConnectError::Usage`] errors naming the supported ones.
    pub fn parse(url: &str) -> Result<Self, ConnectError> {
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(ConnectError::Usage(format!(
                "broker URL `{}` has no scheme; {SUPPORTED}",
                redact(url)
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let rest = rest.strip_prefix("//").unwrap_or(rest);
                let path = rest.split_once('?').map_or(rest, |(p, _)| p);
                if path.is_empty() {
                    return Err(ConnectError::Usage(format!(
                        "broker URL `{}` names no file; {SUPPORTED}",
                        redact(url)
                    )));
                }
                Ok(Scheme::Sqlite {
                    path: PathBuf::from(path),
                })
            }
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" | "redis+sentinel"
            | "rediss+sentinel" => Ok(Scheme::Redis),
            "postgres" | "postgresql" => Ok(Scheme::Postgres),
            other => Err(ConnectError::Usage(format!(
                "unknown broker scheme `{other}`; {SUPPORTED}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_forms() {
        let p = |u: &str| match Scheme::parse(u) {
            Ok(Scheme::Sqlite { path }) => path,
            other => panic!("{u}: parsed as {other:?}"),
        };
        assert_eq!(p("sqlite://./sealq.db"), PathBuf::from("./sealq.db"));
        assert_eq!(
            p("sqlite:///tmp/q.db?synchronous=normal"),
            PathBuf::from("/tmp/q.db")
        );
        assert_eq!(p("sqlite:q.db"), PathBuf::from("q.db"));
    }

    #[test]
    fn other_schemes_explain_without_the_password() {
        let e = Scheme::parse("mongodb://user:secret@host:27017").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("unknown broker scheme"), "{text}");
        assert!(text.contains("sqlite://"), "{text}");
        assert!(text.contains("postgres://"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(e.is_usage());
        let e = Scheme::parse("mysql://x").unwrap_err();
        assert!(e.to_string().contains("unknown broker scheme `mysql`"));
        let e = Scheme::parse("sealq.db").unwrap_err();
        assert!(e.to_string().contains("has no scheme"), "{e}");
        assert!(Scheme::parse("sqlite://").is_err());
        let e = Scheme::parse("u:p4ss@host").unwrap_err();
        assert!(!e.to_string().contains("p4ss"), "{e}");
    }

    #[test]
    fn postgres_forms() {
        for u in [
            "postgres://u:p@h:5432/db",
            "postgresql://h/db?sslmode=verify-full&sslrootcert=/ca.pem",
            "POSTGRES://h/db",
        ] {
            assert_eq!(Scheme::parse(u).unwrap(), Scheme::Postgres, "{u}");
        }
    }

    #[test]
    fn redis_forms() {
        for u in [
            "redis://u:p@h:6379/1",
            "rediss://h:6380?ca=/ca.pem",
            "redis+cluster://a:1,b:2",
            "redis+sentinel://s1:26379,s2:26379/mymaster",
        ] {
            assert_eq!(Scheme::parse(u).unwrap(), Scheme::Redis, "{u}");
        }
    }
}
