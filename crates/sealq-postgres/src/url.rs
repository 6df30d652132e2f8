//! Broker URLs: `postgres://` / `postgresql://` with the parameters sealq
//! reads itself (TLS, wake-ups, pool), the rest handed to `tokio-postgres`.
//!
//! TLS (`sslmode`) is sealq's to decide, because `tokio-postgres` knows only
//! `disable`, `prefer` and `require`, and a mode that could fall back to
//! plaintext must be refused, never downgraded:
//! - `disable` (the default when absent): no TLS.
//! - `require`: TLS, the server's certificate not checked (libpq's meaning:
//!   encryption against a passive eavesdropper, no authentication).
//! - `verify-full`: TLS, the chain checked against the CA in `sslrootcert`
//!   (default `~/.postgresql/root.crt`, as libpq) and the host name checked
//!   against the certificate.
//! - `allow`, `prefer`, `verify-ca` and anything else are refused with an
//!   error saying what to use instead.
//!
//! `sslcert` and `sslkey` (PEM files) present a client certificate;
//! `channel_binding` (`disable|prefer|require`) is passed to the SCRAM
//! exchange (`tokio-postgres` with `tls-server-end-point` from
//! `tokio-postgres-rustls`): `require` refuses a server that does not use
//! SCRAM-SHA-256-PLUS, and is refused here without TLS. sealq's own parameters: `poll_only=true` (no LISTEN, for
//! PgBouncer in transaction mode), `poll_interval_ms=N`, `pool_size=N`.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sealq::{BrokerError, BrokerErrorKind};
use tokio_postgres::config::SslMode as PgSslMode;

/// How the connection is encrypted (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS without checking the server's certificate.
    Require,
    /// TLS, chain and host name checked.
    VerifyFull,
}

impl SslMode {
    /// The URL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A parsed broker URL.
#[derive(Clone)]
pub(crate) struct Parsed {
    /// What `tokio-postgres` connects with.
    pub(crate) config: tokio_postgres::Config,
    /// The TLS connector, if any.
    pub(crate) tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The TLS mode asked for.
    pub(crate) sslmode: SslMode,
    /// `poll_only=true`.
    pub(crate) poll_only: Option<bool>,
    /// `poll_interval_ms=N`.
    pub(crate) poll_interval: Option<Duration>,
    /// `pool_size=N`.
    pub(crate) pool_size: Option<usize>,
}

fn bad(url: &str, msg: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Config,
        format!("broker URL `{}`: {msg}", sealq::store::redact_url(url)),
    )
}

/// Whether `url` names a Postgres broker.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Parse a `postgres://` URL.
pub(crate) fn parse(url: &str) -> Result<Parsed, BrokerError> {
    if !is_postgres_url(url) {
        return Err(bad(url, "expected postgres:// or postgresql://"));
    }
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut sslmode = None;
    let mut channel_binding = None;
    let (mut rootcert, mut cert, mut key) = (None, None, None);
    let (mut poll_only, mut poll_interval, mut pool_size) = (None, None, None);
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = percent_decode(v);
        match k {
            "sslmode" => {
                sslmode = Some(match v.as_str() {
                    "disable" => SslMode::Disable,
                    "require" => SslMode::Require,
                    "verify-full" => SslMode::VerifyFull,
                    "verify-ca" => {
                        return Err(bad(
                            url,
                            "sslmode=verify-ca is not supported (it checks the chain but not \
                             the host name); use sslmode=verify-full",
                        ));
                    }
                    "allow" | "prefer" => {
                        return Err(bad(
                            url,
                            format!(
                                "sslmode={v} may fall back to an unencrypted connection, which \
                                 sealq refuses; use sslmode=verify-full (or require, or disable \
                                 to say plaintext is intended)"
                            ),
                        ));
                    }
                    other => {
                        return Err(bad(
                            url,
                            format!(
                                "unknown sslmode `{other}`; use disable, require or verify-full"
                            ),
                        ));
                    }
                })
            }
            "channel_binding" => {
                match v.as_str() {
                    "disable" | "prefer" | "require" => {}
                    other => {
                        return Err(bad(
                            url,
                            format!(
                                "unknown channel_binding `{other}`; use require (SCRAM-SHA-256-PLUS \
                                 over TLS, or no connection), prefer or disable"
                            ),
                        ));
                    }
                }
                channel_binding = Some(v);
                rest.push(kv);
            }
            "sslrootcert" => rootcert = Some(PathBuf::from(v)),
            "sslcert" => cert = Some(PathBuf::from(v)),
            "sslkey" => key = Some(PathBuf::from(v)),
            "sslpassword" | "sslcrl" | "sslcompression" | "sslsni" | "requiressl" => {
                return Err(bad(url, format!("`{k}` is not supported by sealq")));
            }
            "poll_only" => {
                poll_only = Some(match v.as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(bad(url, "poll_only must be true or false")),
                })
            }
            "poll_interval_ms" => {
                let ms: u64 = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(url, "poll_interval_ms must be a positive integer"))?;
                poll_interval = Some(Duration::from_millis(ms));
            }
            "pool_size" => {
                pool_size = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(url, "pool_size must be a positive integer"))?,
                );
            }
            _ => rest.push(kv),
        }
    }
    let sslmode = sslmode.unwrap_or(SslMode::Disable);
    if channel_binding.as_deref() == Some("require") && sslmode == SslMode::Disable {
        return Err(bad(
            url,
            "channel_binding=require binds the password exchange to a TLS connection, and \
             sslmode is disable; add sslmode=verify-full (or require)",
        ));
    }
    let pg_url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config = tokio_postgres::Config::from_str(&pg_url).map_err(|e| bad(url, e))?;
    if config.get_hosts().is_empty() {
        return Err(bad(url, "no host"));
    }
    if config.get_user().is_none() {
        config.user("postgres");
    }
    if config.get_application_name().is_none() {
        config.application_name("sealq");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let tls = match sslmode {
        SslMode::Disable => {
            if cert.is_some() || key.is_some() || rootcert.is_some() {
                return Err(bad(
                    url,
                    "sslrootcert/sslcert/sslkey given with sslmode=disable; set sslmode",
                ));
            }
            config.ssl_mode(PgSslMode::Disable);
            None
        }
        mode => {
            config.ssl_mode(PgSslMode::Require);
            Some(tls_config(url, mode, rootcert, cert, key)?)
        }
    };
    Ok(Parsed {
        config,
        tls,
        sslmode,
        poll_only,
        poll_interval,
        pool_size,
    })
}

fn percent_decode(s: &str) -> String {
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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(
    url: &str,
    mode: SslMode,
    rootcert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, BrokerError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(url, format!("TLS setup failed: {e}")))?;
    let builder = match mode {
        SslMode::VerifyFull => {
            let path = match rootcert {
                Some(p) => p,
                None => {
                    let home = std::env::var_os("HOME").map(PathBuf::from);
                    match home.map(|h| h.join(".postgresql/root.crt")) {
                        Some(p) if p.is_file() => p,
                        _ => {
                            return Err(bad(
                                url,
                                "sslmode=verify-full needs sslrootcert=PATH (a PEM file with \
                                 the CA that signed the server's certificate)",
                            ));
                        }
                    }
                }
            };
            let mut roots = rustls::RootCertStore::empty();
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| {
                    bad(
                        url,
                        format!("cannot read sslrootcert `{}`: {e}", path.display()),
                    )
                })?;
            if certs.is_empty() {
                return Err(bad(
                    url,
                    format!("sslrootcert `{}` holds no certificate", path.display()),
                ));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| bad(url, format!("sslrootcert `{}`: {e}", path.display())))?;
            }
            builder.with_root_certificates(roots)
        }
        _ => {
            if rootcert.is_some() {
                return Err(bad(
                    url,
                    "sslrootcert is only used with sslmode=verify-full (sslmode=require does \
                     not check the server's certificate); use verify-full",
                ));
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
        }
    };
    let config = match (cert, key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(c), Some(k)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| bad(url, format!("cannot read sslcert `{}`: {e}", c.display())))?;
            let key = PrivateKeyDer::from_pem_file(&k)
                .map_err(|e| bad(url, format!("cannot read sslkey `{}`: {e}", k.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(url, format!("sslcert/sslkey rejected: {e}")))?
        }
        _ => return Err(bad(url, "sslcert and sslkey go together")),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `sslmode=require`: encrypt, accept any certificate (signatures on the
/// handshake are still checked).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_that_could_downgrade_are_refused() {
        for m in ["prefer", "allow", "verify-ca", "bogus"] {
            let e = parse(&format!("postgres://u:secret@h/db?sslmode={m}"))
                .err()
                .expect("refused");
            assert_eq!(e.kind, BrokerErrorKind::Config);
            assert!(e.to_string().contains("sslmode"), "{e}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }

    #[test]
    fn verify_full_needs_a_root_certificate() {
        let e = parse("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent.pem")
            .err()
            .expect("refused");
        assert!(e.to_string().contains("sslrootcert"), "{e}");
    }

    #[test]
    fn own_parameters_are_read_and_the_rest_passed_on() {
        let p =
            parse("postgresql://u@127.0.0.1:5433/q?poll_only=true&pool_size=4&application_name=x")
                .expect("parsed");
        assert_eq!(p.poll_only, Some(true));
        assert_eq!(p.pool_size, Some(4));
        assert_eq!(p.sslmode, SslMode::Disable);
        assert_eq!(p.config.get_application_name(), Some("x"));
        assert_eq!(p.config.get_dbname(), Some("q"));
        assert_eq!(p.config.get_ports(), &[5433]);
    }

    #[test]
    fn channel_binding_is_checked_and_passed_on() {
        let p = parse("postgres://h/db?sslmode=require&channel_binding=require").expect("parsed");
        assert_eq!(
            p.config.get_channel_binding(),
            tokio_postgres::config::ChannelBinding::Require
        );
        for bad_url in [
            "postgres://h/db?channel_binding=require",
            "postgres://h/db?sslmode=disable&channel_binding=require",
            "postgres://h/db?sslmode=require&channel_binding=always",
        ] {
            let e = parse(bad_url).err().expect("refused");
            assert_eq!(e.kind, BrokerErrorKind::Config);
            assert!(e.to_string().contains("channel_binding"), "{e}");
        }
    }

    #[test]
    fn require_encrypts_without_a_root() {
        let p = parse("postgres://h/db?sslmode=require").expect("parsed");
        assert!(p.tls.is_some());
        assert_eq!(p.config.get_ssl_mode(), PgSslMode::Require);
    }
}
