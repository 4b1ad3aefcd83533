//! Exchange Online's SMTP submission endpoint (`smtp.office365.com:587`) as
//! m365-facts.md describes it: the banner, the EHLO lists before and after
//! STARTTLS (AUTH only inside TLS, and only `LOGIN XOAUTH2`), `504 5.7.4` for PLAIN,
//! `550 5.7.30` for a username and password (basic authentication), XOAUTH2 in both
//! forms with `235 2.7.0` or `535 5.7.3`, `535 5.7.139` for a tenant with SMTP AUTH
//! off, SendAs checked after the final dot (`554 5.2.252 SendAsDenied`), 3 concurrent
//! connections per mailbox (`432 4.3.2`), 10 000 recipients a day (`554 5.2.0`), and
//! the faults tests inject at each stage.
//!
//! Over 500 lines: it is one SMTP conversation, a state machine (about 470 lines) whose
//! command handlers — EHLO, AUTH and XOAUTH2, MAIL, RCPT, DATA and the injected faults
//! — share the private `Conversation` state; its tests are in tests/exchange_smtp.rs.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::Utc;
use jsonwebtoken::{Algorithm, Validation};
use mail_parser::MessageParser;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;
use uuid::Uuid;

use crate::{
    DeliveredMessage, Directory,
    fault_injection::{Effect, Endpoint},
    token::AccessTokenClaims,
};

/// The name Exchange Online's front end introduces itself with.
const HOST: &str = "AM0PR01MB0001.eurprd01.prod.outlook.com";
pub const CONNECTIONS_PER_MAILBOX: usize = 3;
use crate::exchange_limits::RECIPIENTS_PER_DAY;
const MAX_LINE: usize = 16 * 1024;

pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    directory: Arc<Directory>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, directory) = (acceptor.clone(), directory.clone());
        tokio::spawn(async move {
            if let Err(e) = session(stream, peer, acceptor, directory).await {
                tracing::debug!(%peer, error = %e, "simulated Exchange SMTP session ended");
            }
        });
    }
}

/// Whether the session continues after a command.
enum Next {
    Continue,
    StartTls,
    Close,
}

/// The authenticated mailbox of a session, counted against its connection limit.
struct Login {
    tenant: Uuid,
    mailbox: String,
    token_id: String,
    directory: Arc<Directory>,
}

impl Drop for Login {
    fn drop(&mut self) {
        let mut state = self.directory.lock();
        if let Some(count) = state.smtp_sessions.get_mut(&self.mailbox) {
            *count = count.saturating_sub(1);
        }
    }
}

struct Conversation<S> {
    stream: BufReader<S>,
    peer: SocketAddr,
    tls: bool,
    directory: Arc<Directory>,
    login: Option<Login>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    /// An injected `AcceptThenDelay`: how long to hold the answer after accepting.
    late_answer: Option<Duration>,
}

async fn session(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    directory: Arc<Directory>,
) -> std::io::Result<()> {
    let mut plain = Conversation::new(stream, peer, false, directory.clone());
    let banner = format!(
        "220 {HOST} Microsoft ESMTP MAIL Service ready at {}",
        Utc::now().to_rfc2822()
    );
    plain.reply(&banner).await?;
    if !plain.run().await? {
        return Ok(());
    }
    // Anything pipelined after STARTTLS is discarded with the plain reader.
    let tls = acceptor.accept(plain.stream.into_inner()).await?;
    let mut secured = Conversation::new(tls, peer, true, directory);
    secured.run().await?;
    Ok(())
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conversation<S> {
    fn new(stream: S, peer: SocketAddr, tls: bool, directory: Arc<Directory>) -> Self {
        Self {
            stream: BufReader::new(stream),
            peer,
            tls,
            directory,
            login: None,
            mail_from: None,
            rcpt_to: Vec::new(),
            late_answer: None,
        }
    }

    async fn reply(&mut self, line: &str) -> std::io::Result<()> {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        self.stream.get_mut().flush().await
    }

    async fn line(&mut self) -> std::io::Result<Option<String>> {
        let mut buf = Vec::new();
        let n = AsyncReadExt::take(&mut self.stream, MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ))
    }

    /// Runs commands until QUIT or EOF (false) or STARTTLS (true).
    async fn run(&mut self) -> std::io::Result<bool> {
        while let Some(line) = self.line().await? {
            match self.command(&line).await? {
                Next::Continue => {}
                Next::StartTls => return Ok(true),
                Next::Close => return Ok(false),
            }
        }
        Ok(false)
    }

    async fn command(&mut self, line: &str) -> std::io::Result<Next> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => self.ehlo().await?,
            "HELO" => {
                self.reply(&format!("250 {HOST} Hello [{}]", self.peer.ip()))
                    .await?
            }
            "STARTTLS" if !self.tls => {
                self.reply("220 2.0.0 SMTP server ready").await?;
                return Ok(Next::StartTls);
            }
            "STARTTLS" => self.reply("503 5.5.2 Send hello first").await?,
            "AUTH" => return self.auth(rest).await,
            "MAIL" => self.mail(rest).await?,
            "RCPT" => self.rcpt(rest).await?,
            "DATA" => return self.data().await,
            "RSET" => {
                self.mail_from = None;
                self.rcpt_to.clear();
                self.reply("250 2.0.0 Resetting").await?;
            }
            "NOOP" => self.reply("250 2.0.0 OK").await?,
            "QUIT" => {
                self.reply("221 2.0.0 Service closing transmission channel")
                    .await?;
                return Ok(Next::Close);
            }
            _ => self.reply("500 5.3.3 Unrecognized command").await?,
        }
        Ok(Next::Continue)
    }

    async fn ehlo(&mut self) -> std::io::Result<()> {
        let mut lines = vec![
            format!("{HOST} Hello [{}]", self.peer.ip()),
            "SIZE 157286400".into(),
            "PIPELINING".into(),
            "DSN".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.tls {
            lines.push("AUTH LOGIN XOAUTH2".into());
        } else {
            lines.push("STARTTLS".into());
        }
        lines.extend(["8BITMIME", "BINARYMIME", "CHUNKING", "SMTPUTF8"].map(String::from));
        let last = lines.len() - 1;
        let text: String = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
            .collect();
        self.stream.get_mut().write_all(text.as_bytes()).await?;
        self.stream.get_mut().flush().await
    }

    /// Answers with an injected fault for `endpoint`, if there is one. Returns
    /// `Some(next)` when the fault answered (or closed), `None` to go on normally.
    async fn fault(
        &mut self,
        endpoint: Endpoint,
        tenant: Option<Uuid>,
        mailbox: Option<&str>,
    ) -> std::io::Result<Option<Next>> {
        match self.directory.take_fault(endpoint, tenant, mailbox) {
            None => Ok(None),
            Some(Effect::Drop) => Ok(Some(Next::Close)),
            Some(effect @ Effect::Delay { .. }) => {
                tokio::time::sleep(effect.delay().unwrap_or_default()).await;
                Ok(None)
            }
            // Only the final dot accepts something; before it, the same as a delay.
            Some(effect @ Effect::AcceptThenDelay { .. }) if endpoint == Endpoint::SmtpDataEnd => {
                self.late_answer = effect.delay();
                Ok(None)
            }
            Some(effect @ Effect::AcceptThenDelay { .. }) => {
                tokio::time::sleep(effect.delay().unwrap_or_default()).await;
                Ok(None)
            }
            Some(Effect::Smtp { reply }) => {
                self.reply(&reply).await?;
                let closing = reply.starts_with("421");
                Ok(Some(if closing { Next::Close } else { Next::Continue }))
            }
            Some(Effect::Http {
                status, message, ..
            }) => {
                self.reply(&format!("451 4.7.500 Server busy ({status} {message})"))
                    .await?;
                Ok(Some(Next::Continue))
            }
            Some(Effect::Aadsts {
                code, description, ..
            }) => {
                self.reply(&format!(
                    "535 5.7.3 Authentication unsuccessful [AADSTS{code}: {description}]"
                ))
                .await?;
                Ok(Some(Next::Continue))
            }
        }
    }

    async fn auth(&mut self, rest: &str) -> std::io::Result<Next> {
        let (mechanism, initial) = rest.split_once(' ').unwrap_or((rest, ""));
        if !self.tls || self.login.is_some() {
            let answer = if self.tls {
                "503 5.5.2 Already authenticated"
            } else {
                "504 5.7.4 Unrecognized authentication type"
            };
            self.reply(answer).await?;
            return Ok(Next::Continue);
        }
        match mechanism.to_ascii_uppercase().as_str() {
            "LOGIN" => {
                // A username and password: basic authentication, which Exchange refuses.
                let user = if initial.is_empty() {
                    self.reply("334 VXNlcm5hbWU6").await?;
                    self.line().await?.unwrap_or_default()
                } else {
                    initial.to_owned()
                };
                let _ = user;
                self.reply("334 UGFzc3dvcmQ6").await?;
                let _password = self.line().await?;
                self.reply(
                    "550 5.7.30 Basic authentication is not supported for Client Submission.",
                )
                .await?;
            }
            "XOAUTH2" => {
                let response = if initial.is_empty() {
                    self.reply("334 ").await?;
                    self.line().await?.unwrap_or_default()
                } else {
                    initial.to_owned()
                };
                return self.xoauth2(&response).await;
            }
            _ => {
                self.reply("504 5.7.4 Unrecognized authentication type")
                    .await?
            }
        }
        Ok(Next::Continue)
    }

    async fn xoauth2(&mut self, response: &str) -> std::io::Result<Next> {
        let refused = format!("535 5.7.3 Authentication unsuccessful [{HOST}]");
        let decoded = STANDARD
            .decode(response.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        let parsed = decoded.as_deref().and_then(|text| {
            let mut user = None;
            let mut token = None;
            for part in text.split('\x01') {
                if let Some(u) = part.strip_prefix("user=") {
                    user = Some(u.to_ascii_lowercase());
                } else if let Some(t) = part.strip_prefix("auth=Bearer ") {
                    token = Some(t.to_owned());
                }
            }
            Some((user?, token?))
        });
        let Some((mailbox, token)) = parsed else {
            self.reply(&refused).await?;
            return Ok(Next::Continue);
        };
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[
            self.directory.cloud().exchange_resource(),
            "00000002-0000-0ff1-ce00-000000000000",
        ]);
        validation.leeway = 0;
        let claims = match jsonwebtoken::decode::<AccessTokenClaims>(
            &token,
            &self.directory.verifying_key,
            &validation,
        ) {
            Ok(data) => data.claims,
            Err(_) => {
                self.reply(&refused).await?;
                return Ok(Next::Continue);
            }
        };
        let Ok(tenant) = Uuid::parse_str(&claims.tid) else {
            self.reply(&refused).await?;
            return Ok(Next::Continue);
        };
        if let Some(next) = self
            .fault(Endpoint::SmtpAuth, Some(tenant), Some(&mailbox))
            .await?
        {
            return Ok(next);
        }
        let verdict = {
            let mut state = self.directory.lock();
            let owns_mailbox = state
                .tenants
                .get(&tenant)
                .is_some_and(|t| t.mailboxes.contains_key(&mailbox));
            // SMTP.SendAsApp with FullAccess/SendAs, or an RBAC for Applications grant.
            let may_use = crate::rbac::mailbox_access(
                &state,
                tenant,
                &claims.appid,
                &claims.roles,
                &mailbox,
                crate::rbac::MailboxNeed::SmtpSendAs,
            )
            .is_ok();
            if state.smtp_auth_disabled.contains(&tenant) {
                Err("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.".to_owned())
            } else if !(owns_mailbox && may_use) {
                Err(refused.clone())
            } else {
                let sessions = state.smtp_sessions.entry(mailbox.clone()).or_default();
                if *sessions >= CONNECTIONS_PER_MAILBOX {
                    *state.smtp_busy_refusals.entry(mailbox.clone()).or_default() += 1;
                    Err("432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information.".to_owned())
                } else {
                    *sessions += 1;
                    let now = *sessions;
                    let peak = state.smtp_sessions_peak.entry(mailbox.clone()).or_default();
                    *peak = (*peak).max(now);
                    Ok(())
                }
            }
        };
        match verdict {
            Ok(()) => {
                self.login = Some(Login {
                    tenant,
                    mailbox,
                    token_id: claims.uti,
                    directory: self.directory.clone(),
                });
                self.reply("235 2.7.0 Authentication successful").await?;
            }
            Err(answer) => self.reply(&answer).await?,
        }
        Ok(Next::Continue)
    }

    fn scope(&self) -> (Option<Uuid>, Option<String>) {
        (
            self.login.as_ref().map(|l| l.tenant),
            self.login.as_ref().map(|l| l.mailbox.clone()),
        )
    }

    async fn mail(&mut self, rest: &str) -> std::io::Result<()> {
        if self.login.is_none() {
            return self
                .reply("530 5.7.57 Client not authenticated to send mail.")
                .await;
        }
        let (tenant, mailbox) = self.scope();
        if let Some(Next::Continue | Next::Close) = self
            .fault(Endpoint::SmtpMail, tenant, mailbox.as_deref())
            .await?
        {
            return Ok(());
        }
        // RFC 1870: a declared size over the mailbox's maximum send size is refused
        // at once.
        if let (Some(declared), Some(mailbox)) = (size_parameter(rest), mailbox.as_deref())
            && declared > self.directory.max_send_size(mailbox)
        {
            return self.reply(crate::exchange_limits::SMTP_TOO_LARGE).await;
        }
        self.mail_from = Some(address(rest));
        self.rcpt_to.clear();
        self.reply("250 2.1.0 Sender OK").await
    }

    async fn rcpt(&mut self, rest: &str) -> std::io::Result<()> {
        if self.mail_from.is_none() {
            return self.reply("503 5.5.2 Need mail command").await;
        }
        let (tenant, mailbox) = self.scope();
        if let Some(Next::Continue | Next::Close) = self
            .fault(Endpoint::SmtpRcpt, tenant, mailbox.as_deref())
            .await?
        {
            return Ok(());
        }
        if self.rcpt_to.len() >= crate::exchange_limits::RECIPIENTS_PER_MESSAGE {
            return self.reply("452 4.5.3 Too many recipients").await;
        }
        self.rcpt_to.push(address(rest));
        self.reply("250 2.1.5 Recipient OK").await
    }

    async fn data(&mut self) -> std::io::Result<Next> {
        if self.rcpt_to.is_empty() {
            self.reply("503 5.5.2 Need rcpt command").await?;
            return Ok(Next::Continue);
        }
        self.reply("354 Start mail input; end with <CRLF>.<CRLF>")
            .await?;
        let mut message = Vec::new();
        loop {
            let mut line = Vec::new();
            if self.stream.read_until(b'\n', &mut line).await? == 0 {
                return Ok(Next::Close);
            }
            if line == b".\r\n" {
                break;
            }
            let unstuffed = if line.starts_with(b"..") {
                &line[1..]
            } else {
                &line[..]
            };
            message.extend_from_slice(unstuffed);
        }
        let envelope_from = self.mail_from.take().unwrap_or_default();
        let recipients = std::mem::take(&mut self.rcpt_to);
        let (tenant, mailbox) = self.scope();
        if let Some(next) = self
            .fault(Endpoint::SmtpDataEnd, tenant, mailbox.as_deref())
            .await?
        {
            return Ok(next);
        }
        let login = self.login.as_ref().expect("MAIL needs a login");
        if message.len() > self.directory.max_send_size(&login.mailbox) {
            self.reply(crate::exchange_limits::SMTP_TOO_LARGE).await?;
            return Ok(Next::Continue);
        }
        let answer = self.accept(
            login.tenant,
            &login.mailbox,
            &login.token_id,
            &envelope_from,
            recipients,
            &message,
        );
        if let Some(delay) = self.late_answer.take() {
            tokio::time::sleep(delay).await;
        }
        self.reply(&answer).await?;
        Ok(Next::Continue)
    }

    /// Checks SendAs and the daily recipients, stores the message, and returns the answer.
    fn accept(
        &self,
        tenant: Uuid,
        mailbox: &str,
        token_id: &str,
        envelope_from: &str,
        recipients: Vec<String>,
        message: &[u8],
    ) -> String {
        let parsed = MessageParser::default().parse_headers(message);
        let from = parsed
            .as_ref()
            .and_then(|p| p.from())
            .and_then(|f| f.first())
            .and_then(|a| a.address())
            .map(str::to_ascii_lowercase);
        let subject = parsed.as_ref().and_then(|p| p.subject()).map(str::to_owned);
        let mut state = self.directory.lock();
        let send_as = state
            .tenants
            .get(&tenant)
            .and_then(|t| t.mailboxes.get(mailbox))
            .cloned()
            .unwrap_or_default();
        let allowed = |address: &str| {
            address.is_empty()
                || address.eq_ignore_ascii_case(mailbox)
                || send_as.iter().any(|s| s.eq_ignore_ascii_case(address))
        };
        for claimed in [
            from.clone().unwrap_or_default(),
            envelope_from.to_ascii_lowercase(),
        ] {
            if !allowed(&claimed) {
                return format!(
                    "554 5.2.252 SendAsDenied; {mailbox} not allowed to send as {claimed}; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message.[EndDiagnosticData]"
                );
            }
        }
        let today = Utc::now().date_naive();
        let sent = state
            .recipients_sent
            .entry((mailbox.to_owned(), today))
            .or_default();
        if *sent + recipients.len() > RECIPIENTS_PER_DAY {
            return "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message.[EndDiagnosticData]".to_owned();
        }
        *sent += recipients.len();
        let id = Uuid::new_v4();
        crate::mailbox_store::accept(
            &mut state,
            DeliveredMessage {
                id,
                tenant_id: tenant,
                mailbox: mailbox.to_owned(),
                from,
                recipients: recipients.iter().map(|r| r.to_ascii_lowercase()).collect(),
                subject,
                mime: String::from_utf8_lossy(&crate::graph::strip_bcc(message)).into_owned(),
                via: "smtp",
                token_id: token_id.to_owned(),
                saved_to_sent_items: true,
                received_at: Utc::now(),
            },
        );
        format!("250 2.0.0 OK <{}@{HOST}> [Hostname={HOST}]", id.simple())
    }
}

/// The `SIZE=` parameter of `FROM:<a@b> SIZE=…`, if any.
fn size_parameter(argument: &str) -> Option<usize> {
    let after = argument.rsplit_once('>').map_or(argument, |(_, rest)| rest);
    after.split_ascii_whitespace().find_map(|p| {
        let (key, value) = p.split_once('=')?;
        key.eq_ignore_ascii_case("SIZE")
            .then(|| value.parse::<usize>().unwrap_or(usize::MAX))
    })
}

/// The address in `FROM:<a@b> SIZE=…` / `TO:<a@b>`.
fn address(argument: &str) -> String {
    argument
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(address, _)| address.to_owned())
        .unwrap_or_default()
}

impl Directory {
    /// Lets `client_id`'s service principal send as `mailbox` in Exchange (what
    /// `New-ServicePrincipal` plus `Add-MailboxPermission -AccessRights FullAccess` do).
    pub fn grant_exchange_access(&self, tenant: Uuid, client_id: &str, mailbox: &str) {
        self.lock()
            .exchange_access
            .entry((tenant, client_id.to_owned()))
            .or_default()
            .push(mailbox.to_ascii_lowercase());
    }

    /// Switches SMTP AUTH off (or on) for a tenant.
    pub fn set_smtp_auth_disabled(&self, tenant: Uuid, disabled: bool) {
        let mut state = self.lock();
        if disabled {
            state.smtp_auth_disabled.insert(tenant);
        } else {
            state.smtp_auth_disabled.remove(&tenant);
        }
    }
}
