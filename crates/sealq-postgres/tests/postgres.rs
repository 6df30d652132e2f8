//! Postgres-specific behaviour: connecting, the schema version check.

mod support;

use sealq::BrokerErrorKind;
use sealq_postgres::{PostgresBroker, SCHEMA_VERSION};

#[tokio::test]
async fn connect_migrates_a_new_database_to_the_current_version() {
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.expect("connect");
    assert_eq!(broker.schema_version().await.unwrap(), SCHEMA_VERSION);
    // A second connect finds the current version and changes nothing.
    let again = PostgresBroker::connect(&url).await.expect("connect again");
    assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);
}

#[tokio::test]
async fn a_newer_schema_is_refused_naming_both_versions() {
    let url = support::fresh_db().await;
    PostgresBroker::connect(&url).await.expect("connect");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let newer = SCHEMA_VERSION + 5;
    client
        .execute(
            "INSERT INTO sealq.schema_version (version, name) VALUES ($1, 'future')",
            &[&newer],
        )
        .await
        .unwrap();
    let e = PostgresBroker::connect(&url).await.expect_err("refused");
    assert_eq!(e.kind, BrokerErrorKind::Config);
    let text = e.to_string();
    assert!(text.contains(&format!("version {newer}")), "{text}");
    assert!(
        text.contains(&format!("version {SCHEMA_VERSION}")),
        "{text}"
    );
}
