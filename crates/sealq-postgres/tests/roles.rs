//! Least privilege on a real server: the role setup of
//! `sealq_postgres::roles` applied, login roles granted into each group,
//! and every denial of `docs/postgres-roles.md` proved by connecting as
//! them.

mod support;

use std::sync::Arc;

use sealq::TaskId;
use sealq::audit::{AuditEvent, AuditSink, Auditor};
use sealq::blob::{BlobKey, BlobStore};
use sealq::subject_keys::SubjectKeyStore;
use sealq::testkit::fixtures::subject;
use sealq_postgres::roles::{self, FUNCTIONS, Role, UNGRANTED};
use sealq_postgres::{PostgresAuditSink, PostgresBlobStore, PostgresSubjectKeyStore};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// Group roles are cluster-wide: tests applying the setup on the shared
/// server take turns.
static SETUP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A database with the schema installed and the roles applied, and one login
/// role per group (named after the database).
struct Fixture {
    url: String,
    db: String,
    port: u16,
}

impl Fixture {
    /// A fixture whose owner login has enqueued three tasks to `roles`.
    async fn with_three_tasks() -> (Self, sealq_postgres::PostgresBroker) {
        use sealq::broker::Broker as _;
        let f = Fixture::new().await;
        let owner = sealq_postgres::PostgresBroker::connect(&f.url)
            .await
            .unwrap();
        let now = now_ms();
        let tasks: Vec<_> = (0..3)
            .map(|_| sealq::testkit::fixtures::task_at("roles", now, now))
            .collect();
        owner.enqueue(tasks).await.unwrap();
        (f, owner)
    }

    async fn new() -> Self {
        let url = support::fresh_db().await;
        let db = url.rsplit('/').next().unwrap().to_owned();
        let port = support::shared().port;
        let installed = roles::install(&url).await.expect("install the schema");
        assert_eq!(installed.from, 0);
        assert_eq!(installed.to, sealq_postgres::SCHEMA_VERSION);
        let _turn = SETUP.lock().await;
        roles::apply_roles(&url).await.expect("apply the roles");
        let su = connect(&url).await;
        for role in Role::ALL {
            su.batch_execute(&format!(
                "CREATE ROLE {db}_{r} LOGIN IN ROLE {g}",
                r = short(role),
                g = role.name()
            ))
            .await
            .unwrap();
        }
        su.batch_execute(&format!("CREATE ROLE {db}_nobody LOGIN"))
            .await
            .unwrap();
        Fixture { url, db, port }
    }

    /// The URL of the login role in `role`'s group.
    fn url_as(&self, login: &str) -> String {
        format!(
            "postgres://{}_{login}@127.0.0.1:{}/{}",
            self.db, self.port, self.db
        )
    }

    async fn client_as(&self, login: &str) -> Client {
        connect(&self.url_as(login)).await
    }
}

fn short(role: Role) -> &'static str {
    match role {
        Role::Producer => "producer",
        Role::Worker => "worker",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// `sql` fails with "permission denied" (SQLSTATE 42501).
async fn denied(client: &Client, who: &str, sql: &str) {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("{who} could run `{sql}`"),
        Err(e) => assert_eq!(
            e.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{who}: `{sql}` failed, but not with permission denied: {e}"
        ),
    }
}

/// Every table of the schema `sealq`, with a column that may be updated (to name in an
/// UPDATE: any column will do, the statement is refused).
async fn sealq_tables(client: &Client) -> Vec<(String, String)> {
    let tables: Vec<(String, String)> = client
        .query(
            "SELECT c.relname::text, \
                    (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid \
                     AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = '' \
                     ORDER BY a.attnum LIMIT 1) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'sealq' AND c.relkind IN ('r', 'p') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(tables.len() >= 10, "{tables:?}");
    tables
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_no_role_can_select_insert_update_or_delete_any_sealq_table() {
    let f = Fixture::new().await;
    let tables = sealq_tables(&connect(&f.url).await).await;
    for login in ["producer", "worker", "operator", "admin", "nobody"] {
        let c = f.client_as(login).await;
        for (t, col) in &tables {
            denied(&c, login, &format!("SELECT * FROM sealq.{t} LIMIT 1")).await;
            denied(&c, login, &format!("DELETE FROM sealq.{t}")).await;
            denied(&c, login, &format!("UPDATE sealq.{t} SET {col} = {col}")).await;
        }
        denied(
            &c,
            login,
            "INSERT INTO sealq.audit_records (writer, seq, line) VALUES ('x', 0, '{}')",
        )
        .await;
        denied(&c, login, "CREATE TABLE sealq.mine (x int)").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_audit_is_append_only_for_everyone_but_the_admin() {
    let f = Fixture::new().await;
    // Records written through the function, as a worker.
    let worker_sink = PostgresAuditSink::connect(&f.url_as("worker"))
        .await
        .unwrap();
    let keyring = sealq::Keyring::generate();
    let auditor = Auditor::start(Arc::new(worker_sink.clone()), &keyring).unwrap();
    for _ in 0..3 {
        auditor.record(AuditEvent::QueuePaused {
            queue: "q".into(),
            operator: "op".into(),
        });
    }
    auditor.close().await.unwrap();
    // The worker read the checkpoints at start (its first record names
    // their head) ...
    let first = PostgresAuditSink::connect(&f.url)
        .await
        .unwrap()
        .read_records()
        .await
        .unwrap();
    match &first[0].item.as_ref().unwrap().event {
        AuditEvent::WriterStarted {
            head_error,
            checkpoints_seen,
            ..
        } => {
            assert_eq!(head_error, &None);
            assert_eq!(checkpoints_seen, &Some(0));
        }
        other => panic!("first record: {other:?}"),
    }
    // ... but a worker and a producer cannot read the records back, nor
    // prune them.
    for login in ["producer", "worker"] {
        let sink = PostgresAuditSink::connect(&f.url_as(login)).await.unwrap();
        let e = sink.read_records().await.expect_err("read refused");
        assert!(e.to_string().contains("privilege"), "{login}: {e}");
        let c = f.client_as(login).await;
        denied(&c, login, "SELECT * FROM sealq.audit_read_records(0, 10)").await;
    }
    for login in ["producer", "worker", "operator"] {
        let c = f.client_as(login).await;
        denied(&c, login, "SELECT sealq.audit_prune(1000000, 1000000)").await;
        denied(&c, login, "UPDATE sealq.audit_records SET line = 'x'").await;
        denied(&c, login, "DELETE FROM sealq.audit_records").await;
        denied(&c, login, "DELETE FROM sealq.audit_checkpoints").await;
    }
    // The operator reads (for `audit verify`) ...
    let operator = PostgresAuditSink::connect(&f.url_as("operator"))
        .await
        .unwrap();
    let n = operator.read_records().await.unwrap().len();
    assert!(n >= 3, "{n}");
    // ... and only the admin deletes, and only through the function.
    let admin_client = f.client_as("admin").await;
    denied(&admin_client, "admin", "DELETE FROM sealq.audit_records").await;
    let admin = PostgresAuditSink::connect(&f.url_as("admin"))
        .await
        .unwrap();
    assert_eq!(admin.prune(u64::MAX, 0).await.unwrap(), n as u64);
    assert!(operator.read_records().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_each_role_can_do_its_job_and_no_more() {
    let f = Fixture::new().await;
    let tag = subject(0x5A);
    let blob = BlobKey {
        task: TaskId::new(),
        digest: [3; 32],
    };
    // Producer: creates subject keys and stores blobs; cannot read blobs,
    // destroy keys or list them.
    let p_keys = PostgresSubjectKeyStore::connect(&f.url_as("producer"))
        .await
        .unwrap();
    let p_blobs = PostgresBlobStore::connect(&f.url_as("producer"))
        .await
        .unwrap();
    assert_eq!(
        p_keys
            .put_if_absent(&tag, b"wrapped".to_vec())
            .await
            .unwrap(),
        b"wrapped".to_vec()
    );
    p_blobs.put(&blob, b"sealed".to_vec()).await.unwrap();
    assert_denied(p_blobs.get(&blob).await, "producer reads a blob");
    assert_denied(p_keys.destroy(&tag).await, "producer destroys a key");
    assert_denied(p_keys.list().await, "producer lists keys");
    assert_denied(
        p_blobs.delete_tasks(&[blob.task]).await,
        "producer deletes blobs",
    );

    // Worker: reads keys and blobs, deletes blobs; cannot create keys,
    // store blobs, destroy or replace keys.
    let w_keys = PostgresSubjectKeyStore::connect(&f.url_as("worker"))
        .await
        .unwrap();
    let w_blobs = PostgresBlobStore::connect(&f.url_as("worker"))
        .await
        .unwrap();
    assert_eq!(
        w_keys.get(&tag).await.unwrap().as_deref(),
        Some(&b"wrapped"[..])
    );
    assert_eq!(
        w_blobs.get(&blob).await.unwrap().as_deref(),
        Some(&b"sealed"[..])
    );
    assert_denied(
        w_keys.put_if_absent(&subject(1), b"k".to_vec()).await,
        "worker creates a key",
    );
    assert_denied(
        w_blobs.put(&blob, b"x".to_vec()).await,
        "worker stores a blob",
    );
    assert_denied(w_keys.destroy(&tag).await, "worker destroys a key");
    assert_denied(
        w_keys.replace(&tag, b"wrapped", b"x".to_vec()).await,
        "worker replaces a key",
    );
    assert_eq!(w_blobs.list_tasks(None, 10).await.unwrap(), vec![blob.task]);
    assert_eq!(w_blobs.delete_tasks(&[blob.task]).await.unwrap(), 1);

    // Operator: re-wraps and destroys keys.
    let o_keys = PostgresSubjectKeyStore::connect(&f.url_as("operator"))
        .await
        .unwrap();
    assert_eq!(o_keys.list().await.unwrap().len(), 1);
    assert!(
        o_keys
            .replace(&tag, b"wrapped", b"again".to_vec())
            .await
            .unwrap()
    );
    let e0 = o_keys.epoch().await.unwrap();
    assert!(o_keys.destroy(&tag).await.unwrap());
    assert!(w_keys.epoch().await.unwrap() > e0);
    assert_eq!(w_keys.get(&tag).await.unwrap(), None);

    // A login role in no sealq group can call nothing, not even the
    // version check.
    let nobody = f.client_as("nobody").await;
    denied(&nobody, "nobody", "SELECT sealq.schema_version_number()").await;
    denied(
        &nobody,
        "nobody",
        "SELECT * FROM sealq.subject_key_get(ARRAY[]::bytea[])",
    )
    .await;
    let e = PostgresSubjectKeyStore::connect(&f.url_as("nobody"))
        .await
        .expect_err("no sealq role");
    assert_eq!(e.kind, sealq::BrokerErrorKind::PermissionDenied, "{e}");
}

fn assert_denied<T: std::fmt::Debug>(r: sealq::broker::BrokerResult<T>, what: &str) {
    match r {
        Ok(v) => panic!("{what}: allowed ({v:?})"),
        Err(e) => assert_eq!(
            e.kind,
            sealq::BrokerErrorKind::PermissionDenied,
            "{what}: {e}"
        ),
    }
}

#[tokio::test]
async fn roles_public_has_no_execute_on_any_sealq_function() {
    let f = Fixture::new().await;
    let su = connect(&f.url).await;
    let rows = su
        .query(
            "SELECT p.oid::regprocedure::text, \
                    has_function_privilege('public', p.oid, 'EXECUTE') \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = 'sealq'",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= FUNCTIONS.len(), "{} functions", rows.len());
    let public: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    assert!(public.is_empty(), "PUBLIC may execute: {public:?}");
    // Functions created later by the schema owner are not PUBLIC's either.
    su.batch_execute("CREATE FUNCTION sealq.later() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        .await
        .unwrap();
    let later: bool = su
        .query_one(
            "SELECT has_function_privilege('public', 'sealq.later()', 'EXECUTE')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!later, "a later function is executable by PUBLIC");
    su.batch_execute("DROP FUNCTION sealq.later()")
        .await
        .unwrap();
}

#[tokio::test]
async fn roles_every_security_definer_function_pins_search_path() {
    let f = Fixture::new().await;
    let su = connect(&f.url).await;
    let rows = su
        .query(
            "SELECT p.oid::regprocedure::text, p.prosecdef, coalesce(p.proconfig, '{}') \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = 'sealq'",
            &[],
        )
        .await
        .unwrap();
    let mut definers = 0;
    for r in &rows {
        let (name, definer, config): (String, bool, Vec<String>) = (r.get(0), r.get(1), r.get(2));
        if definer {
            definers += 1;
        }
        assert!(
            config
                .iter()
                .any(|c| c == "search_path=pg_catalog, pg_temp"),
            "{name} does not pin search_path: {config:?}"
        );
    }
    assert_eq!(
        definers,
        FUNCTIONS.len(),
        "every granted function is a definer"
    );
}

#[tokio::test]
async fn roles_grants_are_exactly_the_role_table() {
    let f = Fixture::new().await;
    let su = connect(&f.url).await;
    // Every function in the schema is in the table (or deliberately
    // granted to no one), and every entry of the table exists.
    let existing: Vec<String> = su
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p \
             JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'sealq'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut listed = Vec::new();
    for sig in FUNCTIONS
        .iter()
        .map(|g| g.signature)
        .chain(UNGRANTED.iter().copied())
    {
        listed.push(
            su_query_sig(&su, sig)
                .await
                .unwrap_or_else(|| panic!("{sig} in the role table does not exist")),
        );
    }
    for name in &existing {
        assert!(
            listed.contains(name),
            "{name} is in the schema but not in sealq_postgres::roles::FUNCTIONS"
        );
    }
    // Each role can execute exactly its functions.
    for g in FUNCTIONS {
        for role in Role::ALL {
            let can: bool = su
                .query_one(
                    "SELECT has_function_privilege($1, $2::text::regprocedure, 'EXECUTE')",
                    &[&role.name(), &g.signature],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                can,
                g.roles.contains(&role),
                "{} on {}",
                role.name(),
                g.signature
            );
        }
    }
    for u in UNGRANTED {
        for role in Role::ALL {
            let can: bool = su
                .query_one(
                    "SELECT has_function_privilege($1, $2::text::regprocedure, 'EXECUTE')",
                    &[&role.name(), u],
                )
                .await
                .unwrap()
                .get(0);
            assert!(!can, "{} may execute {u}", role.name());
        }
    }
    // Applying again is harmless (idempotent) and takes stray grants away.
    su.batch_execute(
        "GRANT SELECT ON sealq.audit_records TO sealq_worker; \
         GRANT EXECUTE ON FUNCTION sealq.audit_prune(bigint, bigint) TO sealq_worker",
    )
    .await
    .unwrap();
    {
        let _turn = SETUP.lock().await;
        roles::apply_roles(&f.url).await.expect("apply again");
    }
    let w = f.client_as("worker").await;
    denied(&w, "worker", "SELECT * FROM sealq.audit_records").await;
    denied(&w, "worker", "SELECT sealq.audit_prune(0, 0)").await;
}

/// The canonical `regprocedure` text of `sig`, if the function exists.
async fn su_query_sig(client: &Client, sig: &str) -> Option<String> {
    client
        .query_one("SELECT to_regprocedure($1)::text", &[&sig])
        .await
        .unwrap()
        .get(0)
}

#[test]
fn roles_sql_names_every_role_and_grants_no_table() {
    let sql = roles::role_sql();
    for role in Role::ALL {
        assert!(sql.contains(&format!("CREATE ROLE {} NOLOGIN", role.name())));
    }
    assert!(sql.contains("REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC"));
    for line in sql.lines().filter(|l| l.starts_with("GRANT")) {
        assert!(
            line.starts_with("GRANT EXECUTE ON FUNCTION sealq.")
                || line.starts_with("GRANT USAGE ON SCHEMA sealq TO"),
            "{line}"
        );
    }
    assert_eq!(
        roles::functions_of(Role::Admin).count(),
        FUNCTIONS.len(),
        "the admin may call every function"
    );
    assert!(!roles::functions_of(Role::Worker).any(|f| f.starts_with("sealq.blob_put")));
}

#[test]
fn roles_doc_shows_the_generated_sql() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/postgres-roles.md");
    let doc = std::fs::read_to_string(path).expect("docs/postgres-roles.md");
    assert!(
        doc.contains(&roles::role_sql()),
        "docs/postgres-roles.md does not show the current role SQL: paste the output of \
         `sealq postgres install --print-roles` into its last section"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_a_non_superuser_owner_installs_and_applies_the_roles() {
    let url = support::fresh_db().await;
    let db = url.rsplit('/').next().unwrap().to_owned();
    let port = support::shared().port;
    let su = connect(&url).await;
    su.batch_execute(&format!(
        "CREATE ROLE {db}_owner LOGIN CREATEROLE; \
         GRANT CREATE ON DATABASE {db} TO {db}_owner"
    ))
    .await
    .unwrap();
    let owner_url = format!("postgres://{db}_owner@127.0.0.1:{port}/{db}");
    let installed = roles::install(&owner_url).await.expect("install as owner");
    assert_eq!(installed.from, 0);
    {
        let _turn = SETUP.lock().await;
        roles::apply_roles(&owner_url)
            .await
            .expect("apply as owner");
    }
    // The functions run with the owner's rights, not a superuser's.
    let owners: Vec<String> = su
        .query(
            "SELECT DISTINCT pg_get_userbyid(p.proowner)::text FROM pg_proc p \
             JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'sealq'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, vec![format!("{db}_owner")]);
    su.batch_execute(&format!(
        "CREATE ROLE {db}_producer LOGIN IN ROLE sealq_producer"
    ))
    .await
    .unwrap();
    let producer_url = format!("postgres://{db}_producer@127.0.0.1:{port}/{db}");
    let keys = PostgresSubjectKeyStore::connect(&producer_url)
        .await
        .unwrap();
    assert_eq!(
        keys.put_if_absent(&subject(8), b"k".to_vec())
            .await
            .unwrap(),
        b"k".to_vec()
    );
    let p = connect(&producer_url).await;
    denied(&p, "producer", "SELECT * FROM sealq.subject_keys").await;
    // The owner's future functions are not PUBLIC's.
    let owner = connect(&owner_url).await;
    owner
        .batch_execute("CREATE FUNCTION sealq.later() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        .await
        .unwrap();
    denied(&p, "producer", "SELECT sealq.later()").await;
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn dequeue_request(queue: &str) -> sealq::broker::DequeueRequest {
    sealq::broker::DequeueRequest {
        queues: vec![queue.to_owned()],
        max: 10,
        lease: std::time::Duration::from_secs(30),
        worker: "roles-test".to_owned(),
    }
}

/// Issue 23, roles: the broker itself runs through definer functions, so a
/// producer login with no table privilege enqueues through `PostgresBroker`
/// and can do nothing else with tasks; a worker login claims, extends, acks
/// and keeps the worker loop's maintenance going, and cannot enqueue; an
/// operator login lists, inspects and manages, and cannot enqueue or claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_producer_login_enqueues_through_the_broker_and_worker_login_claims_and_acks() {
    use sealq::broker::{Ack, AckResult, Broker, EnqueueResult, ListQuery, Outcome};
    use sealq::testkit::fixtures::task_at;
    use sealq_postgres::PostgresBroker;

    let f = Fixture::new().await;
    let producer = PostgresBroker::connect(&f.url_as("producer"))
        .await
        .expect("a producer login connects");
    let worker = PostgresBroker::connect(&f.url_as("worker"))
        .await
        .expect("a worker login connects");
    producer
        .check_version()
        .await
        .expect("version check as producer");
    worker
        .check_version()
        .await
        .expect("version check as worker");

    // The producer enqueues (and records the keyring's check values, as a
    // client's first enqueue does).
    let now = now_ms();
    let task = task_at("roles", now, now);
    let id = task.id;
    let out = producer
        .enqueue(vec![task])
        .await
        .expect("producer enqueues");
    assert_eq!(out, vec![EnqueueResult::Enqueued]);
    let checks = vec![
        sealq::model::key_check::KeyCheck::from_hex("k1".to_owned(), &"ab".repeat(16))
            .expect("a check value"),
    ];
    assert!(producer.record_key_checks(&checks).await.expect("records"));
    assert_eq!(producer.key_checks().await.unwrap().unwrap().len(), 1);
    // ... and nothing else with tasks.
    assert_denied(
        producer.dequeue(&dequeue_request("roles")).await,
        "producer dequeue",
    );
    assert_denied(producer.list(&ListQuery::default()).await, "producer list");
    assert_denied(producer.get(id).await, "producer get");
    assert_denied(producer.stats().await, "producer stats");
    assert_denied(producer.recover_expired().await, "producer recover");

    // The worker claims, extends and acks; runs the loop's maintenance.
    let leased = worker
        .dequeue(&dequeue_request("roles"))
        .await
        .expect("worker dequeues");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].record.id, id);
    let lease = leased[0].lease;
    assert_eq!(
        worker
            .extend_leases(
                std::slice::from_ref(&lease),
                std::time::Duration::from_secs(60)
            )
            .await
            .expect("worker extends"),
        vec![true]
    );
    worker
        .forward_due()
        .await
        .expect("worker forwards due tasks");
    // Readiness and the queue-depth metrics count tasks (no task content).
    let stats = worker.stats().await.expect("worker stats");
    assert_eq!(stats.iter().find(|s| s.queue == "roles").unwrap().active, 1);
    assert_denied(worker.get(id).await, "worker get");
    assert_denied(worker.list(&ListQuery::default()).await, "worker list");
    // ... but samples waiting tasks, as its keyring check at start does.
    let waiting = ListQuery {
        queue: Some("roles".into()),
        state: Some(sealq::TaskState::Pending),
        ..ListQuery::default()
    };
    assert!(
        worker
            .list(&waiting)
            .await
            .expect("worker samples")
            .is_empty()
    );
    assert_denied(producer.list(&waiting).await, "producer lists waiting");
    worker
        .recover_expired()
        .await
        .expect("worker recovers leases");
    worker.purge_completed().await.expect("worker purges");
    let acked = worker
        .ack(vec![Ack {
            lease,
            outcome: Outcome::Complete { result: None },
        }])
        .await
        .expect("worker acks");
    assert_eq!(acked, vec![AckResult::Applied]);
    // ... and cannot enqueue.
    let now = now_ms();
    assert_denied(
        worker.enqueue(vec![task_at("roles", now, now)]).await,
        "worker enqueue",
    );
    // An operator login inspects and manages, with no table privilege
    // either, and cannot enqueue or claim.
    let operator = PostgresBroker::connect(&f.url_as("operator"))
        .await
        .expect("an operator login connects");
    let rec = operator
        .get(id)
        .await
        .expect("operator get")
        .expect("the task");
    assert_eq!(rec.state, sealq::TaskState::Completed);
    let listed = operator
        .list(&ListQuery::default())
        .await
        .expect("operator list");
    assert_eq!(listed.len(), 1);
    operator.pause("roles").await.expect("operator pauses");
    let stats = operator.stats().await.expect("operator stats");
    let q = stats
        .iter()
        .find(|s| s.queue == "roles")
        .expect("the queue");
    assert!(q.paused && q.completed == 1, "{q:?}");
    operator.resume("roles").await.expect("operator resumes");
    operator
        .set_max_depth("roles", Some(10))
        .await
        .expect("operator caps");
    assert_eq!(operator.delete(&[id]).await.expect("operator deletes"), 1);
    let now = now_ms();
    assert_denied(
        operator.enqueue(vec![task_at("roles", now, now)]).await,
        "operator enqueue",
    );
    assert_denied(
        operator.dequeue(&dequeue_request("roles")).await,
        "operator dequeue",
    );
}

/// Issue 23, transactional enqueue under least privilege: a producer login
/// (no table privilege) seals, enqueues and audits in its own transaction
/// through `PostgresTxClient`; after the commit the task and its record
/// are there, and the log verifies; the producer still cannot read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_a_producer_login_enqueues_and_audits_in_its_own_transaction() {
    let f = Fixture::new().await;
    let as_producer = f.url_as("producer");
    let broker = sealq_postgres::PostgresBroker::connect(&as_producer)
        .await
        .unwrap();
    let keyring = sealq::Keyring::generate();
    let sink = PostgresAuditSink::from_broker(&broker);
    let auditor = Auditor::start(Arc::new(sink), &keyring).unwrap();
    let keys = sealq::audit::AuditKeys::from_keyring(&keyring).unwrap();
    let client = sealq::Client::builder(Arc::new(broker.clone()), Arc::new(keyring))
        .producer("tests")
        .audit(auditor.clone())
        .build();
    let txq = sealq_postgres::PostgresTxClient::new(client, broker).unwrap();

    let mut pg = f.client_as("producer").await;
    let tx = pg.transaction().await.unwrap();
    let task = sealq::RawTask::from_json(
        "invoice.send",
        &serde_json::json!({ "order": 1 }),
        Default::default(),
    )
    .unwrap();
    let id = txq.enqueue_raw_in(&tx, task).await.unwrap();
    tx.commit().await.unwrap();
    auditor.close().await.unwrap();

    // Read back as the owner: the task and its record exist, and verify.
    let owner = sealq_postgres::PostgresBroker::connect(&f.url)
        .await
        .unwrap();
    assert!(
        sealq::broker::Broker::get(&owner, id)
            .await
            .unwrap()
            .is_some(),
        "task stored"
    );
    let owner_sink = PostgresAuditSink::from_broker(&owner);
    let records = owner_sink.records_for_task(id).await.unwrap();
    assert_eq!(records.len(), 1, "one enqueued record");
    let report = sealq::audit::verify_sink(&owner_sink, &keys, &Default::default())
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.faults);
    // The producer still reads nothing back.
    let producer_sink = PostgresAuditSink::connect(&as_producer).await.unwrap();
    assert!(producer_sink.read_records().await.is_err());
}

/// Migration 10's `sealq.sample_waiting` is granted to workers by the role
/// setup; a deployment that upgraded the schema without applying the roles
/// again has a worker login that may not call it. Its keyring check then
/// samples with the by-id lists it may call, as before; a producer may
/// call neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_a_worker_login_without_the_sample_grant_samples_with_the_by_id_lists() {
    use sealq::broker::Broker;
    use sealq_postgres::PostgresBroker;

    let (f, _owner) = Fixture::with_three_tasks().await;

    let worker = PostgresBroker::connect(&f.url_as("worker")).await.unwrap();
    let granted = worker
        .sample_waiting("roles", 24)
        .await
        .expect("worker samples");
    assert_eq!(granted.len(), 3);

    connect(&f.url)
        .await
        .batch_execute(
            "REVOKE EXECUTE ON FUNCTION sealq.sample_waiting(text, bigint) FROM sealq_worker",
        )
        .await
        .unwrap();
    let worker = PostgresBroker::connect(&f.url_as("worker")).await.unwrap();
    let listed = worker
        .sample_waiting("roles", 24)
        .await
        .expect("a worker without the grant samples through list_waiting");
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|r| r.queue == "roles"));

    let producer = PostgresBroker::connect(&f.url_as("producer"))
        .await
        .unwrap();
    assert_denied(
        producer.sample_waiting("roles", 24).await,
        "producer sample",
    );
}

/// Migration 11's `sealq.queue_depths` (the worker's gauges) is granted to
/// workers by the role setup; a worker login set up before it samples its
/// gauges with the exact counts it may call; a producer may call neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_a_worker_login_without_the_depths_grant_reads_the_exact_counts() {
    use sealq::broker::Broker;
    use sealq_postgres::PostgresBroker;

    let (f, owner) = Fixture::with_three_tasks().await;

    let worker = PostgresBroker::connect(&f.url_as("worker")).await.unwrap();
    let granted = worker.queue_depths().await.expect("worker reads depths");
    assert_eq!(granted, owner.stats().await.unwrap());
    assert_eq!(granted[0].pending, 3);

    connect(&f.url)
        .await
        .batch_execute("REVOKE EXECUTE ON FUNCTION sealq.queue_depths() FROM sealq_worker")
        .await
        .unwrap();
    let worker = PostgresBroker::connect(&f.url_as("worker")).await.unwrap();
    let counted = worker
        .queue_depths()
        .await
        .expect("a worker without the grant reads task_counts");
    assert_eq!(counted, granted);

    let producer = PostgresBroker::connect(&f.url_as("producer"))
        .await
        .unwrap();
    assert_denied(producer.queue_depths().await, "producer depths");
}
