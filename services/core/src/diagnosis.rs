//! What Microsoft's answers mean, in plain words: every upstream answer the worker
//! sees (Graph, Exchange SMTP, the Entra token endpoint, the network) is diagnosed
//! once into a `Diagnosis` — whether to retry, and an explanation with a suggested
//! fix in English and German that the control plane shows next to the raw answer.
//!
//! The diagnosis key is stable: it is stored with each delivery attempt and used as
//! the `code` label of `mailbridge_upstream_rejects_total`.

use serde::Serialize;

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Throttling, outages, timeouts, or a setting the tenant's admin can fix while
    /// the message waits (consent, secrets): retried until the message's maximum age.
    Retry,
    /// Retrying cannot help: the message fails now.
    Permanent,
}

pub use crate::i18n::Lang;

#[derive(Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub key: &'static str,
    pub class: Class,
    /// What it means, in English (German in the catalogue, see `crate::i18n`).
    title: &'static str,
    /// What to do, in English.
    fix: &'static str,
}

impl Diagnosis {
    pub fn title(&self, lang: Lang) -> &'static str {
        crate::i18n::translate(lang, self.title)
    }

    pub fn fix(&self, lang: Lang) -> &'static str {
        crate::i18n::translate(lang, self.fix)
    }
}

macro_rules! diagnoses {
    ($($name:ident = $key:literal, $class:ident, $title:literal, $fix:literal;)*) => {
        $(pub static $name: Diagnosis = Diagnosis {
            key: $key,
            class: Class::$class,
            title: $title,
            fix: $fix,
        };)*
        /// Every diagnosis, for lookups by key and for documentation.
        pub static ALL: &[&Diagnosis] = &[$(&$name),*];
    };
}

diagnoses! {
    BASIC_AUTH_REFUSED = "5.7.30", Permanent,
        "Microsoft refused a username/password login (Basic authentication is switched off).",
        "This is exactly what mailbridge replaces: point the device at mailbridge instead of smtp.office365.com. If mailbridge itself got this answer, its SMTP delivery is misconfigured — use Graph delivery.";
    SMTP_AUTH_REFUSED = "5.7.3", Retry,
        "Exchange Online did not accept mailbridge's OAuth token for SMTP.",
        "SMTP delivery needs the app's service principal registered in Exchange (New-ServicePrincipal) with FullAccess or SendAs on the sender mailbox, and the SMTP.SendAsApp permission consented. Or switch the customer to Graph delivery, which needs only admin consent.";
    SMTP_AUTH_DISABLED = "5.7.139", Retry,
        "SMTP AUTH is switched off for this Microsoft 365 tenant (or security defaults block it).",
        "Enable SMTP AUTH for the sender mailbox (Exchange admin center → mailbox → Email apps → Authenticated SMTP), or switch this customer to Graph delivery.";
    SEND_AS_DENIED = "SendAsDenied", Permanent,
        "The sender mailbox may not send as the From address of this message.",
        "Give the sender mailbox SendAs permission for that address in Exchange, or set the device's sender policy to rewrite the From to the sender mailbox.";
    MAILBOX_NOT_REST_ENABLED = "MailboxNotEnabledForRESTAPI", Permanent,
        "The sender mailbox cannot be used through Microsoft Graph (no Exchange Online licence, a guest, or an on-premises mailbox).",
        "Use a licensed Exchange Online mailbox (a shared mailbox works) as the customer's sender mailbox.";
    ACCESS_DENIED = "ErrorAccessDenied", Retry,
        "Microsoft Graph refused access to the sender mailbox (missing Mail.Send permission, or an application access policy excludes it).",
        "Have the customer's admin grant consent again (Connect Microsoft 365), and if an application access policy or RBAC for Applications scope is used, include the sender mailbox in it.";
    TOKEN_REFUSED_BY_RESOURCE = "InvalidAuthenticationToken", Retry,
        "Microsoft Graph did not accept the access token.",
        "mailbridge fetches a new token and retries. If it persists, check that the customer's consent is in place.";
    UNKNOWN_MAILBOX = "ErrorInvalidUser", Permanent,
        "The sender mailbox does not exist in the customer's Microsoft 365.",
        "Correct the customer's sender mailbox address.";
    CONCURRENCY = "4.3.2", Retry,
        "Exchange Online limits concurrent connections per mailbox; this one had too many.",
        "Nothing to do: mailbridge waits and retries. Persistent? Other systems may be sending as the same mailbox.";
    QUOTA_EXCEEDED = "SubmissionQuotaExceeded", Retry,
        "The sender mailbox reached Exchange Online's sending limit (10,000 recipients per day).",
        "mailbridge retries later. For more volume, spread devices over several sender mailboxes.";
    THROTTLED = "429", Retry,
        "Microsoft is throttling requests for this mailbox or app.",
        "Nothing to do: mailbridge waits as long as Microsoft asks (Retry-After) and retries.";
    SERVER_ERROR = "ServerError", Retry,
        "Microsoft 365 had a temporary server error.",
        "Nothing to do: mailbridge retries. Check the Microsoft 365 service health if it lasts.";
    TEMPORARY = "Temporary", Retry,
        "Microsoft 365 answered with a temporary failure.",
        "Nothing to do: mailbridge retries.";
    UNREACHABLE = "Unreachable", Retry,
        "Microsoft 365 could not be reached (network, DNS, TLS or a timeout).",
        "mailbridge retries. If it lasts, check the cluster's outbound access to Microsoft on port 443 (and 587 for SMTP).";
    TOO_MANY_RECIPIENTS = "TooManyRecipients", Permanent,
        "The message has more recipients than Exchange Online allows in one message (500).",
        "Send the message to fewer recipients, or to a distribution group, which counts as one.";
    TOO_LARGE = "RequestBodyTooLarge", Permanent,
        "The message is larger than Microsoft accepts on this path.",
        "Send smaller attachments, or raise the sender mailbox's maximum send size in Exchange.";
    BAD_MESSAGE = "InvalidMessage", Permanent,
        "Microsoft refused the message as malformed or without valid recipients.",
        "Check the recipients and the device's mail settings; the raw answer says what Microsoft disliked.";
    BAD_SENDER = "5.1.8", Permanent,
        "Exchange Online blocked the sender mailbox from sending (bad outbound sender, often after suspected spam).",
        "The customer's admin must release the mailbox in Microsoft Defender (Restricted entities) and check it for compromise.";
    SPAM = "OutboundSpam", Permanent,
        "Exchange Online classified the message as outbound spam.",
        "Check the message content and the device; the customer's admin can review it in Microsoft Defender.";
    MAILBOX_FULL = "5.2.2", Permanent,
        "The sender mailbox is full.",
        "Free space in the sender mailbox (its Sent Items keep a copy of every message) or raise its quota; for a scanner mailbox, untick \"Keep a copy in the mailbox's Sent Items\" on the customer's page.";
    APP_NOT_IN_TENANT = "AADSTS700016", Retry,
        "The customer's Microsoft 365 has not consented to mailbridge's app (or it was removed).",
        "Have a Global Administrator of the customer click \"Connect Microsoft 365\" and accept. Messages wait meanwhile.";
    CONSENT_MISSING = "AADSTS65001", Retry,
        "Consent for mailbridge's app is missing in the customer's Microsoft 365.",
        "Have a Global Administrator of the customer click \"Connect Microsoft 365\" and accept.";
    INVALID_SECRET = "AADSTS7000215", Retry,
        "The app's client secret is wrong (often the secret's ID was copied instead of its value).",
        "Copy the secret's Value from the app registration into mailbridge's configuration (MAILBRIDGE_ENTRA_CLIENT_SECRET, or the customer's own app).";
    EXPIRED_SECRET = "AADSTS7000222", Retry,
        "The app's client secret has expired.",
        "Create a new secret in the app registration and update mailbridge's configuration.";
    TENANT_NOT_FOUND = "AADSTS90002", Retry,
        "The customer's Entra tenant ID is unknown to Microsoft.",
        "Correct the customer's tenant ID (Entra admin center → Overview → Tenant ID), or reconnect Microsoft 365.";
    BAD_ASSERTION = "AADSTS700027", Retry,
        "Entra ID rejected the certificate credential (the certificate is not registered on the app, or the key does not match).",
        "Upload the certificate's public part to the app registration, or configure the matching private key in mailbridge.";
    INVALID_SCOPE = "AADSTS70011", Permanent,
        "Entra ID refused the requested permission scope.",
        "Check MAILBRIDGE_M365_GRAPH_RESOURCE / MAILBRIDGE_M365_EXCHANGE_RESOURCE (national clouds use other hosts).";
    WRONG_CLOUD = "AADSTS500011", Retry,
        "Entra ID does not know the resource mailbridge asked a token for: mailbridge is set up for another Microsoft cloud than the customer's tenant (public, GCC High, 21Vianet).",
        "Set MAILBRIDGE_M365_CLOUD to the tenant's cloud (and remove MAILBRIDGE_M365_*_RESOURCE overrides of another cloud). Messages wait meanwhile.";
    MISSING_ROLE = "MissingRole", Retry,
        "Microsoft issued a token, but without the permission mailbridge needs to send mail (Mail.Send, or SMTP.SendAsApp for SMTP delivery).",
        "In the customer's Entra admin center, open Enterprise applications → mailbridge → Permissions and grant admin consent again; check that the MSP's app registration requests the permission.";
    TOKEN_REFUSED = "TokenRefused", Retry,
        "Entra ID refused to issue a token.",
        "Read Microsoft's answer (the AADSTS code) and check the app registration and the customer's consent.";
    NOT_CONFIGURED = "NotConfigured", Retry,
        "mailbridge has no Entra app credentials to deliver with.",
        "Set MAILBRIDGE_ENTRA_CLIENT_ID and MAILBRIDGE_ENTRA_CLIENT_SECRET (or give the customer its own app).";
    NOT_CONNECTED = "NotConnected", Retry,
        "The customer is not connected to its Microsoft 365 tenant yet.",
        "Open the customer in the control plane and click Connect Microsoft 365; the customer's admin grants consent. Waiting messages go out afterwards.";
    INTERNAL = "Internal", Retry,
        "mailbridge could not attempt the delivery (its database or secrets were unavailable).",
        "Check mailbridge's logs and database; the message is retried.";
    GONE = "Gone", Permanent,
        "The message's customer or content no longer exists in mailbridge.",
        "Nothing to deliver any more.";
    EXPIRED = "Expired", Permanent,
        "The message could not be delivered within its maximum age and was given up.",
        "Fix the cause shown on its earlier attempts, then ask the device to send it again.";
    REJECTED = "Rejected", Permanent,
        "Microsoft 365 refused the message.",
        "Read Microsoft's answer shown with the attempt.";
    // Bounces: what a non-delivery report (NDR) Microsoft put in the sender mailbox
    // after accepting the message says about one recipient (see `bounce`).
    BOUNCE_RECIPIENT_NOT_FOUND = "NDR 5.1.10", Permanent,
        "The recipient does not exist: Microsoft 365 looked the address up in the recipient's organisation and found no one.",
        "Check the address on the device or in the software's address book (a typo, or someone who has left); then send again to the right address.";
    BOUNCE_BAD_ADDRESS = "NDR 5.1.1", Permanent,
        "The recipient's address is wrong or does not exist at the receiving mail system.",
        "Check the spelling of the address on the device or in the address book and ask the recipient for their current address; then send again.";
    BOUNCE_RELAY_DENIED = "NDR 5.4.1", Permanent,
        "The recipient's mail server refused the address (relay access denied, or the recipient was rejected).",
        "The address probably does not exist at the receiving organisation, or its server does not accept mail for that domain. Check the address; if it is right, the recipient's admin must check their accepted domains and recipient filtering.";
    BOUNCE_MAILBOX_FULL = "NDR 5.2.2", Permanent,
        "The recipient's mailbox is full.",
        "Tell the recipient (by phone) that their mailbox is full; send again once they have made room.";
    BOUNCE_REFUSED = "NDR 5.7", Permanent,
        "The message was refused: the recipient's organisation does not accept it from this sender (a content or spam filter, or a restriction on who may send to the recipient).",
        "Ask the recipient's IT to allow mail from the sender address (or the sender's domain), and check the message's content (attachments of a blocked type); then send again.";
    BOUNCE_TOO_MANY_RECIPIENTS = "NDR 5.5.3", Permanent,
        "Microsoft 365 refused the message because it has too many recipients: Exchange Online allows at most 500 per message (To, Cc and Bcc together).",
        "Send the message to fewer recipients (at most 500), or to a distribution group, which counts as one; then send again.";
    BOUNCE_DAILY_LIMIT = "NDR 5.1.90", Permanent,
        "Microsoft 365 refused the message because the sender mailbox reached its daily limit for message recipients (10,000 in 24 hours).",
        "Wait until the mailbox's recipients of the last 24 hours are below the limit, then send again. For more volume, spread the devices over several sender mailboxes.";
    BOUNCE_OTHER = "NDR", Permanent,
        "Microsoft could not deliver the message to this recipient after accepting it.",
        "Read the status code and Microsoft's diagnostic text shown with the recipient; Microsoft's list of NDR codes explains each.";
}

/// A recipient's entry in a non-delivery report: its `Status` (an enhanced status
/// code, RFC 3463) and `Diagnostic-Code` text, e.g. `5.1.10` and `smtp; 550 5.1.10
/// RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup`.
pub fn bounce(status: &str, diagnostic: &str) -> &'static Diagnosis {
    let status = status.trim();
    if status == "5.1.10" || contains(diagnostic, "RecipientNotFound") {
        return &BOUNCE_RECIPIENT_NOT_FOUND;
    }
    if status == "5.5.3" || contains(diagnostic, "RecipLim") {
        return &BOUNCE_TOO_MANY_RECIPIENTS;
    }
    if status == "5.1.90" || contains(diagnostic, "daily limit for message recipients") {
        return &BOUNCE_DAILY_LIMIT;
    }
    match status {
        "5.1.1" | "5.1.0" | "5.1.6" => &BOUNCE_BAD_ADDRESS,
        "5.4.1" => &BOUNCE_RELAY_DENIED,
        "5.2.2" | "4.2.2" => &BOUNCE_MAILBOX_FULL,
        s if s.starts_with("5.7.") => &BOUNCE_REFUSED,
        _ => &BOUNCE_OTHER,
    }
}

/// The diagnosis stored under `key`.
pub fn by_key(key: &str) -> Option<&'static Diagnosis> {
    ALL.iter().copied().find(|d| d.key == key)
}

fn contains(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

/// A Graph answer: HTTP status, `error.code`, `error.message`.
pub fn graph(status: u16, code: &str, message: &str) -> &'static Diagnosis {
    match (status, code) {
        (_, "ErrorSendAsDenied") => &SEND_AS_DENIED,
        (_, "MailboxNotEnabledForRESTAPI") | (_, "MailboxNotEnabledForRESTAPI.") => {
            &MAILBOX_NOT_REST_ENABLED
        }
        (_, "ErrorAccessDenied") | (403, "Authorization_RequestDenied") => &ACCESS_DENIED,
        (401, _) | (_, "InvalidAuthenticationToken") => &TOKEN_REFUSED_BY_RESOURCE,
        (_, "ErrorInvalidUser") | (404, "ResourceNotFound") => &UNKNOWN_MAILBOX,
        (429, _) => &THROTTLED,
        // A mailbox is full (the sender's, whose Sent Items keep a copy of every
        // MIME message); the sending limit is ErrorSubmissionQuotaExceeded.
        (_, "ErrorQuotaExceeded") => &MAILBOX_FULL,
        (_, "ErrorSubmissionQuotaExceeded") => &QUOTA_EXCEEDED,
        (413, _) | (_, "RequestBodyTooLarge") | (_, "ErrorMessageSizeExceeded") => &TOO_LARGE,
        (_, "ErrorMimeContentInvalidBase64String")
        | (_, "ErrorMimeContentInvalid")
        | (_, "ErrorInvalidRecipients")
        | (400, _) => {
            if contains(message, "maximum request length") {
                &TOO_LARGE
            } else {
                &BAD_MESSAGE
            }
        }
        (408 | 500..=599, _) => &SERVER_ERROR,
        _ => &REJECTED,
    }
}

/// An SMTP answer from Exchange Online: reply code, enhanced code (may be empty),
/// and the text.
pub fn smtp(reply: u16, enhanced: &str, text: &str) -> &'static Diagnosis {
    if contains(text, "SendAsDenied") || enhanced == "5.2.252" || enhanced == "5.7.60" {
        return &SEND_AS_DENIED;
    }
    if contains(text, "SubmissionQuotaExceeded") {
        return &QUOTA_EXCEEDED;
    }
    if contains(text, "OutboundSpam") {
        return &SPAM;
    }
    match enhanced {
        "5.7.30" => &BASIC_AUTH_REFUSED,
        "5.7.3" => &SMTP_AUTH_REFUSED,
        "5.7.139" => &SMTP_AUTH_DISABLED,
        "4.3.2" => &CONCURRENCY,
        "5.1.8" => &BAD_SENDER,
        "5.2.2" => &MAILBOX_FULL,
        "5.3.4" => &TOO_LARGE,
        "4.5.3" | "5.5.3" => &TOO_MANY_RECIPIENTS,
        _ if reply == 421 || (400..500).contains(&reply) => &TEMPORARY,
        _ => &REJECTED,
    }
}

/// An answer of the Entra token endpoint.
pub fn token(aadsts: Option<u32>) -> &'static Diagnosis {
    match aadsts {
        Some(700016) => &APP_NOT_IN_TENANT,
        Some(65001) => &CONSENT_MISSING,
        Some(7000215) => &INVALID_SECRET,
        Some(7000222) => &EXPIRED_SECRET,
        Some(90002) => &TENANT_NOT_FOUND,
        Some(700027) => &BAD_ASSERTION,
        Some(70011) => &INVALID_SCOPE,
        Some(500011) => &WRONG_CLOUD,
        _ => &TOKEN_REFUSED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_every_text_is_translated() {
        for (i, d) in ALL.iter().enumerate() {
            assert!(
                ALL[i + 1..].iter().all(|o| o.key != d.key),
                "{} twice",
                d.key
            );
            for lang in [Lang::En, Lang::De] {
                assert!(
                    !d.title(lang).is_empty() && !d.fix(lang).is_empty(),
                    "{}",
                    d.key
                );
            }
            assert_ne!(
                d.title(Lang::En),
                d.title(Lang::De),
                "{} untranslated",
                d.key
            );
            assert_eq!(by_key(d.key), Some(*d));
        }
    }

    #[test]
    fn the_msp_guide_explains_every_diagnosis() {
        let guide = include_str!("../../../docs/msp-guide.md");
        for d in ALL {
            let row = format!("| `{}` |", d.key);
            assert!(
                guide.contains(&row),
                "docs/msp-guide.md has no row for {}",
                d.key
            );
            assert!(
                guide.contains(d.title(Lang::En)),
                "docs/msp-guide.md has an old text for {}",
                d.key
            );
        }
    }

    #[test]
    fn microsoft_answers_are_diagnosed() {
        assert_eq!(
            smtp(
                550,
                "5.7.30",
                "Basic authentication is not supported for Client Submission."
            )
            .key,
            "5.7.30"
        );
        assert_eq!(
            smtp(
                535,
                "5.7.139",
                "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."
            )
            .key,
            "5.7.139"
        );
        assert_eq!(
            smtp(554, "5.2.252", "SendAsDenied; a not allowed to send as b").key,
            "SendAsDenied"
        );
        assert_eq!(
            smtp(
                554,
                "5.2.0",
                "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied"
            )
            .key,
            "SendAsDenied"
        );
        assert_eq!(
            smtp(
                554,
                "5.2.0",
                "STOREDRV.Submission.Exception:SubmissionQuotaExceededException"
            )
            .key,
            "SubmissionQuotaExceeded"
        );
        assert_eq!(
            smtp(432, "4.3.2", "Concurrent connections limit exceeded").class,
            Class::Retry
        );
        assert_eq!(
            smtp(
                554,
                "5.2.0",
                "STOREDRV.Submission.Exception:OutboundSpamException"
            )
            .key,
            "OutboundSpam"
        );
        assert_eq!(graph(403, "ErrorSendAsDenied", "").class, Class::Permanent);
        // A full mailbox is not the sending limit.
        assert_eq!(graph(507, "ErrorQuotaExceeded", "").key, MAILBOX_FULL.key);
        assert_eq!(
            graph(403, "ErrorSubmissionQuotaExceeded", "").key,
            QUOTA_EXCEEDED.key
        );
        assert_eq!(
            graph(429, "ApplicationThrottled", "MailboxConcurrency").key,
            "429"
        );
        assert_eq!(graph(503, "ServiceUnavailable", "").class, Class::Retry);
        assert_eq!(
            graph(
                400,
                "RequestBodyTooLarge",
                "The maximum request length supported is 4MB."
            )
            .key,
            "RequestBodyTooLarge"
        );
        assert_eq!(
            graph(404, "MailboxNotEnabledForRESTAPI", "").class,
            Class::Permanent
        );
        assert_eq!(token(Some(7000215)).key, "AADSTS7000215");
        assert_eq!(token(Some(12345)).key, "TokenRefused");
        assert_eq!(
            bounce("5.1.10", "smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup").key,
            "NDR 5.1.10"
        );
        assert_eq!(bounce("5.2.2", "").key, "NDR 5.2.2");
        assert_eq!(bounce("5.7.1", "").key, "NDR 5.7");
        assert_eq!(bounce("5.4.1", "").key, "NDR 5.4.1");
        assert_eq!(bounce("5.9.9", "").key, "NDR");
        assert_eq!(
            bounce(
                "5.5.3",
                "smtp;550 5.5.3 RESOLVER.ADR.RecipLim; too many recipients"
            )
            .key,
            "NDR 5.5.3"
        );
        assert_eq!(
            bounce(
                "5.1.90",
                "smtp;550 5.1.90 Your message can't be sent because you've reached your daily limit for message recipients."
            )
            .key,
            "NDR 5.1.90"
        );
        assert_eq!(
            smtp(452, "4.5.3", "Too many recipients").key,
            "TooManyRecipients"
        );
        assert_eq!(
            graph(
                400,
                "ErrorMessageSizeExceeded",
                "The message exceeds the maximum supported size."
            )
            .key,
            "RequestBodyTooLarge"
        );
        assert_eq!(
            smtp(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size"
            )
            .class,
            Class::Permanent
        );
    }
}
