//! Security headers on every response: a Content-Security-Policy without inline
//! script or style, no framing, no MIME sniffing, no caching of pages (they show
//! customer data), and HSTS when the control plane is served over HTTPS. And the
//! one check of every redirect target that comes from a request ([`local_path`]).

use axum::{
    extract::{Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::Response,
};

use crate::WebState;

pub async fn headers(State(state): State<WebState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // Forms post to us only; the consent and sign-in forms are answered with a
    // redirect to the identity provider, which `form-action` must allow too.
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self' {login} {issuer}; frame-ancestors 'none'; \
         base-uri 'none'",
        login = origin(&state.settings.m365.login_url),
        issuer = state
            .settings
            .web
            .oidc
            .as_ref()
            .map(|o| origin(&o.issuer))
            .unwrap_or_default(),
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if state.secure_cookies() {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// `scheme://host[:port]` of a URL, for the policy.
fn origin(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

/// A redirect target taken from the request (`?back=`, `?next=`, a sign-in's
/// `return_to`) if it is a path of the control plane, else `/`: a single `/`
/// followed by neither `/` nor `\\`, no backslash and no control character — in the
/// value as given and percent-decoded once more, since browsers drop tabs and line
/// ends from a URL (`/%09/evil.example` would become `//evil.example`).
pub fn local_path(target: Option<&str>) -> String {
    target
        .filter(|t| is_local_path(t) && is_local_path(&percent_decoded(t)))
        .unwrap_or("/")
        .to_owned()
}

fn is_local_path(path: &str) -> bool {
    let mut chars = path.chars();
    chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && !path.chars().any(|c| c == '\\' || c.is_control())
}

/// `%XX` sequences decoded (others kept), invalid UTF-8 replaced.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_the_control_plane_are_redirect_targets() {
        for good in [
            "/customers?x=1",
            "/",
            "/messages?state=failed&q=a%20b",
            "/a/b//c",
        ] {
            assert_eq!(local_path(Some(good)), good);
        }
        for evil in [
            "/\tevil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "/%09/evil.example",
            "/%0a/evil.example",
            "/%0D/evil.example",
            "/%2F/evil.example",
            "/%5Cevil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "//evil.example",
            "https://evil.example",
            "evil.example",
            "",
            "/x\u{7f}",
        ] {
            assert_eq!(local_path(Some(evil)), "/", "{evil:?}");
        }
        assert_eq!(local_path(None), "/");
    }
}
