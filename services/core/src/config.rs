//! Typed configuration read from the environment. Every setting, its variable and
//! its default live here and nowhere else; docs/configuration.md mirrors this file.
//! Secrets are wrapped so that they never reach a log line.
//!
//! Over 500 lines: about 200 of them are unit tests; the rest is every setting — 75
//! variables with their defaults — in one place on purpose, so that
//! docs/configuration.md can mirror one file.

use std::{env, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use secrecy::SecretString;

use crate::crypto::MasterKey;

/// The edge's ceiling for any message: 150 MB, the most an Exchange Online mailbox
/// can be raised to. Each customer's own limit (35 MB unless raised, see
/// `tenants::DEFAULT_MAX_MESSAGE_BYTES`) applies below it once the device is known.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 150 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set: {why}")]
    Missing {
        name: &'static str,
        why: &'static str,
    },
    #[error("{name} has an invalid value: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where mailbridge finds Microsoft 365: the endpoints and the MSP's Entra app.
#[derive(Debug, Clone)]
pub struct M365Settings {
    /// The cloud every default below is taken from (`MAILBRIDGE_M365_CLOUD`).
    pub cloud: crate::cloud::Cloud,
    pub login_url: String,
    pub graph_url: String,
    pub smtp_endpoint: String,
    pub graph_resource: String,
    pub exchange_resource: String,
    /// How long one request to Microsoft (Graph call, SMTP transaction) may take.
    pub request_timeout: Duration,
    /// The MSP's multi-tenant app registration, used for tenants without their own.
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    /// Or a certificate registered on that app and its private key (PEM files),
    /// used for client assertions (private_key_jwt) instead of the secret.
    pub client_certificate_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

/// What the edge does with a bare LF or bare CR inside message data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareNewlinePolicy {
    /// Turn each into CRLF (Postfix's `normalize`): old devices keep working, and
    /// nothing downstream can read the stray newline as an end of data.
    Normalize,
    /// Refuse the message with `550 5.6.0`.
    Reject,
}

impl FromStr for BareNewlinePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "normalize" => Ok(Self::Normalize),
            "reject" => Ok(Self::Reject),
            other => Err(format!("{other:?} (expected normalize or reject)")),
        }
    }
}

/// A comma-separated list of networks (`192.0.2.0/24, 2001:db8::/32, 198.51.100.7`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<ipnet::IpNet>);

impl Networks {
    pub fn contains(&self, addr: &std::net::IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(addr))
    }
}

impl FromStr for Networks {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(parse_network)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// A network in CIDR form, or a single address.
pub fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| format!("{text:?} is not an address or CIDR network"))
}

/// Limits of one SMTP session, each answered with its own reply.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Largest header section accepted.
    pub max_header_size: usize,
    /// Unknown or malformed commands before the edge hangs up.
    pub max_errors: usize,
    pub max_messages: usize,
    pub idle_timeout: Duration,
    pub session_timeout: Duration,
}

/// How failed logins are slowed down and locked out.
#[derive(Debug, Clone)]
pub struct AuthThrottleSettings {
    /// Pause before answering a failed login, doubling with each failure (up to 8×).
    pub failure_delay: Duration,
    /// Failures of one username from one source within the window before that pair
    /// is locked.
    pub lockout_failures: u32,
    /// Failures from one source, whatever the username, before the source is locked
    /// (for usernames it is not familiar to).
    pub source_lockout_failures: u32,
    /// Failures of one username from sources not familiar to it before it is locked
    /// for them.
    pub username_lockout_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
    /// How long a verified password is remembered, sparing argon2 on repeated logins.
    pub credential_cache: Duration,
}

impl AuthThrottleSettings {
    /// The limits of the shared lockout state.
    pub fn limits(&self) -> crate::logins::LockoutLimits {
        crate::logins::LockoutLimits {
            pair: self.lockout_failures,
            source: self.source_lockout_failures,
            username: self.username_lockout_failures,
            window: self.window,
            lockout: self.lockout,
        }
    }
}

/// The SMTP edge.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Submission with STARTTLS (587); `None` when switched off.
    pub submission_listen: Option<SocketAddr>,
    /// Submission over implicit TLS (465).
    pub submissions_listen: Option<SocketAddr>,
    /// Relay (25) for devices identified by their source address.
    pub relay_listen: Option<SocketAddr>,
    /// The legacy-TLS listeners (STARTTLS and implicit TLS) for devices that speak
    /// only TLS 1.0/1.1 or CBC suites, built on OpenSSL; off unless configured.
    pub legacy_submission_listen: Option<SocketAddr>,
    pub legacy_submissions_listen: Option<SocketAddr>,
    /// Session transcripts kept per device (and per unknown source address); 0
    /// records none.
    pub transcripts_per_key: u32,
    /// Name in the banner, EHLO answer and Received header; also the self-signed
    /// certificate's name when no certificate is configured.
    pub hostname: String,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// How often the certificate files are checked for a renewal.
    pub tls_reload_interval: Duration,
    /// Networks from which AUTH is allowed without TLS (devices that only speak TLS
    /// 1.0 or RSA key exchange). Empty: AUTH only inside TLS.
    pub plaintext_auth_networks: Networks,
    /// Expect a PROXY protocol (v1 or v2) header from these peers.
    pub proxy_protocol: bool,
    pub trusted_proxies: Networks,
    pub bare_newlines: BareNewlinePolicy,
    pub limits: SessionLimits,
    pub auth_throttle: AuthThrottleSettings,
    /// After SIGTERM: how long sessions may finish before they are closed with 421.
    pub shutdown_grace: Duration,
}

/// The delivery worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Messages delivered at once by one worker process.
    pub concurrency: usize,
    /// How long a leased message stays with a worker before another may take it.
    pub lease_seconds: u64,
    /// Safety net next to LISTEN/NOTIFY: how often due retries are looked for.
    pub sweep_seconds: u64,
    /// How often each connected customer's Entra sign-in log is read for the
    /// migration board (0: never).
    pub sign_in_log_interval_seconds: u64,
    /// How often each customer's sender mailbox is read for non-delivery reports
    /// (0: never).
    pub bounce_poll_seconds: u64,
    /// After this long in the queue a message that still cannot be delivered fails.
    pub max_age_seconds: u64,
    /// After SIGTERM: how long deliveries in flight may finish before the process
    /// exits (their leases then expire and another worker takes the messages).
    pub shutdown_grace: Duration,
    /// Where reports of undeliverable messages go for tenants without an address of
    /// their own (e.g. the MSP's helpdesk); sent through the tenant's own path.
    pub failure_notification_address: Option<String>,
    /// How long the records (not the bodies) of finished messages are kept.
    pub retention: Duration,
    /// How long the audit log is kept.
    pub audit_retention: Duration,
    /// How long the edge's session transcripts are kept.
    pub transcript_retention: Duration,
    /// How often the cluster's one purge runs (in one worker at a time).
    pub purge_interval: Duration,
    /// How long a customer's admin consent is retried before it fails: Entra can
    /// take minutes to let a new consent's permissions into tokens.
    pub consent_check_limit: Duration,
    /// The first wait between consent check attempts (doubled each time).
    pub consent_retry_first: Duration,
    /// How often the alert rules are evaluated (once per interval in the cluster).
    pub alert_interval: Duration,
    /// Internal networks webhooks may post to (none by default: webhooks reach
    /// public addresses only).
    pub webhook_allowed_networks: Networks,
}

/// The control plane: where it is reached, and how MSP staff sign in.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// The control plane's address as browsers reach it (redirect URIs are built
    /// from it); `https://` makes cookies `Secure`.
    pub public_url: String,
    /// The OpenID Connect provider staff sign in with; without one nobody can.
    pub oidc: Option<OidcSettings>,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// Every session ends this long after sign-in.
    pub session_max: Duration,
    /// The host name devices are given on their setup cards (default: the edge's
    /// `MAILBRIDGE_HOSTNAME`).
    pub smtp_host: Option<String>,
}

/// An OpenID Connect provider (Entra ID, Google, Keycloak …).
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The issuer URL; for Entra's multi-tenant sign-in
    /// `https://login.microsoftonline.com/organizations/v2.0`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Entra tenant ids (`tid`) whose users may sign in. Required with Entra ID.
    pub allowed_tenants: Vec<String>,
    /// E-mail domains whose users may sign in: with Entra ID in addition to the tenant
    /// (both must match); with another provider alone, for verified addresses only.
    pub allowed_domains: Vec<String>,
}

impl OidcSettings {
    /// Whether the issuer is Entra ID: one of Microsoft's login hosts, or the
    /// multi-tenant endpoints (`/organizations/`, `/common/`, `/consumers/`). Entra
    /// never marks its `email` claim verified, so only the tenant identifies its users.
    pub fn is_entra(&self) -> bool {
        let rest = self
            .issuer
            .split_once("://")
            .map_or(self.issuer.as_str(), |(_, rest)| rest);
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host)
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let microsoft = [
            "login.microsoftonline.com",
            "login.microsoftonline.us",
            "login.microsoftonline.de",
            "login.partner.microsoftonline.cn",
            "login.chinacloudapi.cn",
            "sts.windows.net",
        ]
        .iter()
        .any(|h| host == *h);
        let multi_tenant = path
            .split('/')
            .any(|s| ["organizations", "common", "consumers"].contains(&s));
        microsoft || multi_tenant
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: Option<SecretString>,
    /// The widest networks a device allow-list may hold (control plane and CLI).
    pub allow_list: crate::devices::AllowListLimits,
    pub master_key: Option<MasterKey>,
    pub extra_ca_file: Option<PathBuf>,
    /// Connections the process's PostgreSQL pool may open at most; `None`: each
    /// process's own default (32 for edge and web, 2 × concurrency + 4 for a worker).
    pub database_max_connections: Option<u32>,
    pub web_listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz` of the edge and the worker (the web serves
    /// them on its own port); `None` when switched off.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the web serves `/metrics` (and `/healthz`, `/readyz`) apart from its
    /// pages, so that an ingress publishing the web port does not publish them;
    /// `None`: on the web port itself.
    pub web_metrics_listen: Option<SocketAddr>,
    pub m365: M365Settings,
    pub edge: EdgeSettings,
    pub worker: WorkerSettings,
    pub web: WebSettings,
}

impl Settings {
    /// Reads every setting from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads settings through `lookup`, so tests can configure without touching
    /// the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // Every Microsoft name defaults to the configured cloud's.
        let cloud: crate::cloud::Cloud = match lookup("MAILBRIDGE_M365_CLOUD") {
            Some(v) => v.parse().map_err(|reason| ConfigError::Invalid {
                name: "MAILBRIDGE_M365_CLOUD",
                reason,
            })?,
            None => crate::cloud::Cloud::Public,
        };
        let master_key = match lookup("MAILBRIDGE_MASTER_KEY") {
            Some(v) => {
                let key = MasterKey::from_base64(&v).map_err(|e| ConfigError::Invalid {
                    name: "MAILBRIDGE_MASTER_KEY",
                    reason: e.to_string(),
                })?;
                Some(
                    key.with_previous(
                        &lookup("MAILBRIDGE_MASTER_KEY_PREVIOUS").unwrap_or_default(),
                    )
                    .map_err(|e| ConfigError::Invalid {
                        name: "MAILBRIDGE_MASTER_KEY_PREVIOUS",
                        reason: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        let list = |name: &str| -> Vec<String> {
            lookup(name)
                .unwrap_or_default()
                .split(',')
                .map(|v| v.trim().to_ascii_lowercase())
                .filter(|v| !v.is_empty())
                .collect()
        };
        let oidc = match (
            lookup("MAILBRIDGE_OIDC_ISSUER"),
            lookup("MAILBRIDGE_OIDC_CLIENT_ID"),
            lookup("MAILBRIDGE_OIDC_CLIENT_SECRET"),
        ) {
            (Some(issuer), Some(client_id), Some(secret)) => {
                let oidc = OidcSettings {
                    issuer: issuer.trim().trim_end_matches('/').to_owned(),
                    client_id,
                    client_secret: SecretString::from(secret),
                    allowed_tenants: list("MAILBRIDGE_OIDC_ALLOWED_TENANTS"),
                    allowed_domains: list("MAILBRIDGE_OIDC_ALLOWED_DOMAINS"),
                };
                if oidc.allowed_tenants.is_empty() && oidc.allowed_domains.is_empty() {
                    return Err(ConfigError::Missing {
                        name: "MAILBRIDGE_OIDC_ALLOWED_TENANTS",
                        why: "sign-in needs an allow-list: the MSP's Entra tenant ids, or MAILBRIDGE_OIDC_ALLOWED_DOMAINS",
                    });
                }
                if oidc.is_entra() && oidc.allowed_tenants.is_empty() {
                    return Err(ConfigError::Missing {
                        name: "MAILBRIDGE_OIDC_ALLOWED_TENANTS",
                        why: "with Entra ID as the sign-in provider, e-mail domains alone (MAILBRIDGE_OIDC_ALLOWED_DOMAINS) would let in a user of any Microsoft 365 tenant whose mail attribute is such an address (Entra does not verify it): set the MSP's own tenant id(s); domains may stay as an additional condition",
                    });
                }
                Some(oidc)
            }
            (None, None, None) => None,
            _ => {
                return Err(ConfigError::Missing {
                    name: "MAILBRIDGE_OIDC_ISSUER",
                    why: "staff sign-in needs MAILBRIDGE_OIDC_ISSUER, MAILBRIDGE_OIDC_CLIENT_ID and MAILBRIDGE_OIDC_CLIENT_SECRET together",
                });
            }
        };
        Ok(Self {
            allow_list: crate::devices::AllowListLimits {
                widest_v4: prefix(&lookup, "MAILBRIDGE_MAX_ALLOWLIST_PREFIX_V4", "24", 32)?,
                widest_v6: prefix(&lookup, "MAILBRIDGE_MAX_ALLOWLIST_PREFIX_V6", "56", 128)?,
            },
            web: WebSettings {
                public_url: url(&lookup, "MAILBRIDGE_PUBLIC_URL", "http://localhost:8080"),
                oidc,
                session_idle: Duration::from_secs(
                    parse::<u64>(&lookup, "MAILBRIDGE_SESSION_IDLE_MINUTES", "30")? * 60,
                ),
                session_max: Duration::from_secs(
                    parse::<u64>(&lookup, "MAILBRIDGE_SESSION_MAX_HOURS", "12")? * 3600,
                ),
                smtp_host: lookup("MAILBRIDGE_PUBLIC_SMTP_HOST"),
            },
            database_url: lookup("DATABASE_URL").map(SecretString::from),
            master_key,
            extra_ca_file: lookup("MAILBRIDGE_EXTRA_CA_FILE").map(PathBuf::from),
            database_max_connections: match lookup("MAILBRIDGE_DATABASE_MAX_CONNECTIONS") {
                Some(_) => Some(positive(&lookup, "MAILBRIDGE_DATABASE_MAX_CONNECTIONS")?),
                None => None,
            },
            // `[::]` takes IPv6 and, dual-stack, IPv4 too (see `ops::bind`).
            web_listen: parse(&lookup, "MAILBRIDGE_WEB_LISTEN", "[::]:8080")?,
            metrics_listen: listen(&lookup, "MAILBRIDGE_METRICS_LISTEN", "[::]:9090")?,
            web_metrics_listen: match lookup("MAILBRIDGE_WEB_METRICS_LISTEN") {
                Some(_) => listen(&lookup, "MAILBRIDGE_WEB_METRICS_LISTEN", "")?,
                None => None,
            },
            m365: M365Settings {
                cloud,
                login_url: url(&lookup, "MAILBRIDGE_M365_LOGIN_URL", cloud.login_url()),
                graph_url: url(&lookup, "MAILBRIDGE_M365_GRAPH_URL", cloud.graph_url()),
                smtp_endpoint: lookup("MAILBRIDGE_M365_SMTP")
                    .unwrap_or_else(|| cloud.smtp_endpoint().to_owned()),
                request_timeout: seconds(&lookup, "MAILBRIDGE_M365_TIMEOUT_SECONDS", "120")?,
                graph_resource: url(&lookup, "MAILBRIDGE_M365_GRAPH_RESOURCE", cloud.graph_url()),
                exchange_resource: url(
                    &lookup,
                    "MAILBRIDGE_M365_EXCHANGE_RESOURCE",
                    cloud.exchange_resource(),
                ),
                client_id: lookup("MAILBRIDGE_ENTRA_CLIENT_ID"),
                client_secret: lookup("MAILBRIDGE_ENTRA_CLIENT_SECRET").map(SecretString::from),
                client_certificate_file: lookup("MAILBRIDGE_ENTRA_CLIENT_CERTIFICATE_FILE")
                    .map(PathBuf::from),
                client_key_file: lookup("MAILBRIDGE_ENTRA_CLIENT_KEY_FILE").map(PathBuf::from),
            },
            edge: EdgeSettings {
                submission_listen: listen(&lookup, "MAILBRIDGE_SUBMISSION_LISTEN", "0.0.0.0:587")?,
                submissions_listen: listen(
                    &lookup,
                    "MAILBRIDGE_SUBMISSIONS_LISTEN",
                    "0.0.0.0:465",
                )?,
                relay_listen: listen(&lookup, "MAILBRIDGE_RELAY_LISTEN", "0.0.0.0:25")?,
                legacy_submission_listen: listen(
                    &lookup,
                    "MAILBRIDGE_LEGACY_SUBMISSION_LISTEN",
                    "off",
                )?,
                legacy_submissions_listen: listen(
                    &lookup,
                    "MAILBRIDGE_LEGACY_SUBMISSIONS_LISTEN",
                    "off",
                )?,
                transcripts_per_key: parse(&lookup, "MAILBRIDGE_TRANSCRIPTS_PER_DEVICE", "20")?,
                hostname: lookup("MAILBRIDGE_HOSTNAME").unwrap_or_else(system_hostname),
                tls_cert_file: lookup("MAILBRIDGE_TLS_CERT_FILE").map(PathBuf::from),
                tls_key_file: lookup("MAILBRIDGE_TLS_KEY_FILE").map(PathBuf::from),
                tls_reload_interval: seconds(&lookup, "MAILBRIDGE_TLS_RELOAD_SECONDS", "30")?,
                plaintext_auth_networks: parse(&lookup, "MAILBRIDGE_PLAINTEXT_AUTH_NETWORKS", "")?,
                proxy_protocol: parse(&lookup, "MAILBRIDGE_PROXY_PROTOCOL", "false")?,
                trusted_proxies: parse(&lookup, "MAILBRIDGE_TRUSTED_PROXIES", "")?,
                bare_newlines: parse(&lookup, "MAILBRIDGE_BARE_NEWLINES", "normalize")?,
                limits: SessionLimits {
                    max_message_size: parse(
                        &lookup,
                        "MAILBRIDGE_MAX_MESSAGE_SIZE",
                        &DEFAULT_MAX_MESSAGE_SIZE.to_string(),
                    )?,
                    max_recipients: parse(&lookup, "MAILBRIDGE_MAX_RECIPIENTS", "100")?,
                    max_header_size: parse(&lookup, "MAILBRIDGE_MAX_HEADER_SIZE", "1048576")?,
                    max_errors: parse(&lookup, "MAILBRIDGE_MAX_COMMAND_ERRORS", "10")?,
                    max_messages: parse(&lookup, "MAILBRIDGE_MAX_MESSAGES_PER_SESSION", "1000")?,
                    idle_timeout: seconds(&lookup, "MAILBRIDGE_IDLE_TIMEOUT_SECONDS", "300")?,
                    session_timeout: seconds(
                        &lookup,
                        "MAILBRIDGE_SESSION_TIMEOUT_SECONDS",
                        "1800",
                    )?,
                },
                auth_throttle: AuthThrottleSettings {
                    failure_delay: Duration::from_millis(parse(
                        &lookup,
                        "MAILBRIDGE_AUTH_FAILURE_DELAY_MS",
                        "1000",
                    )?),
                    lockout_failures: parse(&lookup, "MAILBRIDGE_AUTH_LOCKOUT_FAILURES", "10")?,
                    source_lockout_failures: parse(
                        &lookup,
                        "MAILBRIDGE_AUTH_SOURCE_LOCKOUT_FAILURES",
                        "30",
                    )?,
                    username_lockout_failures: parse(
                        &lookup,
                        "MAILBRIDGE_AUTH_USERNAME_LOCKOUT_FAILURES",
                        "50",
                    )?,
                    window: seconds(&lookup, "MAILBRIDGE_AUTH_WINDOW_SECONDS", "900")?,
                    lockout: seconds(&lookup, "MAILBRIDGE_AUTH_LOCKOUT_SECONDS", "900")?,
                    credential_cache: seconds(
                        &lookup,
                        "MAILBRIDGE_CREDENTIAL_CACHE_SECONDS",
                        "60",
                    )?,
                },
                shutdown_grace: seconds(&lookup, "MAILBRIDGE_SHUTDOWN_GRACE_SECONDS", "25")?,
            },
            worker: WorkerSettings {
                concurrency: parse(&lookup, "MAILBRIDGE_WORKER_CONCURRENCY", "16")?,
                lease_seconds: parse(&lookup, "MAILBRIDGE_WORKER_LEASE_SECONDS", "300")?,
                sweep_seconds: parse(&lookup, "MAILBRIDGE_WORKER_SWEEP_SECONDS", "15")?,
                sign_in_log_interval_seconds: parse(
                    &lookup,
                    "MAILBRIDGE_SIGN_IN_LOG_INTERVAL_SECONDS",
                    "21600",
                )?,
                bounce_poll_seconds: parse(&lookup, "MAILBRIDGE_BOUNCE_POLL_SECONDS", "300")?,
                max_age_seconds: parse(&lookup, "MAILBRIDGE_MAX_MESSAGE_AGE_SECONDS", "432000")?,
                // One Microsoft request may take MAILBRIDGE_M365_TIMEOUT_SECONDS (120).
                shutdown_grace: seconds(
                    &lookup,
                    "MAILBRIDGE_WORKER_SHUTDOWN_GRACE_SECONDS",
                    "130",
                )?,
                failure_notification_address: lookup("MAILBRIDGE_FAILURE_NOTIFICATION_ADDRESS"),
                retention: match lookup("MAILBRIDGE_MESSAGE_RETENTION") {
                    Some(_) => duration(&lookup, "MAILBRIDGE_MESSAGE_RETENTION", "30d")?,
                    None => Duration::from_secs(
                        parse::<u64>(&lookup, "MAILBRIDGE_MESSAGE_RETENTION_DAYS", "30")? * 86_400,
                    ),
                },
                audit_retention: duration(&lookup, "MAILBRIDGE_AUDIT_RETENTION", "400d")?,
                transcript_retention: duration(&lookup, "MAILBRIDGE_TRANSCRIPT_RETENTION", "7d")?,
                purge_interval: seconds(&lookup, "MAILBRIDGE_PURGE_INTERVAL_SECONDS", "300")?,
                consent_check_limit: seconds(
                    &lookup,
                    "MAILBRIDGE_CONSENT_CHECK_LIMIT_SECONDS",
                    "900",
                )?,
                consent_retry_first: seconds(&lookup, "MAILBRIDGE_CONSENT_RETRY_SECONDS", "5")?,
                alert_interval: seconds(&lookup, "MAILBRIDGE_ALERT_INTERVAL_SECONDS", "60")?,
                webhook_allowed_networks: parse(
                    &lookup,
                    "MAILBRIDGE_WEBHOOK_ALLOWED_NETWORKS",
                    "",
                )?,
            },
        })
    }

    /// The database URL, or a clear error for the commands that need one.
    pub fn require_database_url(&self) -> Result<&SecretString, ConfigError> {
        self.database_url.as_ref().ok_or(ConfigError::Missing {
            name: "DATABASE_URL",
            why: "this command needs PostgreSQL (postgres://user:password@host/db)",
        })
    }

    /// The master key, or a clear error for the commands that handle secrets.
    pub fn require_master_key(&self) -> Result<&MasterKey, ConfigError> {
        self.master_key.as_ref().ok_or(ConfigError::Missing {
            name: "MAILBRIDGE_MASTER_KEY",
            why: "secrets and queued message bodies are encrypted with it at rest (32 random bytes, base64: `openssl rand -base64 32`)",
        })
    }
}

/// A duration written with its unit: `30d`, `12h`, `15m`, `20s` (a bare number is
/// seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30d, 12h, 15m, 20s)"))?;
    let factor = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} (d, h, m or s)")),
    };
    number
        .checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn duration(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let raw = lookup(name).unwrap_or_else(|| default.to_owned());
    parse_duration(&raw).map_err(|reason| ConfigError::Invalid { name, reason })
}

/// A network prefix length of at most `max` bits.
fn prefix(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: &str,
    max: u8,
) -> Result<u8, ConfigError> {
    let value: u8 = parse(lookup, name, default)?;
    if value > max {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{value} is not a prefix length (0 to {max})"),
        });
    }
    Ok(value)
}

fn parse<T: FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let raw = lookup(name).unwrap_or_else(|| default.to_owned());
    raw.trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::Invalid {
            name,
            reason: format!("{raw:?}: {e}"),
        })
}

/// A listen address, or `None` when set to `off`.
fn listen(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<Option<SocketAddr>, ConfigError> {
    match lookup(name).as_deref().map(str::trim) {
        Some("off") => Ok(None),
        None if default == "off" => Ok(None),
        _ => parse(lookup, name, default).map(Some),
    }
}

/// A number of at least 1.
fn positive(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<u32, ConfigError> {
    let value: u32 = parse(lookup, name, "")?;
    if value == 0 {
        return Err(ConfigError::Invalid {
            name,
            reason: "must be at least 1".to_owned(),
        });
    }
    Ok(value)
}

fn seconds(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    parse::<u64>(lookup, name, default).map(Duration::from_secs)
}

fn url(lookup: &impl Fn(&str) -> Option<String>, name: &str, default: &str) -> String {
    lookup(name)
        .unwrap_or_else(|| default.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// The kernel's host name; no DNS is involved.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "mailbridge".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_point_at_the_public_cloud() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.m365.login_url, "https://login.microsoftonline.com");
        assert_eq!(s.m365.graph_url, "https://graph.microsoft.com");
        assert_eq!(s.m365.smtp_endpoint, "smtp.office365.com:587");
        assert_eq!(s.edge.submission_listen.unwrap().port(), 587);
        assert_eq!(s.edge.relay_listen.unwrap().port(), 25);
        assert!(s.edge.plaintext_auth_networks.0.is_empty());
        assert_eq!(s.edge.bare_newlines, BareNewlinePolicy::Normalize);
        assert!(s.master_key.is_none());
    }

    #[test]
    fn a_national_cloud_sets_every_name() {
        let s = settings(&[("MAILBRIDGE_M365_CLOUD", "usgov-high")]).unwrap();
        assert_eq!(s.m365.login_url, "https://login.microsoftonline.us");
        assert_eq!(s.m365.graph_url, "https://graph.microsoft.us");
        assert_eq!(s.m365.smtp_endpoint, "smtp.office365.us:587");
        assert_eq!(s.m365.graph_resource, "https://graph.microsoft.us");
        assert_eq!(s.m365.exchange_resource, "https://outlook.office365.us");
        // An endpoint of its own (a proxy) keeps the cloud's resources.
        let s = settings(&[
            ("MAILBRIDGE_M365_CLOUD", "china"),
            ("MAILBRIDGE_M365_GRAPH_URL", "https://graph-proxy.example"),
        ])
        .unwrap();
        assert_eq!(s.m365.graph_url, "https://graph-proxy.example");
        assert_eq!(
            s.m365.graph_resource,
            "https://microsoftgraph.chinacloudapi.cn"
        );
        assert!(settings(&[("MAILBRIDGE_M365_CLOUD", "mars")]).is_err());
    }

    #[test]
    fn endpoints_lose_their_trailing_slash() {
        let s = settings(&[("MAILBRIDGE_M365_GRAPH_URL", "https://graph.microsoft.us/")]).unwrap();
        assert_eq!(s.m365.graph_url, "https://graph.microsoft.us");
    }

    #[test]
    fn listeners_switch_off_and_networks_parse() {
        let s = settings(&[
            ("MAILBRIDGE_RELAY_LISTEN", "off"),
            (
                "MAILBRIDGE_PLAINTEXT_AUTH_NETWORKS",
                "10.20.0.0/16, 192.0.2.7 ,2001:db8::/48",
            ),
        ])
        .unwrap();
        assert!(s.edge.relay_listen.is_none());
        let nets = &s.edge.plaintext_auth_networks;
        assert!(nets.contains(&"10.20.3.4".parse().unwrap()));
        assert!(nets.contains(&"192.0.2.7".parse().unwrap()));
        assert!(!nets.contains(&"192.0.2.8".parse().unwrap()));
        assert!(nets.contains(&"2001:db8::1".parse().unwrap()));
        assert!(settings(&[("MAILBRIDGE_TRUSTED_PROXIES", "10.0.0.0/33")]).is_err());
    }

    #[test]
    fn sign_in_needs_an_allow_list() {
        let base = [
            (
                "MAILBRIDGE_OIDC_ISSUER",
                "https://login.microsoftonline.com/organizations/v2.0/",
            ),
            ("MAILBRIDGE_OIDC_CLIENT_ID", "app"),
            ("MAILBRIDGE_OIDC_CLIENT_SECRET", "secret"),
        ];
        let err = settings(&base).unwrap_err();
        assert!(err.to_string().contains("ALLOWED_TENANTS"), "{err}");
        let mut vars = base.to_vec();
        vars.push(("MAILBRIDGE_OIDC_ALLOWED_DOMAINS", "MSP.example, it.example"));
        let err = settings(&vars).unwrap_err();
        assert!(
            err.to_string().contains("any Microsoft 365 tenant"),
            "Entra with domains alone is refused: {err}"
        );
        vars.push((
            "MAILBRIDGE_OIDC_ALLOWED_TENANTS",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
        ));
        let oidc = settings(&vars).unwrap().web.oidc.unwrap();
        assert!(oidc.is_entra());
        assert_eq!(
            oidc.issuer,
            "https://login.microsoftonline.com/organizations/v2.0"
        );
        assert_eq!(oidc.allowed_domains, ["msp.example", "it.example"]);
        assert!(
            settings(&base[..2]).is_err(),
            "a half-configured provider is refused"
        );
        assert!(settings(&[]).unwrap().web.oidc.is_none());
        let keycloak = settings(&[
            (
                "MAILBRIDGE_OIDC_ISSUER",
                "https://sso.msp.example/realms/staff",
            ),
            ("MAILBRIDGE_OIDC_CLIENT_ID", "app"),
            ("MAILBRIDGE_OIDC_CLIENT_SECRET", "secret"),
            ("MAILBRIDGE_OIDC_ALLOWED_DOMAINS", "msp.example"),
        ])
        .unwrap()
        .web
        .oidc
        .unwrap();
        assert!(!keycloak.is_entra(), "domains alone are fine elsewhere");
        for entra in [
            "https://login.microsoftonline.com/common/v2.0",
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
            "http://127.0.0.1:9443/organizations/v2.0",
        ] {
            let oidc = OidcSettings {
                issuer: entra.into(),
                ..keycloak.clone()
            };
            assert!(oidc.is_entra(), "{entra}");
        }
    }

    #[test]
    fn retention_takes_durations_and_the_days_form() {
        let days = settings(&[("MAILBRIDGE_MESSAGE_RETENTION_DAYS", "7")]).unwrap();
        assert_eq!(days.worker.retention, Duration::from_secs(7 * 86_400));
        let short = settings(&[
            ("MAILBRIDGE_MESSAGE_RETENTION", "20s"),
            ("MAILBRIDGE_MESSAGE_RETENTION_DAYS", "7"),
            ("MAILBRIDGE_AUDIT_RETENTION", "12h"),
        ])
        .unwrap();
        assert_eq!(short.worker.retention, Duration::from_secs(20));
        assert_eq!(
            short.worker.audit_retention,
            Duration::from_secs(12 * 3_600)
        );
        assert_eq!(
            settings(&[]).unwrap().worker.audit_retention,
            Duration::from_secs(400 * 86_400)
        );
        assert!(settings(&[("MAILBRIDGE_MESSAGE_RETENTION", "30 days")]).is_err());
        assert!(settings(&[("MAILBRIDGE_MESSAGE_RETENTION", "d")]).is_err());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = settings(&[("MAILBRIDGE_SUBMISSION_LISTEN", "port 587")]).unwrap_err();
        assert!(
            err.to_string().contains("MAILBRIDGE_SUBMISSION_LISTEN"),
            "{err}"
        );
        let err = settings(&[("MAILBRIDGE_MASTER_KEY", "c2hvcnQ=")]).unwrap_err();
        assert!(err.to_string().contains("MAILBRIDGE_MASTER_KEY"), "{err}");
    }

    #[test]
    fn pools_listeners_and_grace() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.database_max_connections, None);
        assert_eq!(s.web_listen, "[::]:8080".parse().unwrap());
        assert_eq!(s.metrics_listen, Some("[::]:9090".parse().unwrap()));
        assert_eq!(s.web_metrics_listen, None);
        assert_eq!(s.worker.shutdown_grace, Duration::from_secs(130));
        let s = settings(&[
            ("MAILBRIDGE_DATABASE_MAX_CONNECTIONS", "12"),
            ("MAILBRIDGE_WEB_METRICS_LISTEN", "[::]:9090"),
            ("MAILBRIDGE_WORKER_SHUTDOWN_GRACE_SECONDS", "40"),
        ])
        .unwrap();
        assert_eq!(s.database_max_connections, Some(12));
        assert_eq!(s.web_metrics_listen, Some("[::]:9090".parse().unwrap()));
        assert_eq!(s.worker.shutdown_grace, Duration::from_secs(40));
        let off = settings(&[("MAILBRIDGE_WEB_METRICS_LISTEN", "off")]).unwrap();
        assert_eq!(off.web_metrics_listen, None);
        for bad in ["0", "many"] {
            let err = settings(&[("MAILBRIDGE_DATABASE_MAX_CONNECTIONS", bad)]).unwrap_err();
            assert!(
                err.to_string()
                    .contains("MAILBRIDGE_DATABASE_MAX_CONNECTIONS"),
                "{err}"
            );
        }
    }
}
