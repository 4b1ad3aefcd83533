//! Finished sessions' transcripts on their way to PostgreSQL: handed over without
//! waiting (a full queue drops the transcript, never the session's pace), written
//! together every second or every few hundred, each device and source trimmed to its
//! last N in the same transaction.

use std::{sync::Mutex, time::Duration};

use mailbridge_core::transcripts::{self, Transcript};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Transcripts waiting at most; more are dropped (and counted).
const QUEUE: usize = 20_000;
/// Transcripts written in one statement at most.
const BATCH: usize = 500;
/// How long a transcript waits for others at most.
const LINGER: Duration = Duration::from_secs(1);

pub struct TranscriptLog {
    keep: u32,
    sender: mpsc::Sender<Transcript>,
    receiver: Mutex<Option<mpsc::Receiver<Transcript>>>,
}

impl std::fmt::Debug for TranscriptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscriptLog")
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl TranscriptLog {
    /// Keeps the last `keep` per device and per source (0: records nothing).
    pub fn new(keep: u32) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Self {
            keep,
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// Whether transcripts are kept at all.
    pub fn enabled(&self) -> bool {
        self.keep > 0
    }

    /// Hands a finished session's transcript over; never waits.
    pub fn submit(&self, transcript: Transcript) {
        if !self.enabled() {
            return;
        }
        if self.sender.try_send(transcript).is_err() {
            mailbridge_core::metrics::metrics()
                .edge
                .transcripts
                .with_label_values(&["dropped"])
                .inc();
        }
    }

    /// Writes what arrives until `stop`, then what is still waiting.
    pub(crate) async fn write_until(&self, pool: PgPool, stop: CancellationToken) {
        let Some(mut receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                n = receiver.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    // A moment for others to join, unless the batch is full.
                    let deadline = tokio::time::sleep(LINGER);
                    tokio::pin!(deadline);
                    while batch.len() < BATCH {
                        tokio::select! {
                            _ = &mut deadline => break,
                            _ = stop.cancelled() => break,
                            n = {
                                let room = BATCH - batch.len();
                                receiver.recv_many(&mut batch, room)
                            } => if n == 0 { break },
                        }
                    }
                    false
                }
            };
            if stopping {
                while let Ok(t) = receiver.try_recv() {
                    batch.push(t);
                }
            }
            for chunk in batch.chunks(BATCH) {
                self.write(&pool, chunk).await;
            }
            batch.clear();
            if stopping {
                return;
            }
        }
    }

    async fn write(&self, pool: &PgPool, batch: &[Transcript]) {
        let counter = &mailbridge_core::metrics::metrics().edge.transcripts;
        match transcripts::write(pool, batch, self.keep).await {
            Ok(()) => counter
                .with_label_values(&["written"])
                .inc_by(batch.len() as u64),
            Err(e) => {
                tracing::warn!(error = %e, transcripts = batch.len(), "could not write session transcripts");
                counter
                    .with_label_values(&["failed"])
                    .inc_by(batch.len() as u64);
            }
        }
    }
}
