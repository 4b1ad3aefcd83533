//! Model notes for technicians: device families of the common MFP vendors (what
//! they support — TLS versions, AUTH mechanisms, ports — and known quirks), each
//! with the public source it comes from. Read from `web/data/device-models.toml`,
//! built into the binary; the device page and the setup card show the note of the
//! family the technician picked.

use std::sync::LazyLock;

use serde::Deserialize;

/// One device family.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelNote {
    /// Stable key, stored on the device (`ricoh-mp-c307`).
    pub key: String,
    pub vendor: String,
    /// The family as the vendor names it.
    pub family: String,
    /// Models it covers, as printed on the device.
    pub models: Vec<String>,
    /// TLS versions it speaks (`TLS 1.0` … `TLS 1.3`), as the source says.
    pub tls: Vec<String>,
    /// SMTP AUTH mechanisms it offers.
    #[serde(default)]
    pub auth: Vec<String>,
    /// SMTP ports and modes it can use (`587 STARTTLS`, `465 SSL/TLS`).
    #[serde(default)]
    pub ports: Vec<String>,
    /// What a technician should know, in English.
    pub notes: String,
    /// The public source (vendor advisory, manual) the entry comes from.
    pub source: String,
}

impl ModelNote {
    /// Whether the family speaks TLS, but nothing newer than TLS 1.1: it needs the
    /// legacy listener.
    pub fn needs_legacy_tls(&self) -> bool {
        let speaks = |version: &str| self.tls.iter().any(|v| v.contains(version));
        (speaks("1.0") || speaks("1.1")) && !speaks("1.2") && !speaks("1.3")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalogue {
    model: Vec<ModelNote>,
}

static MODELS: LazyLock<Vec<ModelNote>> = LazyLock::new(|| {
    let catalogue: Catalogue = toml::from_str(crate::assets::DEVICE_MODELS)
        .expect("web/data/device-models.toml is valid (checked by a unit test)");
    catalogue.model
});

/// Every family, by vendor.
pub fn all() -> &'static [ModelNote] {
    &MODELS
}

/// The family `key`.
pub fn find(key: &str) -> Option<&'static ModelNote> {
    MODELS.iter().find(|m| m.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_complete_unique_and_sourced() {
        let all = all();
        assert!(!all.is_empty());
        assert!(find("xerox-workcentre-58xx").is_some_and(ModelNote::needs_legacy_tls));
        assert!(!find("ricoh-im-c300").is_some_and(ModelNote::needs_legacy_tls));
        let mut keys: Vec<&str> = all.iter().map(|m| m.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), all.len(), "keys are unique");
        for m in all {
            assert!(
                m.key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}: a key is lowercase letters, digits and dashes",
                m.key
            );
            assert!(m.key.len() <= 100);
            assert!(
                m.source.starts_with("https://") || m.source.starts_with("http://"),
                "{}: every entry names its public source",
                m.key
            );
            assert!(!m.models.is_empty() && !m.tls.is_empty() && !m.notes.is_empty());
        }
    }
}
