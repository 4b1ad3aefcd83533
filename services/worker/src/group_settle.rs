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

use std::sync::{Arc, Mutex};

use mailbridge_core::{
    metrics::metrics,
    queue::{self, DeliveryAttempt, Settlement, Settling},
};
use sqlx::PgPool;
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;

/// Batches in flight at once.
const SETTLERS: usize = 2;
/// Settlements in one batch at most.
const MAX_BATCH: usize = 64;

type Answer = Result<bool, Arc<sqlx::Error>>;

struct Waiting {
    message_id: Uuid,
    attempt: DeliveryAttempt,
    settlement: Settlement,
    reply: oneshot::Sender<Answer>,
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
    /// Records `attempt` and settles message `message_id` as `owner` (see
    /// [`queue::settle_all`]); whether this worker still held its lease.
    pub(crate) async fn settle(
        &self,
        pool: &PgPool,
        owner: &str,
        message_id: Uuid,
        attempt: &DeliveryAttempt,
        settlement: Settlement,
    ) -> Answer {
        let (reply, mut answer) = oneshot::channel();
        self.waiting.lock().expect("not poisoned").push(Waiting {
            message_id,
            attempt: attempt.clone(),
            settlement,
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
            settle_batch(pool, owner, batch).await;
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

/// A batch whose settler went away before answering (its task ended).
fn lost() -> Arc<sqlx::Error> {
    Arc::new(sqlx::Error::WorkerCrashed)
}

async fn settle_batch(pool: &PgPool, owner: &str, batch: Vec<Waiting>) {
    metrics().worker.settle_batch.observe(batch.len() as f64);
    let settling: Vec<Settling> = batch
        .iter()
        .map(|w| Settling {
            message_id: w.message_id,
            attempt: &w.attempt,
            settlement: w.settlement,
        })
        .collect();
    let answers: Vec<Answer> = match queue::settle_all(pool, owner, &settling).await {
        Ok(settled) => settled.into_iter().map(Ok).collect(),
        Err(e) if settling.len() == 1 => vec![Err(Arc::new(e))],
        Err(e) => {
            tracing::debug!(error = %e, size = settling.len(), "a settlement batch failed; settling its attempts one by one");
            let mut answers = Vec::with_capacity(settling.len());
            for one in &settling {
                let answer = queue::settle_all(pool, owner, std::slice::from_ref(one)).await;
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
