//! `sealq postgres install` against a real Postgres this test starts (the
//! Postgres broker crate's test support, shared): schema creation and
//! upgrade as the owner, the role SQL printed and applied.

#[path = "../../sealq-postgres/tests/support/mod.rs"]
mod support;

use std::process::{Command, Output};

fn sealq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealq"))
        .env_remove("SEALQ_BROKER")
        .env_remove("SEALQ_KEYRING")
        .env_remove("SEALQ_KEYRING_TOML")
        .env_remove("SEALQ_AUDIT")
        .args(args)
        .output()
        .expect("run sealq")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn postgres_install_print_roles_without_broker_prints_the_sql_only() {
    let o = sealq(&["postgres", "install", "--print-roles"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("CREATE ROLE sealq_producer NOLOGIN"), "{out}");
    assert!(
        out.contains(
            "ALTER DEFAULT PRIVILEGES FOR ROLE %I REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC"
        ),
        "{out}"
    );
    assert!(
        out.contains("GRANT EXECUTE ON FUNCTION sealq.audit_prune(bigint, bigint) TO sealq_admin;")
    );
    // Applying needs a database.
    let o = sealq(&["postgres", "install", "--apply-roles"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--broker postgres://"));
}

#[test]
fn postgres_install_refuses_a_url_that_is_not_postgres() {
    let o = sealq(&["--broker", "redis://127.0.0.1:1", "postgres", "install"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Postgres broker URL"));
    let o = sealq(&[
        "--broker",
        "postgres://u:hunter2@127.0.0.1:1/db?sslmode=prefer",
        "postgres",
        "install",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!text(&o).contains("hunter2"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_install_creates_then_finds_the_schema_and_applies_roles() {
    let url = support::fresh_db().await;
    let o = sealq(&["--broker", &url, "postgres", "install"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "from version 0 to {}",
            sealq_postgres::SCHEMA_VERSION
        )),
        "{out}"
    );
    let o = sealq(&[
        "--broker",
        &url,
        "postgres",
        "install",
        "--apply-roles",
        "--print-roles",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("nothing to migrate"), "{out}");
    assert!(out.contains("applied the sealq roles"), "{out}");
    assert!(out.contains("BEGIN;"), "{out}");
    // The roles exist and have exactly their grants (spot checks; the
    // sealq-postgres roles test checks every one).
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for (role, function, can) in [
        (
            "sealq_producer",
            "sealq.subject_key_put(bytea[], bytea[], bigint)",
            true,
        ),
        ("sealq_producer", "sealq.blob_get(uuid, bytea)", false),
        ("sealq_worker", "sealq.blob_get(uuid, bytea)", true),
        ("sealq_operator", "sealq.audit_prune(bigint, bigint)", false),
        ("sealq_admin", "sealq.audit_prune(bigint, bigint)", true),
    ] {
        let got: bool = client
            .query_one(
                "SELECT has_function_privilege($1, $2::text::regprocedure, 'EXECUTE')",
                &[&role, &function],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, can, "{role} on {function}");
    }
}
