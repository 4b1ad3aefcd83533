//! A simulator started per test, an HTTPS client that trusts it, and builders for
//! the requests and credentials the tests send.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mailbridge_m365_sim::{CertificateThumbprints, Simulator};
use serde_json::Value;
use uuid::Uuid;

pub const CLIENT_ID: &str = "5d3c9a1e-7f4b-4c2a-9e8d-1b2c3d4e5f60";
pub const CLIENT_SECRET: &str = "relay-secret~value";
pub const CALLBACK: &str = "https://relay.example-msp.net/customers/consent/callback";
pub const GRAPH_DEFAULT: &str = "https://graph.microsoft.com/.default";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A running simulator and a client for it.
pub struct TestSimulator {
    pub sim: Simulator,
    pub http: reqwest::Client,
    _ca_file: tempfile::NamedTempFile,
}

/// An Entra answer: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The AADSTS number of an error answer.
    pub fn aadsts(&self) -> Option<u64> {
        self.body["error_codes"][0].as_u64()
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    pub fn description(&self) -> &str {
        self.body["error_description"].as_str().unwrap_or_default()
    }

    /// The claims of the `access_token` (or another token field), unverified.
    pub fn claims(&self, field: &str) -> Value {
        let token = self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field}: {self:?}"));
        jsonwebtoken::dangerous::insecure_decode::<Value>(token)
            .expect("a JWT")
            .claims
    }
}

/// A certificate and its private key, as an MSP would create for its app.
pub struct AppCertificate {
    pub der: Vec<u8>,
    pub key: EncodingKey,
}

impl AppCertificate {
    pub fn generate() -> Self {
        Self::generate_with(|_| {})
    }

    /// A certificate whose validity ended years ago.
    pub fn generate_expired() -> Self {
        Self::generate_with(|params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn generate_with(adjust: impl FnOnce(&mut rcgen::CertificateParams)) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mailbridge relay");
        adjust(&mut params);
        let certificate = params.self_signed(&key).expect("self-signed certificate");
        Self {
            der: certificate.der().to_vec(),
            key: EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).expect("PEM key"),
        }
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a well-formed client assertion for `audience`.
pub fn assertion_claims(audience: &str) -> Value {
    serde_json::json!({
        "aud": audience,
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "jti": Uuid::new_v4().to_string(),
        "nbf": now() - 10,
        "exp": now() + 600,
    })
}

/// A client assertion signed with `key`, naming the certificate by `x5t#S256`.
pub fn assertion(
    algorithm: Algorithm,
    thumbprints: &CertificateThumbprints,
    key: &EncodingKey,
    claims: &Value,
) -> String {
    let mut header = Header::new(algorithm);
    header.x5t_s256 = Some(thumbprints.x5t_s256.clone());
    jsonwebtoken::encode(&header, claims, key).expect("signed assertion")
}

impl TestSimulator {
    /// A simulator with the relay's app registered (secret, redirect URI, Graph
    /// `Mail.Send` requested) and no tenants.
    pub async fn start() -> Self {
        mailbridge_core::tls::install_crypto_provider();
        let sim = Simulator::start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("simulator starts");
        let ca_file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(ca_file.path(), sim.ca_pem()).expect("CA written");
        let tls = mailbridge_core::tls::client_config(Some(ca_file.path())).expect("TLS config");
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("HTTP client");
        let directory = &sim.directory;
        directory.register_app(CLIENT_ID, CLIENT_SECRET);
        directory.set_app_display_name(CLIENT_ID, "mailbridge relay");
        directory.set_redirect_uris(CLIENT_ID, &[CALLBACK]);
        directory.set_requested_permissions(CLIENT_ID, &["Mail.Send"]);
        Self {
            sim,
            http,
            _ca_file: ca_file,
        }
    }

    pub fn base(&self) -> String {
        self.sim.base_url()
    }

    /// A customer tenant whose admin consented `Mail.Send` to the relay.
    pub fn consented_tenant(&self) -> Uuid {
        let tenant = Uuid::new_v4();
        self.sim
            .directory
            .add_tenant(tenant, &["scanner@praxis.example"]);
        self.sim
            .directory
            .consent(tenant, CLIENT_ID, &["Mail.Send"]);
        tenant
    }

    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base())
    }

    /// POSTs a token request form to `/{tenant}/oauth2/v2.0/token`.
    pub async fn token(&self, tenant: &str, form: &[(&str, &str)]) -> Answer {
        let response = self
            .http
            .post(self.token_url(tenant))
            .form(form)
            .send()
            .await
            .expect("token endpoint answers");
        Self::answer(response).await
    }

    /// A client-credentials request for Graph with the relay's secret.
    pub async fn secret_token(&self, tenant: &str, secret: &str) -> Answer {
        self.token(
            tenant,
            &[
                ("client_id", CLIENT_ID),
                ("scope", GRAPH_DEFAULT),
                ("grant_type", "client_credentials"),
                ("client_secret", secret),
            ],
        )
        .await
    }

    /// A client-credentials request for Graph with a client assertion.
    pub async fn assertion_token(&self, tenant: &str, assertion: &str) -> Answer {
        self.token(
            tenant,
            &[
                ("client_id", CLIENT_ID),
                ("scope", GRAPH_DEFAULT),
                ("grant_type", "client_credentials"),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion),
            ],
        )
        .await
    }

    pub async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let body = response.json().await.expect("a JSON body");
        Answer { status, body }
    }

    /// GETs `url` and returns the status and the `Location` header, if any.
    pub async fn visit(&self, url: &str) -> (u16, Option<String>, String) {
        let response = self.http.get(url).send().await.expect("page answers");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| v.to_str().expect("ASCII location").to_owned());
        (status, location, response.text().await.unwrap_or_default())
    }
}

/// The query parameters of a URL, by name.
pub fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .expect("absolute URL")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
