//! Typed references: a payload before (the whole customer record) and after
//! (a `Ref<Customer>`), and a handler that resolves the reference through a
//! cached, single-flight resolver registered on the worker.
//!
//! ```text
//! cargo run -p sealq-sqlite --example references
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sealq::reference::async_trait;
use sealq::{
    CacheOptions, Client, EnqueueOptions, Keyring, Ref, ResolveError, Resolver, ResolverOptions,
    Task, TaskContext, TaskState, Worker,
};
use sealq_sqlite::SqliteBroker;
use serde::{Deserialize, Serialize};

/// A customer record, as the customer database holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Customer {
    id: String,
    name: String,
    email: String,
    billing_address: String,
    vat_number: String,
}

/// Before: the task carries the whole record. Every worker, dead-letter
/// queue, backup and debugging session that opens the payload sees it.
#[derive(Serialize, Deserialize)]
struct SendInvoiceBefore {
    invoice_id: String,
    customer: Customer,
}

/// After: the task carries a typed reference, serialized as the id alone.
#[derive(Serialize, Deserialize)]
struct SendInvoice {
    invoice_id: String,
    customer: Ref<Customer>,
}

impl Task for SendInvoice {
    const KIND: &'static str = "invoices.send";
}

/// Fetches customers by id: here from a map standing in for the database.
struct CustomerDb(HashMap<String, Customer>);

#[async_trait]
impl Resolver<Customer> for CustomerDb {
    async fn resolve(&self, id: &str) -> Result<Customer, ResolveError> {
        tokio::time::sleep(Duration::from_millis(5)).await; // a database round trip
        self.0.get(id).cloned().ok_or(ResolveError::NotFound)
    }
}

fn customer(i: u32) -> Customer {
    Customer {
        id: format!("cus_{i:03}"),
        name: format!("Customer {i}"),
        email: format!("billing{i}@example.com"),
        billing_address: format!("{i} Example Street, 1000 Brussels"),
        vat_number: format!("BE0{i:09}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db: HashMap<String, Customer> = (0..10)
        .map(|i| (format!("cus_{i:03}"), customer(i)))
        .collect();

    // The payload, before and after.
    let before = SendInvoiceBefore {
        invoice_id: "inv_0001".into(),
        customer: customer(7),
    };
    let after = SendInvoice {
        invoice_id: "inv_0001".into(),
        customer: Ref::new("cus_007"),
    };
    println!("before: {}", serde_json::to_string(&before)?);
    println!("after:  {}", serde_json::to_string(&after)?);
    println!(
        "serialized (MessagePack): {} bytes before, {} bytes after\n",
        sealq::task::encode_payload(&before)?.len(),
        sealq::task::encode_payload(&after)?.len()
    );

    let dir = tempfile::tempdir()?;
    let broker: Arc<dyn sealq::Broker> = Arc::new(SqliteBroker::open(dir.path().join("q.db"))?);
    let keyring = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), keyring.clone()).build();

    // 30 invoices for 3 customers, and one for a customer that does not exist.
    let mut ids = Vec::new();
    for i in 0..30 {
        let task = SendInvoice {
            invoice_id: format!("inv_{i:04}"),
            customer: Ref::new(format!("cus_{:03}", i % 3)),
        };
        ids.push(client.enqueue(&task, EnqueueOptions::new()).await?);
    }
    let missing = SendInvoice {
        invoice_id: "inv_9999".into(),
        customer: Ref::new("cus_999"),
    };
    ids.push(client.enqueue(&missing, EnqueueOptions::new()).await?);

    let worker = Worker::builder(broker.clone(), keyring)
        .resolver::<Customer, _>(
            CustomerDb(db),
            ResolverOptions::default()
                .timeout(Duration::from_secs(2))
                .cache(CacheOptions::new(Duration::from_secs(60), 10_000)),
        )
        .handle(|task: SendInvoice, ctx: TaskContext| async move {
            // Not found → archived `reference_missing`; transient/timeout → retried.
            let customer = ctx.resolve(&task.customer).await?;
            std::hint::black_box((&task.invoice_id, &customer.email));
            Ok(())
        })
        .build()?;
    let handle = worker.spawn();
    for id in &ids {
        while !matches!(
            broker.get(*id).await?.map(|r| r.state),
            Some(TaskState::Completed | TaskState::Archived)
        ) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let report = handle.shutdown().await?;
    let last = broker.get(*ids.last().unwrap_or(&ids[0])).await?;
    println!(
        "worker: {} succeeded, {} archived (the unknown customer: {})",
        report.succeeded,
        report.archived,
        last.and_then(|r| r.archive_reason)
            .map_or_else(|| "-".to_owned(), |r| r.to_string())
    );
    for s in worker.resolvers().stats() {
        println!(
            "resolver {}: {} resolves, {} fetches, {} from the cache, {} joined a running fetch, errors: {}",
            s.type_name,
            s.resolves,
            s.fetches,
            s.cache_hits,
            s.coalesced,
            s.errors
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
