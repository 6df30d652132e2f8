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
