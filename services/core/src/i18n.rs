//! The product's two languages, through one catalogue: every text mailbridge shows a
//! person — the control plane's pages, the explanations of Microsoft's answers and
//! of device logins, notification and alert mails — is written in English in the
//! code and looked up here for German, gettext-style: the English text is the key,
//! `web/i18n/de.po` holds the German (a PO file, read with `polib`).
//!
//! Placeholders stay in both languages: `{}` is filled in order ([`fill`]), `{name}`
//! by name ([`format`]); counted texts are PO plural entries ([`plural`]). A text
//! with no German falls back to English; the web's `every_text_has_its_german` test
//! makes sure none does.

use std::{collections::HashMap, fmt::Display, sync::LazyLock};

/// A language mailbridge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
}

/// The German catalogue, as the binary carries it.
const GERMAN_PO: &str = include_str!("../../../web/i18n/de.po");

static GERMAN: LazyLock<Catalogue> =
    LazyLock::new(|| Catalogue::parse(GERMAN_PO).unwrap_or_else(|e| panic!("web/i18n/de.po: {e}")));

/// The translations of one language, by English text.
#[derive(Debug, Default)]
pub struct Catalogue {
    singular: HashMap<String, String>,
    /// English singular → (English plural, [German singular, German plural]).
    plural: HashMap<String, (String, [String; 2])>,
}

impl Catalogue {
    /// Reads a PO file. Refuses a text translated twice or left empty, so that a
    /// catalogue that loads is one that can be trusted.
    pub fn parse(po: &str) -> Result<Self, String> {
        let catalog = polib::po_file::parse_from_reader(po.as_bytes())
            .map_err(|e| format!("not a PO file: {e}"))?;
        let mut catalogue = Self::default();
        for message in catalog.messages() {
            let english = message.msgid();
            if message.is_plural() {
                let forms = message
                    .msgstr_plural()
                    .map_err(|e| format!("{english:?}: {e}"))?;
                let [one, other] = forms.as_slice() else {
                    return Err(format!("{english:?}: German has two plural forms"));
                };
                let plural = message.msgid_plural().map_err(|e| e.to_string())?;
                let entry = (plural.to_owned(), [one.clone(), other.clone()]);
                if catalogue.plural.insert(english.to_owned(), entry).is_some() {
                    return Err(format!("translated twice: {english:?}"));
                }
            } else {
                let german = message.msgstr().map_err(|e| format!("{english:?}: {e}"))?;
                if german.is_empty() {
                    return Err(format!("no German for {english:?}"));
                }
                if catalogue
                    .singular
                    .insert(english.to_owned(), german.to_owned())
                    .is_some()
                {
                    return Err(format!("translated twice: {english:?}"));
                }
            }
        }
        // polib keeps one message per msgid: a second one with the same English is
        // only visible in the text.
        let entries = po
            .lines()
            .filter(|l| l.starts_with("msgid \"") && *l != "msgid \"\"")
            .count();
        let known = catalogue.singular.len() + catalogue.plural.len();
        if entries != known {
            return Err(format!(
                "{entries} msgid lines but {known} distinct texts: a text is translated twice"
            ));
        }
        Ok(catalogue)
    }

    /// Every English text (singular forms, and both forms of plural entries) with
    /// its German.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.singular
            .iter()
            .map(|(en, de)| (en.as_str(), de.as_str()))
            .chain(
                self.plural
                    .iter()
                    .flat_map(|(one, (other, [de_one, de_other]))| {
                        [
                            (one.as_str(), de_one.as_str()),
                            (other.as_str(), de_other.as_str()),
                        ]
                    }),
            )
    }

    pub fn get(&self, english: &str) -> Option<&str> {
        self.singular.get(english).map(String::as_str)
    }
}

/// The German catalogue.
pub fn german() -> &'static Catalogue {
    &GERMAN
}

/// `english` in `lang`.
pub fn translate(lang: Lang, english: &str) -> &str {
    match lang {
        Lang::En => english,
        Lang::De => GERMAN.get(english).unwrap_or(english),
    }
}

/// German and English side by side ("Nicht zustellbar / Undeliverable"), for a
/// mail whose reader's language is not known.
pub fn both(english: &str) -> String {
    format!("{} / {english}", translate(Lang::De, english))
}

/// `english` in `lang` with its first `{}` replaced by `value`.
pub fn fill(lang: Lang, english: &str, value: &str) -> String {
    translate(lang, english).replacen("{}", value, 1)
}

/// `english` in `lang` with each `{name}` replaced by its value.
pub fn format(lang: Lang, english: &str, values: &[(&str, &dyn Display)]) -> String {
    substitute(translate(lang, english), values)
}

/// The form of a counted text for `n` in `lang` (`one` for 1, else `other`), with
/// `{n}` and each `{name}` replaced.
pub fn plural(
    lang: Lang,
    one: &str,
    other: &str,
    n: i64,
    values: &[(&str, &dyn Display)],
) -> String {
    let singular = n == 1;
    let text = match (lang, GERMAN.plural.get(one)) {
        (Lang::De, Some((_, [de_one, de_other]))) => {
            if singular {
                de_one.as_str()
            } else {
                de_other.as_str()
            }
        }
        _ if singular => one,
        _ => other,
    };
    let n = n.to_string();
    let mut all: Vec<(&str, &dyn Display)> = vec![("n", &n)];
    all.extend_from_slice(values);
    substitute(text, &all)
}

/// Replaces each `{name}` of `text` in one pass, so that a value that itself holds
/// braces (a device's input, say) is left as it is.
fn substitute(text: &str, values: &[(&str, &dyn Display)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (v, close))
        });
        match value {
            Some((value, close)) => {
                out.push_str(&value.to_string());
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Marks an English text of the code for the catalogue, where it is translated later
/// (or shown to someone whose language is only known then).
#[macro_export]
macro_rules! tr {
    ($text:literal) => {
        $text
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders(text: &str) -> Vec<&str> {
        let mut found: Vec<&str> = text
            .match_indices('{')
            .filter_map(|(at, _)| text[at..].find('}').map(|end| &text[at..=at + end]))
            .collect();
        found.sort_unstable();
        found
    }

    #[test]
    fn the_catalogue_loads_and_keeps_every_placeholder() {
        let german = Catalogue::parse(GERMAN_PO).expect("de.po loads");
        assert!(german.singular.len() > 500);
        for (english, text) in german.entries() {
            assert_eq!(
                placeholders(english),
                placeholders(text),
                "{english:?} → {text:?}"
            );
        }
    }

    /// A PO file with the header `de.po` has and `body`.
    fn po(body: &str) -> String {
        let header = GERMAN_PO
            .split("\n\n")
            .next()
            .expect("de.po starts with its header");
        format!("{header}\n\n{body}")
    }

    #[test]
    fn a_text_translated_twice_or_left_empty_is_refused() {
        let twice = po("msgid \"a\"\nmsgstr \"b\"\n\nmsgid \"a\"\nmsgstr \"c\"\n");
        assert!(Catalogue::parse(&twice).unwrap_err().contains("twice"));
        let empty = po("msgid \"a\"\nmsgstr \"\"\n");
        assert!(Catalogue::parse(&empty).is_err());
        assert!(Catalogue::parse(&po("msgid \"a\"\nmsgstr \"b\"\n")).is_ok());
    }

    #[test]
    fn lookups_fill_and_count() {
        let german = Catalogue::parse(&po(
            "msgid \"{n} device\"\nmsgid_plural \"{n} devices\"\nmsgstr[0] \"{n} Gerät\"\nmsgstr[1] \"{n} Geräte\"\n",
        ))
        .unwrap();
        let (_, [one, other]) = &german.plural["{n} device"];
        assert_eq!((one.as_str(), other.as_str()), ("{n} Gerät", "{n} Geräte"));
        assert_eq!(
            format(Lang::En, "{a} and {b}", &[("a", &1), ("b", &"two")]),
            "1 and two"
        );
        assert_eq!(plural(Lang::En, "{n} time", "{n} times", 3, &[]), "3 times");
        assert_eq!(
            format(Lang::En, "{a} {b}", &[("a", &"{b}"), ("b", &"x")]),
            "{b} x",
            "a value is not substituted again"
        );
        assert_eq!(
            translate(Lang::De, "not in the catalogue"),
            "not in the catalogue"
        );
    }
}
