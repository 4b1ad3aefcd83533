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

    /// A time as the page shows it: a `<time>` element whose text is UTC (what a
    /// browser without script shows); the page's script shows it in the viewer's
    /// time zone, relative ("3 min ago") in a table, with UTC on hover.
    pub fn time(&self, at: &chrono::DateTime<chrono::Utc>) -> Time {
        Time {
            at: *at,
            lang: self.0,
        }
    }

    pub fn opt_time(&self, at: &Option<chrono::DateTime<chrono::Utc>>) -> OptTime {
        OptTime(at.as_ref().map(|at| self.time(at)))
    }
}

/// A point in time on a page (see [`Tr::time`]).
pub struct Time {
    at: chrono::DateTime<chrono::Utc>,
    lang: Lang,
}

impl Time {
    /// The UTC text, as a browser without script shows it.
    pub fn utc_text(&self) -> String {
        match self.lang {
            Lang::En => self.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            Lang::De => self.at.format("%d.%m.%Y %H:%M:%S UTC").to_string(),
        }
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Digits, dashes, colons, dots, spaces and "UTC" only: nothing to escape.
        let text = self.utc_text();
        write!(
            f,
            r#"<time datetime="{}" title="{text}">{text}</time>"#,
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

impl askama::filters::HtmlSafe for Time {}

/// A time that may be absent ("–").
pub struct OptTime(Option<Time>);

impl std::fmt::Display for OptTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(time) => time.fmt(f),
            None => f.write_str("–"),
        }
    }
}

impl askama::filters::HtmlSafe for OptTime {}

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
    // Device health, lists with search and pages, the consent link to send, bulk
    // device import and bulk actions, finding a message by id.
    (
        "(port 25: no password, recognised by its address)",
        "(Port 25: kein Passwort, erkannt an seiner Adresse)",
    ),
    (
        "A port-25 device logs in with no password: it needs its allowed IP addresses.",
        "Ein Gerät auf Port 25 meldet sich ohne Passwort an: Es braucht seine erlaubten IP-Adressen.",
    ),
    (
        "Another customer is already connected to this Microsoft 365 tenant.",
        "Ein anderer Kunde ist bereits mit diesem Microsoft-365-Mandanten verbunden.",
    ),
    (
        "As the device's SMTP reply gives it (queued as …) or as shown here.",
        "Wie in der SMTP-Antwort an das Gerät (queued as …) oder wie hier angezeigt.",
    ),
    (
        "At most {} devices at once.",
        "Höchstens {} Geräte auf einmal.",
    ),
    (
        "At most {} devices per file. Commas or semicolons; UTF-8. Nothing is created before you confirm the dry run, and nothing at all while a line is wrong.",
        "Höchstens {} Geräte je Datei. Kommas oder Semikolons; UTF-8. Nichts wird angelegt, bevor Sie den Probelauf bestätigen, und gar nichts, solange eine Zeile fehlerhaft ist.",
    ),
    (
        "At most {} devices per import: split the file.",
        "Höchstens {} Geräte je Import: Teilen Sie die Datei.",
    ),
    (
        "Bound to the Microsoft 365 tenant",
        "Gebunden an den Microsoft-365-Mandanten",
    ),
    ("By", "Von"),
    ("CSV file", "CSV-Datei"),
    ("Cancel", "Abbrechen"),
    ("Check (dry run)", "Prüfen (Probelauf)"),
    (
        "Choose a CSV file or paste its lines.",
        "Wählen Sie eine CSV-Datei oder fügen Sie ihre Zeilen ein.",
    ),
    (
        "Choose what to do with the selected devices.",
        "Wählen Sie, was mit den ausgewählten Geräten geschehen soll.",
    ),
    ("Consent link", "Zustimmungslink"),
    ("Create {} devices", "{} Geräte anlegen"),
    (
        "Credentials in bulk need mailbridge's master key (MAILBRIDGE_MASTER_KEY) to keep them until their download.",
        "Zugangsdaten für viele Geräte brauchen den Hauptschlüssel von mailbridge (MAILBRIDGE_MASTER_KEY), um sie bis zum Herunterladen aufzubewahren.",
    ),
    ("Disable these devices?", "Diese Geräte deaktivieren?"),
    (
        "Download the credentials (CSV)",
        "Zugangsdaten herunterladen (CSV)",
    ),
    (
        "Download the credentials now: the file can be downloaded once, within {} minutes, and mailbridge keeps only hashes of the passwords afterwards.",
        "Laden Sie die Zugangsdaten jetzt herunter: Die Datei kann einmal heruntergeladen werden, innerhalb von {} Minuten; danach behält mailbridge nur Hashes der Passwörter.",
    ),
    ("Dry run", "Probelauf"),
    ("E-mail in English", "E-Mail auf Englisch"),
    ("E-mail in German", "E-Mail auf Deutsch"),
    ("Errors", "Fehler"),
    ("Failed logins 24 h", "Fehlgeschlagene Anmeldungen 24 h"),
    ("Find", "Finden"),
    ("Import devices from CSV", "Geräte aus CSV importieren"),
    ("Line", "Zeile"),
    ("Lines with errors: {}.", "Zeilen mit Fehlern: {}."),
    ("Made", "Erstellt"),
    ("Make a consent link", "Zustimmungslink erstellen"),
    ("Message id", "Nachrichten-ID"),
    ("Messages 24 h", "Nachrichten 24 h"),
    (
        "Needed for a link to send: it binds the link to this tenant, so that nobody who gets hold of it can connect another organisation. The customer's admin finds it in the Entra admin center under Overview → Tenant ID.",
        "Nötig für einen Link zum Versenden: Sie bindet den Link an diesen Mandanten, damit niemand, der ihn in die Hände bekommt, eine andere Organisation verbinden kann. Der Administrator des Kunden findet sie im Entra Admin Center unter Übersicht → Mandanten-ID.",
    ),
    ("New passwords", "Neue Passwörter"),
    (
        "New passwords for these devices?",
        "Neue Passwörter für diese Geräte?",
    ),
    ("Next page", "Nächste Seite"),
    (
        "No customer matches the search.",
        "Kein Kunde passt zur Suche.",
    ),
    (
        "No device matches the search.",
        "Kein Gerät passt zur Suche.",
    ),
    ("Nothing was imported: {}", "Nichts wurde importiert: {}"),
    (
        "Nothing will be created while a line is wrong: fix the file and upload it again.",
        "Nichts wird angelegt, solange eine Zeile fehlerhaft ist: Korrigieren Sie die Datei und laden Sie sie erneut hoch.",
    ),
    (
        "One device per line; the first line names the columns:",
        "Ein Gerät je Zeile; die erste Zeile nennt die Spalten:",
    ),
    ("Previous page", "Vorige Seite"),
    ("Select", "Auswählen"),
    (
        "Select at least one device.",
        "Wählen Sie mindestens ein Gerät aus.",
    ),
    ("Selected devices", "Ausgewählte Geräte"),
    (
        "Send to the customer's admin",
        "An den Administrator des Kunden senden",
    ),
    ("Sort by", "Sortieren nach"),
    (
        "That page is too far back: narrow the list with the search instead.",
        "Diese Seite liegt zu weit hinten: Grenzen Sie die Liste stattdessen mit der Suche ein.",
    ),
    (
        "The customer's Entra tenant ID",
        "Entra-Mandanten-ID des Kunden",
    ),
    (
        "The customer's page shows when it was used.",
        "Die Seite des Kunden zeigt, wann er benutzt wurde.",
    ),
    ("The file is not CSV: {}", "Die Datei ist kein CSV: {}"),
    (
        "The file is not UTF-8 text: save it as \"CSV UTF-8\".",
        "Die Datei ist kein UTF-8-Text: Speichern Sie sie als „CSV UTF-8“.",
    ),
    ("The file names no device.", "Die Datei nennt kein Gerät."),
    (
        "The first line must name the columns, at least name (name, kind, site, listener, allow-list, sender).",
        "Die erste Zeile muss die Spalten nennen, mindestens name (name, kind, site, listener, allow-list, sender).",
    ),
    (
        "The link is shown this once (mailbridge keeps only a hash of it). It works once and until",
        "Der Link wird nur dieses eine Mal angezeigt (mailbridge behält nur einen Hash davon). Er gilt einmal und bis",
    ),
    (
        "The name {} is in the file twice.",
        "Der Name {} steht zweimal in der Datei.",
    ),
    (
        "Their old passwords stop working at once. The new ones are in a CSV file you can download once.",
        "Ihre alten Passwörter gelten sofort nicht mehr. Die neuen stehen in einer CSV-Datei, die Sie einmal herunterladen können.",
    ),
    (
        "These credentials were already downloaded or have expired: they are shown only once. Give the devices new passwords if they were lost.",
        "Diese Zugangsdaten wurden bereits heruntergeladen oder sind abgelaufen: Sie werden nur einmal ausgegeben. Vergeben Sie neue Passwörter, falls sie verloren gingen.",
    ),
    (
        "They can no longer send until they are enabled again.",
        "Sie können nicht mehr senden, bis sie wieder aktiviert werden.",
    ),
    (
        "Unknown column {} (the columns are name, kind, site, listener, allow-list, sender).",
        "Unbekannte Spalte {} (die Spalten sind name, kind, site, listener, allow-list, sender).",
    ),
    (
        "Unknown device kind {} (printer, scanner, medical, software, other).",
        "Unbekannte Geräteart {} (printer, scanner, medical, software, other).",
    ),
    (
        "Unknown listener {} (submission or 587, submissions or 465, relay or 25).",
        "Unbekannter Zugang {} (submission oder 587, submissions oder 465, relay oder 25).",
    ),
    ("Upload", "Hochladen"),
    ("Upload again", "Erneut hochladen"),
    ("Used", "Benutzt"),
    ("Valid until", "Gültig bis"),
    (
        "When you are not the customer's administrator: mailbridge makes a link for their Global Administrator, with a ready e-mail to send. The link works once, for a day, and only for the customer's own Microsoft 365 tenant.",
        "Wenn Sie nicht selbst Administrator des Kunden sind: mailbridge erstellt einen Link für dessen Globalen Administrator, mit einer fertigen E-Mail zum Versenden. Der Link gilt einmal, einen Tag lang und nur für den eigenen Microsoft-365-Mandanten des Kunden.",
    ),
    (
        "allow-list and sender: several separated by spaces; a relay device needs its allow-list",
        "allow-list und sender: mehrere durch Leerzeichen getrennt; ein Relay-Gerät braucht seine allow-list",
    ),
    ("expired unused", "unbenutzt abgelaufen"),
    (
        "kind: printer, scanner, medical, software or other (empty: other)",
        "kind: printer, scanner, medical, software oder other (leer: other)",
    ),
    ("last from", "zuletzt von"),
    (
        "listener: submission (587), submissions (465) or relay (25); empty: submission",
        "listener: submission (587), submissions (465) oder relay (25); leer: submission",
    ),
    (
        "name: required, unique for the customer",
        "name: Pflicht, eindeutig je Kunde",
    ),
    ("not granted", "nicht erteilt"),
    ("not yet", "noch nicht"),
    ("of", "von"),
    ("or paste the lines", "oder die Zeilen einfügen"),
    ("until", "bis"),
    ("{} devices created", "{} Geräte angelegt"),
    ("{} devices disabled", "{} Geräte deaktiviert"),
    (
        "{} devices have new passwords",
        "{} Geräte haben neue Passwörter",
    ),
    (
        "{} devices would be created. Nothing has been created yet.",
        "{} Geräte würden angelegt. Noch ist nichts angelegt.",
    ),
    (
        "{} is not a bulk action (disable, rotate).",
        "{} ist keine Sammelaktion (disable, rotate).",
    ),
    (
        "{} is not a message id (like 0193a5b2-7c1e-7d4f-9a0b-1c2d3e4f5a6b or 0193a5b27c1e7d4f9a0b1c2d3e4f5a6b).",
        "{} ist keine Nachrichten-ID (etwa 0193a5b2-7c1e-7d4f-9a0b-1c2d3e4f5a6b oder 0193a5b27c1e7d4f9a0b1c2d3e4f5a6b).",
    ),
    ("{} is not a page position.", "{} ist keine Seitenposition."),
    (
        "{} is not a sort order (name, last_seen, queued, failures).",
        "{} ist keine Sortierung (name, last_seen, queued, failures).",
    ),
    // Accepted by Microsoft is not delivered; bounces (non-delivery reports).
    ("accepted by Microsoft", "von Microsoft angenommen"),
    ("Accepted by Microsoft", "Von Microsoft angenommen"),
    ("Accepted 24 h", "Angenommen 24 h"),
    ("bounced", "unzustellbar"),
    ("Bounced", "Unzustellbar"),
    ("unknown", "unbekannt"),
    (
        "Microsoft accepted this message, then reported it undeliverable to these recipients (a non-delivery report in the sender mailbox).",
        "Microsoft hat diese Nachricht angenommen und danach für diese Empfänger als unzustellbar gemeldet (ein Unzustellbarkeitsbericht im Absender-Postfach).",
    ),
    (
        "Bounces are not visible: Microsoft does not let mailbridge read the sender mailbox, so recipients Microsoft cannot deliver to are not reported. Grant Mail.ReadWrite on the sender mailbox (Exchange RBAC for Applications limited to it, or the tenant-wide permission) to see them.",
        "Unzustellbarkeitsberichte sind nicht sichtbar: Microsoft lässt mailbridge das Absender-Postfach nicht lesen, daher werden Empfänger, an die Microsoft nicht zustellen kann, nicht gemeldet. Mail.ReadWrite für das Absender-Postfach erteilen (Exchange-RBAC für Anwendungen auf dieses Postfach beschränkt oder die mandantenweite Berechtigung), um sie zu sehen.",
    ),
    (
        "Bounces are watched: Microsoft's non-delivery reports in the sender mailbox are matched to the messages and moved to the folder “mailbridge bounces”.",
        "Unzustellbarkeitsberichte werden beobachtet: Microsofts Berichte im Absender-Postfach werden den Nachrichten zugeordnet und in den Ordner „mailbridge bounces“ verschoben.",
    ),
    // Alerts, webhooks and usage reports.
    (
        "A test event is on its way: its answer appears in the delivery log.",
        "Ein Testereignis ist unterwegs: Die Antwort erscheint im Zustellprotokoll.",
    ),
    ("Accepted", "Angenommen"),
    ("Acknowledge", "Bestätigen"),
    ("Active devices", "Aktive Geräte"),
    ("Add webhook", "Webhook hinzufügen"),
    ("Alert", "Warnung"),
    ("Alert e-mails", "Warn-E-Mails"),
    (
        "Alert when this device has sent nothing for (hours)",
        "Warnen, wenn dieses Gerät so lange nichts gesendet hat (Stunden)",
    ),
    ("Alerts", "Warnungen"),
    ("All customers", "Alle Kunden"),
    ("All recent", "Alle aktuellen"),
    ("Answer", "Antwort"),
    ("Bytes", "Bytes"),
    (
        "Consent lost or token refused",
        "Zustimmung verloren oder Token verweigert",
    ),
    (
        "Counted when each message's outcome is known (UTC), and kept after the message records are purged.",
        "Gezählt, sobald das Ergebnis einer Nachricht feststeht (UTC), und aufbewahrt, nachdem die Nachrichteneinträge gelöscht wurden.",
    ),
    ("Delete webhook", "Webhook löschen"),
    ("Delivery log", "Zustellprotokoll"),
    ("Delivery log and test", "Zustellprotokoll und Test"),
    ("Device locked out", "Gerät gesperrt"),
    ("Device silent", "Gerät sendet nicht mehr"),
    ("Download CSV", "CSV herunterladen"),
    (
        "Edge TLS certificate expiring",
        "TLS-Zertifikat der Edge läuft ab",
    ),
    (
        "Empty: off. Suggested for this kind of device: {} hours.",
        "Leer: aus. Empfohlen für diese Geräteart: {} Stunden.",
    ),
    (
        "Entra ID shows the date under Certificates & secrets. A certificate's expiry is read from the certificate itself.",
        "Entra ID zeigt das Datum unter „Zertifikate & Geheimnisse“. Das Ablaufdatum eines Zertifikats wird aus dem Zertifikat selbst gelesen.",
    ),
    ("Event", "Ereignis"),
    ("High bounce rate", "Hohe Unzustellbarkeitsrate"),
    (
        "MSP app credential expiring",
        "Anmeldedaten der MSP-App laufen ab",
    ),
    ("Messages waiting too long", "Nachrichten warten zu lange"),
    (
        "Microsoft refuses messages",
        "Microsoft weist Nachrichten ab",
    ),
    ("Month", "Monat"),
    ("Month {}", "Monat {}"),
    ("No alerts.", "Keine Warnungen."),
    ("On", "An"),
    (
        "Only an open alert that nobody acknowledged yet can be acknowledged.",
        "Nur eine offene, noch nicht bestätigte Warnung kann bestätigt werden.",
    ),
    ("Open only", "Nur offene"),
    ("Opened", "Geöffnet"),
    ("Response", "Antworttext"),
    ("Rule", "Regel"),
    ("Rules", "Regeln"),
    ("Save rules", "Regeln speichern"),
    ("Secret", "Geheimnis"),
    ("Send alert e-mails to", "Warn-E-Mails senden an"),
    ("Send test event", "Testereignis senden"),
    (
        "Send them as the sender mailbox of",
        "Senden als Absenderpostfach von",
    ),
    ("Show", "Anzeigen"),
    (
        "The MSP app's client secret expires on",
        "Der geheime Clientschlüssel der MSP-App läuft ab am",
    ),
    (
        "The alert was acknowledged.",
        "Die Warnung wurde bestätigt.",
    ),
    (
        "The signing secret is shown this once: copy it into the receiver, which verifies X-Mailbridge-Signature with it.",
        "Das Signaturgeheimnis wird nur dieses eine Mal angezeigt: Kopieren Sie es in den Empfänger, der damit X-Mailbridge-Signature prüft.",
    ),
    ("The webhook was deleted.", "Der Webhook wurde gelöscht."),
    ("Threshold", "Schwelle"),
    ("Total", "Summe"),
    ("Updated", "Aktualisiert"),
    ("Usage", "Nutzung"),
    ("Usage and charts", "Nutzung und Diagramme"),
    ("Webhook {} created", "Webhook {} angelegt"),
    ("Webhooks", "Webhooks"),
    (
        "Webhooks need MAILBRIDGE_MASTER_KEY to keep their secrets.",
        "Webhooks brauchen MAILBRIDGE_MASTER_KEY, um ihre Geheimnisse zu verwahren.",
    ),
    ("Window (minutes)", "Zeitfenster (Minuten)"),
    ("acknowledged by {}", "bestätigt von {}"),
    (
        "any lock of the device's logins after wrong passwords",
        "jede Sperre der Anmeldungen des Geräts nach falschen Passwörtern",
    ),
    (
        "any token refusal or hold of the customer",
        "jede Token-Verweigerung oder Zurückhaltung des Kunden",
    ),
    ("critical", "kritisch"),
    ("days before expiry", "Tage vor Ablauf"),
    (
        "https:// only. Internal addresses (private, loopback, link-local) are refused unless the operator allows them.",
        "Nur https://. Interne Adressen (privat, Loopback, Link-Local) werden abgelehnt, sofern der Betreiber sie nicht erlaubt.",
    ),
    (
        "minutes the oldest waiting message may be old",
        "Minuten, die die älteste wartende Nachricht alt sein darf",
    ),
    ("no answer", "keine Antwort"),
    ("open", "offen"),
    (
        "per cent of messages bounced or failed within the window",
        "Prozent unzustellbarer oder fehlgeschlagener Nachrichten im Zeitfenster",
    ),
    (
        "permanent refusals within the window",
        "endgültige Abweisungen im Zeitfenster",
    ),
    ("resolved", "behoben"),
    (
        "set per device, on the device's page (hours without mail)",
        "je Gerät auf der Geräteseite eingestellt (Stunden ohne Mail)",
    ),
    (
        "the alert's own customer (MSP-wide alerts only by webhook)",
        "dem Kunden der Warnung (MSP-weite Warnungen nur per Webhook)",
    ),
    ("warning", "Warnung"),
    (
        "{} is not a date (YYYY-MM-DD).",
        "{} ist kein Datum (JJJJ-MM-TT).",
    ),
    (
        "{} is not a month (YYYY-MM).",
        "{} ist kein Monat (JJJJ-MM).",
    ),
    (
        "{} is not a number of hours from 1 to 8760.",
        "{} ist keine Stundenzahl von 1 bis 8760.",
    ),
    ("{} is not a whole number.", "{} ist keine ganze Zahl."),
    // Control plane look and feel: once-shown secrets, errors after forms, the
    // audit log in words, filters that stay visible, times in the viewer's zone.
    ("API token created", "API-Token erstellt"),
    ("API token revoked", "API-Token widerrufen"),
    ("Account ignored", "Konto ignoriert"),
    (
        "Account linked to a device",
        "Konto mit einem Gerät verknüpft",
    ),
    ("Account reopened", "Konto wieder geöffnet"),
    ("Allowed networks", "Erlaubte Netze"),
    ("Back to the form", "Zurück zum Formular"),
    (
        "Change the role and sign-in of {}?",
        "Rolle und Anmeldung von {} ändern?",
    ),
    ("Client address", "Client-Adresse"),
    ("Consent failed", "Zustimmung fehlgeschlagen"),
    ("Consent granted", "Zustimmung erteilt"),
    ("Consent started", "Zustimmung begonnen"),
    ("Customer changed", "Kunde geändert"),
    ("Customer created", "Kunde angelegt"),
    ("Customer deleted", "Kunde gelöscht"),
    ("Device added", "Gerät hinzugefügt"),
    ("Device changed", "Gerät geändert"),
    ("Device deleted", "Gerät gelöscht"),
    ("Device logins unlocked", "Anmeldungen des Geräts entsperrt"),
    ("Device password rotated", "Gerätepasswort erneuert"),
    ("Enabled", "Aktiv"),
    ("Failure reports to", "Fehlerberichte an"),
    ("Hold checked now", "Sperre sofort geprüft"),
    ("Invitation withdrawn", "Einladung zurückgezogen"),
    ("Legacy TLS", "Altes TLS"),
    ("Locks", "Sperren"),
    ("Microsoft's answer", "Antwort von Microsoft"),
    (
        "No API token yet. Create one below for a script or an RMM.",
        "Noch kein API-Token. Unten eines für ein Skript oder ein RMM erstellen.",
    ),
    (
        "Only the messages of the device {}.",
        "Nur die Nachrichten des Geräts {}.",
    ),
    ("Rate limit per minute", "Ratenlimit pro Minute"),
    ("Report file (CSV)", "Berichtsdatei (CSV)"),
    ("SMTP for large messages", "SMTP für große Nachrichten"),
    ("Save to Sent Items", "In „Gesendete Elemente“ ablegen"),
    (
        "Saved: the new role applies from their next request.",
        "Gespeichert: Die neue Rolle gilt ab ihrer nächsten Anfrage.",
    ),
    ("Sender policy", "Absenderrichtlinie"),
    ("Show every device", "Alle Geräte zeigen"),
    ("Sign-in report imported", "Anmeldebericht importiert"),
    ("Signed out", "Abgemeldet"),
    ("Staff member added", "Mitarbeiter hinzugefügt"),
    ("Staff member approved", "Mitarbeiter freigegeben"),
    ("Staff member changed", "Mitarbeiter geändert"),
    ("Staff member invited", "Mitarbeiter eingeladen"),
    (
        "Staff member's customers changed",
        "Kunden eines Mitarbeiters geändert",
    ),
    ("Test message sent", "Testnachricht gesendet"),
    (
        "The device was added. It sends by its address (allow-list) and needs no password.",
        "Das Gerät wurde hinzugefügt. Es sendet anhand seiner Adresse (Zulassungsliste) und braucht kein Passwort.",
    ),
    (
        "The password was shown once and is not shown again. If it was not copied into the device, give the device a new password on its page.",
        "Das Passwort wurde einmal angezeigt und wird nicht erneut angezeigt. Wurde es nicht ins Gerät übernommen, dem Gerät auf seiner Seite ein neues Passwort geben.",
    ),
    (
        "Times are in your time zone (UTC on hover); From and Until of the search are UTC. Message contents are never shown: they may be health data.",
        "Zeiten in Ihrer Zeitzone (UTC beim Darüberfahren); „Von“ und „Bis“ der Suche sind UTC. Nachrichteninhalte werden nie angezeigt: Sie können Gesundheitsdaten sein.",
    ),
    ("mailbridge test message", "mailbridge-Testnachricht"),
    ("no", "nein"),
    (
        "not used: made by mailbridge itself, not received from a device",
        "nicht verwendet: von mailbridge selbst erzeugt, nicht von einem Gerät empfangen",
    ),
    ("yes", "ja"),
    ("How", "Wie"),
    ("invitation", "Einladung"),
    ("bootstrap code", "Einrichtungscode"),
    ("waiting for approval", "wartet auf Freigabe"),
    ("Sign-in provider", "Anmeldedienst"),
    ("Port 587 (STARTTLS)", "Port 587 (STARTTLS)"),
    ("Port 465 (SSL/TLS)", "Port 465 (SSL/TLS)"),
    ("Port 25 (by address)", "Port 25 (nach Adresse)"),
    // Staff limited to assigned customers.
    (
        "Owners and admins always see every customer.",
        "Inhaber und Admins sehen immer alle Kunden.",
    ),
    (
        "Technicians and read-only staff can be limited to the customers they look after: they then see no other customer anywhere, nor through their API tokens. Owners and admins see every customer.",
        "Techniker und Mitarbeitende mit Lesezugriff lassen sich auf die Kunden beschränken, die sie betreuen: Andere Kunden sehen sie dann nirgends, auch nicht über ihre API-Tokens. Inhaber und Admins sehen alle Kunden.",
    ),
    ("Unknown customer.", "Unbekannter Kunde."),
    ("all customers", "alle Kunden"),
    ("only these:", "nur diese:"),
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
    ("From address", "Absender-IP"),
    (
        "Give up on this message? Its content is deleted.",
        "Diese Nachricht aufgeben? Ihr Inhalt wird gelöscht.",
    ),
    (
        "If the device fails with a certificate error, update its firmware or its list of trusted certificates; if it only knows TLS 1.0, tell the MSP.",
        "Meldet das Gerät einen Zertifikatsfehler, Firmware oder Liste vertrauenswürdiger Zertifikate aktualisieren; kann es nur TLS 1.0, dem MSP Bescheid geben.",
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
        "Microsoft 365 not connected",
        "Microsoft 365 nicht verbunden",
    ),
    (
        "Microsoft Graph (recommended)",
        "Microsoft Graph (empfohlen)",
    ),
    ("Microsoft answered", "Microsoft antwortete"),
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
        "Only a waiting message can be retried: the content of a message Microsoft accepted, or that failed, is deleted.",
        "Nur eine wartende Nachricht kann erneut versucht werden: Der Inhalt von Nachrichten, die Microsoft angenommen hat oder die fehlgeschlagen sind, ist gelöscht.",
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
    ("delivering", "wird zugestellt"),
    ("disabled", "deaktiviert"),
    ("enabled", "aktiv"),
    ("failed", "fehlgeschlagen"),
    ("failure report", "Fehlerbericht"),
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
    // Consent verified by the workers: connecting, failed, the consent-link page.
    ("Connecting", "Verbindung wird hergestellt"),
    (
        "Connecting to Microsoft 365",
        "Verbindung mit Microsoft 365 wird hergestellt",
    ),
    ("Connection failed", "Verbindung fehlgeschlagen"),
    ("Microsoft 365 consent", "Zustimmung für Microsoft 365"),
    (
        "Microsoft can take a few minutes to make a new consent usable. mailbridge keeps checking in the background (up to 15 minutes); this page updates itself.",
        "Microsoft kann einige Minuten brauchen, bis eine neue Zustimmung nutzbar ist. mailbridge prüft im Hintergrund weiter (bis zu 15 Minuten); diese Seite aktualisiert sich selbst.",
    ),
    ("Microsoft's last answer", "Letzte Antwort von Microsoft"),
    (
        "Reload this page to see the result.",
        "Diese Seite neu laden, um das Ergebnis zu sehen.",
    ),
    (
        "Thank you: the consent was granted. Microsoft can take a few minutes to make it usable; mailbridge keeps checking in the background and this page updates itself. You can also close it: your provider sees the result.",
        "Vielen Dank: Die Zustimmung wurde erteilt. Microsoft kann einige Minuten brauchen, bis sie nutzbar ist; mailbridge prüft im Hintergrund weiter und diese Seite aktualisiert sich selbst. Sie können sie auch schließen: Ihr Dienstleister sieht das Ergebnis.",
    ),
    (
        "Thank you: the consent was granted. Your provider sees when it is usable.",
        "Vielen Dank: Die Zustimmung wurde erteilt. Ihr Dienstleister sieht, sobald sie nutzbar ist.",
    ),
    (
        "The consent was granted. mailbridge is now checking it with Microsoft, which can take a few minutes: this page updates itself.",
        "Die Zustimmung wurde erteilt. mailbridge prüft sie jetzt bei Microsoft, was einige Minuten dauern kann: Diese Seite aktualisiert sich selbst.",
    ),
    ("and", "und"),
    ("between", "zwischen"),
    ("checks so far", "bisherige Prüfungen"),
    ("consent granted", "Zustimmung erteilt"),
    (
        "mailbridge asked Microsoft",
        "mailbridge hat Microsoft gefragt:",
    ),
    (
        "mailbridge has no Entra app to connect customers with: set MAILBRIDGE_ENTRA_CLIENT_ID (and the app's secret or certificate for the workers).",
        "mailbridge hat keine Entra-App, mit der Kunden verbunden werden können: MAILBRIDGE_ENTRA_CLIENT_ID setzen (und für die Worker das Geheimnis oder Zertifikat der App).",
    ),
    // The migration board (SMTP AUTH accounts, readiness, Microsoft's dates).
    (
        "A mailbox whose SmtpClientAuthenticationDisabled is empty ($null) follows the organisation's setting; the snippet counts those too (a filter on -eq $false would miss them).",
        "Ein Postfach, dessen SmtpClientAuthenticationDisabled leer ist ($null), folgt der Einstellung der Organisation; das Skript zählt auch diese mit (ein Filter auf -eq $false übersieht sie).",
    ),
    ("Account", "Konto"),
    (
        "Accounts Microsoft saw sending with SMTP AUTH",
        "Konten, die laut Microsoft per SMTP AUTH senden",
    ),
    ("Across all customers", "Über alle Kunden"),
    ("All", "Alle"),
    ("Announcement", "Ankündigung"),
    ("Basic", "Basic"),
    ("Basic messages", "Basic-Nachrichten"),
    ("Choose a device.", "Wählen Sie ein Gerät."),
    (
        "Choose a file to upload.",
        "Wählen Sie eine Datei zum Hochladen.",
    ),
    (
        "Choose the period (up to 90 days), then export the summary or the details view as CSV. Excel files saved again as CSV (also German, with ;) are fine.",
        "Zeitraum wählen (bis zu 90 Tage), dann die Übersicht oder die Detailansicht als CSV exportieren. In Excel erneut als CSV gespeicherte Dateien (auch deutsch, mit ;) gehen ebenso.",
    ),
    ("Connected", "Verbunden"),
    ("Create relay device", "Relay-Gerät anlegen"),
    ("Date", "Datum"),
    ("Days left", "Tage übrig"),
    ("Device name", "Gerätename"),
    ("Done", "Erledigt"),
    ("Done: {}.", "Erledigt: {}."),
    ("Export CSV", "CSV exportieren"),
    ("Exposed but unused", "Offen, aber ungenutzt"),
    ("First seen", "Zuerst gesehen"),
    (
        "Give a reason for ignoring the account (at most 500 characters).",
        "Geben Sie einen Grund an, warum das Konto ignoriert wird (höchstens 500 Zeichen).",
    ),
    ("Ignore", "Ignorieren"),
    ("Ignored", "Ignoriert"),
    ("Import", "Importieren"),
    (
        "Import the SMTP AUTH clients report",
        "Den Bericht „SMTP AUTH-Clients“ importieren",
    ),
    ("Imported {} rows.", "{} Zeilen importiert."),
    (
        "In the customer's Exchange admin center open Reports → Mail flow → SMTP AUTH clients report.",
        "Im Exchange Admin Center des Kunden Berichte → Nachrichtenfluss → Bericht „SMTP AUTH-Clients“ öffnen.",
    ),
    ("Last report", "Letzter Bericht"),
    ("Link to device", "Mit Gerät verknüpfen"),
    (
        "Mailboxes with SMTP AUTH enabled",
        "Postfächer mit aktiviertem SMTP AUTH",
    ),
    ("Microsoft's dates", "Microsofts Termine"),
    ("Migration board", "Migrationsboard"),
    ("Most at risk", "Am stärksten gefährdet"),
    ("New accounts: {}.", "Neue Konten: {}."),
    ("Next step", "Nächster Schritt"),
    ("No customers match.", "Keine passenden Kunden."),
    ("No report yet", "Noch kein Bericht"),
    (
        "Nothing imported yet. Upload the customer's SMTP AUTH clients report below.",
        "Noch nichts importiert. Laden Sie unten den Bericht „SMTP AUTH-Clients“ des Kunden hoch.",
    ),
    ("No Basic use", "Keine Basic-Nutzung"),
    ("Nothing open", "Nichts offen"),
    ("Entra sign-in log", "Entra-Anmeldeprotokoll"),
    (
        "Optional: where the customer grants mailbridge's app the permission AuditLog.Read.All, mailbridge reads the password logins to SMTP AUTH (client app \"Authenticated SMTP\") of the last 30 days from the customer's sign-in log every few hours, without any upload. Microsoft gives sign-in logs through Graph only to tenants with Entra ID P1 (or P2).",
        "Optional: Wo der Kunde der App von mailbridge die Berechtigung AuditLog.Read.All erteilt, liest mailbridge alle paar Stunden die Passwort-Anmeldungen an SMTP AUTH (Client-App „Authenticated SMTP“) der letzten 30 Tage aus dem Anmeldeprotokoll des Kunden, ganz ohne Hochladen. Microsoft gibt Anmeldeprotokolle über Graph nur an Tenants mit Entra ID P1 (oder P2) heraus.",
    ),
    (
        "The sign-in log could not be read:",
        "Das Anmeldeprotokoll konnte nicht gelesen werden:",
    ),
    ("Last read", "Zuletzt gelesen"),
    ("next read", "nächstes Lesen"),
    ("Not read yet.", "Noch nicht gelesen."),
    ("OAuth", "OAuth"),
    ("Reason", "Grund"),
    ("Relay device", "Relay-Gerät"),
    ("Relay device created", "Relay-Gerät angelegt"),
    ("Relay traffic seen", "Relay-Verkehr gesehen"),
    ("Reopen", "Wieder öffnen"),
    ("Reopened: {}.", "Wieder geöffnet: {}."),
    ("Row {}:", "Zeile {}:"),
    (
        "SMTP AUTH is enabled on this mailbox",
        "Für dieses Postfach ist SMTP AUTH aktiviert",
    ),
    ("SMTP AUTH on", "SMTP AUTH an"),
    ("Sort by name", "Nach Name sortieren"),
    ("Source", "Quelle"),
    ("Sources", "Quellen"),
    ("The account is ignored.", "Das Konto wird ignoriert."),
    (
        "The account is linked to the device.",
        "Das Konto ist mit dem Gerät verknüpft.",
    ),
    ("The account is open again.", "Das Konto ist wieder offen."),
    (
        "The customer's admin runs this read-only PowerShell and sends you the CSV it writes. Imported here, mailboxes with SMTP AUTH enabled that nothing uses show as \"Exposed but unused\": recommend turning SMTP AUTH off for them.",
        "Der Admin des Kunden führt dieses nur lesende PowerShell-Skript aus und schickt Ihnen die CSV-Datei, die es schreibt. Hier importiert, erscheinen Postfächer mit aktiviertem SMTP AUTH, die nichts nutzt, als „Offen, aber ungenutzt“: Empfehlen Sie, SMTP AUTH für sie abzuschalten.",
    ),
    (
        "The device does not belong to this customer.",
        "Das Gerät gehört nicht zu diesem Kunden.",
    ),
    ("The file is empty.", "Die Datei ist leer."),
    (
        "The file is larger than 20 MB; export a shorter period.",
        "Die Datei ist größer als 20 MB; exportieren Sie einen kürzeren Zeitraum.",
    ),
    (
        "The file is not readable as CSV: {}",
        "Die Datei ist als CSV nicht lesbar: {}",
    ),
    (
        "The file was not imported:",
        "Die Datei wurde nicht importiert:",
    ),
    (
        "The line cannot be read as CSV: {}",
        "Die Zeile ist als CSV nicht lesbar: {}",
    ),
    (
        "These dates come from the file web/data/microsoft-deadlines.toml built into mailbridge; an operator can replace them without a new release (MAILBRIDGE_MICROSOFT_DEADLINES_FILE).",
        "Diese Termine stammen aus der in mailbridge eingebauten Datei web/data/microsoft-deadlines.toml; ein Betreiber kann sie ohne neues Release ersetzen (MAILBRIDGE_MICROSOFT_DEADLINES_FILE).",
    ),
    (
        "These dates come from the operator's file {}.",
        "Diese Termine stammen aus der Datei {} des Betreibers.",
    ),
    (
        "This is not an SMTP AUTH clients report. Expected the CSV exported from the Exchange admin center (Reports → Mail flow → SMTP AUTH clients report, summary or details view) with the columns \"Sender address\" and \"Messages sent\" (and, since October 2024, \"Authentication protocol\"), or the CSV of mailbridge's PowerShell snippet with \"PrimarySmtpAddress\" and \"SmtpAuthEnabled\". Columns found: {}.",
        "Das ist kein Bericht „SMTP AUTH-Clients“. Erwartet wird die aus dem Exchange Admin Center exportierte CSV-Datei (Berichte → Nachrichtenfluss → Bericht „SMTP AUTH-Clients“, Übersicht oder Detailansicht) mit den Spalten „Absenderadresse“ und „Gesendete Nachrichten“ (und seit Oktober 2024 „Authentifizierungsprotokoll“) oder die CSV-Datei des PowerShell-Skripts von mailbridge mit „PrimarySmtpAddress“ und „SmtpAuthEnabled“. Gefundene Spalten: {}.",
    ),
    ("To migrate", "Zu migrieren"),
    (
        "Unknown filter {} (at-risk, no-data, done or all).",
        "Unbekannter Filter {} (at-risk, no-data, done oder all).",
    ),
    (
        "Unknown sort {} (risk or name).",
        "Unbekannte Sortierung {} (risk oder name).",
    ),
    (
        "Upload the file here. A new import moves accounts whose Basic use has stopped to Done.",
        "Die Datei hier hochladen. Ein neuer Import setzt Konten, deren Basic-Nutzung aufgehört hat, auf Erledigt.",
    ),
    ("What happens", "Was passiert"),
    (
        "Which devices at which customer still send with a password to smtp.office365.com (Basic SMTP AUTH), and how far each customer is from Microsoft's deadline.",
        "Welche Geräte bei welchem Kunden noch mit Passwort an smtp.office365.com senden (Basic-SMTP-AUTH), und wie weit jeder Kunde von Microsofts Frist entfernt ist.",
    ),
    ("Without data", "Ohne Daten"),
    ("accounts still on Basic", "Konten noch mit Basic"),
    (
        "accounts that still send with Basic SMTP AUTH, and their move to the relay",
        "Konten, die noch mit Basic-SMTP-AUTH senden, und ihr Umzug auf das Relay",
    ),
    ("announced in the", "angekündigt für die"),
    ("checked", "geprüft"),
    ("customers not connected", "Kunden nicht verbunden"),
    ("customers without data", "Kunden ohne Daten"),
    ("days left:", "Tage übrig:"),
    (
        "e.g. switched to OAuth natively",
        "z. B. nutzt jetzt selbst OAuth",
    ),
    ("first relay message", "erste Relay-Nachricht"),
    ("migrated", "migriert"),
    ("with a relay device", "mit Relay-Gerät"),
    ("{} days ago:", "vor {} Tagen:"),
    (
        "\"{}\" in the sender column is not an email address.",
        "„{}“ in der Absenderspalte ist keine E-Mail-Adresse.",
    ),
    (
        "\"{}\" in the column SmtpAuthEnabled is not True or False.",
        "„{}“ in der Spalte SmtpAuthEnabled ist weder True noch False.",
    ),
    (
        "\"{}\" in the messages column is not a number of messages.",
        "„{}“ in der Nachrichtenspalte ist keine Anzahl von Nachrichten.",
    ),
    (
        "\"{}\" is not an authentication protocol (expected Basic or OAuth).",
        "„{}“ ist kein Authentifizierungsprotokoll (erwartet: Basic oder OAuth).",
    ),
    (
        "\"{}\" is not a date (expected e.g. 2026-11-30, 11/30/2026 or 30.11.2026).",
        "„{}“ ist kein Datum (erwartet z. B. 2026-11-30, 11/30/2026 oder 30.11.2026).",
    ),
    // Old devices: the legacy-TLS listener, session transcripts, model notes.
    (
        "(legacy TLS: for this old device only)",
        "(Legacy-TLS: nur für dieses alte Gerät)",
    ),
    (
        "Allow legacy TLS (TLS 1.0/1.1, CBC suites) on the legacy-TLS port",
        "Legacy-TLS (TLS 1.0/1.1, CBC-Verfahren) am Legacy-TLS-Port erlauben",
    ),
    ("Commands and replies", "Befehle und Antworten"),
    (
        "Commands and reply codes only: passwords, AUTH data and messages are never recorded. Kept for a few days.",
        "Nur Befehle und Antwortcodes: Passwörter, AUTH-Daten und Nachrichten werden nie aufgezeichnet. Einige Tage aufbewahrt.",
    ),
    ("Listener", "Port"),
    ("Model family", "Modellreihe"),
    (
        "No session recorded recently: the device has not reached mailbridge (check server name, port and firewall).",
        "In letzter Zeit keine Sitzung aufgezeichnet: das Gerät hat mailbridge nicht erreicht (Servername, Port und Firewall prüfen).",
    ),
    ("Notes on this model", "Hinweise zu diesem Modell"),
    (
        "Only for devices that cannot do TLS 1.2. Still better than a password in clear text over the internet; switch it off after a firmware update.",
        "Nur für Geräte, die kein TLS 1.2 können. Immer noch besser als ein Passwort im Klartext über das Internet; nach einem Firmware-Update abschalten.",
    ),
    ("Recent sessions", "Letzte Sitzungen"),
    (
        "Shows what this model supports and its known quirks.",
        "Zeigt, was dieses Modell unterstützt, und seine bekannten Eigenheiten.",
    ),
    (
        "This device still uses TLS older than 1.2 (the legacy-TLS listener). Retire it when a firmware update brings TLS 1.2.",
        "Dieses Gerät verwendet noch TLS älter als 1.2 (den Legacy-TLS-Port). Abschalten, sobald ein Firmware-Update TLS 1.2 bringt.",
    ),
    ("Time", "Zeit"),
    ("Unknown model family.", "Unbekannte Modellreihe."),
    ("handshake failed", "Handshake fehlgeschlagen"),
    ("legacy TLS allowed", "Legacy-TLS erlaubt"),
    (
        "needs the legacy-TLS listener",
        "braucht den Legacy-TLS-Port",
    ),
    ("no login", "ohne Anmeldung"),
    ("outdated TLS", "veraltetes TLS"),
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
    // Least privilege: permission modes, the Exchange script, tenant-wide grants.
    (
        "After the consent this page shows the Exchange script for the customer's admin.",
        "Nach der Zustimmung zeigt diese Seite das Exchange-Skript für den Admin des Kunden.",
    ),
    ("Download (.ps1)", "Herunterladen (.ps1)"),
    ("Exchange grant verified", "Exchange-Berechtigung bestätigt"),
    (
        "Limited to the sender mailbox (recommended)",
        "Auf das Absender-Postfach beschränkt (empfohlen)",
    ),
    (
        "Limited: the app can use only the sender mailbox (Exchange RBAC for Applications, a script for the customer's admin). Tenant-wide: one consent, and the app can send as every mailbox. SMTP AUTH is limited to the sender mailbox either way.",
        "Beschränkt: die App kann nur das Absender-Postfach nutzen (Exchange RBAC für Anwendungen, ein Skript für den Admin des Kunden). Mandantenweit: eine Zustimmung, und die App kann als jedes Postfach senden. SMTP AUTH ist in jedem Fall auf das Absender-Postfach beschränkt.",
    ),
    (
        "Microsoft refused the sender mailbox (403 ErrorAccessDenied): the Exchange script has not been run (or its scope does not contain this mailbox). Exchange can also take up to two hours to apply new assignments.",
        "Microsoft verweigert das Absender-Postfach (403 ErrorAccessDenied): das Exchange-Skript wurde noch nicht ausgeführt (oder sein Bereich enthält dieses Postfach nicht). Exchange kann außerdem bis zu zwei Stunden brauchen, bis neue Zuweisungen wirken.",
    ),
    (
        "Only a customer in limited mode whose consent is verified waits for the Exchange script.",
        "Nur ein Kunde im beschränkten Modus mit bestätigter Zustimmung wartet auf das Exchange-Skript.",
    ),
    ("Permissions", "Berechtigungen"),
    ("Permissions (Graph)", "Berechtigungen (Graph)"),
    (
        "SMTP AUTH is mailbox-scoped by nature: the app can send only as mailboxes that gave its service principal SendAs or FullAccess in Exchange, with the SMTP.SendAsApp permission.",
        "SMTP AUTH ist von Natur aus auf Postfächer beschränkt: die App kann nur als Postfächer senden, die ihrem Dienstprinzipal in Exchange „Senden als“ oder Vollzugriff gegeben haben, mit der Berechtigung SMTP.SendAsApp.",
    ),
    (
        "Sign in with a Global Administrator of the customer's tenant and accept: the consent creates mailbridge's enterprise application without any mail permission; the Exchange script then allows the sender mailbox alone.",
        "Mit einem globalen Administrator des Kunden-Mandanten anmelden und zustimmen: die Zustimmung legt die Unternehmensanwendung von mailbridge ohne jede E-Mail-Berechtigung an; das Exchange-Skript erlaubt danach allein das Absender-Postfach.",
    ),
    ("Tenant-wide (quick)", "Mandantenweit (schnell)"),
    (
        "The app may use only the sender mailbox: the consent grants no mail permission, and Exchange Online RBAC for Applications allows the sender mailbox alone (a script the customer's admin runs once).",
        "Die App darf nur das Absender-Postfach nutzen: die Zustimmung erteilt keine E-Mail-Berechtigung, und Exchange Online RBAC für Anwendungen erlaubt allein das Absender-Postfach (ein Skript, das der Admin des Kunden einmal ausführt).",
    ),
    (
        "The consent grants Mail.Send (and Mail.ReadWrite) for every mailbox of the tenant. For practices handling health data, choose the limited mode in the settings.",
        "Die Zustimmung erteilt Mail.Send (und Mail.ReadWrite) für jedes Postfach des Mandanten. Für Praxen mit Gesundheitsdaten in den Einstellungen den beschränkten Modus wählen.",
    ),
    (
        "The consent is verified. Exchange Online does not let the app use the sender mailbox until the customer's Exchange administrator runs this script in Exchange Online PowerShell. mailbridge then sends a check message as the sender mailbox and marks the customer connected once Microsoft accepts it.",
        "Die Zustimmung ist bestätigt. Exchange Online lässt die App das Absender-Postfach erst nutzen, wenn der Exchange-Administrator des Kunden dieses Skript in Exchange Online PowerShell ausführt. mailbridge sendet dann eine Prüfnachricht als Absender-Postfach und meldet den Kunden als verbunden, sobald Microsoft sie annimmt.",
    ),
    (
        "The permission mode is limited or tenant_wide.",
        "Der Berechtigungsmodus ist limited oder tenant_wide.",
    ),
    (
        "The script has run: check now",
        "Das Skript wurde ausgeführt: jetzt prüfen",
    ),
    (
        "The script needs the object id of mailbridge's enterprise application in the customer's tenant: it is known once the customer's admin has granted the consent (Connect Microsoft 365).",
        "Das Skript braucht die Objekt-ID der Unternehmensanwendung von mailbridge im Mandanten des Kunden: sie ist bekannt, sobald der Admin des Kunden die Zustimmung erteilt hat (Microsoft 365 verbinden).",
    ),
    (
        "The script's language is en or de.",
        "Die Sprache des Skripts ist en oder de.",
    ),
    (
        "To remove the grant: Entra admin center → Enterprise applications → mailbridge → Permissions → revoke the Microsoft Graph application permissions Mail.Send / Mail.ReadWrite; or in PowerShell Remove-MgServicePrincipalAppRoleAssignment. Then use the limited mode: the Exchange script gives the app the sender mailbox alone.",
        "So entfernen Sie die Berechtigung: Entra Admin Center → Unternehmensanwendungen → mailbridge → Berechtigungen → die Microsoft-Graph-Anwendungsberechtigungen Mail.Send / Mail.ReadWrite widerrufen; oder in PowerShell Remove-MgServicePrincipalAppRoleAssignment. Danach den beschränkten Modus verwenden: das Exchange-Skript gibt der App allein das Absender-Postfach.",
    ),
    (
        "Waiting for the Exchange script",
        "Wartet auf das Exchange-Skript",
    ),
    ("Warning", "Warnung"),
    ("every mailbox", "jedes Postfach"),
    ("limited", "beschränkt"),
    (
        "mailbridge tries the sender mailbox again now. Exchange can take a while to apply new assignments: it keeps trying, and this page shows when it works.",
        "mailbridge versucht das Absender-Postfach jetzt erneut. Exchange kann eine Weile brauchen, bis neue Zuweisungen wirken: mailbridge versucht es weiter, und diese Seite zeigt, wann es klappt.",
    ),
    (
        "mailbridge's app can read every mailbox of this practice (tenant-wide mail read permission): health data.",
        "Die App von mailbridge kann jedes Postfach dieser Praxis lesen (mandantenweite Leseberechtigung für E-Mails): Gesundheitsdaten.",
    ),
    (
        "mailbridge's app can send as every mailbox of this practice (tenant-wide Mail.Send), including the doctors'.",
        "Die App von mailbridge kann als jedes Postfach dieser Praxis senden (mandantenweites Mail.Send), auch als die der Ärztinnen und Ärzte.",
    ),
    (
        "roles in the customer's token",
        "Rollen im Token des Kunden",
    ),
    ("tenant-wide", "mandantenweit"),
    // Microsoft's limits: the Sent Items advice for shared scanner mailboxes.
    (
        "Recommended for a shared scanner mailbox: untick this. A shared mailbox has 50 GB and no licence; with a copy of every scan in its Sent Items it fills up over months, and then Microsoft refuses to send (mailbox full).",
        "Empfohlen für ein freigegebenes Scanner-Postfach: abwählen. Ein freigegebenes Postfach hat 50 GB und keine Lizenz; mit einer Kopie jedes Scans in „Gesendete Elemente“ läuft es über Monate voll, und dann verweigert Microsoft das Senden (Postfach voll).",
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
        let mut keys = std::collections::BTreeSet::new();
        let twice: Vec<_> = CATALOGUE
            .iter()
            .filter(|(english, _)| !keys.insert(*english))
            .collect();
        assert!(twice.is_empty(), "translated twice: {twice:?}");
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
