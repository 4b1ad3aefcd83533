//! Group settlement: the attempts that deliveries finish at about the same time are
//! recorded and settled together, in one statement and one transaction
//! ([`queue::settle_all`]), instead of one each — the write-ahead log is flushed
//! once for the batch, and the statement's fixed cost is shared. A delivery learns
//! its own result only once its batch committed.
//!
//! No task of its own: a delivery that finds fewer than [`SETTLERS`] batches in
//! flight takes everything waiting (its own settlement included) and settles it;
//! the others wait for the batch that took theirs. Under light load a settlement
//! goes alone at once; under heavy load the batches grow by themselves. A batch
//! that fails is settled again one by one, so one bad settlement (a customer
//! deleted meanwhile) cannot fail the others. A settlement whose answer was lost
//! is tried again while the lease lasts, marked as maybe settled already, so that
//! only such a try pays for looking up whether its attempt was recorded.

use mailbridge_core::ids::MessageId;
use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use mailbridge_core::{
    crypto::MasterKey,
    metrics::metrics,
    queue::{self, DeliveryAttempt, NewMessage, Settlement, Settling},
};
use sqlx::PgPool;
use tokio::{
    sync::{Semaphore, oneshot},
    time::Instant,
};

/// Batches in flight at once.
const SETTLERS: usize = 2;
/// Settlements in one batch at most.
const MAX_BATCH: usize = 64;

type Answer = Result<bool, Arc<sqlx::Error>>;

struct Waiting {
    message_id: MessageId,
    attempt: DeliveryAttempt,
    settlement: Settlement,
    report: Option<NewMessage>,
    maybe_settled: bool,
    reply: oneshot::Sender<Answer>,
}

/// Where a batch is settled: [`Database`], or a stand-in in tests.
pub(crate) trait Settle: Sync {
    /// Settles `settling` together; whether each was settled, in order.
    fn settle_all(
        &self,
        settling: &[Settling<'_>],
    ) -> impl Future<Output = Result<Vec<bool>, sqlx::Error>> + Send;
}

/// Settles in PostgreSQL as the worker `owner`, sealing reports with `key`
/// ([`queue::settle_all`]).
pub(crate) struct Database<'a> {
    pub pool: &'a PgPool,
    pub key: &'a MasterKey,
    pub owner: &'a str,
}

impl Settle for Database<'_> {
    async fn settle_all(&self, settling: &[Settling<'_>]) -> Result<Vec<bool>, sqlx::Error> {
        queue::settle_all(self.pool, self.key, self.owner, settling).await
    }
}

/// The settlements waiting for a batch.
pub(crate) struct GroupSettle {
    waiting: Mutex<Vec<Waiting>>,
    settlers: Semaphore,
}

impl std::fmt::Debug for GroupSettle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupSettle")
    }
}

impl Default for GroupSettle {
    fn default() -> Self {
        Self {
            waiting: Mutex::new(Vec::new()),
            settlers: Semaphore::new(SETTLERS),
        }
    }
}

impl GroupSettle {
    /// Records `attempt` and settles message `message_id` in `store` (queueing
    /// `report` with it), in a batch with what else is waiting; whether this worker
    /// still held its lease. `maybe_settled`: this is a try again after an answer
    /// that was lost ([`Settling::maybe_settled`]).
    pub(crate) async fn settle(
        &self,
        store: &impl Settle,
        message_id: MessageId,
        attempt: &DeliveryAttempt,
        settlement: Settlement,
        report: Option<&NewMessage>,
        maybe_settled: bool,
    ) -> Answer {
        let (reply, mut answer) = oneshot::channel();
        self.waiting.lock().expect("not poisoned").push(Waiting {
            message_id,
            attempt: attempt.clone(),
            settlement,
            report: report.cloned(),
            maybe_settled,
            reply,
        });
        loop {
            let settler = tokio::select! {
                biased;
                answer = &mut answer => return answer.unwrap_or_else(|_| Err(lost())),
                settler = self.settlers.acquire() => settler.expect("never closed"),
            };
            let batch = self.take();
            if batch.is_empty() {
                // Another batch took this settlement: its answer comes from there.
                drop(settler);
                return answer.await.unwrap_or_else(|_| Err(lost()));
            }
            settle_batch(store, batch).await;
            drop(settler);
        }
    }

    /// [`Self::settle`], tried again while the database cannot be reached, for up
    /// to `patience`: an answer Microsoft already gave is recorded rather than the
    /// message delivered again once its lease expires. A try after an error is
    /// marked maybe settled: the earlier one may have committed all the same.
    pub(crate) async fn settle_patiently(
        &self,
        store: &impl Settle,
        message_id: MessageId,
        attempt: &DeliveryAttempt,
        settlement: Settlement,
        report: Option<&NewMessage>,
        patience: Duration,
    ) -> Answer {
        let started = Instant::now();
        let mut pause = Duration::from_millis(500);
        let mut maybe_settled = false;
        loop {
            let settled = self.settle(
                store,
                message_id,
                attempt,
                settlement,
                report,
                maybe_settled,
            );
            match settled.await {
                // The database answered and refused: the message is gone (its customer
                // was deleted meanwhile); trying again cannot help.
                Err(e)
                    if matches!(&*e, sqlx::Error::Database(db)
                        if db.code().is_some_and(|code| code.starts_with("23"))) =>
                {
                    return Err(e);
                }
                Err(e) if started.elapsed() + pause < patience => {
                    tracing::warn!(queue_id = %message_id, error = %e, "could not record the attempt yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                    maybe_settled = true;
                }
                result => return result,
            }
        }
    }

    /// The oldest waiting settlements, as many as fit one batch.
    fn take(&self) -> Vec<Waiting> {
        let mut waiting = self.waiting.lock().expect("not poisoned");
        let n = waiting.len().min(MAX_BATCH);
        waiting.drain(..n).collect()
    }
}

/// A batch whose settler went away before answering (its task ended), as group
/// commit says it.
fn lost() -> Arc<sqlx::Error> {
    Arc::new(sqlx::Error::PoolClosed)
}

async fn settle_batch(store: &impl Settle, batch: Vec<Waiting>) {
    metrics().worker.settle_batch.observe(batch.len() as f64);
    let settling: Vec<Settling> = batch
        .iter()
        .map(|w| Settling {
            message_id: w.message_id,
            attempt: &w.attempt,
            settlement: w.settlement,
            report: w.report.as_ref(),
            maybe_settled: w.maybe_settled,
        })
        .collect();
    let answers: Vec<Answer> = match store.settle_all(&settling).await {
        Ok(settled) => settled.into_iter().map(Ok).collect(),
        Err(e) if settling.len() == 1 => vec![Err(Arc::new(e))],
        Err(e) => {
            tracing::debug!(error = %e, size = settling.len(), "a settlement batch failed; settling its attempts one by one");
            let mut answers = Vec::with_capacity(settling.len());
            for one in &settling {
                // The batch's answer may have been lost after its commit.
                let one = Settling {
                    maybe_settled: true,
                    ..*one
                };
                let answer = store.settle_all(std::slice::from_ref(&one)).await;
                answers.push(answer.map(|settled| settled[0]).map_err(Arc::new));
            }
            answers
        }
    };
    drop(settling);
    for (waiting, answer) in batch.into_iter().zip(answers) {
        let _ = waiting.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailbridge_core::queue::AttemptOutcome;
    use tokio::sync::Notify;

    /// Records each batch's size and whether it was marked as maybe settled already;
    /// holds every batch until `open`; refuses a batch
    /// of more than one that holds `poison` (a customer deleted meanwhile), and
    /// `poison` alone.
    struct Recorder {
        batches: Mutex<Vec<(usize, bool)>>,
        entered: Notify,
        open: Semaphore,
        poison: Option<MessageId>,
    }

    impl Recorder {
        fn new(poison: Option<MessageId>) -> Arc<Self> {
            Arc::new(Self {
                batches: Mutex::default(),
                entered: Notify::new(),
                open: Semaphore::new(0),
                poison,
            })
        }
    }

    impl Settle for Recorder {
        async fn settle_all(&self, settling: &[Settling<'_>]) -> Result<Vec<bool>, sqlx::Error> {
            let maybe_settled = settling.iter().all(|s| s.maybe_settled);
            assert!(
                maybe_settled || settling.iter().all(|s| !s.maybe_settled),
                "marked alike in one batch here"
            );
            self.batches
                .lock()
                .unwrap()
                .push((settling.len(), maybe_settled));
            self.entered.notify_one();
            drop(self.open.acquire().await.unwrap());
            if settling.iter().any(|s| Some(s.message_id) == self.poison) {
                return Err(sqlx::Error::RowNotFound);
            }
            Ok(vec![true; settling.len()])
        }
    }

    /// Loses the answer of its first `lost` settlements (they commit, the
    /// connection drops), and records how each try was marked.
    struct LostAnswers {
        lost: usize,
        tries: Mutex<Vec<bool>>,
    }

    impl Settle for LostAnswers {
        async fn settle_all(&self, settling: &[Settling<'_>]) -> Result<Vec<bool>, sqlx::Error> {
            let mut tries = self.tries.lock().unwrap();
            tries.push(settling[0].maybe_settled);
            if tries.len() <= self.lost {
                return Err(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()));
            }
            Ok(vec![true; settling.len()])
        }
    }

    fn attempt() -> DeliveryAttempt {
        DeliveryAttempt {
            started_at: chrono::Utc::now(),
            duration_ms: 1,
            method: "graph".into(),
            outcome: AttemptOutcome::Accepted,
            upstream_status: Some(202),
            upstream_code: None,
            upstream_message: None,
            diagnosis: None,
            mailbox: None,
            worker: "w".into(),
        }
    }

    /// Occupies both settlers with one settlement each, then queues `later`
    /// while they are busy, opens the store and returns every answer: the
    /// first two, then `later`'s in order.
    async fn settle_while_busy(store: Arc<Recorder>, later: &[MessageId]) -> Vec<Answer> {
        let group = Arc::new(GroupSettle::default());
        let spawn = |id: MessageId| {
            let (group, store) = (group.clone(), store.clone());
            tokio::spawn(async move {
                group
                    .settle(&*store, id, &attempt(), Settlement::Accepted, None, false)
                    .await
            })
        };
        let mut tasks = Vec::new();
        for _ in 0..SETTLERS {
            tasks.push(spawn(MessageId::now()));
            store.entered.notified().await;
        }
        for &id in later {
            tasks.push(spawn(id));
        }
        // Every later settlement is waiting before the store opens.
        while group.waiting.lock().unwrap().len() < later.len() {
            tokio::task::yield_now().await;
        }
        store.open.add_permits(1_000);
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    }

    #[tokio::test]
    async fn settlements_that_wait_for_a_settler_go_together_in_one_batch() {
        let store = Recorder::new(None);
        let later: Vec<MessageId> = (0..5).map(|_| MessageId::now()).collect();
        let answers = settle_while_busy(store.clone(), &later).await;
        assert!(answers.iter().all(|a| matches!(a, Ok(true))));
        let mut batches = store.batches.lock().unwrap().clone();
        batches.sort_unstable();
        assert_eq!(
            batches,
            vec![(1, false), (1, false), (5, false)],
            "the five waiting went in one batch, each a first try"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_is_settled_one_by_one() {
        let poison = MessageId::now();
        let store = Recorder::new(Some(poison));
        let later = [MessageId::now(), poison, MessageId::now()];
        let answers = settle_while_busy(store.clone(), &later).await;
        let later_answers: Vec<bool> = answers[SETTLERS..].iter().map(Result::is_ok).collect();
        assert_eq!(
            later_answers,
            vec![true, false, true],
            "only the bad one failed"
        );
        let batches = store.batches.lock().unwrap().clone();
        assert_eq!(
            &batches[SETTLERS..],
            &[(3, false), (1, true), (1, true), (1, true)],
            "the batch, then one by one, each looked up: the batch may have committed"
        );
    }

    #[tokio::test]
    async fn a_settlement_tried_again_after_an_error_is_marked_maybe_settled() {
        let store = LostAnswers {
            lost: 2,
            tries: Mutex::default(),
        };
        let answer = GroupSettle::default()
            .settle_patiently(
                &store,
                MessageId::now(),
                &attempt(),
                Settlement::Accepted,
                None,
                Duration::from_secs(60),
            )
            .await;
        assert!(matches!(answer, Ok(true)));
        assert_eq!(
            *store.tries.lock().unwrap(),
            vec![false, true, true],
            "a first try, then tries that look the attempt up"
        );
    }
}
