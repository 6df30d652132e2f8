//! Readiness over every backend (`crate::health`): a reachable broker with
//! the schema this build needs passes `broker` and `schema`
//! (`Broker::check_version`), and the `keyring` check fails for a keyring
//! that holds none of the keys the broker recorded or its waiting tasks
//! name, unless told that is deliberate.

use std::sync::Arc;

use crate::client::{Client, RawTask};
use crate::health::Health;
use crate::model::options::EnqueueOptions;
use crate::seal::keyring::Keyring;
use crate::testkit::fixtures::Ctx;

/// `broker`, `schema` and `keyring` pass with the keyring that sealed the
/// waiting tasks, and `keyring` alone fails with another one.
pub async fn health_readiness_checks_broker_schema_and_keyring(ctx: Ctx) {
    ctx.broker
        .check_version()
        .await
        .expect("a new broker has the right schema");
    let ours = Arc::new(Keyring::generate());
    let ready =
        |keyring: &Arc<Keyring>| Health::new(ctx.broker.clone(), keyring.clone()).queues(["hq"]);

    let report = ready(&ours).readiness().await;
    assert!(report.is_ok(), "{report:?}");
    let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
    assert_eq!(names, ["broker", "schema", "keyring"]);

    let client = Client::builder(ctx.broker.clone(), ours.clone()).build();
    let task = RawTask::new(
        "t",
        rmp_serde::to_vec_named(&1u8).unwrap(),
        EnqueueOptions::new().queue("hq"),
    );
    client.enqueue_raw(task).await.expect("enqueue");
    let report = ready(&ours).readiness().await;
    assert!(report.is_ok(), "the sealing keyring: {report:?}");

    let theirs = Arc::new(Keyring::generate());
    let report = ready(&theirs).readiness().await;
    assert!(!report.is_ok());
    let failed: Vec<&str> = report.failed().map(|c| c.name).collect();
    assert_eq!(failed, ["keyring"], "{report:?}");
    let detail = &report.checks[2].detail;
    assert!(
        detail.contains(ours.primary_key_id()),
        "names the key the broker knows: {detail}"
    );

    let deliberate = Health::new(ctx.broker.clone(), theirs.clone())
        .queues(["hq"])
        .accept_new_keyring(true)
        .readiness()
        .await;
    assert!(deliberate.is_ok(), "accept_new_keyring: {deliberate:?}");
}
