//! What one delivery attempt sends to Graph, counted as its requests go out: every
//! request for a mailbox and the bytes of its body. The caller runs the attempt
//! inside [`metered`] and reads the [`Meter`] afterwards (the workers correct their
//! reservation of the mailbox's Graph budget with it).

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

/// Requests and uploaded bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub requests: i64,
    pub bytes: i64,
}

/// What one attempt actually sent to Graph, counted as its requests go out.
#[derive(Debug, Default)]
pub struct Meter {
    requests: AtomicI64,
    bytes: AtomicI64,
}

impl Meter {
    pub fn cost(&self) -> Cost {
        Cost {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

tokio::task_local! {
    static METER: Arc<Meter>;
}

/// Runs `attempt` with its Graph requests counted on `meter`.
pub async fn metered<F: std::future::Future>(meter: Arc<Meter>, attempt: F) -> F::Output {
    METER.scope(meter, attempt).await
}

/// Counts one Graph request with a body of `bytes` (outside an attempt: nothing).
pub(crate) fn count(bytes: usize) {
    let _ = METER.try_with(|meter| {
        meter.requests.fetch_add(1, Ordering::Relaxed);
        meter.bytes.fetch_add(bytes as i64, Ordering::Relaxed);
    });
}
