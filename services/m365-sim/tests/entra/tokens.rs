//! The client-credentials grant: secrets, certificates, tenants and consent.
//!
//! Over 500 lines: it tests one endpoint, the token endpoint's client-credentials
//! grant: 11 tests of secrets, tenants, consent and scopes, then (from
//! `CertificateSetup` on, about 290 lines) 10 tests of certificate assertions that
//! share that setup.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mailbridge_m365_sim::ClientCredentialKind;
use serde_json::Value;

use crate::harness::{
    AppCertificate, CLIENT_ID, CLIENT_SECRET, GRAPH_DEFAULT, TestSimulator, assertion,
    assertion_claims, now,
};

#[tokio::test]
async fn a_client_secret_gets_a_bearer_token_with_the_consented_graph_roles() {
    let app = TestSimulator::start().await;
    let tenant = app.consented_tenant();

    let answer = app.secret_token(&tenant.to_string(), CLIENT_SECRET).await;

    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["expires_in"], 3599);
    assert_eq!(answer.body["ext_expires_in"], 3599);
    assert!(answer.body.get("refresh_token").is_none());
    let claims = answer.claims("access_token");
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert_eq!(claims["tid"], tenant.to_string());
    assert_eq!(claims["appid"], CLIENT_ID);
    assert_eq!(claims["roles"], serde_json::json!(["Mail.Send"]));
    let record = app.sim.directory.token_requests().pop().unwrap();
    assert_eq!(record.credential, ClientCredentialKind::ClientSecret);
    assert_eq!(record.grant_type, "client_credentials");
    assert_eq!(record.error_code, None);
}

#[tokio::test]
async fn a_client_secret_in_http_basic_is_accepted() {
    let app = TestSimulator::start().await;
    let tenant = app.consented_tenant();

    let response = app
        .http
        .post(app.token_url(&tenant.to_string()))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("scope", GRAPH_DEFAULT),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();

    let answer = TestSimulator::answer(response).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn a_wrong_secret_is_invalid_client_7000215_with_http_401() {
    let app = TestSimulator::start().await;
    let tenant = app.consented_tenant();

    let answer = app
        .secret_token(&tenant.to_string(), "not-the-secret")
        .await;

    assert_eq!(answer.status, 401);
    assert_eq!(answer.error(), "invalid_client");
    assert_eq!(answer.aadsts(), Some(7000215));
    assert!(
        answer
            .description()
            .starts_with("AADSTS7000215: Invalid client secret provided."),
        "{answer:?}"
    );
    for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(answer.body.get(field).is_some(), "{field} in {answer:?}");
    }
}

#[tokio::test]
async fn an_expired_secret_is_7000222_while_a_current_one_still_works() {
    let app = TestSimulator::start().await;
    let tenant = app.consented_tenant();
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    app.sim
        .directory
        .add_client_secret(CLIENT_ID, "old-secret", Some(yesterday));

    let expired = app.secret_token(&tenant.to_string(), "old-secret").await;
    let current = app.secret_token(&tenant.to_string(), CLIENT_SECRET).await;

    assert_eq!(expired.status, 401);
    assert_eq!(expired.aadsts(), Some(7000222));
    assert!(
        expired.description().contains(&format!(
            "The provided client secret keys for app '{CLIENT_ID}' are expired."
        )),
        "{expired:?}"
    );
    assert_eq!(current.status, 200, "{current:?}");
}

#[tokio::test]
async fn a_request_without_any_credential_is_7000218() {
    let app = TestSimulator::start().await;
    let tenant = app.consented_tenant();

    let answer = app
        .token(
            &tenant.to_string(),
            &[
                ("client_id", CLIENT_ID),
                ("scope", GRAPH_DEFAULT),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;

    assert_eq!(answer.aadsts(), Some(7000218), "{answer:?}");
    assert_eq!(answer.error(), "invalid_client");
}

#[tokio::test]
async fn organizations_and_common_name_no_tenant_for_an_app_only_token() {
    let app = TestSimulator::start().await;
    app.consented_tenant();

    for alias in ["organizations", "common"] {
        let answer = app.secret_token(alias, CLIENT_SECRET).await;
        assert_eq!(answer.status, 400, "{alias}: {answer:?}");
        assert_eq!(answer.error(), "invalid_request");
        assert_eq!(answer.aadsts(), Some(50059), "{alias}: {answer:?}");
    }
}

#[tokio::test]
async fn an_unknown_tenant_is_90002() {
    let app = TestSimulator::start().await;

    let answer = app
        .secret_token(&uuid::Uuid::new_v4().to_string(), CLIENT_SECRET)
        .await;

    assert_eq!(answer.aadsts(), Some(90002), "{answer:?}");
}

#[tokio::test]
async fn without_a_service_principal_in_the_tenant_the_app_is_not_found_700016() {
    let app = TestSimulator::start().await;
    let never_consented = uuid::Uuid::new_v4();
    app.sim.directory.add_tenant(never_consented, &[]);
    let removed = app.consented_tenant();
    app.sim
        .directory
        .remove_service_principal(removed, CLIENT_ID);

    for tenant in [never_consented, removed] {
        let answer = app.secret_token(&tenant.to_string(), CLIENT_SECRET).await;
        assert_eq!(answer.error(), "unauthorized_client", "{answer:?}");
        assert_eq!(answer.aadsts(), Some(700016), "{answer:?}");
    }
}

#[tokio::test]
async fn after_consent_is_revoked_the_token_has_no_roles() {
    let app = TestSimulator::start().await;
    let tenant = app.consented_tenant();
    app.sim.directory.revoke_consent(tenant, CLIENT_ID);

    let answer = app.secret_token(&tenant.to_string(), CLIENT_SECRET).await;

    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.claims("access_token").get("roles").is_none());
    assert_eq!(
        app.sim.directory.consented_roles(tenant, CLIENT_ID),
        Some(Vec::new())
    );
}

#[tokio::test]
async fn scopes_are_checked_as_entra_does() {
    let app = TestSimulator::start().await;
    let tenant = app.consented_tenant().to_string();
    let with_scope = |scope: &'static str| {
        [
            ("client_id", CLIENT_ID),
            ("scope", scope),
            ("grant_type", "client_credentials"),
            ("client_secret", CLIENT_SECRET),
        ]
    };

    let missing = app
        .token(
            &tenant,
            &[
                ("client_id", CLIENT_ID),
                ("grant_type", "client_credentials"),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    let not_default = app
        .token(
            &tenant,
            &with_scope("https://graph.microsoft.com/Mail.Send"),
        )
        .await;
    let two_resources = app
        .token(
            &tenant,
            &with_scope(
                "https://graph.microsoft.com/.default https://outlook.office365.com/.default",
            ),
        )
        .await;
    let unknown_resource = app
        .token(&tenant, &with_scope("https://example.invalid/.default"))
        .await;
    let exchange = app
        .token(
            &tenant,
            &with_scope("https://outlook.office365.com/.default"),
        )
        .await;

    assert_eq!(missing.aadsts(), Some(900144), "{missing:?}");
    assert_eq!(not_default.aadsts(), Some(1002012), "{not_default:?}");
    assert_eq!(two_resources.aadsts(), Some(70011), "{two_resources:?}");
    assert_eq!(
        unknown_resource.aadsts(),
        Some(500011),
        "{unknown_resource:?}"
    );
    assert_eq!(unknown_resource.error(), "invalid_resource");
    assert_eq!(exchange.status, 200, "{exchange:?}");
    let claims = exchange.claims("access_token");
    assert_eq!(claims["aud"], "https://outlook.office365.com");
    assert!(claims.get("roles").is_none(), "no SMTP.SendAsApp consented");
}

#[tokio::test]
async fn an_unsupported_grant_is_70003_and_a_missing_one_900144() {
    let app = TestSimulator::start().await;
    let tenant = app.consented_tenant().to_string();

    let password = app
        .token(
            &tenant,
            &[("client_id", CLIENT_ID), ("grant_type", "password")],
        )
        .await;
    let none = app.token(&tenant, &[("client_id", CLIENT_ID)]).await;

    assert_eq!(password.aadsts(), Some(70003), "{password:?}");
    assert_eq!(password.error(), "unsupported_grant_type");
    assert_eq!(none.aadsts(), Some(900144), "{none:?}");
}

/// A tenant, a certificate registered on the relay's app, and the token URL.
struct CertificateSetup {
    app: TestSimulator,
    tenant: String,
    certificate: AppCertificate,
    thumbprints: mailbridge_m365_sim::CertificateThumbprints,
    audience: String,
}

async fn certificate_setup() -> CertificateSetup {
    let app = TestSimulator::start().await;
    let tenant = app.consented_tenant().to_string();
    let certificate = AppCertificate::generate();
    let thumbprints = app
        .sim
        .directory
        .add_certificate(CLIENT_ID, &certificate.der)
        .expect("certificate registered");
    let audience = app.token_url(&tenant);
    CertificateSetup {
        app,
        tenant,
        certificate,
        thumbprints,
        audience,
    }
}

impl CertificateSetup {
    fn signed(&self, algorithm: Algorithm, claims: &Value) -> String {
        assertion(algorithm, &self.thumbprints, &self.certificate.key, claims)
    }

    async fn present(&self, assertion: &str) -> crate::harness::Answer {
        self.app.assertion_token(&self.tenant, assertion).await
    }
}

#[tokio::test]
async fn a_certificate_assertion_signed_rs256_or_ps256_gets_a_token() {
    let setup = certificate_setup().await;

    for algorithm in [Algorithm::RS256, Algorithm::PS256] {
        let assertion = setup.signed(algorithm, &assertion_claims(&setup.audience));
        let answer = setup.present(&assertion).await;
        assert_eq!(answer.status, 200, "{algorithm:?}: {answer:?}");
        assert_eq!(answer.claims("access_token")["roles"][0], "Mail.Send");
    }
    let record = setup.app.sim.directory.token_requests().pop().unwrap();
    assert_eq!(record.credential, ClientCredentialKind::Certificate);
}

#[tokio::test]
async fn a_certificate_may_be_named_by_its_sha1_thumbprint() {
    let setup = certificate_setup().await;
    let mut header = Header::new(Algorithm::RS256);
    header.x5t = Some(setup.thumbprints.x5t.clone());
    let assertion = jsonwebtoken::encode(
        &header,
        &assertion_claims(&setup.audience),
        &setup.certificate.key,
    )
    .unwrap();

    let answer = setup.present(&assertion).await;

    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn an_expired_or_not_yet_valid_assertion_is_700024() {
    let setup = certificate_setup().await;
    let mut expired = assertion_claims(&setup.audience);
    expired["nbf"] = (now() - 7200).into();
    expired["exp"] = (now() - 3600).into();
    let mut early = assertion_claims(&setup.audience);
    early["nbf"] = (now() + 3600).into();
    early["exp"] = (now() + 7200).into();

    for claims in [expired, early] {
        let answer = setup
            .present(&setup.signed(Algorithm::RS256, &claims))
            .await;
        assert_eq!(answer.status, 401, "{answer:?}");
        assert_eq!(answer.aadsts(), Some(700024), "{answer:?}");
        assert!(
            answer
                .description()
                .contains("Client assertion is not within its valid time range. Current time: "),
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn an_assertion_for_another_audience_is_refused() {
    let setup = certificate_setup().await;
    let elsewhere = format!(
        "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
        setup.tenant
    );
    let organizations = setup.app.token_url("organizations");

    for audience in [elsewhere, organizations] {
        let claims = assertion_claims(&audience);
        let answer = setup
            .present(&setup.signed(Algorithm::RS256, &claims))
            .await;
        assert_eq!(answer.status, 401, "{answer:?}");
        assert_eq!(answer.aadsts(), Some(50012), "{answer:?}");
    }
}

#[tokio::test]
async fn an_unknown_certificate_is_700027_key_not_found() {
    let setup = certificate_setup().await;
    let stranger = AppCertificate::generate();
    let other = setup
        .app
        .sim
        .directory
        .add_certificate("another-app", &stranger.der)
        .unwrap();
    let assertion = assertion(
        Algorithm::RS256,
        &other,
        &stranger.key,
        &assertion_claims(&setup.audience),
    );

    let answer = setup.present(&assertion).await;

    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.aadsts(), Some(700027), "{answer:?}");
    assert!(
        answer.description().contains(
            "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '"
        ),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_signature_by_another_key_is_700027_signature_mismatch() {
    let setup = certificate_setup().await;
    let impostor = AppCertificate::generate();
    let assertion = assertion(
        Algorithm::RS256,
        &setup.thumbprints,
        &impostor.key,
        &assertion_claims(&setup.audience),
    );

    let answer = setup.present(&assertion).await;

    assert_eq!(answer.aadsts(), Some(700027), "{answer:?}");
    assert!(
        answer.description().contains(
            "[Reason - The provided signature value did not match the expected signature value."
        ),
        "{answer:?}"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_700027_key_expired() {
    let setup = certificate_setup().await;
    let old = AppCertificate::generate_expired();
    let thumbprints = setup
        .app
        .sim
        .directory
        .add_certificate(CLIENT_ID, &old.der)
        .unwrap();
    let assertion = assertion(
        Algorithm::RS256,
        &thumbprints,
        &old.key,
        &assertion_claims(&setup.audience),
    );

    let answer = setup.present(&assertion).await;

    assert_eq!(answer.aadsts(), Some(700027), "{answer:?}");
    assert!(
        answer.description().contains("The key used is expired."),
        "{answer:?}"
    );
}

#[tokio::test]
async fn missing_claims_are_90014_naming_the_field() {
    let setup = certificate_setup().await;

    for field in ["aud", "iss", "sub", "jti"] {
        let mut claims = assertion_claims(&setup.audience);
        claims.as_object_mut().unwrap().remove(field);
        let answer = setup
            .present(&setup.signed(Algorithm::RS256, &claims))
            .await;
        assert_eq!(answer.status, 400, "{field}: {answer:?}");
        assert_eq!(answer.aadsts(), Some(90014), "{field}: {answer:?}");
        assert!(
            answer.description().contains(&format!(
                "The required field '{field}' is missing from the credential."
            )),
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn issuer_and_subject_must_both_be_the_client_id() {
    let setup = certificate_setup().await;
    let mut other_app = assertion_claims(&setup.audience);
    other_app["iss"] = "another-app".into();
    other_app["sub"] = "another-app".into();
    let mut mismatched = assertion_claims(&setup.audience);
    mismatched["sub"] = "someone-else".into();

    let other = setup
        .present(&setup.signed(Algorithm::RS256, &other_app))
        .await;
    let split = setup
        .present(&setup.signed(Algorithm::RS256, &mismatched))
        .await;

    assert_eq!(other.aadsts(), Some(700021), "{other:?}");
    assert!(
        other.description().contains(
            "Client assertion application identifier doesn't match 'client_id' parameter."
        )
    );
    assert_eq!(split.aadsts(), Some(50048), "{split:?}");
}

#[tokio::test]
async fn malformed_assertions_are_refused_with_entras_codes() {
    let setup = certificate_setup().await;
    let claims = assertion_claims(&setup.audience);
    let hmac = {
        let mut header = Header::new(Algorithm::HS256);
        header.x5t_s256 = Some(setup.thumbprints.x5t_s256.clone());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"shared")).unwrap()
    };
    let unnamed = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &setup.certificate.key,
    )
    .unwrap();

    let hs256 = setup.present(&hmac).await;
    let no_thumbprint = setup.present(&unnamed).await;
    let garbage = setup.present("not-a-jwt").await;
    let wrong_type = setup
        .app
        .token(
            &setup.tenant,
            &[
                ("client_id", CLIENT_ID),
                ("scope", GRAPH_DEFAULT),
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:example:password"),
                ("client_assertion", &setup.signed(Algorithm::RS256, &claims)),
            ],
        )
        .await;
    let no_type = setup
        .app
        .token(
            &setup.tenant,
            &[
                ("client_id", CLIENT_ID),
                ("scope", GRAPH_DEFAULT),
                ("grant_type", "client_credentials"),
                ("client_assertion", &setup.signed(Algorithm::RS256, &claims)),
            ],
        )
        .await;

    assert_eq!(hs256.aadsts(), Some(5002738), "{hs256:?}");
    assert!(
        hs256
            .description()
            .contains("'HS256' is not a supported signature algorithm")
    );
    assert_eq!(no_thumbprint.aadsts(), Some(5002723), "{no_thumbprint:?}");
    assert_eq!(garbage.aadsts(), Some(50027), "{garbage:?}");
    assert_eq!(wrong_type.aadsts(), Some(90011), "{wrong_type:?}");
    assert_eq!(no_type.aadsts(), Some(900144), "{no_type:?}");
    assert!(no_type.description().contains("'client_assertion_type'"));
}
