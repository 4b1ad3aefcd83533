//! The worker's share of alerting: every worker offers to evaluate the alert rules
//! each interval (`mailbridge_core::alerts` lets one of them do it per interval,
//! cluster-wide), reports the MSP app's certificate expiry, and posts the webhook
//! outbox — claimed row by row, so any number of workers post each event once —
//! through an HTTP client that follows no redirect, uses no proxy, times out, and
//! connects only to addresses the webhook policy permits (checked on every address
//! a name resolves to, at connection time).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use mailbridge_core::{
    alerts::{self, Channels},
    webhooks::{self, Answer, Due, UrlPolicy},
};
use tokio_util::sync::CancellationToken;

use crate::Worker;

/// A webhook post may take this long in all.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// Events claimed at once by one worker.
const CLAIM: i64 = 16;
/// How often the outbox is looked at.
const OUTBOX_INTERVAL: Duration = Duration::from_secs(1);

/// Evaluates the alert rules every `MAILBRIDGE_ALERT_INTERVAL_SECONDS` (when it is
/// this worker's turn), until `stop`.
pub async fn evaluate_loop(worker: Arc<Worker>, stop: CancellationToken) {
    let every = worker
        .settings
        .worker
        .alert_interval
        .max(Duration::from_secs(1));
    let channels = Channels {
        public_url: worker.settings.web.public_url.clone(),
        fallback_email: worker.settings.worker.failure_notification_address.clone(),
        key: worker.master_key.clone(),
    };
    let host = worker.settings.edge.hostname.clone();
    loop {
        report_app_certificate(&worker, &host).await;
        match alerts::evaluate_if_due(&worker.pool, every, &channels).await {
            Ok(Some(done)) if done != alerts::Evaluated::default() => {
                tracing::info!(?done, "alerts evaluated")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "evaluating the alert rules failed; tried again next interval")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Records when the MSP app's certificate credential expires (if it has one).
async fn report_app_certificate(worker: &Worker, host: &str) {
    let Some(file) = worker.settings.m365.client_certificate_file.as_deref() else {
        return;
    };
    let Some(not_after) = mailbridge_core::tls::load_certificates(file)
        .ok()
        .and_then(|chain| {
            chain
                .first()
                .and_then(|c| mailbridge_core::tls::not_after(c))
        })
    else {
        return;
    };
    if let Err(e) = alerts::report_certificate(&worker.pool, "entra_app", host, not_after).await {
        tracing::debug!(error = %e, "could not record the MSP app certificate's expiry");
    }
}

/// Resolves names for webhook requests, keeping only the addresses the policy
/// permits: a name that resolves to an internal address is refused at connection
/// time, whatever it resolved to when the webhook was saved.
struct GuardedResolver {
    policy: UrlPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if permitted.is_empty() {
                let refused = found
                    .first()
                    .map_or_else(|| "no address".to_owned(), |a| a.ip().to_string());
                return Err(format!(
                    "{host} resolves to {refused}, an internal address webhooks may not reach (MAILBRIDGE_WEBHOOK_ALLOWED_NETWORKS)"
                )
                .into());
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Posts due webhook events until `stop`.
pub async fn outbox_loop(worker: Arc<Worker>, stop: CancellationToken) {
    let policy = UrlPolicy {
        allowed: worker.settings.worker.webhook_allowed_networks.clone(),
    };
    let client = match webhook_client(&worker, &policy) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for webhooks: webhooks are not posted");
            return;
        }
    };
    loop {
        match webhooks::claim_due(&worker.pool, CLAIM, POST_TIMEOUT * 3).await {
            Ok(due) => {
                let claimed = due.len();
                let mut posts = tokio::task::JoinSet::new();
                for d in due {
                    let (worker, client, policy) = (worker.clone(), client.clone(), policy.clone());
                    posts.spawn(async move {
                        let answer = post(&worker, &client, &policy, &d).await;
                        if let Err(e) = webhooks::record(&worker.pool, &d, &answer).await {
                            tracing::warn!(error = %e, "could not record a webhook delivery; its lease expires and it is posted again");
                        }
                    });
                }
                while posts.join_next().await.is_some() {}
                if claimed > 0 {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the webhook outbox"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(OUTBOX_INTERVAL) => {}
        }
    }
}

fn webhook_client(
    worker: &Worker,
    policy: &UrlPolicy,
) -> Result<reqwest::Client, crate::WorkerError> {
    let tls = mailbridge_core::tls::client_config(worker.settings.extra_ca_file.as_deref())?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(POST_TIMEOUT)
        .dns_resolver(Arc::new(GuardedResolver {
            policy: policy.clone(),
        }))
        .user_agent(concat!("mailbridge-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Posts one event; never fails (a failure is the answer recorded).
async fn post(worker: &Worker, client: &reqwest::Client, policy: &UrlPolicy, due: &Due) -> Answer {
    let started = std::time::Instant::now();
    let failed = |error: String| Answer {
        status: None,
        response: String::new(),
        error: Some(error),
        duration_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
    };
    // The URL again: the policy may have changed since it was saved.
    let url = match policy.check(&due.url) {
        Ok(url) => url,
        Err(e) => return failed(e.to_string()),
    };
    let secret = match due.secret(&worker.master_key) {
        Ok(s) => s,
        Err(e) => return failed(format!("the webhook's secret cannot be opened: {e}")),
    };
    let timestamp = chrono::Utc::now().timestamp();
    let body = due.payload.clone().into_bytes();
    let signature = webhooks::signature_header(&secret, timestamp, &body);
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(webhooks::SIGNATURE_HEADER, signature)
        .header("X-Mailbridge-Event", &due.event_type)
        .header("X-Mailbridge-Delivery", due.event_id.to_string())
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            // The start of the answer is enough for the log; a receiver that
            // streams without end cannot hold the worker.
            let mut response = response;
            let mut start = Vec::new();
            while start.len() < 4_096 {
                match response.chunk().await {
                    Ok(Some(chunk)) => start.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            let text = String::from_utf8_lossy(&start).into_owned();
            Answer {
                status: Some(status),
                response: text,
                error: None,
                duration_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
            }
        }
        Err(e) => failed(mailbridge_m365::describe_http_error(&e)),
    }
}
