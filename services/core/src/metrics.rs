//! Prometheus metrics of every part, in one registry per process, and their text
//! exposition. Labels stay bounded: listener, result, enhanced or Microsoft error
//! code, method, and tenant (an id; `mailbridge_tenant_info` maps it to a name) —
//! never a device, an address or a message.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder, exponential_buckets,
};

/// The metrics of the SMTP edge.
#[derive(Debug)]
pub struct EdgeMetrics {
    /// Finished connections by listener and the TLS they ended with (`none`, `TLSv1.3` …).
    pub connections: IntCounterVec,
    pub active_sessions: IntGaugeVec,
    /// Logins by listener and result (`success`, `bad_password`, `throttled`, `locked`, `unavailable`).
    pub auth: IntCounterVec,
    /// Locks set by failed logins, by scope (`pair`, `source`, `username`).
    pub auth_lockouts: IntCounterVec,
    /// Messages by listener, result (`accepted`, `refused`) and enhanced status code.
    pub messages: IntCounterVec,
    pub message_size: Histogram,
    pub session_duration: HistogramVec,
    /// Messages per group-commit transaction (1: no batching was needed).
    pub commit_batch: Histogram,
    /// TLS handshakes by listener and the protocol version agreed (`TLSv1.0` …
    /// `TLSv1.3`), or `failed`.
    pub tls_handshakes: IntCounterVec,
    /// Session transcripts by result (`written`, `failed`, `dropped`).
    pub transcripts: IntCounterVec,
}

/// The metrics of the delivery worker.
#[derive(Debug)]
pub struct WorkerMetrics {
    /// Attempts by tenant, method and outcome (`accepted` by Microsoft, `retry`,
    /// `permanent`).
    pub deliveries: IntCounterVec,
    /// Upstream refusals by tenant and Microsoft's code (`5.7.30`, `ErrorSendAsDenied`, `429` …).
    pub upstream_rejects: IntCounterVec,
    /// Token requests by tenant, outcome (`success`, `refused`, `unreachable`) and AADSTS code.
    pub token_requests: IntCounterVec,
    /// From the edge's `250` to Microsoft's acceptance.
    pub delivery_latency: HistogramVec,
    /// Deliveries whose lease had passed to another worker before they were recorded:
    /// the message may reach Microsoft twice.
    pub duplicates: IntCounter,
    /// Reports of undeliverable messages queued.
    pub notifications: IntCounter,
    /// Messages taken over from an expired lease (a worker died or hung mid-delivery):
    /// each may reach Microsoft twice.
    pub recovered_leases: IntCounter,
    /// Recipients Microsoft reported undeliverable after accepting the message (an
    /// NDR in the sender mailbox), by tenant and enhanced status code.
    pub bounces: IntCounterVec,
    /// Polls of sender mailboxes for NDRs, by result (`read`, `not_visible`, `failed`).
    pub bounce_polls: IntCounterVec,
    /// Messages put back unattempted because their mailbox was at a limit, by reason.
    pub deferrals: IntCounterVec,
    /// Records removed by the cluster's purge, by table.
    pub purged: IntCounterVec,
    /// Leased messages made due again because their worker died (its presence lock
    /// was gone), before their lease expired.
    pub departed_releases: IntCounter,
    /// Attempts settled together in one transaction (group settlement).
    pub settle_batch: Histogram,
}

/// The metrics of the control plane.
#[derive(Debug)]
pub struct WebMetrics {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    /// Onboarding funnel: `started`, `completed`, `failed`.
    pub consents: IntCounterVec,
    /// The gauges read from PostgreSQL for the whole cluster (the web's `gauges`
    /// loop), by tenant and customer name, only for customers with something to
    /// report: messages queued, or a consent that no longer works.
    pub queue_depth: IntGaugeVec,
    pub queue_oldest_due_seconds: IntGaugeVec,
    /// 1 while a tenant's consent works, 0 after a token refusal since its last token.
    pub tenant_consent_ok: IntGaugeVec,
    /// Messages waiting for a hold of a mailbox, customer or app, by scope and
    /// reason (from the database).
    pub held_messages: IntGaugeVec,
    /// How long the oldest hold of each scope and reason has lasted.
    pub hold_age_seconds: IntGaugeVec,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub edge: EdgeMetrics,
    pub worker: WorkerMetrics,
    pub web: WebMetrics,
    /// `1` per tenant, labelled with its name, for dashboards to join on.
    pub tenant_info: IntGaugeVec,
    /// `1`, labelled with the version of the binary.
    pub build_info: IntGaugeVec,
    /// When a certificate in use expires, by certificate (`edge`: the SMTP server's;
    /// `entra_app`: the MSP app's credential).
    pub tls_certificate_expiry: IntGaugeVec,
    /// Certificate files read again after they changed, by certificate and result
    /// (`reloaded`, `failed`: the previous certificate stays).
    pub tls_certificate_reloads: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn plain_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn plain_histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            registry
                .register(Box::new(process))
                .expect("process metrics");
        }
        let seconds = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        let r = &registry;
        let edge = EdgeMetrics {
            connections: counter(
                r,
                "mailbridge_edge_connections_total",
                "SMTP connections by listener and TLS version.",
                &["listener", "tls"],
            ),
            active_sessions: gauge(
                r,
                "mailbridge_edge_active_sessions",
                "SMTP sessions open now.",
                &["listener"],
            ),
            auth: counter(
                r,
                "mailbridge_edge_auth_total",
                "SMTP logins by listener and result.",
                &["listener", "result"],
            ),
            auth_lockouts: counter(
                r,
                "mailbridge_edge_auth_lockouts_total",
                "Locks set by failed logins, by scope: pair (username and source), source, username.",
                &["scope"],
            ),
            messages: counter(
                r,
                "mailbridge_edge_messages_total",
                "Messages accepted or refused, by listener, result and enhanced status code.",
                &["listener", "result", "code"],
            ),
            commit_batch: plain_histogram(
                r,
                "mailbridge_edge_commit_batch_messages",
                "Messages committed together in one transaction (group commit).",
                vec![2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            ),
            message_size: plain_histogram(
                r,
                "mailbridge_edge_message_size_bytes",
                "Sizes of accepted messages.",
                exponential_buckets(1024.0, 4.0, 10).expect("valid buckets"),
            ),
            tls_handshakes: counter(
                r,
                "mailbridge_edge_tls_handshakes_total",
                "TLS handshakes by listener and the protocol version agreed, or failed.",
                &["listener", "protocol"],
            ),
            transcripts: counter(
                r,
                "mailbridge_edge_transcripts_total",
                "Session transcripts written, failed to write, or dropped (queue full).",
                &["result"],
            ),
            session_duration: histogram(
                r,
                "mailbridge_edge_session_duration_seconds",
                "SMTP session durations.",
                &["listener"],
                seconds.clone(),
            ),
        };
        let worker = WorkerMetrics {
            deliveries: counter(
                r,
                "mailbridge_deliveries_total",
                "Delivery attempts by tenant, method and outcome.",
                &["tenant", "method", "outcome"],
            ),
            upstream_rejects: counter(
                r,
                "mailbridge_upstream_rejects_total",
                "Refusals by Microsoft 365, by tenant and code (5.7.30, ErrorSendAsDenied, 429 …).",
                &["tenant", "code"],
            ),
            token_requests: counter(
                r,
                "mailbridge_token_requests_total",
                "Token requests to Entra ID by tenant, outcome and AADSTS code.",
                &["tenant", "outcome", "aadsts"],
            ),
            delivery_latency: histogram(
                r,
                "mailbridge_delivery_latency_seconds",
                "From the edge's 250 to Microsoft's acceptance.",
                &["method"],
                // Retries stretch it to hours (up to the maximum age).
                seconds
                    .iter()
                    .copied()
                    .chain([900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0, 432000.0])
                    .collect(),
            ),
            duplicates: plain_counter(
                r,
                "mailbridge_duplicate_deliveries_total",
                "Deliveries that may have reached Microsoft twice (lease lost before recording).",
            ),
            notifications: plain_counter(
                r,
                "mailbridge_failure_notifications_total",
                "Reports of undeliverable messages queued.",
            ),
            deferrals: counter(
                r,
                "mailbridge_deferrals_total",
                "Messages put back unattempted because their mailbox was at a Microsoft limit, by tenant and reason.",
                &["tenant", "reason"],
            ),
            departed_releases: plain_counter(
                r,
                "mailbridge_departed_worker_releases_total",
                "Leased messages made due again because their worker died, before their lease expired.",
            ),
            settle_batch: plain_histogram(
                r,
                "mailbridge_worker_settle_batch_attempts",
                "Attempts settled together in one transaction (group settlement).",
                vec![2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            ),
            purged: counter(
                r,
                "mailbridge_purged_records_total",
                "Records removed by the cluster's purge after their retention, by table.",
                &["table"],
            ),
            recovered_leases: plain_counter(
                r,
                "mailbridge_recovered_leases_total",
                "Messages taken over from an expired lease; each may reach Microsoft twice.",
            ),
            bounces: counter(
                r,
                "mailbridge_bounces_total",
                "Recipients reported undeliverable by Microsoft after accepting the message (NDRs), by tenant and status code.",
                &["tenant", "code"],
            ),
            bounce_polls: counter(
                r,
                "mailbridge_bounce_polls_total",
                "Polls of sender mailboxes for non-delivery reports, by result.",
                &["result"],
            ),
        };
        let web = WebMetrics {
            requests: counter(
                r,
                "mailbridge_web_requests_total",
                "Control plane requests by route and status.",
                &["route", "status"],
            ),
            request_duration: histogram(
                r,
                "mailbridge_web_request_duration_seconds",
                "Control plane request latency by route.",
                &["route"],
                seconds,
            ),
            consents: counter(
                r,
                "mailbridge_consents_total",
                "Microsoft 365 onboarding by stage: started, granted, failed (web); verified, retried, failed (worker consent checks).",
                &["stage"],
            ),
            queue_depth: gauge(
                r,
                "mailbridge_queue_depth",
                "Messages waiting for delivery, by tenant (from the database, only tenants with messages queued or consent lost).",
                &["tenant", "customer"],
            ),
            queue_oldest_due_seconds: gauge(
                r,
                "mailbridge_queue_oldest_due_seconds",
                "How long the oldest due message has been waiting, by tenant (from the database).",
                &["tenant", "customer"],
            ),
            tenant_consent_ok: gauge(
                r,
                "mailbridge_tenant_consent_ok",
                "1 while a tenant's consent works, 0 when a token was refused since the last one issued (from the database).",
                &["tenant", "customer"],
            ),
            held_messages: gauge(
                r,
                "mailbridge_held_messages",
                "Messages waiting for a hold of their mailbox, customer or app, by scope and reason (from the database).",
                &["scope", "reason"],
            ),
            hold_age_seconds: gauge(
                r,
                "mailbridge_hold_age_seconds",
                "How long the oldest hold of each scope and reason has lasted (from the database).",
                &["scope", "reason"],
            ),
        };
        let tenant_info = gauge(
            r,
            "mailbridge_tenant_info",
            "Tenant id to name.",
            &["tenant", "name"],
        );
        let build_info = gauge(
            r,
            "mailbridge_build_info",
            "1, labelled with the version of the running binary.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let tls_certificate_expiry = gauge(
            r,
            "mailbridge_tls_certificate_expiry_timestamp_seconds",
            "When the certificate in use expires (Unix time), by certificate: edge, entra_app.",
            &["certificate"],
        );
        let tls_certificate_reloads = counter(
            r,
            "mailbridge_tls_certificate_reloads_total",
            "Certificate files read again after a change, by certificate and result (reloaded, failed).",
            &["certificate", "result"],
        );
        Self {
            registry,
            edge,
            worker,
            web,
            tenant_info,
            build_info,
            tls_certificate_expiry,
            tls_certificate_reloads,
        }
    }

    /// The text exposition format (what `/metrics` serves).
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding metrics into memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// A Microsoft answer code as a label value: enhanced status codes, Graph and AADSTS
/// codes and HTTP statuses pass; anything else (free text) becomes `other`.
pub fn code_label(code: &str) -> &str {
    let bounded = code.len() <= 48 && !code.is_empty();
    let shaped = code
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
    if bounded && shaped { code } else { "other" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let m = metrics();
        m.edge
            .auth
            .with_label_values(&["submission", "success"])
            .inc();
        m.worker
            .upstream_rejects
            .with_label_values(&["t", "5.7.30"])
            .inc();
        let text = m.encode();
        assert!(
            text.contains("mailbridge_edge_auth_total{listener=\"submission\",result=\"success\"}")
        );
        assert!(text.contains("mailbridge_upstream_rejects_total{code=\"5.7.30\",tenant=\"t\"} 1"));
        assert!(text.contains(&format!(
            "mailbridge_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        m.worker
            .delivery_latency
            .with_label_values(&["graph"])
            .observe(7200.0);
        let text = m.encode();
        assert!(text.contains(
            "mailbridge_delivery_latency_seconds_bucket{method=\"graph\",le=\"21600\"} 1"
        ));
    }

    #[test]
    fn code_labels_are_bounded() {
        assert_eq!(code_label("5.7.30"), "5.7.30");
        assert_eq!(code_label("ErrorSendAsDenied"), "ErrorSendAsDenied");
        assert_eq!(code_label("AADSTS7000215"), "AADSTS7000215");
        assert_eq!(code_label("Invalid client secret provided"), "other");
    }
}
