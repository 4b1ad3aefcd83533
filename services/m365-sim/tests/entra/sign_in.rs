//! Staff sign-in: discovery, the authorization code flow with PKCE and nonce,
//! and the ways a code is refused.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mailbridge_m365_sim::ClientCredentialKind;
use serde_json::Value;
use uuid::Uuid;

use crate::harness::{Answer, TestSimulator, query_of};

const WEB_CLIENT_ID: &str = "0b7e6f2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
const WEB_SECRET: &str = "control-plane-secret";
const WEB_CALLBACK: &str = "https://relay.example-msp.net/auth/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// The MSP's tenant with one technician, and the control plane registered.
struct SignInSetup {
    app: TestSimulator,
    tenant: Uuid,
    oid: Uuid,
}

async fn sign_in_setup() -> SignInSetup {
    let app = TestSimulator::start().await;
    let tenant = Uuid::new_v4();
    let directory = &app.sim.directory;
    directory.set_tenant_name(tenant, "Example MSP");
    let oid = directory.add_user(tenant, "anna@example-msp.net", "Anna Technikerin");
    directory.add_user(tenant, "ben@example-msp.net", "Ben Admin");
    directory.register_sign_in_app(WEB_CLIENT_ID, WEB_SECRET, &[WEB_CALLBACK]);
    SignInSetup { app, tenant, oid }
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

impl SignInSetup {
    fn authorize_url(&self, segment: &str, extra: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&format!(
            "{}/{segment}/oauth2/v2.0/authorize",
            self.app.base()
        ))
        .unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", WEB_CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", WEB_CALLBACK)
            .append_pair("scope", "openid profile email")
            .append_pair("state", "csrf-7")
            .append_pair("nonce", "nonce-9")
            .append_pair("code_challenge", &challenge(VERIFIER))
            .append_pair("code_challenge_method", "S256")
            .extend_pairs(extra);
        url.into()
    }

    /// Signs Anna in without the page and returns the code.
    async fn code(&self) -> String {
        let url = self.authorize_url("organizations", &[("sim_user", "anna@example-msp.net")]);
        let (status, location, page) = self.app.visit(&url).await;
        assert_eq!(status, 302, "{page}");
        let query = query_of(&location.unwrap());
        assert_eq!(query["state"], "csrf-7");
        query["code"].clone()
    }

    async fn redeem(&self, segment: &str, code: &str, verifier: Option<&str>) -> Answer {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", WEB_CALLBACK),
        ];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier));
        }
        // The `openidconnect` crate's default: client_secret_basic.
        let response = self
            .app
            .http
            .post(self.app.token_url(segment))
            .basic_auth(WEB_CLIENT_ID, Some(WEB_SECRET))
            .form(&form)
            .send()
            .await
            .unwrap();
        TestSimulator::answer(response).await
    }

    async fn json(&self, path: &str) -> Value {
        let response = self
            .app
            .http
            .get(format!("{}{path}", self.app.base()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    }
}

#[tokio::test]
async fn organizations_discovery_has_entras_issuer_template() {
    let setup = sign_in_setup().await;
    let base = setup.app.base();

    let document = setup
        .json("/organizations/v2.0/.well-known/openid-configuration")
        .await;

    assert_eq!(document["issuer"], format!("{base}/{{tenantid}}/v2.0"));
    assert_eq!(
        document["authorization_endpoint"],
        format!("{base}/organizations/oauth2/v2.0/authorize")
    );
    assert_eq!(
        document["token_endpoint"],
        format!("{base}/organizations/oauth2/v2.0/token")
    );
    assert_eq!(
        document["jwks_uri"],
        format!("{base}/organizations/discovery/v2.0/keys")
    );
    assert_eq!(
        document["id_token_signing_alg_values_supported"][0],
        "RS256"
    );
    assert!(
        document["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&"private_key_jwt".into())
    );
}

#[tokio::test]
async fn tenant_discovery_names_the_tenant_and_publishes_the_signing_key() {
    let setup = sign_in_setup().await;
    let base = setup.app.base();
    let tenant = setup.tenant;

    let document = setup
        .json(&format!("/{tenant}/v2.0/.well-known/openid-configuration"))
        .await;
    let keys = setup.json(&format!("/{tenant}/discovery/v2.0/keys")).await;
    let unknown = setup
        .app
        .http
        .get(format!(
            "{base}/{}/v2.0/.well-known/openid-configuration",
            Uuid::new_v4()
        ))
        .send()
        .await
        .unwrap();

    assert_eq!(document["issuer"], format!("{base}/{tenant}/v2.0"));
    assert_eq!(
        document["token_endpoint"],
        format!("{base}/{tenant}/oauth2/v2.0/token")
    );
    let key = &keys["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["e"], "AQAB");
    assert!(key["n"].as_str().unwrap().len() > 300);
    assert!(key["kid"].is_string());
    assert_eq!(unknown.status(), 400);
}

#[tokio::test]
async fn the_code_flow_with_pkce_and_nonce_signs_a_technician_in() {
    let setup = sign_in_setup().await;
    let base = setup.app.base();
    let code = setup.code().await;

    let answer = setup.redeem("organizations", &code, Some(VERIFIER)).await;

    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["token_type"], "Bearer");
    assert!(answer.body["expires_in"].as_i64().unwrap() > 0);
    // Verify the ID token as a relying party does: key from the JWKS, issuer from
    // the template with the token's `tid`, audience = our client id.
    let keys = setup.json("/organizations/discovery/v2.0/keys").await;
    let id_token = answer.body["id_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    let key = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .expect("the signing key is published");
    let decoding =
        DecodingKey::from_rsa_components(key["n"].as_str().unwrap(), key["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[WEB_CLIENT_ID]);
    validation.set_issuer(&[format!("{base}/{}/v2.0", setup.tenant)]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &decoding, &validation)
        .expect("a valid ID token")
        .claims;
    let template = format!("{base}/{{tenantid}}/v2.0");
    assert_eq!(
        claims["iss"],
        template.replace("{tenantid}", claims["tid"].as_str().unwrap())
    );
    assert_eq!(claims["tid"], setup.tenant.to_string());
    assert_eq!(claims["oid"], setup.oid.to_string());
    assert_eq!(claims["nonce"], "nonce-9");
    assert_eq!(claims["name"], "Anna Technikerin");
    assert_eq!(claims["preferred_username"], "anna@example-msp.net");
    assert_eq!(claims["email"], "anna@example-msp.net");
    assert_eq!(claims["ver"], "2.0");
    assert!(claims["sub"].is_string() && claims["iat"].is_i64() && claims["nbf"].is_i64());
    let record = setup.app.sim.directory.token_requests().pop().unwrap();
    assert_eq!(record.grant_type, "authorization_code");
    assert_eq!(record.credential, ClientCredentialKind::ClientSecret);

    let userinfo: Value = setup
        .app
        .http
        .get(format!("{base}/oidc/userinfo"))
        .bearer_auth(answer.body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["sub"], claims["sub"]);
    assert_eq!(userinfo["email"], "anna@example-msp.net");
}

#[tokio::test]
async fn a_code_is_redeemed_once_only() {
    let setup = sign_in_setup().await;
    let code = setup.code().await;

    let first = setup.redeem("organizations", &code, Some(VERIFIER)).await;
    let second = setup.redeem("organizations", &code, Some(VERIFIER)).await;
    let invented = setup
        .redeem("organizations", "1.Anot-a-code", Some(VERIFIER))
        .await;

    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(second.status, 400);
    assert_eq!(second.error(), "invalid_grant");
    assert_eq!(second.aadsts(), Some(54005), "{second:?}");
    assert_eq!(invented.aadsts(), Some(9002313), "{invented:?}");
}

#[tokio::test]
async fn a_wrong_or_missing_pkce_verifier_is_refused() {
    let setup = sign_in_setup().await;

    let wrong = setup
        .redeem(
            "organizations",
            &setup.code().await,
            Some("a-different-verifier-that-is-long-enough-to-pass-43"),
        )
        .await;
    let missing = setup
        .redeem("organizations", &setup.code().await, None)
        .await;

    assert_eq!(wrong.error(), "invalid_grant");
    assert_eq!(wrong.aadsts(), Some(501481), "{wrong:?}");
    assert_eq!(missing.aadsts(), Some(50148), "{missing:?}");
}

#[tokio::test]
async fn an_expired_code_is_70008() {
    let setup = sign_in_setup().await;
    setup
        .app
        .sim
        .directory
        .set_authorization_code_lifetime(std::time::Duration::ZERO);
    let code = setup.code().await;

    let answer = setup.redeem("organizations", &code, Some(VERIFIER)).await;

    assert_eq!(answer.aadsts(), Some(70008), "{answer:?}");
}

#[tokio::test]
async fn a_different_redirect_uri_or_secret_at_redemption_is_refused() {
    let setup = sign_in_setup().await;
    let code = setup.code().await;

    let other_redirect = setup
        .app
        .token(
            "organizations",
            &[
                ("client_id", WEB_CLIENT_ID),
                ("client_secret", WEB_SECRET),
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://relay.example-msp.net/other"),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    let wrong_secret = setup
        .app
        .token(
            "organizations",
            &[
                ("client_id", WEB_CLIENT_ID),
                ("client_secret", "guess"),
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", WEB_CALLBACK),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;

    assert_eq!(other_redirect.aadsts(), Some(500112), "{other_redirect:?}");
    assert_eq!(wrong_secret.aadsts(), Some(7000215), "{wrong_secret:?}");
}

#[tokio::test]
async fn consent_revoked_before_redemption_is_65001() {
    let setup = sign_in_setup().await;
    let code = setup.code().await;
    setup
        .app
        .sim
        .directory
        .revoke_consent(setup.tenant, WEB_CLIENT_ID);

    let answer = setup.redeem("organizations", &code, Some(VERIFIER)).await;

    assert_eq!(answer.error(), "invalid_grant");
    assert_eq!(answer.aadsts(), Some(65001), "{answer:?}");
}

#[tokio::test]
async fn the_sign_in_page_lists_users_and_its_buttons_sign_in_or_cancel() {
    let setup = sign_in_setup().await;
    let url = setup.authorize_url(
        &setup.tenant.to_string(),
        &[("login_hint", "ben@example-msp.net")],
    );

    let (status, _, page) = setup.app.visit(&url).await;
    assert_eq!(status, 200);
    for id in ["id=\"user\"", "id=\"sign-in\"", "id=\"cancel\""] {
        assert!(page.contains(id), "{id} in {page}");
    }
    assert!(page.contains("anna@example-msp.net"));
    assert!(
        page.contains("value=\"ben@example-msp.net\" selected"),
        "{page}"
    );

    let post = |form: Vec<(&'static str, &'static str)>| {
        let request = setup.app.http.post(&url).form(&form);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 302);
            query_of(response.headers()["location"].to_str().unwrap())
        }
    };
    let signed_in = post(vec![("user", "ben@example-msp.net"), ("action", "sign_in")]).await;
    let cancelled = post(vec![("user", "ben@example-msp.net"), ("action", "cancel")]).await;

    assert!(signed_in.contains_key("code"), "{signed_in:?}");
    assert_eq!(signed_in["state"], "csrf-7");
    assert_eq!(cancelled["error"], "access_denied");
    assert_eq!(cancelled["state"], "csrf-7");
}

#[tokio::test]
async fn authorization_requests_are_validated() {
    let setup = sign_in_setup().await;
    let foreign_redirect = setup.authorize_url("organizations", &[]).replace(
        &url::form_urlencoded::byte_serialize(WEB_CALLBACK.as_bytes()).collect::<String>(),
        "https%3A%2F%2Fattacker.example%2F",
    );
    let bad_method = setup
        .authorize_url("organizations", &[])
        .replace("code_challenge_method=S256", "code_challenge_method=S512");
    let silent = setup.authorize_url("organizations", &[("prompt", "none")]);
    let unknown_user =
        setup.authorize_url("organizations", &[("sim_user", "nobody@example-msp.net")]);

    let (status, location, page) = setup.app.visit(&foreign_redirect).await;
    assert_eq!((status, location), (400, None));
    assert!(page.contains("AADSTS50011"), "{page}");
    let (_, location, _) = setup.app.visit(&bad_method).await;
    assert_eq!(query_of(&location.unwrap())["error"], "invalid_request");
    let (_, location, _) = setup.app.visit(&silent).await;
    assert_eq!(query_of(&location.unwrap())["error"], "login_required");
    let (status, _, page) = setup.app.visit(&unknown_user).await;
    assert_eq!(status, 400);
    assert!(page.contains("AADSTS50034"), "{page}");
}

#[tokio::test]
async fn a_test_can_sign_in_through_the_rust_api() {
    let setup = sign_in_setup().await;
    let url = setup.authorize_url(&setup.tenant.to_string(), &[]);

    let callback = setup
        .app
        .sim
        .directory
        .sign_in(&url, "anna@example-msp.net")
        .unwrap();
    let cancelled = setup.app.sim.directory.cancel_sign_in(&url).unwrap();

    assert!(callback.starts_with(WEB_CALLBACK));
    let code = query_of(&callback)["code"].clone();
    let answer = setup
        .redeem(&setup.tenant.to_string(), &code, Some(VERIFIER))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(query_of(&cancelled)["error"], "access_denied");
}
