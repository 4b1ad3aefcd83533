//! Mail addresses as the control plane and the queue accept them.

use std::fmt;

/// A mailbox address (`local@domain`), checked for the shape every part relies on:
/// one `@`, non-empty parts, no whitespace or angle brackets, at most 254 octets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a mail address (expected local-part@domain)")]
pub struct InvalidAddress(pub String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, InvalidAddress> {
        let s = raw.trim();
        let valid = s.len() <= 254
            && s.rsplit_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && !domain.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            })
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>".contains(c));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidAddress(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::EmailAddress;

    #[test]
    fn accepts_mailboxes_and_refuses_the_rest() {
        assert_eq!(
            EmailAddress::parse(" scan@praxis.example ")
                .unwrap()
                .domain(),
            "praxis.example"
        );
        for bad in [
            "",
            "praxis.example",
            "@praxis.example",
            "scan@",
            "scan@localhost",
            "a b@x.example",
            "<a@x.example>",
            "a@x.example.",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
