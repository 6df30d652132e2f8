//! TLS against a real server started with certificates made here:
//! `sslmode=verify-full` checks the chain and the host name, `require`
//! encrypts without checking, and an unknown CA or a name the certificate
//! does not carry is refused.

mod support;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sealq::BrokerErrorKind;
use sealq::broker::Broker;
use sealq_postgres::PostgresBroker;

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = p.self_signed(&key).unwrap().pem();
    (p, key, pem)
}

/// A server whose certificate names `localhost` only (not 127.0.0.1),
/// and the PEM files of its CA and of another CA.
fn server_and_cas() -> (support::PgServer, tempfile::TempDir) {
    let (ca_params, ca_key, ca_pem) = ca("sealq test CA");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "localhost");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap().pem();
    let key = key.serialize_pem();
    let server = support::PgServer::start_with(
        &[
            ("ssl", "on"),
            ("ssl_cert_file", "../server.pem"),
            ("ssl_key_file", "../server.key"),
        ],
        &[
            ("server.pem", cert.as_bytes()),
            ("server.key", key.as_bytes()),
        ],
    );
    let cas = tempfile::tempdir().unwrap();
    std::fs::write(cas.path().join("ca.pem"), ca_pem).unwrap();
    std::fs::write(cas.path().join("wrong-ca.pem"), ca("some other CA").2).unwrap();
    (server, cas)
}

async fn db(server: &support::PgServer) -> String {
    let url = support::fresh_db_on(server).await;
    url.rsplit('/').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let (server, cas) = server_and_cas();
    let name = db(&server).await;
    let ca = cas.path().join("ca.pem");
    let wrong = cas.path().join("wrong-ca.pem");
    let url = |host: &str, mode: &str, root: Option<&std::path::Path>| {
        let mut u = format!(
            "postgres://postgres@{host}:{}/{name}?sslmode={mode}",
            server.port
        );
        if let Some(r) = root {
            u.push_str(&format!("&sslrootcert={}", r.display()));
        }
        u
    };

    // The right CA and the name on the certificate: connects, and works.
    let b = PostgresBroker::connect(&url("localhost", "verify-full", Some(&ca)))
        .await
        .expect("verify-full with the right CA and name");
    b.stats().await.expect("a query over TLS");
    // Encrypted: the server says so for our own session.
    assert!(b.session_uses_tls().await.unwrap());

    // Another CA: refused, never downgraded.
    let e = PostgresBroker::connect(&url("localhost", "verify-full", Some(&wrong)))
        .await
        .expect_err("an unknown CA is refused");
    assert_eq!(e.kind, BrokerErrorKind::Config, "{e}");
    assert!(e.to_string().contains("TLS"), "{e}");

    // A name the certificate does not carry (127.0.0.1): refused.
    let e = PostgresBroker::connect(&url("127.0.0.1", "verify-full", Some(&ca)))
        .await
        .expect_err("a host name mismatch is refused");
    assert_eq!(e.kind, BrokerErrorKind::Config, "{e}");
    assert!(e.to_string().contains("TLS"), "{e}");

    // require: encrypted without checking (any name, no CA).
    let b = PostgresBroker::connect(&url("127.0.0.1", "require", None))
        .await
        .expect("require connects without a CA");
    assert!(b.session_uses_tls().await.unwrap());

    // disable: plaintext, as asked.
    let b = PostgresBroker::connect(&url("127.0.0.1", "disable", None))
        .await
        .expect("disable connects");
    assert!(!b.session_uses_tls().await.unwrap());
}

/// A leaf certificate for `names` (server) or for user `cn` (client),
/// signed by `issuer`; returns (certificate PEM, key PEM).
fn leaf(
    issuer: &Issuer<'_, &KeyPair>,
    cn: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut p =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![usage];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().unwrap();
    (
        p.signed_by(&key, issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

/// Files of the client-authentication server: its CA, a client
/// certificate for `certuser` from it, one from another CA.
struct ClientAuth {
    server: support::PgServer,
    dir: tempfile::TempDir,
    db: String,
}

impl ClientAuth {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn url(&self, user: &str, params: &str) -> String {
        format!(
            "postgres://{user}@localhost:{}/{}?sslmode=verify-full&sslrootcert={}{params}",
            self.server.port,
            self.db,
            self.path("server-ca.pem")
        )
    }
}

/// A server that takes `certuser` by client certificate only (`hostssl …
/// cert`), `scramuser` by SCRAM over TLS, `plainuser` by a cleartext
/// password over TLS (a method that cannot bind), and the superuser as
/// before (to set things up).
async fn client_auth_server() -> ClientAuth {
    let (server_ca, server_ca_key, server_ca_pem) = ca("sealq test server CA");
    let (client_ca, client_ca_key, client_ca_pem) = ca("sealq test client CA");
    let server_issuer = Issuer::from_params(&server_ca, &server_ca_key);
    let client_issuer = Issuer::from_params(&client_ca, &client_ca_key);
    let (cert, key) = leaf(
        &server_issuer,
        "localhost",
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let hba = "local all all trust\n\
               hostssl all certuser 127.0.0.1/32 cert\n\
               hostssl all scramuser 127.0.0.1/32 scram-sha-256\n\
               hostssl all plainuser 127.0.0.1/32 password\n\
               host all postgres 127.0.0.1/32 trust\n";
    let server = support::PgServer::start_with(
        &[
            ("ssl", "on"),
            ("ssl_cert_file", "../server.pem"),
            ("ssl_key_file", "../server.key"),
            ("ssl_ca_file", "../client-ca.pem"),
            ("hba_file", "{dir}/pg_hba.conf"),
            ("password_encryption", "scram-sha-256"),
        ],
        &[
            ("server.pem", cert.as_bytes()),
            ("server.key", key.as_bytes()),
            ("client-ca.pem", client_ca_pem.as_bytes()),
            ("pg_hba.conf", hba.as_bytes()),
        ],
    );
    let url = support::fresh_db_on(&server).await;
    let db = url.rsplit('/').next().unwrap().to_owned();
    // The schema, then the users (superusers: this is about logging in).
    PostgresBroker::connect(&url).await.expect("schema");
    let (pg, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    pg.batch_execute(
        "CREATE ROLE certuser LOGIN SUPERUSER; \
         CREATE ROLE scramuser LOGIN SUPERUSER PASSWORD 'scram-secret'; \
         CREATE ROLE plainuser LOGIN SUPERUSER PASSWORD 'plain-secret';",
    )
    .await
    .unwrap();
    drop(pg);
    let _ = conn.await;

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("server-ca.pem", &server_ca_pem);
    let (c, k) = leaf(
        &client_issuer,
        "certuser",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    write("certuser.pem", &c);
    write("certuser.key", &k);
    // The same name from a CA the server does not trust.
    let (other, other_key) = {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "some other CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let k = KeyPair::generate().unwrap();
        (p, k)
    };
    let other_issuer = Issuer::from_params(&other, &other_key);
    let (c, k) = leaf(
        &other_issuer,
        "certuser",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    write("forged.pem", &c);
    write("forged.key", &k);
    ClientAuth { server, dir, db }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificate_logs_in_and_is_required() {
    let s = client_auth_server().await;
    let with = |cert: &str, key: &str| {
        format!(
            "&sslcert={}&sslkey={}",
            s.path(&format!("{cert}.pem")),
            s.path(&format!("{key}.key"))
        )
    };
    // The client certificate of certuser, from the CA the server trusts.
    let b = PostgresBroker::connect(&s.url("certuser", &with("certuser", "certuser")))
        .await
        .expect("cert authentication with sslcert/sslkey");
    b.stats().await.expect("a query as certuser");
    assert!(b.session_uses_tls().await.unwrap());

    // No certificate: refused (the server asks for one; none is sent).
    let e = PostgresBroker::connect(&s.url("certuser", ""))
        .await
        .expect_err("no client certificate");
    assert!(!e.to_string().is_empty());

    // A certificate for the same name from another CA: refused.
    PostgresBroker::connect(&s.url("certuser", &with("forged", "forged")))
        .await
        .expect_err("a client certificate the server's CA did not sign");

    // A key that is not the certificate's: refused before connecting.
    let e = PostgresBroker::connect(&s.url("certuser", &with("certuser", "forged")))
        .await
        .expect_err("a key that does not match the certificate");
    assert_eq!(e.kind, BrokerErrorKind::Config, "{e}");

    // sslcert without sslkey, and a file that is not there: configuration errors.
    let e = PostgresBroker::connect(
        &s.url("certuser", &format!("&sslcert={}", s.path("certuser.pem"))),
    )
    .await
    .expect_err("sslcert alone");
    assert_eq!(e.kind, BrokerErrorKind::Config, "{e}");
    assert!(e.to_string().contains("sslkey"), "{e}");
    let e = PostgresBroker::connect(&s.url("certuser", &with("missing", "missing")))
        .await
        .expect_err("a missing certificate file");
    assert_eq!(e.kind, BrokerErrorKind::Config, "{e}");
    assert!(e.to_string().contains("sslcert"), "{e}");

    // sslrootcert that holds no certificate: refused, naming it.
    std::fs::write(s.dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let url = s
        .url("certuser", &with("certuser", "certuser"))
        .replace(&s.path("server-ca.pem"), &s.path("empty.pem"));
    let e = PostgresBroker::connect(&url)
        .await
        .expect_err("an sslrootcert without a certificate");
    assert_eq!(e.kind, BrokerErrorKind::Config, "{e}");
    assert!(e.to_string().contains("sslrootcert"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_channel_binding_require_binds_or_refuses() {
    let s = client_auth_server().await;
    // SCRAM over TLS: require uses SCRAM-SHA-256-PLUS and logs in.
    for cb in ["require", "prefer", "disable"] {
        let b = PostgresBroker::connect(
            &s.url("scramuser:scram-secret", &format!("&channel_binding={cb}")),
        )
        .await
        .unwrap_or_else(|e| panic!("SCRAM with channel_binding={cb}: {e}"));
        b.stats().await.expect("a query as scramuser");
    }
    // A method that cannot bind (a cleartext password): require refuses
    // rather than sending the password unbound; prefer goes on.
    let e = PostgresBroker::connect(&s.url("plainuser:plain-secret", "&channel_binding=require"))
        .await
        .expect_err("require against password authentication");
    assert!(e.to_string().contains("channel binding"), "{e}");
    assert!(!e.to_string().contains("plain-secret"), "{e}");
    PostgresBroker::connect(&s.url("plainuser:plain-secret", "&channel_binding=prefer"))
        .await
        .expect("prefer falls back where nothing can bind");
    // No TLS at all: refused before connecting.
    let url = format!(
        "postgres://scramuser:scram-secret@127.0.0.1:{}/{}?sslmode=disable&channel_binding=require",
        s.server.port, s.db
    );
    let e = PostgresBroker::connect(&url)
        .await
        .expect_err("require without TLS");
    assert_eq!(e.kind, BrokerErrorKind::Config, "{e}");
    assert!(e.to_string().contains("channel_binding"), "{e}");
}
