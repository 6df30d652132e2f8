//! Broker URLs: `redis://`, `rediss://`, `redis+cluster://`, `redis+sentinel://`.
//!
//! ```text
//! redis://[user:password@]host[:port][/db][?prefix=P]
//! rediss://[user:password@]host[:port][/db][?ca=PEM&cert=PEM&key=PEM&prefix=P]
//! redis+cluster://[user:password@]host:port[,host:port…][?…]   (rediss+cluster:// with TLS)
//! redis+sentinel://[user:password@]host:port[,host:port…]/MASTER[/db][?…]
//!                                                              (rediss+sentinel:// with TLS)
//! ```
//!
//! Query parameters: `prefix` (key prefix, default `sealq`), `ca` (PEM file of
//! the CA that signed the server certificate), `cert` and `key` (PEM client
//! certificate and key for mTLS), `sentinel_password` (for Sentinels that
//! require a password of their own), `spin_us` (how long a lone call
//! busy-waits for its reply, `RedisOptions::spin_wait`; 0 turns it off).

use sealq::{BrokerError, BrokerErrorKind};

/// What a URL names.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(Debug))]
pub(crate) enum Topology {
    /// One server: the URL handed to the `redis` crate.
    Standalone(String),
    /// A cluster: one URL per seed node.
    Cluster(Vec<String>),
    /// Sentinels (URLs) watching the master named `master`.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        db: i64,
    },
}

/// A parsed broker URL.
#[derive(Clone)]
pub(crate) struct Parsed {
    pub(crate) topology: Topology,
    pub(crate) tls: bool,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) sentinel_password: Option<String>,
    pub(crate) prefix: Option<String>,
    /// `spin_us`: [`crate::RedisOptions::spin_wait`] in µs.
    pub(crate) spin_us: Option<u64>,
    pub(crate) ca: Option<String>,
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    /// The URL without credentials, for messages.
    pub(crate) redacted: String,
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl Parsed {
    /// The URL's `spin_us`, or `default` when it has none.
    pub(crate) fn spin_wait(&self, default: std::time::Duration) -> std::time::Duration {
        self.spin_us
            .map_or(default, std::time::Duration::from_micros)
    }
}

/// `url` with its password masked, for messages: [`sealq::store::redact_url`],
/// the one redaction every backend and front door uses.
pub fn redact(url: &str) -> String {
    sealq::store::redact_url(url)
}

fn invalid_url(url: &str, why: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Config,
        format!(
            "invalid Redis broker URL `{}`: {why}; expected redis://[user:password@]host[:port][/db], \
             rediss://…[?ca=PATH&cert=PATH&key=PATH], redis+cluster://host:port,host:port or \
             redis+sentinel://host:port,host:port/MASTER",
            redact(url)
        ),
    )
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pct_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parse a broker URL.
pub(crate) fn parse(url: &str) -> Result<Parsed, BrokerError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid_url(url, "no scheme"));
    };
    let scheme = scheme.to_ascii_lowercase();
    let (tls, flavour) = match scheme.as_str() {
        "redis" => (false, ""),
        "rediss" => (true, ""),
        "redis+cluster" => (false, "cluster"),
        "rediss+cluster" => (true, "cluster"),
        "redis+sentinel" => (false, "sentinel"),
        "rediss+sentinel" => (true, "sentinel"),
        other => return Err(invalid_url(url, format!("unknown scheme `{other}`"))),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pw)) => (
                (!user.is_empty()).then(|| pct_decode(user)),
                Some(pct_decode(pw)),
            ),
            None => ((!u.is_empty()).then(|| pct_decode(u)), None),
        },
    };
    let hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
    if hosts.is_empty() {
        return Err(invalid_url(url, "no host"));
    }
    let mut parsed = Parsed {
        topology: Topology::Standalone(String::new()),
        tls,
        username,
        password,
        sentinel_password: None,
        prefix: None,
        spin_us: None,
        ca: None,
        cert: None,
        key: None,
        redacted: redact(url),
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = pct_decode(v);
        match k {
            "prefix" => parsed.prefix = Some(v),
            "spin_us" => {
                parsed.spin_us = Some(v.parse().map_err(|_| {
                    invalid_url(
                        url,
                        format!("`spin_us` must be a whole number of microseconds, not `{v}`"),
                    )
                })?)
            }
            "ca" => parsed.ca = Some(v),
            "cert" => parsed.cert = Some(v),
            "key" => parsed.key = Some(v),
            "sentinel_password" => parsed.sentinel_password = Some(v),
            other => return Err(invalid_url(url, format!("unknown parameter `{other}`"))),
        }
    }
    if !tls && (parsed.ca.is_some() || parsed.cert.is_some() || parsed.key.is_some()) {
        return Err(invalid_url(
            url,
            "`ca`, `cert` and `key` need TLS: use rediss://",
        ));
    }
    if parsed.cert.is_some() != parsed.key.is_some() {
        return Err(invalid_url(url, "`cert` and `key` go together"));
    }
    let node = |host: &str, db: &str| -> String {
        let s = if tls { "rediss" } else { "redis" };
        let auth = match (&parsed.username, &parsed.password) {
            (Some(u), Some(p)) => format!("{}:{}@", pct_encode(u), pct_encode(p)),
            (None, Some(p)) => format!(":{}@", pct_encode(p)),
            (Some(u), None) => format!("{}@", pct_encode(u)),
            (None, None) => String::new(),
        };
        let host = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:6379")
        };
        if db.is_empty() {
            format!("{s}://{auth}{host}")
        } else {
            format!("{s}://{auth}{host}/{db}")
        }
    };
    parsed.topology = match flavour {
        "" => {
            if hosts.len() != 1 {
                return Err(invalid_url(
                    url,
                    "several hosts: use redis+cluster:// or redis+sentinel://",
                ));
            }
            if !path.is_empty() && path.parse::<i64>().is_err() {
                return Err(invalid_url(url, "the path must be a database number"));
            }
            Topology::Standalone(node(hosts[0], path))
        }
        "cluster" => {
            if !path.is_empty() {
                return Err(invalid_url(url, "a cluster has no database number"));
            }
            Topology::Cluster(hosts.iter().map(|h| node(h, "")).collect())
        }
        _ => {
            let mut parts = path.split('/').filter(|p| !p.is_empty());
            let Some(master) = parts.next() else {
                return Err(invalid_url(
                    url,
                    "name the master: redis+sentinel://host:port/MASTER",
                ));
            };
            let db = match parts.next() {
                Some(d) => d
                    .parse()
                    .map_err(|_| invalid_url(url, "the database must be a number"))?,
                None => 0,
            };
            let sentinels = hosts
                .iter()
                .map(|h| {
                    let s = if tls { "rediss" } else { "redis" };
                    let host = if h.contains(':') {
                        h.to_string()
                    } else {
                        format!("{h}:26379")
                    };
                    match &parsed.sentinel_password {
                        Some(p) => format!("{s}://:{}@{host}", pct_encode(p)),
                        None => format!("{s}://{host}"),
                    }
                })
                .collect();
            Topology::Sentinel {
                sentinels,
                master: master.to_owned(),
                db,
            }
        }
    };
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let p = parse("redis://u:p%40ss@h:7000/2?prefix=x").unwrap();
        assert_eq!(
            p.topology,
            Topology::Standalone("redis://u:p%40ss@h:7000/2".into())
        );
        assert_eq!(p.password.as_deref(), Some("p@ss"));
        assert_eq!(p.prefix.as_deref(), Some("x"));
        assert_eq!(p.spin_us, None);
        assert!(!p.redacted.contains("p%40ss"));
        let p = parse("redis://h?spin_us=0&prefix=y").unwrap();
        assert_eq!(p.spin_us, Some(0));
        assert_eq!(p.prefix.as_deref(), Some("y"));
        let e = parse("redis://:secret@h?spin_us=fast").unwrap_err();
        assert!(
            e.message.contains("`spin_us` must be a whole number"),
            "{e}"
        );
        assert!(!e.message.contains("secret"), "{e}");
        let p = parse("rediss://h?ca=/tmp/ca.pem").unwrap();
        assert!(p.tls);
        assert_eq!(p.ca.as_deref(), Some("/tmp/ca.pem"));
        let p = parse("redis+cluster://a:1,b:2").unwrap();
        assert_eq!(
            p.topology,
            Topology::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        let p = parse("redis+sentinel://:pw@s1:26379,s2/mymaster/1").unwrap();
        assert_eq!(
            p.topology,
            Topology::Sentinel {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26379".into()],
                master: "mymaster".into(),
                db: 1
            }
        );
        assert!(parse("redis://h?ca=x").is_err());
        assert!(parse("redis+sentinel://h").is_err());
        assert!(parse("mysql://h").is_err());
        let e = parse("redis://u:secret@h?bogus=1").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn redacts() {
        assert_eq!(redact("redis://u:p@h:1"), "redis://u:***@h:1");
        assert_eq!(redact("redis://:p@h:1"), "redis://:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
