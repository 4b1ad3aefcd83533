//! Group commit: messages that many SMTP sessions hand over at about the same time
//! are committed together, in one transaction with one write-ahead-log flush, instead
//! of one transaction each. A session's message is durable when its batch commits,
//! and only then is the session told so — a `250` still means committed.
//!
//! A batch takes whatever is waiting when a committer is free (up to
//! [`MAX_BATCH_MESSAGES`] messages or [`MAX_BATCH_BYTES`] of bodies), so under light
//! load a message commits alone at once, and under heavy load the batches grow by
//! themselves. A batch is all or nothing; if it fails, its messages are tried one by
//! one, so one bad message cannot refuse the others.

use std::sync::Arc;

use crate::ids::MessageId;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{
    crypto::MasterKey,
    queue::{self, NewMessage},
};

/// Messages in one transaction at most.
pub const MAX_BATCH_MESSAGES: usize = 64;
/// Bytes of bodies in one transaction at most (a larger message goes alone).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Transactions in flight at once.
const COMMITTERS: usize = 2;

type Reply = oneshot::Sender<Result<MessageId, Arc<sqlx::Error>>>;

/// The handle sessions commit through.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    sender: mpsc::Sender<(NewMessage, Reply)>,
}

impl GroupCommit {
    /// Starts the committers on `pool`, sealing bodies with `key` (they stop when
    /// every handle is dropped).
    pub fn start(pool: PgPool, key: MasterKey) -> Self {
        let (sender, receiver) = mpsc::channel::<(NewMessage, Reply)>(1024);
        let receiver = Arc::new(Mutex::new(receiver));
        let key = Arc::new(key);
        for _ in 0..COMMITTERS {
            tokio::spawn(committer(pool.clone(), key.clone(), receiver.clone()));
        }
        Self { sender }
    }

    /// Commits `message`; returns when it is durable (or has failed).
    pub async fn enqueue(&self, message: NewMessage) -> Result<MessageId, Arc<sqlx::Error>> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((message, reply))
            .await
            .map_err(|_| Arc::new(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| Arc::new(sqlx::Error::PoolClosed))?
    }
}

async fn committer(
    pool: PgPool,
    key: Arc<MasterKey>,
    receiver: Arc<Mutex<mpsc::Receiver<(NewMessage, Reply)>>>,
) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut bytes = first.0.body.len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
                match receiver.try_recv() {
                    Ok(next) => {
                        bytes += next.0.body.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        commit(&pool, &key, batch).await;
    }
}

async fn commit(pool: &PgPool, key: &MasterKey, batch: Vec<(NewMessage, Reply)>) {
    if batch.len() == 1 {
        let (message, reply) = batch.into_iter().next().expect("one message");
        let _ = reply.send(queue::enqueue(pool, key, &message).await.map_err(Arc::new));
        return;
    }
    let messages: Vec<&NewMessage> = batch.iter().map(|(m, _)| m).collect();
    match queue::enqueue_all(pool, key, &messages).await {
        Ok(()) => {
            crate::metrics::metrics()
                .edge
                .commit_batch
                .observe(batch.len() as f64);
            for (message, reply) in batch {
                let _ = reply.send(Ok(message.id));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, messages = batch.len(), "a commit batch failed; committing its messages one by one");
            for (message, reply) in batch {
                let _ = reply.send(queue::enqueue(pool, key, &message).await.map_err(Arc::new));
            }
        }
    }
}
