//! The control plane's cookies: every cookie's name, reading one from a request,
//! writing a `Set-Cookie` value, and the random tokens the cookies (and sign-in and
//! consent states, API tokens, setup codes) carry, with the hash they are stored by.
//! Over HTTPS the session and flow cookies carry the `__Host-` prefix: the browser
//! then accepts them only `Secure`, for `Path=/` and without `Domain`, so a sibling
//! host cannot plant or overwrite them.

use axum::http::{HeaderMap, header};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;

/// The browser session (a random id whose SHA-256 is stored).
pub fn session_name(secure: bool) -> &'static str {
    if secure {
        "__Host-mailbridge_session"
    } else {
        "mailbridge_session"
    }
}

/// The cookie that binds a sign-in or consent flow to the browser that started it.
pub fn flow_name(secure: bool) -> &'static str {
    if secure {
        "__Host-mailbridge_flow"
    } else {
        "mailbridge_flow"
    }
}

/// The key of a once-shown secret, scoped to the one page that shows it (its path is
/// not `/`, so the prefix is `__Secure-`).
pub fn reveal_name(secure: bool) -> &'static str {
    if secure {
        "__Secure-mailbridge_reveal"
    } else {
        "mailbridge_reveal"
    }
}

/// The language chosen with the switch in the page header.
pub const LANG: &str = "mailbridge_lang";

/// A cookie's value from the request.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (the sign-in and consent callbacks
/// are top-level navigations from Microsoft), Secure over HTTPS; always `Path=/` and
/// never `Domain`, as a `__Host-` name requires.
pub fn set(name: &str, value: &str, max_age_secs: Option<u64>, secure: bool) -> String {
    debug_assert!(
        secure || !name.starts_with("__Host-"),
        "a __Host- cookie must be Secure"
    );
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age_secs {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    cookie
}

/// A `Set-Cookie` value for the one page at `path`, for `max_age_secs` (0 deletes
/// it): HttpOnly, SameSite=Lax, Secure over HTTPS.
pub fn set_for_page(
    name: &str,
    path: &str,
    value: &str,
    max_age_secs: u64,
    secure: bool,
) -> String {
    let mut cookie =
        format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}");
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// 32 random bytes, URL-safe base64.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The hash a token is stored by (never the token itself).
pub use mailbridge_core::store::secret_hash as sha256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "xmailbridge_session=evil; mailbridge_session=abc; other=1"
                .parse()
                .unwrap(),
        );
        assert_eq!(get(&headers, "mailbridge_session"), Some("abc"));
        assert_eq!(get(&headers, "missing"), None);
        let written = set("__Host-mailbridge_session", "v", None, true);
        assert!(
            written.contains("HttpOnly")
                && written.contains("Secure")
                && written.contains("SameSite=Lax")
        );
    }

    #[test]
    fn cookies_over_https_carry_the_host_prefix() {
        for (name, secure) in [(session_name(true), true), (flow_name(true), true)] {
            assert!(name.starts_with("__Host-"), "{name}");
            let written = set(name, "v", Some(600), secure);
            assert!(
                written.contains("; Secure") && written.contains("; Path=/;"),
                "{written}"
            );
            assert!(
                !written.to_ascii_lowercase().contains("domain="),
                "{written}"
            );
        }
        assert!(!flow_name(false).starts_with("__Host-"));
        assert!(!session_name(false).starts_with("__Host-"));
    }
}
