//! `rediss://` against a real TLS-only redis-server with certificates made by
//! the test: a custom CA, a wrong CA, and client certificates (mTLS).

mod support;

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sealq::BrokerErrorKind;
use sealq::broker::Broker;
use sealq_redis::{RedisBroker, RedisOptions};
use support::RedisServer;

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

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

fn leaf(
    sans: &[&str],
    purpose: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, &KeyPair>,
) -> (String, String) {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, sans[0]);
    p.extended_key_usages = vec![purpose];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let w = |n: &str, s: &str| std::fs::write(dir.path().join(n), s).unwrap();
    let (ca_params, ca_key, ca_pem) = ca("sealq test CA");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let (server, server_key) = leaf(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
        &issuer,
    );
    let (client, client_key) = leaf(
        &["sealq-worker"],
        ExtendedKeyUsagePurpose::ClientAuth,
        &issuer,
    );
    let (_, _, wrong_pem) = ca("some other CA");
    w("ca.pem", &ca_pem);
    w("wrong-ca.pem", &wrong_pem);
    w("server.pem", &server);
    w("server.key", &server_key);
    w("client.pem", &client);
    w("client.key", &client_key);
    Pki { dir }
}

fn start(pki: &Pki, data: &Path, auth_clients: bool) -> RedisServer {
    let p = |n: &str| pki.path(n).display().to_string();
    let (cert, key, ca) = (p("server.pem"), p("server.key"), p("ca.pem"));
    let auth = if auth_clients { "yes" } else { "no" };
    RedisServer::start_tls(
        data,
        &[
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            auth,
        ],
    )
}

fn url(server: &RedisServer, query: &str) -> String {
    format!("rediss://127.0.0.1:{}?{query}", server.port)
}

async fn install_and_use(url: &str) {
    RedisBroker::connect_unchecked(url, RedisOptions::default())
        .await
        .expect("connect over TLS")
        .install()
        .await
        .expect("install over TLS");
    let b = RedisBroker::connect(url)
        .await
        .expect("connect with the library");
    let now = sealq::clock::system_clock().now_ms();
    let t = sealq::testkit::fixtures::task_at("tls", now, now);
    let id = t.id;
    b.enqueue(vec![t]).await.unwrap();
    assert_eq!(b.get(id).await.unwrap().unwrap().id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca_connects() {
    let pki = pki();
    let data = tempfile::tempdir().unwrap();
    let server = start(&pki, data.path(), false);
    let u = url(&server, &format!("ca={}", pki.path("ca.pem").display()));
    install_and_use(&u).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_wrong_ca_fails_verification() {
    let pki = pki();
    let data = tempfile::tempdir().unwrap();
    let server = start(&pki, data.path(), false);
    let u = url(
        &server,
        &format!("ca={}", pki.path("wrong-ca.pem").display()),
    );
    let e = RedisBroker::connect_unchecked(&u, RedisOptions::default())
        .await
        .expect_err("a server signed by another CA must be refused");
    assert_eq!(e.kind, BrokerErrorKind::Config, "{e}");
    assert!(e.to_string().contains("TLS verification failed"), "{e}");
    // The system roots do not know the test CA either.
    let e = RedisBroker::connect_unchecked(
        &format!("rediss://127.0.0.1:{}", server.port),
        RedisOptions::default(),
    )
    .await
    .expect_err("an unknown CA must be refused");
    assert!(e.to_string().contains("TLS verification failed"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_and_accepts_a_client_certificate() {
    let pki = pki();
    let data = tempfile::tempdir().unwrap();
    let server = start(&pki, data.path(), true);
    let ca = pki.path("ca.pem").display().to_string();
    let without = url(&server, &format!("ca={ca}"));
    let e = RedisBroker::connect_unchecked(&without, RedisOptions::default())
        .await
        .expect_err("the server requires a client certificate");
    assert_ne!(e.kind, BrokerErrorKind::Other, "{e}");
    let with = url(
        &server,
        &format!(
            "ca={ca}&cert={}&key={}",
            pki.path("client.pem").display(),
            pki.path("client.key").display()
        ),
    );
    install_and_use(&with).await;
}
