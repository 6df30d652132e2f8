//! Least privilege on Postgres: four group roles that can call sealq's
//! `SECURITY DEFINER` functions and nothing else.
//!
//! - `sealq_producer`, `sealq_worker`, `sealq_operator`, `sealq_admin` are
//!   `NOLOGIN` group roles; login roles (one per service) are granted into
//!   them (`GRANT sealq_worker TO billing_worker`).
//! - None of them has a privilege on any table or sequence of the schema
//!   `sealq`: every operation goes through a function owned by the schema
//!   owner, which runs with the owner's rights (`SECURITY DEFINER`), pins
//!   `search_path = pg_catalog, pg_temp` and names every object with its
//!   schema.
//! - `PUBLIC` has no `EXECUTE` on any sealq function, including functions
//!   created later (`ALTER DEFAULT PRIVILEGES … REVOKE EXECUTE ON FUNCTIONS
//!   FROM PUBLIC` for the schema owner).
//!
//! [`FUNCTIONS`] is the whole policy: each function with the roles that may
//! call it. [`role_sql`] turns it into the SQL that `sealq postgres install
//! --print-roles` prints and `--apply-roles` runs ([`apply_roles`]). The
//! SQL is idempotent: it creates missing roles, takes every grant on the
//! schema away from them and grants exactly the table again, so re-running
//! it after an upgrade also removes grants a newer version no longer gives.
//! `docs/postgres-roles.md` shows it with what each role can and cannot do.

use sealq::broker::BrokerResult;

use crate::store_conn::StoreConn;

/// A sealq group role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Enqueues tasks and appends to the audit log; reads and creates
    /// subject keys (to seal); stores claim-check blobs.
    Producer,
    /// Claims, acks and extends leases; appends to the audit log; reads
    /// subject keys and blobs (to open) and deletes the blobs of completed
    /// tasks.
    Worker,
    /// Lists, inspects and manages tasks and queues; reads the audit log;
    /// erases subjects (destroys keys) and re-wraps keys after a rotation.
    Operator,
    /// Everything an operator can, plus pruning the audit log (the only
    /// role that can delete audit rows).
    Admin,
}

impl Role {
    /// Every role, in privilege order.
    pub const ALL: [Role; 4] = [Role::Producer, Role::Worker, Role::Operator, Role::Admin];

    /// The Postgres role name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "sealq_producer",
            Role::Worker => "sealq_worker",
            Role::Operator => "sealq_operator",
            Role::Admin => "sealq_admin",
        }
    }
}

/// One `SECURITY DEFINER` function and the roles granted `EXECUTE` on it.
#[derive(Debug, Clone, Copy)]
pub struct FunctionGrant {
    /// Schema-qualified signature, as `GRANT EXECUTE ON FUNCTION` takes it
    /// (argument types only), e.g. `sealq.blob_get(uuid, bytea)`.
    pub signature: &'static str,
    /// Who may call it.
    pub roles: &'static [Role],
}

use Role::{Admin, Operator, Producer, Worker};

const EVERYONE: &[Role] = &[Producer, Worker, Operator, Admin];
const MANAGERS: &[Role] = &[Operator, Admin];
const WORKERS: &[Role] = &[Worker, Admin];
const PRODUCERS_WORKERS: &[Role] = &[Producer, Worker, Admin];

/// Every function a role may call, with its roles. A function of the
/// schema that is in neither this table nor [`UNGRANTED`] fails the test
/// `every_sealq_function_is_in_the_role_table`.
pub const FUNCTIONS: &[FunctionGrant] = &[
    FunctionGrant {
        signature: "sealq.schema_version_number()",
        roles: EVERYONE,
    },
    // The task broker. Producers enqueue (and record the keyring's check
    // values at their first enqueue); workers claim, ack, extend,
    // quarantine, forward due tasks, recover expired leases, purge, read
    // rate limits and queue counts (readiness and the queue-depth metrics
    // call `stats`: counts only, nothing about a task), sample waiting
    // tasks (`sample_waiting`, or `list_waiting` where a role setup
    // predates it: the keyring check at start) and keep their
    // live-worker registration; operators list,
    // inspect and manage tasks and queues, erase and re-seal, and list
    // workers.
    FunctionGrant {
        signature: "sealq.enqueue(bigint, uuid[], text[], text[], bytea[], integer[], \
                    bigint[], bigint[], bytea[], bytea[], text[], bigint[])",
        roles: &[Producer, Admin],
    },
    FunctionGrant {
        signature: "sealq.enqueue_one(bigint, uuid, text, text, bytea, integer, bigint, \
                    bigint, bytea, bytea)",
        roles: &[Producer, Admin],
    },
    FunctionGrant {
        signature: "sealq.key_checks_read()",
        roles: EVERYONE,
    },
    FunctionGrant {
        signature: "sealq.key_checks_record(text[], text[], bigint)",
        roles: PRODUCERS_WORKERS,
    },
    FunctionGrant {
        signature: "sealq.dequeue(text[], integer, bigint, bigint, text, bigint)",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.ack(bigint, uuid[], bigint[], text[], bigint[], bytea[], text[])",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.extend_leases(uuid[], bigint[], bigint)",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.quarantine(uuid[], bigint)",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.forward_due(bigint)",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.next_due()",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.recover_archive(bigint)",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.recover_retry(bigint)",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.purge_completed(bigint, bigint)",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.prune_replay(bigint, bigint)",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.prune_unique_keys(bigint, bigint)",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.worker_register(text, text, text, bigint, text[], bigint, bigint, \
                    bigint, bigint, bigint)",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.worker_deregister(text)",
        roles: WORKERS,
    },
    FunctionGrant {
        signature: "sealq.delete_tasks(uuid[], bigint)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.rerun_archived(uuid[], bigint)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.pause_queue(text, bigint)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.resume_queue(text)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.set_max_depth(text, bigint)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.clear_max_depth(text)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.set_rate_limit(text, bigint, bigint, bigint)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.clear_rate_limit(text)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.swap_payload(uuid, text, bytea, bytea)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.swap_result(uuid, text, bytea, bytea)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.swap_error(uuid, text, bytea, bytea)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.erase_states(uuid[])",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.erase_unique_keys(uuid[])",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.erase_remember(uuid[], bigint)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.erase_delete(uuid[])",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.erase_wipe(uuid[])",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.erase_archive(uuid[], bigint)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.lock_tasks(uuid[])",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.subject_task_ids(bytea)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.get_task(uuid)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.task_counts()",
        roles: &[Worker, Operator, Admin],
    },
    FunctionGrant {
        signature: "sealq.queue_depths()",
        roles: &[Worker, Operator, Admin],
    },
    FunctionGrant {
        signature: "sealq.queue_settings()",
        roles: &[Worker, Operator, Admin],
    },
    FunctionGrant {
        signature: "sealq.list_tasks(text, text, bytea, uuid, bigint)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.list_waiting(text, text, bytea, uuid, bigint)",
        roles: &[Worker, Operator, Admin],
    },
    FunctionGrant {
        signature: "sealq.sample_waiting(text, bigint)",
        roles: &[Worker, Operator, Admin],
    },
    FunctionGrant {
        signature: "sealq.queue_rate_limits(text[])",
        roles: &[Worker, Operator, Admin],
    },
    FunctionGrant {
        signature: "sealq.worker_list(bigint)",
        roles: &[Worker, Operator, Admin],
    },
    // Subject keys: producers seal (get, create), workers open (get),
    // operators erase (destroy) and re-wrap (list, replace); no operator
    // action creates a key.
    FunctionGrant {
        signature: "sealq.subject_key_get(bytea[])",
        roles: EVERYONE,
    },
    FunctionGrant {
        signature: "sealq.subject_key_put(bytea[], bytea[], bigint)",
        roles: &[Producer, Admin],
    },
    FunctionGrant {
        signature: "sealq.subject_key_epoch()",
        roles: EVERYONE,
    },
    FunctionGrant {
        signature: "sealq.subject_key_destroy(bytea)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.subject_key_list()",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.subject_key_replace(bytea, bytea, bytea)",
        roles: MANAGERS,
    },
    // The audit log: everyone appends (operators' actions are audited too)
    // and reads the checkpoints (writer ids, seqs, hashes, signatures:
    // nothing about tasks), which each writer does once at start to name
    // the log's head in its first record (docs/audit.md, "The whole log");
    // only operators and admins read the records; only admins delete.
    FunctionGrant {
        signature: "sealq.audit_append(text[], bigint[], uuid[], text[], text[])",
        roles: EVERYONE,
    },
    FunctionGrant {
        signature: "sealq.audit_append_checkpoint(text, bigint, text)",
        roles: EVERYONE,
    },
    FunctionGrant {
        signature: "sealq.audit_read_records(bigint, integer)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.audit_read_checkpoints(bigint, integer)",
        roles: EVERYONE,
    },
    FunctionGrant {
        signature: "sealq.audit_has_checkpoints()",
        roles: EVERYONE,
    },
    FunctionGrant {
        signature: "sealq.audit_records_for_task(uuid)",
        roles: MANAGERS,
    },
    FunctionGrant {
        signature: "sealq.audit_prune(bigint, bigint)",
        roles: &[Admin],
    },
    // Claim-check blobs: producers store, workers read, delete the blobs of
    // completed tasks and sweep orphans; operators reveal and re-seal.
    FunctionGrant {
        signature: "sealq.blob_put(uuid, bytea, bytea, bigint)",
        roles: &[Producer, Operator, Admin],
    },
    FunctionGrant {
        signature: "sealq.blob_get(uuid, bytea)",
        roles: &[Worker, Operator, Admin],
    },
    FunctionGrant {
        signature: "sealq.blob_delete_tasks(uuid[])",
        roles: &[Worker, Operator, Admin],
    },
    FunctionGrant {
        signature: "sealq.blob_list_tasks(uuid, integer)",
        roles: &[Worker, Operator, Admin],
    },
];

/// Functions of the schema that no role may call directly (trigger
/// functions, and helpers that definer functions call as the owner).
pub const UNGRANTED: &[&str] = &[
    "sealq.audit_refuse_change()",
    "sealq.drop_bodies()",
    "sealq.queue_depth_estimates()",
    "sealq.remember_deleted_completed()",
    "sealq.remember_reopened_completed()",
    "sealq.remember_truncated_completed()",
];

/// The functions `role` may call.
pub fn functions_of(role: Role) -> impl Iterator<Item = &'static str> {
    FUNCTIONS
        .iter()
        .filter(move |f| f.roles.contains(&role))
        .map(|f| f.signature)
}

/// The role setup as SQL: one transaction, idempotent. Run it as the owner
/// of the schema `sealq` (the role `sealq postgres install` ran as), which
/// needs `CREATEROLE` for the roles that do not exist yet.
pub fn role_sql() -> String {
    let all = Role::ALL.map(Role::name).join(", ");
    let mut sql = String::new();
    sql.push_str(&format!(
        "-- sealq role setup for schema version {}, generated by sealq-postgres {}.\n\
         -- Run as the owner of the schema sealq; idempotent.\n\
         BEGIN;\n\n",
        crate::SCHEMA_VERSION,
        env!("CARGO_PKG_VERSION")
    ));
    sql.push_str("-- The group roles (NOLOGIN: grant login roles into them).\nDO $$\nBEGIN\n");
    for role in Role::ALL {
        let name = role.name();
        sql.push_str(&format!(
            "    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{name}') THEN\n\
             \x20       CREATE ROLE {name} NOLOGIN;\n\
             \x20   END IF;\n"
        ));
    }
    sql.push_str("END\n$$;\n\n");
    sql.push_str(
        "-- Nothing in the schema for PUBLIC, now or for functions created later.\n\
         REVOKE ALL ON SCHEMA sealq FROM PUBLIC;\n\
         REVOKE ALL ON ALL TABLES IN SCHEMA sealq FROM PUBLIC;\n\
         REVOKE ALL ON ALL SEQUENCES IN SCHEMA sealq FROM PUBLIC;\n\
         REVOKE ALL ON ALL FUNCTIONS IN SCHEMA sealq FROM PUBLIC;\n\
         DO $$\n\
         BEGIN\n\
         \x20   EXECUTE pg_catalog.format(\n\
         \x20       'ALTER DEFAULT PRIVILEGES FOR ROLE %I REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC',\n\
         \x20       (SELECT r.rolname FROM pg_catalog.pg_namespace n\n\
         \x20        JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner WHERE n.nspname = 'sealq'));\n\
         END\n\
         $$;\n\n",
    );
    sql.push_str(&format!(
        "-- Start from nothing: no table, sequence or function privilege at all.\n\
         REVOKE ALL ON ALL TABLES IN SCHEMA sealq FROM {all};\n\
         REVOKE ALL ON ALL SEQUENCES IN SCHEMA sealq FROM {all};\n\
         REVOKE ALL ON ALL FUNCTIONS IN SCHEMA sealq FROM {all};\n\
         REVOKE CREATE ON SCHEMA sealq FROM {all};\n\
         GRANT USAGE ON SCHEMA sealq TO {all};\n\n\
         -- EXECUTE on exactly the functions each role needs.\n"
    ));
    for f in FUNCTIONS {
        let roles = f
            .roles
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", ");
        sql.push_str(&format!(
            "GRANT EXECUTE ON FUNCTION {} TO {roles};\n",
            f.signature
        ));
    }
    sql.push_str("\nCOMMIT;\n");
    sql
}

/// Run [`role_sql`] at `url` (as the schema owner, with `CREATEROLE` if a
/// role is missing). The schema must be at this build's version.
pub async fn apply_roles(url: &str) -> BrokerResult<()> {
    let (conn, _) = StoreConn::connect(url, false).await?;
    let client = conn.client("applying the sealq roles").await?;
    client
        .batch_execute(&role_sql())
        .await
        .map_err(|e| conn.err("applying the sealq roles", e))
}

/// What [`install`] found and left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// The schema version before (0: none).
    pub from: i32,
    /// The schema version now ([`crate::SCHEMA_VERSION`]).
    pub to: i32,
}

/// Create or upgrade the schema `sealq` at `url`, as the role of the URL
/// (which becomes or must be the schema's owner).
///
/// ```no_run
/// # async fn demo() -> Result<(), sealq::BrokerError> {
/// let url = "postgres://sealq_owner@db.internal/app?sslmode=verify-full";
/// let installed = sealq_postgres::roles::install(url).await?;
/// sealq_postgres::roles::apply_roles(url).await?;
/// println!("schema {} -> {}", installed.from, installed.to);
/// # Ok(()) }
/// ```
pub async fn install(url: &str) -> BrokerResult<Installed> {
    let (_, from) = StoreConn::connect(url, true).await?;
    Ok(Installed {
        from,
        to: crate::SCHEMA_VERSION,
    })
}
