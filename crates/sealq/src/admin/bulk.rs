//! Bulk recovery: deleting or re-running every task a filter chooses
//! (queue, state, archive reason, age), in bounded batches, audited one
//! record per batch.
//!
//! The filter on queue and state goes to the broker
//! ([`ListQuery`](crate::store::broker::ListQuery)); archive reason and age
//! are checked here, on the [`TaskRecord`] each listed task comes back as,
//! so every backend supports them without a new broker call. Batches are
//! pages of the listing in id order: each is listed, filtered, acted on in
//! one broker call and audited before the next is read, so an interrupted
//! run has done whole batches only and running it again acts on what is
//! left (deleted tasks are gone; re-run tasks are no longer archived).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::model::audit_event::AuditEvent;
use crate::model::id::TaskId;
use crate::model::record::TaskRecord;
use crate::model::state::{ArchiveReason, TaskState};
use crate::store::broker::ListQuery;

/// Which tasks a bulk action acts on: every criterion given must hold
/// (AND); `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks of this queue.
    pub queue: Option<String>,
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only archived tasks archived for this reason.
    pub reason: Option<ArchiveReason>,
    /// Only tasks that entered their current state (were enqueued,
    /// retried, completed, archived …: [`TaskRecord::updated_at_ms`]) at
    /// least this long ago, by the client's clock.
    pub older_than: Option<Duration>,
}

impl TaskFilter {
    /// Whether no criterion is set (every task matches).
    pub fn is_empty(&self) -> bool {
        self == &TaskFilter::default()
    }

    /// Whether `record` matches at `now_ms` (Unix ms).
    pub fn matches(&self, record: &TaskRecord, now_ms: i64) -> bool {
        self.queue.as_ref().is_none_or(|q| &record.queue == q)
            && self.state.is_none_or(|s| record.state == s)
            && self
                .reason
                .as_ref()
                .is_none_or(|r| record.archive_reason.as_ref() == Some(r))
            && self.older_than.is_none_or(|age| {
                let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                record.updated_at_ms <= now_ms.saturating_sub(age_ms)
            })
    }

    /// The filter in one line, as audit records and messages show it:
    /// `queue=q state=archived reason=exhausted older_than=3600s`, or `all`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(q) = &self.queue {
            parts.push(format!("queue={q}"));
        }
        if let Some(s) = self.state {
            parts.push(format!("state={s}"));
        }
        if let Some(r) = &self.reason {
            parts.push(format!("reason={r}"));
        }
        if let Some(age) = self.older_than {
            parts.push(format!("older_than={}ms", age.as_millis()));
        }
        if parts.is_empty() {
            "all".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

/// What a bulk action does to each task it chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// Move archived tasks back to pending, attempts reset
    /// ([`crate::Broker::rerun`]). Only archived tasks move.
    Rerun,
    /// Delete tasks in any state ([`crate::Broker::delete`]); their ids are
    /// remembered, so they cannot be enqueued again.
    Delete,
}

impl BulkAction {
    /// `rerun` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Rerun => "rerun",
            BulkAction::Delete => "delete",
        }
    }
}

/// How a bulk action runs.
#[derive(Debug, Clone)]
pub struct BulkOptions {
    /// Tasks listed (and at most acted on) per batch: one listing, one
    /// broker call and one audit record each. Default 500; 0 means 500.
    pub batch: usize,
    /// Act on at most this many tasks in this run (`None`: all that match).
    pub max: Option<u64>,
    /// Only count and list what would be acted on; change nothing and
    /// write no audit record.
    pub dry_run: bool,
    /// How many matching ids the report keeps, the first in id order.
    /// Default 10.
    pub sample: usize,
    /// Set it (from a signal handler, say) to stop before the next batch:
    /// the batch under way finishes and is audited, the report says
    /// [`BulkReport::interrupted`], and running again does the rest.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions {
            batch: 500,
            max: None,
            dry_run: false,
            sample: 10,
            stop: None,
        }
    }
}

/// What a bulk action did (or, dry, would do), so far or in the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BulkReport {
    /// Tasks listed (those of the filter's queue and state).
    pub scanned: u64,
    /// Tasks that matched the whole filter.
    pub matched: u64,
    /// Tasks changed (0 on a dry run).
    pub acted: u64,
    /// Broker calls made, each audited by one `bulk_action` record.
    pub batches: u64,
    /// The first matching ids, in id order.
    pub sample: Vec<TaskId>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Whether [`BulkOptions::stop`] ended the run before every matching
    /// task was seen.
    pub interrupted: bool,
}

impl Client {
    /// Apply `action` to every task `filter` chooses, in batches of
    /// `options.batch`, writing one `bulk_action` audit record per batch
    /// (the filter, the tasks, how many changed, the operator) and flushing
    /// it before the next batch is read. `progress` is called after each
    /// batch with the report so far.
    ///
    /// A re-run acts on archived tasks only: with no state in the filter it
    /// means `archived`, and another state is refused. A reason implies the
    /// `archived` state. A delete with an empty filter is refused (it would
    /// delete every task); say what to delete.
    pub async fn bulk_tasks(
        &self,
        action: BulkAction,
        filter: &TaskFilter,
        options: &BulkOptions,
        operator: &str,
        mut progress: impl FnMut(&BulkReport) + Send,
    ) -> Result<BulkReport> {
        let filter = effective_filter(action, filter)?;
        if let Some(q) = &filter.queue {
            crate::model::options::validate_queue_name(q)?;
        }
        let batch = if options.batch == 0 {
            500
        } else {
            options.batch
        };
        let mut report = BulkReport {
            dry_run: options.dry_run,
            ..BulkReport::default()
        };
        let mut after = None;
        loop {
            if options
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::SeqCst))
            {
                report.interrupted = true;
                break;
            }
            let page = self
                .broker()
                .list(&ListQuery {
                    queue: filter.queue.clone(),
                    state: filter.state,
                    after,
                    limit: batch,
                    ..ListQuery::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let now = self.now_ms();
            let room = options.max.map_or(u64::MAX, |m| m - report.matched);
            let ids: Vec<TaskId> = page
                .iter()
                .filter(|r| filter.matches(r, now))
                .map(|r| r.id)
                .take(usize::try_from(room).unwrap_or(usize::MAX))
                .collect();
            report.scanned += page.len() as u64;
            report.matched += ids.len() as u64;
            let keep = options.sample.saturating_sub(report.sample.len());
            report.sample.extend(ids.iter().take(keep));
            if !options.dry_run && !ids.is_empty() {
                report.acted += self.act(action, &filter, ids, operator).await?;
                report.batches += 1;
            }
            progress(&report);
            if page.len() < batch || options.max.is_some_and(|m| report.matched >= m) {
                break;
            }
        }
        Ok(report)
    }

    /// One batch: one broker call, then its audit record, flushed.
    async fn act(
        &self,
        action: BulkAction,
        filter: &TaskFilter,
        ids: Vec<TaskId>,
        operator: &str,
    ) -> Result<u64> {
        let count = match action {
            BulkAction::Rerun => self.broker().rerun(&ids).await?,
            BulkAction::Delete => self.broker().delete(&ids).await?,
        };
        self.audit_now(AuditEvent::BulkAction {
            action: action.as_str().to_owned(),
            filter: filter.describe(),
            tasks: ids,
            count,
            operator: operator.to_owned(),
        })
        .await?;
        Ok(count)
    }
}

/// The filter a bulk action really runs with, or why it is refused.
fn effective_filter(action: BulkAction, filter: &TaskFilter) -> Result<TaskFilter> {
    let mut f = filter.clone();
    let bad = |reason: String| Error::InvalidArgument {
        what: "bulk filter",
        reason,
    };
    if f.reason.is_some() {
        match f.state {
            None => f.state = Some(TaskState::Archived),
            Some(TaskState::Archived) => {}
            Some(s) => {
                return Err(bad(format!(
                    "an archive reason matches archived tasks only, not state `{s}`: \
                     drop the state or use `archived`"
                )));
            }
        }
    }
    match action {
        BulkAction::Rerun => match f.state {
            None => f.state = Some(TaskState::Archived),
            Some(TaskState::Archived) => {}
            Some(s) => {
                return Err(bad(format!(
                    "only archived tasks can be re-run, not state `{s}`: drop the state \
                     or use `archived`"
                )));
            }
        },
        BulkAction::Delete if f.is_empty() => {
            return Err(bad(
                "a bulk delete needs at least one of queue, state, reason or age \
                 (it would delete every task)"
                    .to_owned(),
            ));
        }
        BulkAction::Delete => {}
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rerun_means_archived_and_refuses_other_states() {
        let f = effective_filter(BulkAction::Rerun, &TaskFilter::default()).unwrap();
        assert_eq!(f.state, Some(TaskState::Archived));
        let pending = TaskFilter {
            state: Some(TaskState::Pending),
            ..TaskFilter::default()
        };
        let e = effective_filter(BulkAction::Rerun, &pending).unwrap_err();
        assert!(e.to_string().contains("only archived tasks"), "{e}");
    }

    #[test]
    fn a_reason_implies_archived_and_an_empty_delete_is_refused() {
        let f = TaskFilter {
            reason: Some(ArchiveReason::Integrity),
            ..TaskFilter::default()
        };
        let f = effective_filter(BulkAction::Delete, &f).unwrap();
        assert_eq!(f.state, Some(TaskState::Archived));
        let e = effective_filter(BulkAction::Delete, &TaskFilter::default()).unwrap_err();
        assert!(e.to_string().contains("at least one"), "{e}");
        let f = TaskFilter {
            reason: Some(ArchiveReason::Integrity),
            state: Some(TaskState::Completed),
            ..TaskFilter::default()
        };
        assert!(effective_filter(BulkAction::Delete, &f).is_err());
    }

    #[test]
    fn describe_names_every_criterion() {
        assert_eq!(TaskFilter::default().describe(), "all");
        let f = TaskFilter {
            queue: Some("mail".into()),
            state: Some(TaskState::Archived),
            reason: Some(ArchiveReason::Exhausted),
            older_than: Some(Duration::from_secs(60)),
        };
        assert_eq!(
            f.describe(),
            "queue=mail state=archived reason=exhausted older_than=60000ms"
        );
    }
}
