//! The page's language: the `mailbridge_lang` cookie (set by the switch in the page
//! header), else the browser's `Accept-Language`, else English; and the translator
//! pages render with. Texts are written in English in the templates and the code and
//! translated through the one catalogue (`mailbridge_core::i18n`, `web/i18n/de.po`).
//! A test checks that every text the templates and the code use has its German, and
//! that the catalogue holds nothing unused.

use axum::{
    extract::{FromRequestParts, Path, Query},
    http::{HeaderMap, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use mailbridge_core::i18n;
pub use mailbridge_core::i18n::Lang;
use serde::Deserialize;

use crate::cookies;

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
        i18n::translate(self.0, english)
    }

    /// A text with `{}` replaced by `value`.
    pub fn fill(&self, english: &str, value: &str) -> String {
        i18n::fill(self.0, english, value)
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

/// The language of a request, signed in or not, as the pages' middleware found it
/// (English where none ran).
impl<S: Send + Sync> FromRequestParts<S> for Tr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Tr>()
            .copied()
            .unwrap_or(Tr::new(Lang::En)))
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

/// The request's language: the cookie, then `Accept-Language`, then English.
pub fn negotiate(headers: &HeaderMap) -> Lang {
    match cookies::get(headers, cookies::LANG) {
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
            format!(
                "{}={lang}; Path=/; Max-Age=31536000; SameSite=Lax",
                cookies::LANG
            ),
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

    /// A string literal (Rust or askama) starting at `source[at..]` after blanks,
    /// unescaped, and where it ends.
    fn literal(source: &str, at: usize) -> Option<(String, usize)> {
        let rest = &source[at..];
        let start = at + (rest.len() - rest.trim_start().len());
        let body = source[start..].strip_prefix('"')?;
        let mut text = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => text.push('\n'),
                    // A continued line: the next line's leading blanks go too.
                    '\n' => while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {},
                    other => text.push(other),
                },
                '"' => return Some((text, start + 1 + i + 1)),
                c => text.push(c),
            }
        }
        None
    }

    /// Every text the templates and the code hand to the translator — `t("…")`,
    /// `fill("…")`, `tr!("…")`, the `mailbridge_core::i18n` functions, the control
    /// plane's error texts and every diagnosis — has its German in `web/i18n/de.po`,
    /// and the catalogue holds nothing that nothing uses.
    #[test]
    fn every_text_has_its_german() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let mut used = std::collections::BTreeSet::new();
        let mut scan = |source: &str, markers: &[&str]| {
            for marker in markers {
                for (at, _) in source.match_indices(marker) {
                    let before = source[..at].chars().next_back();
                    if marker.starts_with(|c: char| c.is_alphabetic())
                        && before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    {
                        continue;
                    }
                    let mut from = at + marker.len();
                    // The core functions take the language first.
                    if marker.starts_with("i18n::") {
                        let Some(comma) = source[from..].find(',') else {
                            continue;
                        };
                        from += comma + 1;
                    }
                    let Some((text, end)) = literal(source, from) else {
                        continue;
                    };
                    // thiserror's own placeholders are for logs, not for pages.
                    if text.contains("{0}") || text == "{}" {
                        continue;
                    }
                    used.insert(text);
                    // A counted text: its plural form follows.
                    if *marker == "i18n::plural(" {
                        let after = source[end..].trim_start().strip_prefix(',');
                        if let Some(after) = after {
                            let at = source.len() - after.len();
                            if let Some((other, _)) = literal(source, at) {
                                used.insert(other);
                            }
                        }
                    }
                }
            }
        };
        let core_markers = [
            "tr!(",
            "i18n::translate(",
            "i18n::fill(",
            "i18n::format(",
            "i18n::plural(",
        ];
        let web_markers = [
            ".t(",
            ".fill(",
            "tr!(",
            "#[error(",
            "i18n::translate(",
            "i18n::fill(",
            "i18n::format(",
            "i18n::plural(",
        ];
        for (dir, markers) in [
            ("web/templates", &web_markers[..]),
            ("services/web/src", &web_markers[..]),
            ("services/core/src", &core_markers[..]),
            ("services/m365/src", &core_markers[..]),
            ("services/worker/src", &core_markers[..]),
        ] {
            // The folder and its subfolders (the store's modules, say).
            let mut folders = vec![std::path::PathBuf::from(format!("{root}/{dir}"))];
            while let Some(folder) = folders.pop() {
                for entry in std::fs::read_dir(folder).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        folders.push(path);
                    } else if path.file_name().is_some_and(|n| n != "i18n.rs") {
                        scan(&std::fs::read_to_string(&path).unwrap(), markers);
                    }
                }
            }
        }
        for d in mailbridge_core::diagnosis::ALL {
            used.insert(d.title(Lang::En).to_owned());
            used.insert(d.fix(Lang::En).to_owned());
        }
        let german = i18n::german();
        let missing: Vec<_> = used
            .iter()
            .filter(|text| !german.entries().any(|(en, _)| en == text.as_str()))
            .collect();
        assert!(missing.is_empty(), "no German for: {missing:#?}");
        let unused: Vec<_> = german
            .entries()
            .map(|(en, _)| en)
            .filter(|en| !used.contains(*en))
            .collect();
        assert!(unused.is_empty(), "translations nothing uses: {unused:#?}");
    }
}
