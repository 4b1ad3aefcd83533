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
//! deleted meanwhile) cannot fail the others.

use mailbridge_core::ids::MessageId;
use std::{
    future::Future,
    sync::{Arc, Mutex},
};

use mailbridge_core::{
    crypto::MasterKey,
    metrics::metrics,
    queue::{self, DeliveryAttempt, NewMessage, Settlement, Settling},
};
use sqlx::PgPool;
use tokio::sync::{Semaphore, oneshot};

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
    /// still held its lease.
    pub(crate) async fn settle(
        &self,
        store: &impl Settle,
        message_id: MessageId,
        attempt: &DeliveryAttempt,
        settlement: Settlement,
        report: Option<&NewMessage>,
    ) -> Answer {
        let (reply, mut answer) = oneshot::channel();
        self.waiting.lock().expect("not poisoned").push(Waiting {
            message_id,
            attempt: attempt.clone(),
            settlement,
            report: report.cloned(),
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
        })
        .collect();
    let answers: Vec<Answer> = match store.settle_all(&settling).await {
        Ok(settled) => settled.into_iter().map(Ok).collect(),
        Err(e) if settling.len() == 1 => vec![Err(Arc::new(e))],
        Err(e) => {
            tracing::debug!(error = %e, size = settling.len(), "a settlement batch failed; settling its attempts one by one");
            let mut answers = Vec::with_capacity(settling.len());
            for one in &settling {
                let answer = store.settle_all(std::slice::from_ref(one)).await;
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

    /// Records each batch's size; holds every batch until `open`; refuses a batch
    /// of more than one that holds `poison` (a customer deleted meanwhile), and
    /// `poison` alone.
    struct Recorder {
        batches: Mutex<Vec<usize>>,
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
            self.batches.lock().unwrap().push(settling.len());
            self.entered.notify_one();
            drop(self.open.acquire().await.unwrap());
            if settling.iter().any(|s| Some(s.message_id) == self.poison) {
                return Err(sqlx::Error::RowNotFound);
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
                    .settle(&*store, id, &attempt(), Settlement::Accepted, None)
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
        assert_eq!(batches, vec![1, 1, 5], "the five waiting went in one batch");
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
            &[3, 1, 1, 1],
            "the batch, then one by one"
        );
    }
}
