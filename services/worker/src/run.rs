//! The lease loop: a worker leases due messages from PostgreSQL (`FOR UPDATE SKIP
//! LOCKED`, so any number of workers share one queue) as its delivery slots free
//! up, is woken by LISTEN/NOTIFY with a periodic sweep as a safety net, starts its
//! background loops, hands each leased message to [`Worker::deliver`], and on
//! shutdown waits for the deliveries in flight.

use mailbridge_core::ids::MessageId;
use std::{collections::HashMap, sync::Arc, time::Duration};

use mailbridge_core::queue;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{Worker, alerting, consent_check, holds, housekeeping};

/// How long a worker with deliveries finishing waits to lease several messages at once.
const LEASE_GATHER: Duration = Duration::from_millis(2);

impl Worker {
    /// Delivers until `shutdown` is cancelled, then waits for deliveries in flight.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(housekeeping::purge_loop(
            self.pool.clone(),
            mailbridge_core::retention::Retention::from_settings(&self.settings),
            shutdown.clone(),
        ));
        // Held until the deliveries in flight are done, not just until shutdown
        // begins: others take this worker's leases as soon as it is gone.
        let leaving = CancellationToken::new();
        tokio::spawn(housekeeping::certificate_loop(
            self.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(consent_check::check_loop(self.clone(), shutdown.clone()));
        tokio::spawn(self.clone().sign_in_log_loop(shutdown.clone()));
        tokio::spawn(self.clone().bounce_loop(shutdown.clone()));
        tokio::spawn(holds::probe_loop(self.clone(), shutdown.clone()));
        tokio::spawn(alerting::evaluate_loop(self.clone(), shutdown.clone()));
        tokio::spawn(alerting::outbox_loop(self.clone(), shutdown.clone()));
        let presence = tokio::spawn(housekeeping::presence_loop(
            self.pool.clone(),
            self.identity.clone(),
            Duration::from_secs(self.settings.worker.sweep_seconds.max(1)),
            leaving.clone(),
        ));
        let concurrency = self.settings.worker.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(concurrency));
        let sweep = Duration::from_secs(self.settings.worker.sweep_seconds.max(1));
        let mut listener = None;
        // A delivery that ends may free its mailbox for the next message.
        let finished = Arc::new(Notify::new());
        let gather = (concurrency / 4).max(1);
        let mut busy = false;
        tracing::info!(worker = %self.identity, concurrency, "delivery worker started");
        loop {
            if listener.is_none() {
                listener = self.listen().await;
            }
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit.expect("semaphore never closes"),
            };
            let mut batch = vec![first];
            while let Ok(permit) = permits.clone().try_acquire_owned() {
                batch.push(permit);
            }
            if busy && batch.len() < gather {
                // Deliveries are finishing one by one: lease for a few at once
                // rather than one lease query per message.
                let deadline = tokio::time::Instant::now() + LEASE_GATHER;
                while batch.len() < gather {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        permit = permits.clone().acquire_owned() => {
                            batch.push(permit.expect("semaphore never closes"));
                        }
                    }
                }
            }
            let wanted = batch.len();
            let lease = Duration::from_secs(self.settings.worker.lease_seconds);
            let app = self.msp_identity();
            let (pool, identity) = (&self.pool, self.identity.as_str());
            let leased = self.take_leases(
                |in_flight| async move {
                    let app = app.as_ref();
                    queue::lease_due(pool, identity, wanted as i64, lease, &in_flight, app).await
                },
                |m| m.id,
            );
            let leased = match leased.await {
                Ok(leased) => leased,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot lease messages: database unavailable");
                    drop(batch);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let got = leased.len();
            busy = got > 0;
            for (message, permit) in leased.into_iter().zip(batch.drain(..)) {
                let (worker, finished) = (self.clone(), finished.clone());
                tokio::spawn(async move {
                    let id = message.id;
                    worker.deliver(message, None).await;
                    worker.finished(id);
                    drop(permit);
                    finished.notify_one();
                });
            }
            drop(batch);
            if got == wanted {
                continue; // There may be more due right now.
            }
            // Nothing (more) due, or only for mailboxes busy to their limit: sleep
            // until a new message, a delivery that frees a mailbox, the sweep, or
            // shutdown.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = finished.notified() => {}
                _ = tokio::time::sleep(sweep) => {}
                woke = wait_for_notification(&mut listener) => {
                    if let Err(e) = woke {
                        tracing::warn!(error = %e, "queue notifications lost; reconnecting");
                        listener = None;
                    }
                }
            }
        }
        tracing::info!("worker stopping: waiting for deliveries in flight");
        let _ = tokio::time::timeout(
            self.settings.worker.shutdown_grace,
            permits.acquire_many(concurrency as u32),
        )
        .await;
        leaving.cancel();
        let _ = presence.await;
    }

    /// Takes leases with `lease` (given the messages this worker has in flight)
    /// and enters them as in flight, under the worker's leasing lock: the delivery
    /// loop and the hold probes lease in separate tasks, and a lease the one took
    /// but had not yet entered would look orphaned to the other (`queue::lease_due`
    /// takes back its own leases that are not in flight) and be delivered twice.
    pub(crate) async fn take_leases<T, E, Fut>(
        &self,
        lease: impl FnOnce(Vec<MessageId>) -> Fut,
        id: impl Fn(&T) -> MessageId,
    ) -> Result<Vec<T>, E>
    where
        Fut: std::future::Future<Output = Result<Vec<T>, E>>,
    {
        take_leases(&self.leasing, &self.in_flight, lease, id).await
    }

    /// One delivery of message `id` has finished (settled, or left to its lease).
    /// The message stays in flight while another delivery of it has not: the
    /// moment a delivery settled a retry due at once, this worker may lease the
    /// message again before the first delivery's task ends.
    pub(crate) fn finished(&self, id: MessageId) {
        leave(&self.in_flight, id);
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener.listen(queue::QUEUE_CHANNEL).await.ok()?;
        Some(listener)
    }
}

/// Waits for a new message's notification, and takes the others already received
/// with it: one commit of many customers' messages notifies once per customer, and
/// one lease serves them all.
async fn wait_for_notification(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(l) => {
            l.recv().await?;
            while l.next_buffered().is_some() {}
            Ok(())
        }
        None => std::future::pending().await,
    }
}

/// [`Worker::take_leases`] on the lock and set it is given.
async fn take_leases<T, E, Fut>(
    leasing: &tokio::sync::Mutex<()>,
    in_flight: &std::sync::Mutex<HashMap<MessageId, usize>>,
    lease: impl FnOnce(Vec<MessageId>) -> Fut,
    id: impl Fn(&T) -> MessageId,
) -> Result<Vec<T>, E>
where
    Fut: std::future::Future<Output = Result<Vec<T>, E>>,
{
    let entered = || in_flight.lock().unwrap_or_else(|p| p.into_inner());
    let _leasing = leasing.lock().await;
    let known: Vec<_> = entered().keys().copied().collect();
    let leased = lease(known).await?;
    let mut entered = entered();
    for message in &leased {
        *entered.entry(id(message)).or_default() += 1;
    }
    Ok(leased)
}

/// One delivery of `id` left `in_flight`.
fn leave(in_flight: &std::sync::Mutex<HashMap<MessageId, usize>>, id: MessageId) {
    let mut in_flight = in_flight.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(deliveries) = in_flight.get_mut(&id) {
        *deliveries -= 1;
        if *deliveries == 0 {
            in_flight.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease one task has taken but not yet entered as in flight is never
    /// hidden from another task leasing at that moment.
    #[tokio::test]
    async fn a_second_lease_sees_what_the_first_took() {
        let leasing = tokio::sync::Mutex::new(());
        let in_flight = std::sync::Mutex::new(HashMap::new());
        let taken = MessageId::now();
        let (database_answers, answer) = tokio::sync::oneshot::channel::<()>();
        let first = take_leases(
            &leasing,
            &in_flight,
            |_| async move {
                answer.await.unwrap();
                Ok::<_, ()>(vec![taken])
            },
            |id| *id,
        );
        let second = take_leases(
            &leasing,
            &in_flight,
            |known| async move { Ok::<_, ()>(known) },
            |id| *id,
        );
        let answered = async {
            tokio::task::yield_now().await;
            database_answers.send(()).unwrap();
        };
        let (first, second, ()) = tokio::join!(first, second, answered);
        assert_eq!(first.unwrap(), vec![taken]);
        assert_eq!(
            second.unwrap(),
            vec![taken],
            "the second lease knew the first's"
        );
    }

    /// A message this worker leased again (a retry due at once) while its first
    /// delivery's task was still ending stays in flight until the second ends:
    /// otherwise the next lease would take it back as an orphan and deliver it a
    /// third time.
    #[tokio::test]
    async fn a_message_leased_again_stays_in_flight_until_both_deliveries_end() {
        let leasing = tokio::sync::Mutex::new(());
        let in_flight = std::sync::Mutex::new(HashMap::new());
        let message = MessageId::now();
        let lease_it = |_| async move { Ok::<_, ()>(vec![message]) };
        take_leases(&leasing, &in_flight, lease_it, |id| *id)
            .await
            .unwrap();
        take_leases(&leasing, &in_flight, lease_it, |id| *id)
            .await
            .unwrap();
        leave(&in_flight, message);
        let known = take_leases(
            &leasing,
            &in_flight,
            |known| async move { Ok::<_, ()>(known) },
            |id| *id,
        );
        assert_eq!(known.await.unwrap(), vec![message], "still in flight");
        leave(&in_flight, message);
        leave(&in_flight, message);
        assert!(in_flight.lock().unwrap().is_empty());
    }
}
