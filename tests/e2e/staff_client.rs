//! A member of MSP staff using the control plane over plain HTTP: signs in through
//! the simulated Entra ID (the real OIDC flow: authorize, callback, code redemption),
//! keeps the cookies a browser would, and posts forms with the session's CSRF token.

use std::collections::BTreeMap;

use reqwest::{StatusCode, header};

use crate::harness::TestApp;

/// An HTTP answer: status, `Location`, body.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
    pub headers: header::HeaderMap,
}

impl Page {
    /// The text of the element with `id`, tags stripped.
    pub fn text_of(&self, id: &str) -> Option<String> {
        let start = self.body.find(&format!("id=\"{id}\""))?;
        let open_end = start + self.body[start..].find('>')? + 1;
        let rest = &self.body[open_end..];
        let mut depth = 0usize;
        let mut text = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '<' {
                let tag: String = chars.by_ref().take_while(|c| *c != '>').collect();
                if tag.starts_with('/') {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                } else if !tag.ends_with('/') {
                    depth += 1;
                }
            } else {
                text.push(c);
            }
        }
        Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

pub struct StaffClient {
    http: reqwest::Client,
    sim: reqwest::Client,
    pub base: String,
    cookies: BTreeMap<String, String>,
    pub csrf: String,
}

impl StaffClient {
    /// A browser with no session.
    pub fn anonymous(app: &TestApp) -> Self {
        mailbridge_core::tls::install_crypto_provider();
        let tls = mailbridge_core::tls::client_config(app.stack.settings.extra_ca_file.as_deref())
            .expect("trusting the simulator's CA");
        let sim = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            sim,
            base: format!("http://{}", app.stack.web_addr),
            cookies: BTreeMap::new(),
            csrf: String::new(),
        }
    }

    /// Invites `email` with `role` (as `mailbridge staff add` does) and signs in.
    pub async fn sign_in_as(app: &TestApp, email: &str, role: &str) -> Self {
        let role = mailbridge_web::Role::ALL
            .into_iter()
            .find(|r| r.as_str() == role)
            .expect("a role");
        mailbridge_web::add_staff(app.pool(), email, role)
            .await
            .expect("inviting");
        Self::sign_in(app, email).await
    }

    /// Signs in as `email` (a user of the simulated MSP tenant, added if needed), with
    /// whatever role they have — none, waiting for approval, if never invited.
    pub async fn sign_in(app: &TestApp, email: &str) -> Self {
        app.stack
            .add_staff_user(email, &email.replace(['.', '@'], " "));
        let mut client = Self::anonymous(app);
        let callback = client.authorize(email).await;
        let done = client.get_absolute(&callback).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        let home = client.get("/").await;
        assert_eq!(home.status, StatusCode::OK, "{}", home.body);
        client.csrf = csrf_of(&home.body).expect("a CSRF token on the page");
        client
    }

    /// Starts a sign-in and answers the simulated sign-in page as `email`; returns
    /// the callback URL Entra sends the browser back to.
    pub async fn authorize(&mut self, email: &str) -> String {
        self.authorize_from("/sign-in/start?next=/", email).await
    }

    /// Like [`Self::authorize`], starting at `start` (`/sign-in/start?…`).
    pub async fn authorize_from(&mut self, start: &str, email: &str) -> String {
        let start = self.get(start).await;
        assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
        let authorize = start.location.expect("redirect to the provider");
        let answer = self
            .sim
            .get(format!("{authorize}&sim_user={email}"))
            .send()
            .await
            .expect("simulated sign-in");
        answer
            .headers()
            .get(header::LOCATION)
            .expect("back to mailbridge")
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// Follows a redirect to the simulator (the consent page) with `query` appended,
    /// and returns where it sends the browser back to.
    pub async fn answer_at_simulator(&self, url: &str, query: &str) -> String {
        let answer = self
            .sim
            .get(format!("{url}&{query}"))
            .send()
            .await
            .expect("simulator");
        match answer.headers().get(header::LOCATION) {
            Some(location) => location.to_str().unwrap().to_owned(),
            None => panic!(
                "the simulator did not redirect: {} {}",
                answer.status(),
                answer.text().await.unwrap_or_default()
            ),
        }
    }

    /// Clicks Cancel on the simulated sign-in page at `authorize`; returns where the
    /// browser is sent back to.
    pub async fn cancel_sign_in(&self, authorize: &str) -> String {
        let answer = self
            .sim
            .post(authorize)
            .form(&[("action", "cancel")])
            .send()
            .await
            .expect("simulator");
        answer
            .headers()
            .get(header::LOCATION)
            .unwrap_or_else(|| panic!("the simulator did not redirect: {}", answer.status()))
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn keep(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all(header::SET_COOKIE) {
            let value = value.to_str().unwrap();
            let pair = value.split(';').next().unwrap();
            let (name, content) = pair.split_once('=').unwrap();
            if content.is_empty() || value.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), content.to_owned());
            }
        }
        let status = response.status();
        let headers = response.headers().clone();
        let location = headers
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        let body = response.text().await.expect("body");
        if let Some(csrf) = csrf_of(&body) {
            self.csrf = csrf;
        }
        Page {
            status,
            location,
            body,
            headers,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let url = format!("{}{path}", self.base);
        self.get_absolute(&url).await
    }

    pub async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Page {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, self.cookie_header());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("GET");
        self.keep(response).await
    }

    pub async fn get_absolute(&mut self, url: &str) -> Page {
        let response = self
            .http
            .get(url)
            .header(header::COOKIE, self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.keep(response).await
    }

    /// Posts a form as the page would: with the session's CSRF token and our Origin.
    /// A form answered with the page of a once-shown secret (a device password, an
    /// API token) is followed there, as a browser does: the answer is that page.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone();
        let mut fields: Vec<(&str, &str)> = vec![("csrf", &csrf)];
        fields.extend_from_slice(form);
        let page = self.post_raw(path, &fields, Some(&self.base.clone())).await;
        match &page.location {
            Some(to)
                if page.status == StatusCode::SEE_OTHER
                    && (to.ends_with("/credential") || to.ends_with("/created")) =>
            {
                let to = to.clone();
                self.get(&to).await
            }
            _ => page,
        }
    }

    /// Like [`Self::post`], with extra request headers.
    pub async fn post_with_headers(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let csrf = self.csrf.clone();
        let mut fields: Vec<(&str, &str)> = vec![("csrf", &csrf)];
        fields.extend_from_slice(form);
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, self.cookie_header())
            .header(header::ORIGIN, self.base.clone())
            .form(&fields);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("POST");
        self.keep(response).await
    }

    /// Posts exactly `form`, with `origin` as the Origin header if given.
    pub async fn post_raw(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Page {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, self.cookie_header())
            .form(form);
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        let response = request.send().await.expect("POST");
        self.keep(response).await
    }

    /// Uploads a file as a page's `multipart/form-data` form would: the session's
    /// CSRF token as a part of its own, our Origin.
    pub async fn post_file(
        &mut self,
        path: &str,
        field: &str,
        file_name: &str,
        bytes: &[u8],
    ) -> Page {
        let boundary = format!("----mailbridge{}", uuid::Uuid::new_v4().simple());
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\nContent-Type: text/csv\r\n\r\n",
            self.csrf
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, self.cookie_header())
            .header(header::ORIGIN, self.base.clone())
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("POST");
        self.keep(response).await
    }

    pub fn has_cookie(&self, name: &str) -> bool {
        self.cookies.contains_key(name)
    }
}

/// The CSRF token in a page's forms.
pub fn csrf_of(body: &str) -> Option<String> {
    let at = body.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(body[at..].split('"').next()?.to_owned())
}

/// The id in a `Location` like `/customers/<id>?notice=created`.
pub fn id_in(location: &str, after: &str) -> uuid::Uuid {
    let at = location.find(after).expect("the path") + after.len();
    let id: String = location[at..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
        .collect();
    uuid::Uuid::parse_str(&id).expect("an id")
}
