//! Where a page that answers a form leads back to. Forms are sent with POST and
//! answered with a redirect (303) to a page that can be requested again; what is
//! left are error pages after a form and addresses that only take a form. An error
//! page names the page the form was on (the customer for a device that could not be
//! added, not the list), and a GET of an address that only takes a form — a reload,
//! a language switch, a bookmark — is sent to the page it belongs to instead of a
//! bare 405.

use axum::{
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Redirect, Response},
};

/// The page a form sent to `path` was on: the same-origin `Referer` (the policy
/// sends it only to our own origin), else the page `path` belongs to.
pub fn form_page(headers: &HeaderMap, path: &str) -> String {
    headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| url::Url::parse(r).ok())
        .map(|u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        })
        .map(|p| crate::security::local_path(Some(&p)))
        .filter(|p| p != path)
        .unwrap_or_else(|| page_of(path))
}

/// The page an address that only takes a form belongs to.
pub fn page_of(path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["customers", id, "devices", device, ..] => format!("/customers/{id}/devices/{device}"),
        ["customers", id, "board", ..] => format!("/customers/{id}/board"),
        ["customers", id, ..] => format!("/customers/{id}"),
        ["messages", id, ..] => format!("/messages/{id}"),
        ["staff", ..] => "/staff".to_owned(),
        ["api-tokens", ..] => "/api-tokens".to_owned(),
        _ => "/".to_owned(),
    }
}

/// The pages' answer to a method an address does not take: a GET (or HEAD) goes to
/// the page the address belongs to; anything else is refused.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    if method == Method::GET || method == Method::HEAD {
        let target = crate::security::local_path(Some(&page_of(uri.path())));
        Redirect::to(&target).into_response()
    } else {
        StatusCode::METHOD_NOT_ALLOWED.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_addresses_lead_to_their_page() {
        let c = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let d = "0b7f6c56-54a3-4e0e-9d1d-8e3f3bb0a7a1";
        for (path, page) in [
            (format!("/customers/{c}/devices"), format!("/customers/{c}")),
            (
                format!("/customers/{c}/devices/{d}/rotate"),
                format!("/customers/{c}/devices/{d}"),
            ),
            (
                format!("/customers/{c}/test-message"),
                format!("/customers/{c}"),
            ),
            (
                format!("/customers/{c}/board/link"),
                format!("/customers/{c}/board"),
            ),
            ("/customers".to_owned(), "/".to_owned()),
            (format!("/staff/{c}/customers"), "/staff".to_owned()),
            (format!("/api-tokens/{c}/revoke"), "/api-tokens".to_owned()),
            (format!("/messages/{c}/retry"), format!("/messages/{c}")),
            ("/sign-out".to_owned(), "/".to_owned()),
        ] {
            assert_eq!(page_of(&path), page, "{path}");
        }
    }

    #[test]
    fn the_form_page_is_the_referer_of_our_own_origin_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::REFERER,
            "http://127.0.0.1:8080/customers/abc?notice=created"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            form_page(&headers, "/customers/abc/devices"),
            "/customers/abc?notice=created"
        );
        headers.insert(header::REFERER, "http://x//evil.example/".parse().unwrap());
        assert_eq!(form_page(&headers, "/customers/abc/devices"), "/");
        assert_eq!(
            form_page(&HeaderMap::new(), "/customers/abc/devices"),
            "/customers/abc"
        );
    }
}
