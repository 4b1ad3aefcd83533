//! What Microsoft's answers mean, in plain words: every upstream answer the worker
//! sees (Graph, Exchange SMTP, the Entra token endpoint, the network) is diagnosed
//! once into a `Diagnosis` — whether to retry, and an explanation with a suggested
//! fix in English and German that the control plane shows next to the raw answer.
//!
//! The diagnosis key is stable: it is stored with each delivery attempt and used as
//! the `code` label of `mailbridge_upstream_rejects_total`.

use serde::Serialize;

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Throttling, outages, timeouts, or a setting the tenant's admin can fix while
    /// the message waits (consent, secrets): retried until the message's maximum age.
    Retry,
    /// Retrying cannot help: the message fails now.
    Permanent,
}

/// A language the explanations are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub key: &'static str,
    pub class: Class,
    title: [&'static str; 2],
    fix: [&'static str; 2],
}

impl Diagnosis {
    pub fn title(&self, lang: Lang) -> &'static str {
        self.title[lang as usize]
    }

    pub fn fix(&self, lang: Lang) -> &'static str {
        self.fix[lang as usize]
    }
}

macro_rules! diagnoses {
    ($($name:ident = $key:literal, $class:ident,
        $title_en:literal, $title_de:literal,
        $fix_en:literal, $fix_de:literal;)*) => {
        $(pub static $name: Diagnosis = Diagnosis {
            key: $key,
            class: Class::$class,
            title: [$title_en, $title_de],
            fix: [$fix_en, $fix_de],
        };)*
        /// Every diagnosis, for lookups by key and for documentation.
        pub static ALL: &[&Diagnosis] = &[$(&$name),*];
    };
}

diagnoses! {
    BASIC_AUTH_REFUSED = "5.7.30", Permanent,
        "Microsoft refused a username/password login (Basic authentication is switched off).",
        "Microsoft hat eine Anmeldung mit Benutzername/Passwort abgelehnt (Basic-Authentifizierung ist abgeschaltet).",
        "This is exactly what mailbridge replaces: point the device at mailbridge instead of smtp.office365.com. If mailbridge itself got this answer, its SMTP delivery is misconfigured — use Graph delivery.",
        "Genau das ersetzt mailbridge: das Gerät auf mailbridge statt auf smtp.office365.com einstellen. Hat mailbridge selbst diese Antwort erhalten, ist die SMTP-Zustellung falsch eingerichtet – Graph-Zustellung verwenden.";
    SMTP_AUTH_REFUSED = "5.7.3", Retry,
        "Exchange Online did not accept mailbridge's OAuth token for SMTP.",
        "Exchange Online hat das OAuth-Token von mailbridge für SMTP nicht akzeptiert.",
        "SMTP delivery needs the app's service principal registered in Exchange (New-ServicePrincipal) with FullAccess or SendAs on the sender mailbox, and the SMTP.SendAsApp permission consented. Or switch the customer to Graph delivery, which needs only admin consent.",
        "Für SMTP-Zustellung muss der Service Principal der App in Exchange registriert sein (New-ServicePrincipal), mit FullAccess oder SendAs auf dem Absenderpostfach, und die Berechtigung SMTP.SendAsApp muss erteilt sein. Oder den Kunden auf Graph-Zustellung umstellen – dafür genügt die Admin-Zustimmung.";
    SMTP_AUTH_DISABLED = "5.7.139", Retry,
        "SMTP AUTH is switched off for this Microsoft 365 tenant (or security defaults block it).",
        "SMTP AUTH ist in diesem Microsoft-365-Tenant abgeschaltet (oder die Sicherheitsstandards blockieren es).",
        "Enable SMTP AUTH for the sender mailbox (Exchange admin center → mailbox → Email apps → Authenticated SMTP), or switch this customer to Graph delivery.",
        "SMTP AUTH für das Absenderpostfach aktivieren (Exchange Admin Center → Postfach → E-Mail-Apps → Authentifiziertes SMTP) oder den Kunden auf Graph-Zustellung umstellen.";
    SEND_AS_DENIED = "SendAsDenied", Permanent,
        "The sender mailbox may not send as the From address of this message.",
        "Das Absenderpostfach darf nicht im Namen der Absenderadresse dieser Nachricht senden.",
        "Give the sender mailbox SendAs permission for that address in Exchange, or set the device's sender policy to rewrite the From to the sender mailbox.",
        "Dem Absenderpostfach in Exchange die Berechtigung „Senden als“ für diese Adresse geben oder die Absenderrichtlinie des Geräts auf „umschreiben“ stellen.";
    MAILBOX_NOT_REST_ENABLED = "MailboxNotEnabledForRESTAPI", Permanent,
        "The sender mailbox cannot be used through Microsoft Graph (no Exchange Online licence, a guest, or an on-premises mailbox).",
        "Das Absenderpostfach ist über Microsoft Graph nicht nutzbar (keine Exchange-Online-Lizenz, ein Gast oder ein lokales Postfach).",
        "Use a licensed Exchange Online mailbox (a shared mailbox works) as the customer's sender mailbox.",
        "Ein lizenziertes Exchange-Online-Postfach (ein freigegebenes Postfach genügt) als Absenderpostfach des Kunden wählen.";
    ACCESS_DENIED = "ErrorAccessDenied", Retry,
        "Microsoft Graph refused access to the sender mailbox (missing Mail.Send permission, or an application access policy excludes it).",
        "Microsoft Graph verweigert den Zugriff auf das Absenderpostfach (Berechtigung Mail.Send fehlt oder eine Anwendungszugriffsrichtlinie schließt es aus).",
        "Have the customer's admin grant consent again (Connect Microsoft 365), and if an application access policy or RBAC for Applications scope is used, include the sender mailbox in it.",
        "Den Admin des Kunden die Zustimmung erneut erteilen lassen (Microsoft 365 verbinden); wird eine Anwendungszugriffsrichtlinie oder ein RBAC-Bereich verwendet, das Absenderpostfach aufnehmen.";
    TOKEN_REFUSED_BY_RESOURCE = "InvalidAuthenticationToken", Retry,
        "Microsoft Graph did not accept the access token.",
        "Microsoft Graph hat das Zugriffstoken nicht akzeptiert.",
        "mailbridge fetches a new token and retries. If it persists, check that the customer's consent is in place.",
        "mailbridge holt ein neues Token und versucht es erneut. Bleibt der Fehler, die Zustimmung des Kunden prüfen.";
    UNKNOWN_MAILBOX = "ErrorInvalidUser", Permanent,
        "The sender mailbox does not exist in the customer's Microsoft 365.",
        "Das Absenderpostfach existiert im Microsoft 365 des Kunden nicht.",
        "Correct the customer's sender mailbox address.",
        "Die Adresse des Absenderpostfachs beim Kunden korrigieren.";
    CONCURRENCY = "4.3.2", Retry,
        "Exchange Online limits concurrent connections per mailbox; this one had too many.",
        "Exchange Online begrenzt gleichzeitige Verbindungen pro Postfach; dieses hatte zu viele.",
        "Nothing to do: mailbridge waits and retries. Persistent? Other systems may be sending as the same mailbox.",
        "Nichts zu tun: mailbridge wartet und versucht es erneut. Dauerhaft? Dann senden evtl. weitere Systeme über dasselbe Postfach.";
    QUOTA_EXCEEDED = "SubmissionQuotaExceeded", Retry,
        "The sender mailbox reached Exchange Online's sending limit (10,000 recipients per day).",
        "Das Absenderpostfach hat das Sendelimit von Exchange Online erreicht (10.000 Empfänger pro Tag).",
        "mailbridge retries later. For more volume, spread devices over several sender mailboxes.",
        "mailbridge versucht es später erneut. Für mehr Volumen die Geräte auf mehrere Absender-Postfächer verteilen.";
    THROTTLED = "429", Retry,
        "Microsoft is throttling requests for this mailbox or app.",
        "Microsoft drosselt Anfragen für dieses Postfach oder diese App.",
        "Nothing to do: mailbridge waits as long as Microsoft asks (Retry-After) and retries.",
        "Nichts zu tun: mailbridge wartet so lange wie von Microsoft verlangt (Retry-After) und versucht es erneut.";
    SERVER_ERROR = "ServerError", Retry,
        "Microsoft 365 had a temporary server error.",
        "Microsoft 365 hatte einen vorübergehenden Serverfehler.",
        "Nothing to do: mailbridge retries. Check the Microsoft 365 service health if it lasts.",
        "Nichts zu tun: mailbridge versucht es erneut. Hält es an, den Dienststatus von Microsoft 365 prüfen.";
    TEMPORARY = "Temporary", Retry,
        "Microsoft 365 answered with a temporary failure.",
        "Microsoft 365 hat mit einem vorübergehenden Fehler geantwortet.",
        "Nothing to do: mailbridge retries.",
        "Nichts zu tun: mailbridge versucht es erneut.";
    UNREACHABLE = "Unreachable", Retry,
        "Microsoft 365 could not be reached (network, DNS, TLS or a timeout).",
        "Microsoft 365 war nicht erreichbar (Netzwerk, DNS, TLS oder Zeitüberschreitung).",
        "mailbridge retries. If it lasts, check the cluster's outbound access to Microsoft on port 443 (and 587 for SMTP).",
        "mailbridge versucht es erneut. Hält es an, den ausgehenden Zugriff des Clusters zu Microsoft auf Port 443 (und 587 für SMTP) prüfen.";
    TOO_LARGE = "RequestBodyTooLarge", Permanent,
        "The message is larger than Microsoft accepts on this path.",
        "Die Nachricht ist größer, als Microsoft auf diesem Weg annimmt.",
        "Send smaller attachments, or raise the sender mailbox's maximum send size in Exchange.",
        "Kleinere Anhänge senden oder die maximale Sendegröße des Absenderpostfachs in Exchange erhöhen.";
    BAD_MESSAGE = "InvalidMessage", Permanent,
        "Microsoft refused the message as malformed or without valid recipients.",
        "Microsoft hat die Nachricht als fehlerhaft oder ohne gültige Empfänger abgelehnt.",
        "Check the recipients and the device's mail settings; the raw answer says what Microsoft disliked.",
        "Empfänger und Mail-Einstellungen des Geräts prüfen; die Originalantwort nennt, was Microsoft bemängelt.";
    BAD_SENDER = "5.1.8", Permanent,
        "Exchange Online blocked the sender mailbox from sending (bad outbound sender, often after suspected spam).",
        "Exchange Online hat das Absenderpostfach für den Versand gesperrt (meist nach Spamverdacht).",
        "The customer's admin must release the mailbox in Microsoft Defender (Restricted entities) and check it for compromise.",
        "Der Admin des Kunden muss das Postfach im Microsoft Defender freigeben (Eingeschränkte Entitäten) und auf Kompromittierung prüfen.";
    SPAM = "OutboundSpam", Permanent,
        "Exchange Online classified the message as outbound spam.",
        "Exchange Online hat die Nachricht als ausgehenden Spam eingestuft.",
        "Check the message content and the device; the customer's admin can review it in Microsoft Defender.",
        "Inhalt der Nachricht und das Gerät prüfen; der Admin des Kunden kann es im Microsoft Defender einsehen.";
    MAILBOX_FULL = "5.2.2", Permanent,
        "The sender mailbox is full.",
        "Das Absenderpostfach ist voll.",
        "Free space in the sender mailbox (its Sent Items keep a copy of every message) or raise its quota; for a scanner mailbox, untick \"Keep a copy in the mailbox's Sent Items\" on the customer's page.",
        "Platz im Absenderpostfach schaffen (die Gesendeten Elemente behalten eine Kopie jeder Nachricht) oder das Kontingent erhöhen; bei einem Scanner-Postfach auf der Kundenseite „Kopie in „Gesendete Elemente“ des Postfachs ablegen“ abwählen.";
    APP_NOT_IN_TENANT = "AADSTS700016", Retry,
        "The customer's Microsoft 365 has not consented to mailbridge's app (or it was removed).",
        "Im Microsoft 365 des Kunden wurde der App von mailbridge nicht zugestimmt (oder sie wurde entfernt).",
        "Have a Global Administrator of the customer click \"Connect Microsoft 365\" and accept. Messages wait meanwhile.",
        "Einen globalen Administrator des Kunden „Microsoft 365 verbinden“ anklicken und zustimmen lassen. Nachrichten warten so lange.";
    CONSENT_MISSING = "AADSTS65001", Retry,
        "Consent for mailbridge's app is missing in the customer's Microsoft 365.",
        "Die Zustimmung für die App von mailbridge fehlt im Microsoft 365 des Kunden.",
        "Have a Global Administrator of the customer click \"Connect Microsoft 365\" and accept.",
        "Einen globalen Administrator des Kunden „Microsoft 365 verbinden“ anklicken und zustimmen lassen.";
    INVALID_SECRET = "AADSTS7000215", Retry,
        "The app's client secret is wrong (often the secret's ID was copied instead of its value).",
        "Das Client-Geheimnis der App ist falsch (oft wurde die ID statt des Werts kopiert).",
        "Copy the secret's Value from the app registration into mailbridge's configuration (MAILBRIDGE_ENTRA_CLIENT_SECRET, or the customer's own app).",
        "Den Wert (Value) des Geheimnisses aus der App-Registrierung in die Konfiguration von mailbridge übernehmen (MAILBRIDGE_ENTRA_CLIENT_SECRET oder die eigene App des Kunden).";
    EXPIRED_SECRET = "AADSTS7000222", Retry,
        "The app's client secret has expired.",
        "Das Client-Geheimnis der App ist abgelaufen.",
        "Create a new secret in the app registration and update mailbridge's configuration.",
        "In der App-Registrierung ein neues Geheimnis anlegen und die Konfiguration von mailbridge aktualisieren.";
    TENANT_NOT_FOUND = "AADSTS90002", Retry,
        "The customer's Entra tenant ID is unknown to Microsoft.",
        "Die Entra-Tenant-ID des Kunden ist Microsoft unbekannt.",
        "Correct the customer's tenant ID (Entra admin center → Overview → Tenant ID), or reconnect Microsoft 365.",
        "Die Tenant-ID des Kunden korrigieren (Entra Admin Center → Übersicht → Mandanten-ID) oder Microsoft 365 neu verbinden.";
    BAD_ASSERTION = "AADSTS700027", Retry,
        "Entra ID rejected the certificate credential (the certificate is not registered on the app, or the key does not match).",
        "Entra ID hat die Zertifikatsanmeldung abgelehnt (Zertifikat nicht an der App hinterlegt oder Schlüssel passt nicht).",
        "Upload the certificate's public part to the app registration, or configure the matching private key in mailbridge.",
        "Den öffentlichen Teil des Zertifikats an der App-Registrierung hochladen oder den passenden privaten Schlüssel in mailbridge hinterlegen.";
    INVALID_SCOPE = "AADSTS70011", Permanent,
        "Entra ID refused the requested permission scope.",
        "Entra ID hat den angeforderten Berechtigungsbereich abgelehnt.",
        "Check MAILBRIDGE_M365_GRAPH_RESOURCE / MAILBRIDGE_M365_EXCHANGE_RESOURCE (national clouds use other hosts).",
        "MAILBRIDGE_M365_GRAPH_RESOURCE / MAILBRIDGE_M365_EXCHANGE_RESOURCE prüfen (nationale Clouds nutzen andere Hosts).";
    WRONG_CLOUD = "AADSTS500011", Retry,
        "Entra ID does not know the resource mailbridge asked a token for: mailbridge is set up for another Microsoft cloud than the customer's tenant (public, GCC High, 21Vianet).",
        "Entra ID kennt die Ressource nicht, für die mailbridge ein Token angefordert hat: mailbridge ist für eine andere Microsoft-Cloud eingerichtet als der Mandant des Kunden (öffentlich, GCC High, 21Vianet).",
        "Set MAILBRIDGE_M365_CLOUD to the tenant's cloud (and remove MAILBRIDGE_M365_*_RESOURCE overrides of another cloud). Messages wait meanwhile.",
        "MAILBRIDGE_M365_CLOUD auf die Cloud des Mandanten setzen (und MAILBRIDGE_M365_*_RESOURCE-Angaben einer anderen Cloud entfernen). Nachrichten warten so lange.";
    MISSING_ROLE = "MissingRole", Retry,
        "Microsoft issued a token, but without the permission mailbridge needs to send mail (Mail.Send, or SMTP.SendAsApp for SMTP delivery).",
        "Microsoft hat ein Token ausgestellt, aber ohne die Berechtigung, die mailbridge zum Senden braucht (Mail.Send bzw. SMTP.SendAsApp für die SMTP-Zustellung).",
        "In the customer's Entra admin center, open Enterprise applications → mailbridge → Permissions and grant admin consent again; check that the MSP's app registration requests the permission.",
        "Im Entra Admin Center des Kunden Unternehmensanwendungen → mailbridge → Berechtigungen öffnen und die Administratorzustimmung erneut erteilen; prüfen, dass die App-Registrierung des MSP die Berechtigung anfordert.";
    TOKEN_REFUSED = "TokenRefused", Retry,
        "Entra ID refused to issue a token.",
        "Entra ID hat die Ausstellung eines Tokens verweigert.",
        "Read Microsoft's answer (the AADSTS code) and check the app registration and the customer's consent.",
        "Die Antwort von Microsoft (AADSTS-Code) lesen und App-Registrierung sowie Zustimmung des Kunden prüfen.";
    NOT_CONFIGURED = "NotConfigured", Retry,
        "mailbridge has no Entra app credentials to deliver with.",
        "mailbridge hat keine Entra-App-Anmeldedaten für die Zustellung.",
        "Set MAILBRIDGE_ENTRA_CLIENT_ID and MAILBRIDGE_ENTRA_CLIENT_SECRET (or give the customer its own app).",
        "MAILBRIDGE_ENTRA_CLIENT_ID und MAILBRIDGE_ENTRA_CLIENT_SECRET setzen (oder dem Kunden eine eigene App geben).";
    NOT_CONNECTED = "NotConnected", Retry,
        "The customer is not connected to its Microsoft 365 tenant yet.",
        "Der Kunde ist noch nicht mit seinem Microsoft-365-Mandanten verbunden.",
        "Open the customer in the control plane and click Connect Microsoft 365; the customer's admin grants consent. Waiting messages go out afterwards.",
        "Den Kunden in der Verwaltung öffnen und „Microsoft 365 verbinden“ wählen; der Administrator des Kunden erteilt die Zustimmung. Wartende Nachrichten gehen danach hinaus.";
    INTERNAL = "Internal", Retry,
        "mailbridge could not attempt the delivery (its database or secrets were unavailable).",
        "mailbridge konnte die Zustellung nicht versuchen (Datenbank oder Geheimnisse nicht verfügbar).",
        "Check mailbridge's logs and database; the message is retried.",
        "Logs und Datenbank von mailbridge prüfen; die Nachricht wird erneut versucht.";
    GONE = "Gone", Permanent,
        "The message's customer or content no longer exists in mailbridge.",
        "Kunde oder Inhalt der Nachricht existieren in mailbridge nicht mehr.",
        "Nothing to deliver any more.",
        "Es gibt nichts mehr zuzustellen.";
    EXPIRED = "Expired", Permanent,
        "The message could not be delivered within its maximum age and was given up.",
        "Die Nachricht konnte innerhalb ihrer Höchstdauer nicht zugestellt werden und wurde aufgegeben.",
        "Fix the cause shown on its earlier attempts, then ask the device to send it again.",
        "Die Ursache aus den früheren Versuchen beheben und das Gerät die Nachricht erneut senden lassen.";
    REJECTED = "Rejected", Permanent,
        "Microsoft 365 refused the message.",
        "Microsoft 365 hat die Nachricht abgelehnt.",
        "Read Microsoft's answer shown with the attempt.",
        "Die beim Versuch angezeigte Antwort von Microsoft lesen.";
    // Bounces: what a non-delivery report (NDR) Microsoft put in the sender mailbox
    // after accepting the message says about one recipient (see `bounce`).
    BOUNCE_RECIPIENT_NOT_FOUND = "NDR 5.1.10", Permanent,
        "The recipient does not exist: Microsoft 365 looked the address up in the recipient's organisation and found no one.",
        "Den Empfänger gibt es nicht: Microsoft 365 hat die Adresse in der Organisation des Empfängers gesucht und niemanden gefunden.",
        "Check the address on the device or in the software's address book (a typo, or someone who has left); then send again to the right address.",
        "Die Adresse im Gerät oder im Adressbuch der Software prüfen (Tippfehler oder ausgeschiedene Person) und die Nachricht an die richtige Adresse erneut senden.";
    BOUNCE_BAD_ADDRESS = "NDR 5.1.1", Permanent,
        "The recipient's address is wrong or does not exist at the receiving mail system.",
        "Die Adresse des Empfängers ist falsch oder existiert beim empfangenden Mailsystem nicht.",
        "Check the spelling of the address on the device or in the address book and ask the recipient for their current address; then send again.",
        "Die Schreibweise der Adresse im Gerät oder Adressbuch prüfen und den Empfänger nach seiner aktuellen Adresse fragen; dann erneut senden.";
    BOUNCE_RELAY_DENIED = "NDR 5.4.1", Permanent,
        "The recipient's mail server refused the address (relay access denied, or the recipient was rejected).",
        "Der Mailserver des Empfängers hat die Adresse abgelehnt (Relay verweigert oder Empfänger zurückgewiesen).",
        "The address probably does not exist at the receiving organisation, or its server does not accept mail for that domain. Check the address; if it is right, the recipient's admin must check their accepted domains and recipient filtering.",
        "Die Adresse existiert wahrscheinlich nicht bei der empfangenden Organisation, oder deren Server nimmt für diese Domain keine Mail an. Adresse prüfen; stimmt sie, muss der Administrator des Empfängers seine akzeptierten Domains und die Empfängerfilterung prüfen.";
    BOUNCE_MAILBOX_FULL = "NDR 5.2.2", Permanent,
        "The recipient's mailbox is full.",
        "Das Postfach des Empfängers ist voll.",
        "Tell the recipient (by phone) that their mailbox is full; send again once they have made room.",
        "Den Empfänger (telefonisch) informieren, dass sein Postfach voll ist; erneut senden, sobald er Platz geschaffen hat.";
    BOUNCE_REFUSED = "NDR 5.7", Permanent,
        "The message was refused: the recipient's organisation does not accept it from this sender (a content or spam filter, or a restriction on who may send to the recipient).",
        "Die Nachricht wurde abgewiesen: Die Organisation des Empfängers nimmt sie von diesem Absender nicht an (Inhalts- oder Spamfilter oder eine Einschränkung, wer dem Empfänger schreiben darf).",
        "Ask the recipient's IT to allow mail from the sender address (or the sender's domain), and check the message's content (attachments of a blocked type); then send again.",
        "Die IT des Empfängers bitten, Mail von der Absenderadresse (oder -domain) zuzulassen, und den Inhalt prüfen (Anhänge eines gesperrten Typs); dann erneut senden.";
    BOUNCE_OTHER = "NDR", Permanent,
        "Microsoft could not deliver the message to this recipient after accepting it.",
        "Microsoft konnte die Nachricht nach der Annahme nicht an diesen Empfänger zustellen.",
        "Read the status code and Microsoft's diagnostic text shown with the recipient; Microsoft's list of NDR codes explains each.",
        "Den Statuscode und Microsofts Diagnosetext beim Empfänger lesen; Microsofts Liste der NDR-Codes erklärt jeden.";
}

/// A recipient's entry in a non-delivery report: its `Status` (an enhanced status
/// code, RFC 3463) and `Diagnostic-Code` text, e.g. `5.1.10` and `smtp; 550 5.1.10
/// RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup`.
pub fn bounce(status: &str, diagnostic: &str) -> &'static Diagnosis {
    let status = status.trim();
    if status == "5.1.10" || contains(diagnostic, "RecipientNotFound") {
        return &BOUNCE_RECIPIENT_NOT_FOUND;
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
    }
}
