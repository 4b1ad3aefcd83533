//! English and German. Every text the control plane shows is written in English in
//! the templates and the code and looked up here for German, gettext-style: the
//! English text is the key. The language is the `mailbridge_lang` cookie (set by
//! the switch in the page header), else the browser's `Accept-Language`, else
//! English. A test checks that every text the templates and code use has its German.

use std::{collections::HashMap, sync::LazyLock};

use axum::{
    extract::{Path, Query},
    http::{HeaderMap, header},
    response::{IntoResponse, Redirect, Response},
};
pub use mailbridge_core::diagnosis::Lang;
use serde::Deserialize;

const LANG_COOKIE: &str = "mailbridge_lang";

/// The translator a page renders with.
#[derive(Debug, Clone, Copy)]
pub struct Tr(Lang);

impl Tr {
    pub fn new(lang: Lang) -> Self {
        Self(lang)
    }

    pub fn lang(&self) -> Lang {
        self.0
    }

    /// The `lang` attribute of the page.
    pub fn code(&self) -> &'static str {
        match self.0 {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    /// `english` in the page's language.
    pub fn t<'a>(&self, english: &'a str) -> &'a str {
        match self.0 {
            Lang::En => english,
            Lang::De => GERMAN.get(english).copied().unwrap_or(english),
        }
    }

    /// A text with `{}` replaced by `value`.
    pub fn fill(&self, english: &str, value: &str) -> String {
        self.t(english).replacen("{}", value, 1)
    }

    /// A time as the page shows it (UTC).
    pub fn time(&self, at: &chrono::DateTime<chrono::Utc>) -> String {
        match self.0 {
            Lang::En => at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            Lang::De => at.format("%d.%m.%Y %H:%M:%S UTC").to_string(),
        }
    }

    pub fn opt_time(&self, at: &Option<chrono::DateTime<chrono::Utc>>) -> String {
        at.as_ref()
            .map(|at| self.time(at))
            .unwrap_or_else(|| "–".to_owned())
    }
}

static GERMAN: LazyLock<HashMap<&'static str, &'static str>> =
    LazyLock::new(|| CATALOGUE.iter().copied().collect());

/// The request's language: the cookie, then `Accept-Language`, then English.
pub fn negotiate(headers: &HeaderMap) -> Lang {
    match crate::session::cookie(headers, LANG_COOKIE) {
        Some("de") => return Lang::De,
        Some("en") => return Lang::En,
        _ => {}
    }
    let Some(accept) = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Lang::En;
    };
    let mut best: Option<(f32, Lang)> = None;
    for item in accept.split(',') {
        let mut fields = item.split(';');
        let tag = fields.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = fields
            .find_map(|f| f.trim().strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let lang = match tag.split('-').next() {
            Some("de") => Lang::De,
            Some("en") => Lang::En,
            _ => continue,
        };
        if best.is_none_or(|(q, _)| quality > q) {
            best = Some((quality, lang));
        }
    }
    best.map(|(_, lang)| lang).unwrap_or(Lang::En)
}

#[derive(Deserialize)]
pub struct SwitchQuery {
    back: Option<String>,
}

/// `GET /lang/{en|de}`: remembers the choice and goes back to the page it came from.
pub async fn switch(Path(lang): Path<String>, Query(query): Query<SwitchQuery>) -> Response {
    let back = crate::security::local_path(query.back.as_deref());
    let lang = if lang == "de" { "de" } else { "en" };
    (
        [(
            header::SET_COOKIE,
            format!("{LANG_COOKIE}={lang}; Path=/; Max-Age=31536000; SameSite=Lax"),
        )],
        Redirect::to(&back),
    )
        .into_response()
}

/// Marks an English text of the code for the catalogue (it is translated where shown).
#[macro_export]
macro_rules! tr {
    ($text:literal) => {
        $text
    };
}

/// English → German, for every text the control plane shows.
pub static CATALOGUE: &[(&str, &str)] = &[
    (
        "A customer named {} already exists (upper and lower case do not make names different).",
        "Ein Kunde namens {} existiert bereits (Groß- und Kleinschreibung machen Namen nicht verschieden).",
    ),
    (
        "A token's role can be admin, technician or read-only, and not above your own.",
        "Die Rolle eines Tokens kann Admin, Techniker oder Nur lesen sein, aber nicht höher als Ihre eigene.",
    ),
    ("API tokens", "API-Tokens"),
    ("Action", "Aktion"),
    ("Add a device", "Gerät hinzufügen"),
    ("Add device", "Gerät hinzufügen"),
    (
        "Addresses or @domains, one per line; the customer's sender mailbox is always allowed.",
        "Adressen oder @Domains, eine pro Zeile; das Absenderpostfach des Kunden ist immer erlaubt.",
    ),
    ("Admin", "Admin"),
    (
        "Allowed IP addresses (optional)",
        "Erlaubte IP-Adressen (optional)",
    ),
    (
        "Allowed IP addresses and networks",
        "Erlaubte IP-Adressen und Netze",
    ),
    ("Allowed addresses", "Erlaubte Adressen"),
    ("Allowed senders", "Erlaubte Absender"),
    (
        "Ask the customer's Global Administrator (or Privileged Role Administrator) to open the consent again and accept it.",
        "Bitten Sie den Globalen Administrator (oder Administrator für privilegierte Rollen) des Kunden, die Zustimmung erneut zu öffnen und anzunehmen.",
    ),
    ("Attempts", "Versuche"),
    ("Audit log", "Änderungsprotokoll"),
    ("Authentication", "Anmeldung"),
    ("Back to the customer", "Zurück zum Kunden"),
    ("Back to the customers", "Zurück zu den Kunden"),
    ("Cancel delivery", "Zustellung abbrechen"),
    (
        "Configure the MSP app and try again.",
        "Die MSP-App einrichten und erneut versuchen.",
    ),
    ("Connect Microsoft 365", "Microsoft 365 verbinden"),
    ("Connect again", "Erneut verbinden"),
    ("Connects by", "Verbindet sich über"),
    ("Consent OK", "Zustimmung OK"),
    ("Copy", "Kopieren"),
    ("Create customer", "Kunde anlegen"),
    (
        "Create the customer again and connect it.",
        "Den Kunden neu anlegen und verbinden.",
    ),
    ("Create token", "Token erstellen"),
    ("Created", "Erstellt"),
    ("Customer", "Kunde"),
    ("Customers", "Kunden"),
    ("Delete", "Löschen"),
    ("Delete customer", "Kunde löschen"),
    (
        "Delete this customer with all its devices and messages?",
        "Diesen Kunden mit allen Geräten und Nachrichten löschen?",
    ),
    ("Delete this device?", "Dieses Gerät löschen?"),
    ("Delivered", "Zugestellt"),
    ("Delivered 24 h", "Zugestellt 24 h"),
    ("Delivery attempts", "Zustellversuche"),
    ("Delivery method", "Zustellweg"),
    ("Details", "Details"),
    ("Device", "Gerät"),
    ("Device settings", "Geräteeinstellungen"),
    ("Devices", "Geräte"),
    ("Disable", "Deaktivieren"),
    ("E-mail", "E-Mail"),
    ("E-mail setup", "E-Mail-Einrichtung"),
    ("Enable", "Aktivieren"),
    (
        "Enabled devices not seen for 7 days",
        "Aktive Geräte, die seit 7 Tagen nichts gesendet haben",
    ),
    ("Encryption", "Verschlüsselung"),
    (
        "Enter the server, port, encryption and login from the table above.",
        "Server, Port, Verschlüsselung und Anmeldedaten aus der Tabelle oben eintragen.",
    ),
    ("Entra tenant", "Entra-Mandant"),
    (
        "Entra tenant ID (optional)",
        "Entra-Mandanten-ID (optional)",
    ),
    ("Error", "Fehler"),
    ("Failed", "Fehlgeschlagen"),
    ("Failed 24 h", "Fehlgeschlagen 24 h"),
    (
        "Find the e-mail or SMTP settings (often under Network → E-mail, or Scan → E-mail).",
        "Die E-Mail- bzw. SMTP-Einstellungen suchen (oft unter Netzwerk → E-Mail oder Scannen → E-Mail).",
    ),
    ("Finished", "Abgeschlossen"),
    (
        "For automation (RMM, PSA): everything the control plane does is in the API, described at",
        "Für Automatisierung (RMM, PSA): Alles, was die Verwaltung kann, bietet auch die API, beschrieben unter",
    ),
    ("From", "Von"),
    ("From address", "Von Adresse"),
    (
        "Give up on this message? Its content is deleted.",
        "Diese Nachricht aufgeben? Ihr Inhalt wird gelöscht.",
    ),
    (
        "If the device fails with a certificate error, update its firmware or its list of trusted certificates; if it only knows TLS 1.0, tell the MSP.",
        "Meldet das Gerät einen Zertifikatsfehler, Firmware oder Liste vertrauenswürdiger Zertifikate aktualisieren; kann es nur TLS 1.0, dem MSP Bescheid geben.",
    ),
    (
        "In the customer's Entra admin center, open Enterprise applications → mailbridge → Permissions and grant admin consent again.",
        "Im Entra Admin Center des Kunden Unternehmensanwendungen → mailbridge → Berechtigungen öffnen und die Administratorzustimmung erneut erteilen.",
    ),
    (
        "Keep a copy in the mailbox's Sent Items",
        "Kopie in „Gesendete Elemente“ des Postfachs ablegen",
    ),
    ("Kind", "Art"),
    ("Last 24 hours", "Letzte 24 Stunden"),
    ("Last seen", "Zuletzt gesehen"),
    ("Last sign-in", "Letzte Anmeldung"),
    ("Last token error", "Letzter Token-Fehler"),
    ("Last used", "Zuletzt benutzt"),
    (
        "Leave empty: the consent tells mailbridge which tenant it is.",
        "Leer lassen: Die Zustimmung teilt mailbridge den Mandanten mit.",
    ),
    ("Message", "Nachricht"),
    ("Messages", "Nachrichten"),
    (
        "Messages are sent as this Microsoft 365 mailbox (a shared mailbox needs no licence).",
        "Nachrichten werden als dieses Microsoft-365-Postfach gesendet (ein freigegebenes Postfach braucht keine Lizenz).",
    ),
    (
        "Messages from this customer's devices wait until the customer's admin grants consent.",
        "Nachrichten der Geräte dieses Kunden warten, bis der Administrator des Kunden zustimmt.",
    ),
    (
        "Messages per minute (empty: no limit)",
        "Nachrichten pro Minute (leer: keine Grenze)",
    ),
    (
        "Messages per minute for all devices (empty: no limit)",
        "Nachrichten pro Minute für alle Geräte (leer: keine Grenze)",
    ),
    ("Microsoft 365", "Microsoft 365"),
    ("Microsoft 365 connected", "Microsoft 365 verbunden"),
    (
        "Microsoft 365 is connected: a token for the customer's tenant was issued.",
        "Microsoft 365 ist verbunden: Für den Mandanten des Kunden wurde ein Token ausgestellt.",
    ),
    (
        "Microsoft 365 not connected",
        "Microsoft 365 nicht verbunden",
    ),
    (
        "Microsoft Graph (recommended)",
        "Microsoft Graph (empfohlen)",
    ),
    ("Microsoft answered", "Microsoft antwortete"),
    (
        "Microsoft issued a token, but without the permission mailbridge needs to send mail.",
        "Microsoft hat ein Token ausgestellt, aber ohne die Berechtigung, die mailbridge zum Senden braucht.",
    ),
    (
        "Microsoft refusals 24 h",
        "Ablehnungen durch Microsoft 24 h",
    ),
    (
        "Microsoft refused the consent.",
        "Microsoft hat die Zustimmung abgelehnt.",
    ),
    (
        "Microsoft's answer carried no state, so it cannot be matched to a customer.",
        "Die Antwort von Microsoft enthielt keinen state-Wert und lässt sich keinem Kunden zuordnen.",
    ),
    (
        "Microsoft's answer did not name the customer's tenant.",
        "Die Antwort von Microsoft nannte den Mandanten des Kunden nicht.",
    ),
    ("Name", "Name"),
    ("New customer", "Neuer Kunde"),
    ("New password", "Neues Passwort"),
    ("New token", "Neues Token"),
    ("Next attempt", "Nächster Versuch"),
    ("No attempt yet.", "Noch kein Versuch."),
    (
        "No customers yet. Create the first one below: it takes five minutes.",
        "Noch keine Kunden. Legen Sie unten den ersten an: Es dauert fünf Minuten.",
    ),
    ("No devices yet.", "Noch keine Geräte."),
    ("No messages match.", "Keine passenden Nachrichten."),
    (
        "No sign-in provider is configured: set MAILBRIDGE_OIDC_ISSUER, MAILBRIDGE_OIDC_CLIENT_ID and MAILBRIDGE_OIDC_CLIENT_SECRET.",
        "Kein Anmeldedienst eingerichtet: MAILBRIDGE_OIDC_ISSUER, MAILBRIDGE_OIDC_CLIENT_ID und MAILBRIDGE_OIDC_CLIENT_SECRET setzen.",
    ),
    (
        "None or STARTTLS if the device offers it",
        "Keine, oder STARTTLS, wenn das Gerät es anbietet",
    ),
    (
        "None: the device is recognised by its IP address",
        "Keine: Das Gerät wird an seiner IP-Adresse erkannt",
    ),
    ("Not connected", "Nicht verbunden"),
    ("Not found.", "Nicht gefunden."),
    ("Older entries", "Ältere Einträge"),
    ("Older messages", "Ältere Nachrichten"),
    (
        "One per line. With a password: logins from elsewhere fail. Without (port 25): the device is recognised by these.",
        "Eine pro Zeile. Mit Passwort: Anmeldungen von anderswo scheitern. Ohne (Port 25): Das Gerät wird daran erkannt.",
    ),
    (
        "Only a waiting message can be cancelled (one being delivered right now cannot).",
        "Nur eine wartende Nachricht kann abgebrochen werden (eine, die gerade zugestellt wird, nicht).",
    ),
    (
        "Only a waiting message can be retried: a delivered or failed message's content is deleted.",
        "Nur eine wartende Nachricht kann erneut versucht werden: Der Inhalt zugestellter oder fehlgeschlagener Nachrichten ist gelöscht.",
    ),
    (
        "Open the device's web interface (its IP address in a browser) and sign in as administrator.",
        "Die Weboberfläche des Geräts öffnen (seine IP-Adresse im Browser) und als Administrator anmelden.",
    ),
    ("Open the message log", "Nachrichtenprotokoll öffnen"),
    (
        "Open the program's mail (SMTP) settings.",
        "Die Mail-Einstellungen (SMTP) des Programms öffnen.",
    ),
    (
        "Open the system's mail or notification settings (ask the vendor's service if they are locked).",
        "Die Mail- oder Benachrichtigungseinstellungen des Systems öffnen (sind sie gesperrt, den Service des Herstellers fragen).",
    ),
    ("Other senders", "Andere Absender"),
    ("Owner", "Inhaber"),
    ("Password", "Passwort"),
    ("Please sign in.", "Bitte melden Sie sich an."),
    ("Policy", "Richtlinie"),
    ("Port", "Port"),
    (
        "Port 25, no login, by IP address",
        "Port 25, ohne Anmeldung, über die IP-Adresse",
    ),
    (
        "Port 465, SSL/TLS, username and password",
        "Port 465, SSL/TLS, Benutzername und Passwort",
    ),
    (
        "Port 587, STARTTLS, username and password",
        "Port 587, STARTTLS, Benutzername und Passwort",
    ),
    ("Print", "Drucken"),
    ("Queued", "Wartend"),
    (
        "Read Microsoft's answer below; the consent must be granted by an admin of the customer's tenant.",
        "Die Antwort von Microsoft unten lesen; die Zustimmung muss ein Administrator des Kundenmandanten erteilen.",
    ),
    ("Read-only", "Nur lesen"),
    ("Received", "Empfangen"),
    ("Recipient", "Empfänger"),
    ("Recipients", "Empfänger"),
    ("Refuse the message", "Nachricht ablehnen"),
    (
        "Reports of undeliverable messages to",
        "Berichte über unzustellbare Nachrichten an",
    ),
    ("Retry now", "Jetzt erneut versuchen"),
    ("Revoke", "Widerrufen"),
    (
        "Revoke this token? Scripts using it stop working.",
        "Dieses Token widerrufen? Skripte, die es nutzen, funktionieren dann nicht mehr.",
    ),
    (
        "Rewrite to the sender mailbox (original as Reply-To)",
        "Auf das Absenderpostfach umschreiben (Original als Reply-To)",
    ),
    ("Role", "Rolle"),
    ("SMTP server", "SMTP-Server"),
    ("SMTP with OAuth (XOAUTH2)", "SMTP mit OAuth (XOAUTH2)"),
    ("Save", "Speichern"),
    ("Search", "Suchen"),
    (
        "Send a test e-mail and check it arrived; the MSP sees it in the mailbridge message log.",
        "Eine Test-E-Mail senden und prüfen, ob sie ankam; der MSP sieht sie im Nachrichtenprotokoll von mailbridge.",
    ),
    ("Send a test message", "Testnachricht senden"),
    (
        "Send messages over 4 MB by SMTP (needs SMTP AUTH for the app)",
        "Nachrichten über 4 MB per SMTP senden (braucht SMTP AUTH für die App)",
    ),
    ("Send test message", "Testnachricht senden"),
    ("Sender", "Absender"),
    ("Sender address", "Absenderadresse"),
    ("Sender mailbox", "Absenderpostfach"),
    (
        "Sent as {} the same way as the devices' mail; you see Microsoft's answer on the next page.",
        "Gesendet als {} auf demselben Weg wie die Mails der Geräte; die Antwort von Microsoft sehen Sie auf der nächsten Seite.",
    ),
    (
        "Set the sender address from the table above.",
        "Die Absenderadresse aus der Tabelle oben eintragen.",
    ),
    ("Settings", "Einstellungen"),
    ("Setup card", "Einrichtungskarte"),
    ("Sign in", "Anmelden"),
    ("Sign in to mailbridge", "Bei mailbridge anmelden"),
    (
        "Sign in to the consent page with an admin account of this customer's own tenant.",
        "Auf der Zustimmungsseite mit einem Administratorkonto des eigenen Mandanten dieses Kunden anmelden.",
    ),
    (
        "Sign in with a Global Administrator of the customer's tenant and accept: mailbridge may then send mail as the customer's mailboxes (Mail.Send).",
        "Mit einem Globalen Administrator des Kundenmandanten anmelden und annehmen: mailbridge darf dann als Postfächer des Kunden senden (Mail.Send).",
    ),
    (
        "Sign in with your organisation's account",
        "Mit dem Konto Ihrer Organisation anmelden",
    ),
    ("Sign out", "Abmelden"),
    ("Site", "Standort"),
    ("Size", "Größe"),
    (
        "Something went wrong on our side. Try again; if it keeps happening, check mailbridge's logs.",
        "Bei uns ist etwas schiefgegangen. Erneut versuchen; passiert es wieder, die Logs von mailbridge prüfen.",
    ),
    ("Staff", "Mitarbeiter"),
    (
        "Start the connection again from the customer's page, in this browser.",
        "Die Verbindung erneut von der Seite des Kunden starten, in diesem Browser.",
    ),
    (
        "Start the connection again from the customer's page.",
        "Die Verbindung erneut von der Seite des Kunden starten.",
    ),
    ("State", "Status"),
    ("Steps", "Schritte"),
    ("Subject", "Betreff"),
    ("Technician", "Techniker"),
    (
        "Thank you: mailbridge can now deliver your devices' mail into your Microsoft 365. You can close this page.",
        "Danke: mailbridge kann die Mails Ihrer Geräte jetzt in Ihr Microsoft 365 zustellen. Sie können diese Seite schließen.",
    ),
    ("That did not work", "Das hat nicht geklappt"),
    (
        "The Entra tenant ID is a GUID (Entra admin center → Overview → Tenant ID).",
        "Die Entra-Mandanten-ID ist eine GUID (Entra Admin Center → Übersicht → Mandanten-ID).",
    ),
    (
        "The consent was granted in a different Microsoft 365 tenant than this customer's.",
        "Die Zustimmung wurde in einem anderen Microsoft-365-Mandanten erteilt als dem dieses Kunden.",
    ),
    (
        "The customer this consent was for no longer exists.",
        "Den Kunden, für den diese Zustimmung galt, gibt es nicht mehr.",
    ),
    (
        "The customer was created. Next: connect it to Microsoft 365.",
        "Der Kunde wurde angelegt. Als Nächstes: mit Microsoft 365 verbinden.",
    ),
    (
        "The customer's admin cancelled the consent.",
        "Der Administrator des Kunden hat die Zustimmung abgebrochen.",
    ),
    (
        "The database is not reachable right now. Try again in a moment.",
        "Die Datenbank ist gerade nicht erreichbar. Gleich noch einmal versuchen.",
    ),
    ("The device was deleted.", "Das Gerät wurde gelöscht."),
    ("The device's login", "Die Anmeldedaten des Geräts"),
    (
        "The name must be 1 to 200 characters.",
        "Der Name muss 1 bis 200 Zeichen lang sein.",
    ),
    ("The new password", "Das neue Passwort"),
    (
        "The old password stops working. Continue?",
        "Das alte Passwort funktioniert dann nicht mehr. Fortfahren?",
    ),
    (
        "The page cursor is not valid.",
        "Der Seitenzeiger ist ungültig.",
    ),
    (
        "The password is shown this once. mailbridge keeps only a hash of it: copy it into the device now.",
        "Das Passwort wird nur dieses eine Mal gezeigt. mailbridge speichert nur einen Hash davon: Jetzt ins Gerät übernehmen.",
    ),
    (
        "The rate limit must be a positive number of messages per minute.",
        "Die Ratengrenze muss eine positive Zahl von Nachrichten pro Minute sein.",
    ),
    (
        "The relay that keeps your customers' printers and scanners sending to Microsoft 365.",
        "Das Relay, über das die Drucker und Scanner Ihrer Kunden weiter an Microsoft 365 senden.",
    ),
    (
        "The settings were saved.",
        "Die Einstellungen wurden gespeichert.",
    ),
    (
        "The sign-in answer carried no code. Start the sign-in again.",
        "Die Anmeldeantwort enthielt keinen Code. Anmeldung neu starten.",
    ),
    (
        "The sign-in answer carried no state. Start the sign-in again.",
        "Die Anmeldeantwort enthielt keinen state-Wert. Anmeldung neu starten.",
    ),
    (
        "The sign-in could not be verified: {}",
        "Die Anmeldung konnte nicht geprüft werden: {}",
    ),
    (
        "The sign-in provider refused: {}",
        "Der Anmeldedienst hat abgelehnt: {}",
    ),
    (
        "The sign-in was cancelled.",
        "Die Anmeldung wurde abgebrochen.",
    ),
    (
        "The token is shown this once. mailbridge keeps only a hash of it.",
        "Das Token wird nur dieses eine Mal gezeigt. mailbridge speichert nur einen Hash davon.",
    ),
    (
        "This consent answer has expired, was already used, or was not started by mailbridge.",
        "Diese Zustimmungsantwort ist abgelaufen, wurde schon verwendet oder wurde nicht von mailbridge gestartet.",
    ),
    (
        "This consent was started in another browser or by another person.",
        "Diese Zustimmung wurde in einem anderen Browser oder von einer anderen Person gestartet.",
    ),
    (
        "{} is too wide for an allow-list: name the site's own address or network, not a provider's range or the internet.",
        "{} ist für eine Freigabeliste zu weit: Tragen Sie die eigene Adresse oder das eigene Netz des Standorts ein, nicht den Bereich eines Providers oder das ganze Internet.",
    ),
    (
        "A consent link to send needs the customer's Microsoft 365 tenant id first (it is bound to that tenant): set it on the customer.",
        "Ein Zustimmungslink zum Versenden braucht zuerst die Microsoft-365-Mandanten-ID des Kunden (er ist an diesen Mandanten gebunden): Tragen Sie sie beim Kunden ein.",
    ),
    (
        "This consent link was not bound to the customer's Microsoft 365 tenant.",
        "Dieser Zustimmungslink war nicht an den Microsoft-365-Mandanten des Kunden gebunden.",
    ),
    (
        "Set the customer's tenant id, then make a new consent link.",
        "Tragen Sie die Mandanten-ID des Kunden ein und erstellen Sie dann einen neuen Zustimmungslink.",
    ),
    (
        "This customer already has a device named {}.",
        "Dieser Kunde hat bereits ein Gerät namens {}.",
    ),
    ("This device's messages", "Nachrichten dieses Geräts"),
    (
        "This form has expired or did not come from mailbridge. Reload the page and try again.",
        "Dieses Formular ist abgelaufen oder stammt nicht von mailbridge. Seite neu laden und erneut versuchen.",
    ),
    (
        "This sign-in has expired or was already used. Start the sign-in again.",
        "Diese Anmeldung ist abgelaufen oder wurde schon verwendet. Anmeldung neu starten.",
    ),
    (
        "This sign-in was started in another browser. Start the sign-in again here.",
        "Diese Anmeldung wurde in einem anderen Browser gestartet. Anmeldung hier neu starten.",
    ),
    (
        "Times are UTC. Message contents are never shown: they may be health data.",
        "Zeiten in UTC. Nachrichteninhalte werden nie angezeigt: Sie können Gesundheitsdaten sein.",
    ),
    ("Token", "Token"),
    ("Token refused", "Token abgelehnt"),
    ("Unknown device kind.", "Unbekannte Geräteart."),
    ("Unknown listener.", "Unbekannter Zugang."),
    ("Unknown role.", "Unbekannte Rolle."),
    ("Until", "Bis"),
    ("Username", "Benutzername"),
    ("What", "Was"),
    ("What to do", "Was zu tun ist"),
    ("When", "Wann"),
    ("Who", "Wer"),
    ("Yes (LOGIN or PLAIN)", "Ja (LOGIN oder PLAIN)"),
    (
        "You cannot demote or disable yourself: another owner has to.",
        "Sie können sich nicht selbst herabstufen oder deaktivieren: Das muss ein anderer Inhaber tun.",
    ),
    (
        "Your account is disabled in mailbridge. Ask an owner to enable it.",
        "Ihr Konto ist in mailbridge deaktiviert. Bitten Sie einen Inhaber, es zu aktivieren.",
    ),
    (
        "Your role does not allow this.",
        "Ihre Rolle erlaubt das nicht.",
    ),
    ("all", "alle"),
    (
        "as issued (not shown again; issue a new one if lost)",
        "wie ausgegeben (wird nicht erneut gezeigt; bei Verlust ein neues ausstellen)",
    ),
    ("bytes", "Bytes"),
    ("last token issued", "letztes Token ausgestellt"),
    ("consent verified", "Zustimmung geprüft"),
    ("delivered", "zugestellt"),
    ("delivering", "wird zugestellt"),
    ("disabled", "deaktiviert"),
    ("enabled", "aktiv"),
    ("failed", "fehlgeschlagen"),
    ("failure report", "Fehlerbericht"),
    (
        "mailbridge has no Entra app to connect customers with: set MAILBRIDGE_ENTRA_CLIENT_ID and a secret or certificate.",
        "mailbridge hat keine Entra-App, um Kunden zu verbinden: MAILBRIDGE_ENTRA_CLIENT_ID und ein Geheimnis oder Zertifikat setzen.",
    ),
    ("may sign in", "darf sich anmelden"),
    ("medical", "Medizingerät"),
    ("none", "keine"),
    ("not seen for 7 days", "seit 7 Tagen nicht gesehen"),
    ("never seen", "noch nie gesehen"),
    (
        "never seen, added over 7 days ago",
        "nie gesehen, vor über 7 Tagen angelegt",
    ),
    (
        "on its way; this page updates itself",
        "unterwegs; diese Seite aktualisiert sich selbst",
    ),
    ("other", "Sonstiges"),
    ("permanent failure", "endgültig fehlgeschlagen"),
    ("printer", "Drucker"),
    ("queued", "wartend"),
    ("revoked", "widerrufen"),
    ("scanner", "Scanner"),
    ("software", "Software"),
    ("test message", "Testnachricht"),
    ("will be retried", "wird erneut versucht"),
    ("you", "Sie"),
    (
        "{} is neither an address (scan@praxis.example) nor a domain (@praxis.example).",
        "{} ist weder eine Adresse (scan@praxis.example) noch eine Domain (@praxis.example).",
    ),
    (
        "{} is not a mail address (expected name@domain).",
        "{} ist keine Mailadresse (erwartet: name@domain).",
    ),
    (
        "{} is not a message state.",
        "{} ist kein Nachrichtenstatus.",
    ),
    (
        "{} is not a time (expected 2026-12-01T08:30).",
        "{} ist keine Zeitangabe (erwartet: 2026-12-01T08:30).",
    ),
    (
        "{} is not an IP address or network (e.g. 192.0.2.10 or 192.0.2.0/24).",
        "{} ist keine IP-Adresse und kein Netz (z. B. 192.0.2.10 oder 192.0.2.0/24).",
    ),
    ("{} is not an id.", "{} ist keine ID."),
    ("{} not seen for 7 days", "{} seit 7 Tagen nicht gesehen"),
    // Failed logins and locks of a device.
    ("Failed logins", "Fehlgeschlagene Anmeldungen"),
    ("locked", "gesperrt"),
    (
        "No failed logins recently.",
        "Keine fehlgeschlagenen Anmeldungen in letzter Zeit.",
    ),
    ("Source network", "Quellnetz"),
    ("Failures", "Fehlversuche"),
    ("Last failure", "Letzter Fehlversuch"),
    ("Last address", "Letzte Adresse"),
    ("Locked until", "Gesperrt bis"),
    ("every unfamiliar address", "jede unbekannte Adresse"),
    ("Unlock", "Entsperren"),
    (
        "A wrong password counts against the username from its address; addresses the device has logged in from are never locked by failures from elsewhere.",
        "Ein falsches Passwort zählt gegen den Benutzernamen von seiner Adresse; Adressen, von denen sich das Gerät angemeldet hat, werden durch Fehlversuche von anderswo nie gesperrt.",
    ),
    (
        "The device's logins were unlocked.",
        "Die Anmeldungen des Geräts wurden entsperrt.",
    ),
    // Invited staff, approval, the first owner, expiring API tokens.
    (
        "Staff sign in with their organisation's account. Only people invited here get a role; anyone else who signs in waits for approval and sees no customer data.",
        "Mitarbeiter melden sich mit dem Konto ihrer Organisation an. Nur hier Eingeladene erhalten eine Rolle; wer sich sonst anmeldet, wartet auf Freigabe und sieht keine Kundendaten.",
    ),
    ("Waiting for approval", "Wartet auf Freigabe"),
    ("Signed in", "Angemeldet"),
    ("Approve", "Freigeben"),
    ("Invite", "Einladen"),
    ("Invited by", "Eingeladen von"),
    ("Withdraw", "Zurückziehen"),
    (
        "The invitation matches the address the sign-in provider names at their first sign-in.",
        "Die Einladung gilt für die Adresse, die der Anmeldedienst bei der ersten Anmeldung nennt.",
    ),
    (
        "Invited: they get the role when they first sign in.",
        "Eingeladen: Die Rolle gilt ab der ersten Anmeldung.",
    ),
    (
        "You can invite with a role up to your own.",
        "Sie können höchstens mit Ihrer eigenen Rolle einladen.",
    ),
    (
        "{} is not an e-mail address.",
        "{} ist keine E-Mail-Adresse.",
    ),
    (
        "This person is staff already: change their role in the list.",
        "Diese Person ist bereits Mitarbeiter: Ändern Sie ihre Rolle in der Liste.",
    ),
    (
        "You are signed in, but nobody has invited you to mailbridge yet. An owner or admin of your MSP approves you with a role on the Staff page; until then you see no customer data.",
        "Sie sind angemeldet, aber noch niemand hat Sie zu mailbridge eingeladen. Ein Inhaber oder Administrator Ihres MSP gibt Sie auf der Seite „Mitarbeiter“ mit einer Rolle frei; bis dahin sehen Sie keine Kundendaten.",
    ),
    ("First sign-in", "Erste Anmeldung"),
    (
        "Nobody is owner yet. Enter the one-time setup code from the web's log to become the first owner (or add one with mailbridge staff add --role owner).",
        "Noch niemand ist Inhaber. Geben Sie den einmaligen Einrichtungscode aus dem Protokoll des Web-Prozesses ein, um der erste Inhaber zu werden (oder legen Sie einen mit mailbridge staff add --role owner an).",
    ),
    ("Setup code", "Einrichtungscode"),
    ("Sign in as the first owner", "Als erster Inhaber anmelden"),
    (
        "The setup code is wrong or has expired: the web's log shows the current one after a restart.",
        "Der Einrichtungscode ist falsch oder abgelaufen: Das Protokoll des Web-Prozesses zeigt nach einem Neustart den aktuellen.",
    ),
    ("Expires", "Läuft ab"),
    ("expired", "abgelaufen"),
    ("Valid for", "Gültig für"),
    ("{} days", "{} Tage"),
    (
        "A token is valid for 1 to 365 days.",
        "Ein Token gilt 1 bis 365 Tage.",
    ),
    (
        "A token stops working when it expires, and when its creator is disabled or no longer holds its role.",
        "Ein Token hört auf zu gelten, wenn es abläuft, und wenn sein Ersteller deaktiviert ist oder seine Rolle nicht mehr hat.",
    ),
    (
        "{} is not an enabled member of staff (they must have signed in once).",
        "{} ist kein aktiver Mitarbeiter (er muss sich einmal angemeldet haben).",
    ),
    (
        "Too many sign-in attempts from your address. Wait a minute and try again.",
        "Zu viele Anmeldeversuche von Ihrer Adresse. Bitte eine Minute warten und erneut versuchen.",
    ),
    // Holds: held deliveries of a mailbox, customer or app, and "Retry now".
    ("Held", "Angehalten"),
    ("Why", "Grund"),
    ("Since", "Seit"),
    ("Next probe", "Nächste Prüfung"),
    ("Messages held", "Wartende Nachrichten"),
    ("App", "App"),
    ("Mailbox", "Postfach"),
    ("{} probes failed", "{} Prüfungen fehlgeschlagen"),
    ("Held deliveries", "Angehaltene Zustellungen"),
    (
        "Conditions of a whole mailbox, customer or app: their messages wait and are not attempted one by one. mailbridge probes on a schedule and sends them all the moment a probe gets through.",
        "Zustände eines ganzen Postfachs, Kunden oder der App: ihre Nachrichten warten und werden nicht einzeln versucht. mailbridge prüft nach Zeitplan und sendet alle, sobald eine Prüfung durchkommt.",
    ),
    (
        "Deliveries are held: this customer's messages wait and are not attempted one by one. mailbridge probes on a schedule and sends them all the moment a probe gets through.",
        "Zustellungen sind angehalten: die Nachrichten dieses Kunden warten und werden nicht einzeln versucht. mailbridge prüft nach Zeitplan und sendet alle, sobald eine Prüfung durchkommt.",
    ),
    (
        "The hold is probed now: its messages go as soon as the probe gets through.",
        "Der Halt wird jetzt geprüft: seine Nachrichten gehen hinaus, sobald die Prüfung durchkommt.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str, cookie: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_LANGUAGE, accept.parse().unwrap());
        if let Some(c) = cookie {
            h.insert(header::COOKIE, c.parse().unwrap());
        }
        h
    }

    #[test]
    fn browser_language_and_cookie() {
        assert_eq!(
            negotiate(&headers("de-DE,de;q=0.9,en;q=0.8", None)),
            Lang::De
        );
        assert_eq!(
            negotiate(&headers("fr-FR, en;q=0.5, de;q=0.4", None)),
            Lang::En
        );
        assert_eq!(negotiate(&headers("fr", None)), Lang::En);
        assert_eq!(
            negotiate(&headers("de", Some("mailbridge_lang=en"))),
            Lang::En
        );
    }

    /// Every `t("…")` / `t.t("…")` / `fill("…")` in the templates and the code has
    /// its German translation, and no translation is left over.
    #[test]
    fn every_text_has_its_german() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let mut sources = Vec::new();
        for dir in ["web/templates", "services/web/src"] {
            for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().is_some_and(|n| n != "i18n.rs") {
                    sources.push(std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let mut used = std::collections::BTreeSet::new();
        for source in &sources {
            for marker in [".t(", ".fill(", "tr!(", "#[error("] {
                for (at, _) in source.match_indices(marker) {
                    let before = source[..at].chars().next_back();
                    if marker == "tr!(" && before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    // The text may start on the next line (rustfmt breaks long calls).
                    let rest = source[at + marker.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix('"') else {
                        continue;
                    };
                    let mut text = String::new();
                    let mut chars = rest.chars();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => text.push(chars.next().unwrap()),
                            '"' => break,
                            c => text.push(c),
                        }
                    }
                    // thiserror's own placeholders are for logs, not for pages.
                    if !text.contains("{0}") && text != "{}" {
                        used.insert(text);
                    }
                }
            }
        }
        let missing: Vec<_> = used
            .iter()
            .filter(|t| !GERMAN.contains_key(t.as_str()))
            .collect();
        assert!(missing.is_empty(), "no German for: {missing:#?}");
        let unused: Vec<_> = CATALOGUE
            .iter()
            .filter(|(en, _)| !used.contains(*en))
            .map(|(en, _)| en)
            .collect();
        assert!(unused.is_empty(), "translations nothing uses: {unused:#?}");
        assert!(CATALOGUE.iter().all(|(_, de)| !de.is_empty()));
    }
}
