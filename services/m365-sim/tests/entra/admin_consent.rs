//! Admin consent, v2 and v1: the page, its answers, and what they grant.

use mailbridge_m365_sim::{ConsentDecision, ROLE_MAIL_SEND, ROLE_SMTP_SEND_AS_APP};
use uuid::Uuid;

use crate::harness::{CALLBACK, CLIENT_ID, CLIENT_SECRET, TestSimulator, query_of};

/// A customer tenant that has not consented yet.
fn customer(app: &TestSimulator, name: &str) -> Uuid {
    let tenant = Uuid::new_v4();
    app.sim
        .directory
        .add_tenant(tenant, &["scanner@praxis.example"]);
    app.sim.directory.set_tenant_name(tenant, name);
    tenant
}

fn v2_url(app: &TestSimulator, tenant: &str, redirect_uri: &str, extra: &str) -> String {
    let mut url = url::Url::parse(&format!("{}/{tenant}/v2.0/adminconsent", app.base())).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("scope", "https://graph.microsoft.com/.default")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", "st-42");
    format!("{url}{extra}")
}

fn v1_url(app: &TestSimulator, tenant: &str) -> String {
    let mut url = url::Url::parse(&format!("{}/{tenant}/adminconsent", app.base())).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("state", "st-1")
        .append_pair("redirect_uri", CALLBACK);
    url.into()
}

#[tokio::test]
async fn v2_accept_grants_the_requested_graph_roles_and_returns_to_the_relay() {
    let app = TestSimulator::start().await;
    let tenant = customer(&app, "Praxis Dr. Huber");
    let url = v2_url(
        &app,
        "organizations",
        CALLBACK,
        &format!("&sim_auto=accept&sim_tenant={tenant}"),
    );

    let (status, location, _) = app.visit(&url).await;

    assert_eq!(status, 302);
    let location = location.expect("a redirect");
    assert!(location.starts_with(CALLBACK), "{location}");
    let query = query_of(&location);
    assert_eq!(query["admin_consent"], "True");
    assert_eq!(query["tenant"], tenant.to_string());
    assert_eq!(query["state"], "st-42");
    assert!(
        query["scope"].contains("https://graph.microsoft.com/Mail.Send"),
        "{query:?}"
    );
    assert_eq!(
        app.sim.directory.consented_roles(tenant, CLIENT_ID),
        Some(vec![ROLE_MAIL_SEND.to_owned()])
    );
    // The consent is real: the relay's verifying token request now succeeds.
    let token = app.secret_token(&tenant.to_string(), CLIENT_SECRET).await;
    assert_eq!(token.status, 200, "{token:?}");
    assert_eq!(token.claims("access_token")["roles"][0], "Mail.Send");
    let record = app.sim.directory.admin_consents().pop().unwrap();
    assert!(record.accepted);
    assert_eq!(record.endpoint_version, "v2");
}

#[tokio::test]
async fn v2_cancel_returns_access_denied_65004_with_admin_consent_true() {
    let app = TestSimulator::start().await;
    let tenant = customer(&app, "Praxis Dr. Huber");
    let url = v2_url(&app, &tenant.to_string(), CALLBACK, "&sim_auto=cancel");

    let (status, location, _) = app.visit(&url).await;

    assert_eq!(status, 302);
    let query = query_of(&location.unwrap());
    assert_eq!(query["error"], "access_denied");
    assert!(
        query["error_description"]
            .starts_with("AADSTS65004: User declined to consent to access the app."),
        "{query:?}"
    );
    assert_eq!(query["admin_consent"], "True");
    assert_eq!(query["state"], "st-42");
    assert!(!query.contains_key("tenant"));
    assert_eq!(app.sim.directory.consented_roles(tenant, CLIENT_ID), None);
}

#[tokio::test]
async fn v1_accept_grants_every_requested_role_and_cancel_is_permission_denied() {
    let app = TestSimulator::start().await;
    app.sim
        .directory
        .set_requested_permissions(CLIENT_ID, &[ROLE_MAIL_SEND, ROLE_SMTP_SEND_AS_APP]);
    let tenant = customer(&app, "Labor Nord");
    app.sim.directory.set_default_admin_tenant(Some(tenant));

    let (_, accepted, _) = app
        .visit(&format!("{}&sim_auto=accept", v1_url(&app, "common")))
        .await;
    let (_, cancelled, _) = app
        .visit(&format!("{}&sim_auto=cancel", v1_url(&app, "common")))
        .await;

    let accepted = query_of(&accepted.unwrap());
    assert_eq!(accepted["admin_consent"], "True");
    assert_eq!(accepted["tenant"], tenant.to_string());
    assert_eq!(accepted["state"], "st-1");
    assert!(!accepted.contains_key("scope"));
    let mut roles = app
        .sim
        .directory
        .consented_roles(tenant, CLIENT_ID)
        .unwrap();
    roles.sort();
    assert_eq!(roles, vec![ROLE_MAIL_SEND, ROLE_SMTP_SEND_AS_APP]);
    let cancelled = query_of(&cancelled.unwrap());
    assert_eq!(cancelled["error"], "permission_denied");
    assert_eq!(
        cancelled["error_description"],
        "The admin canceled the request"
    );
}

#[tokio::test]
async fn an_unregistered_redirect_uri_stays_on_entras_error_page_50011() {
    let app = TestSimulator::start().await;
    customer(&app, "Praxis Dr. Huber");
    let url = v2_url(
        &app,
        "organizations",
        "https://attacker.example/steal",
        "&sim_auto=accept",
    );

    let (status, location, page) = app.visit(&url).await;

    assert_eq!(status, 400);
    assert_eq!(location, None, "never redirected to an unregistered URI");
    assert!(page.contains("id=\"error\""), "{page}");
    assert!(page.contains("AADSTS50011: The redirect URI"), "{page}");
}

#[tokio::test]
async fn an_unknown_app_stays_on_entras_error_page_700016() {
    let app = TestSimulator::start().await;
    customer(&app, "Praxis Dr. Huber");
    let url = v2_url(&app, "organizations", CALLBACK, "").replace(CLIENT_ID, "no-such-app");

    let (status, location, page) = app.visit(&url).await;

    assert_eq!(status, 400);
    assert_eq!(location, None);
    assert!(page.contains("AADSTS700016"), "{page}");
}

#[tokio::test]
async fn the_page_offers_tenants_and_its_accept_button_posts_the_consent() {
    let app = TestSimulator::start().await;
    let huber = customer(&app, "Praxis Dr. Huber");
    let nord = customer(&app, "Labor Nord");
    let url = v2_url(&app, "organizations", CALLBACK, "");

    let (status, _, page) = app.visit(&url).await;
    assert_eq!(status, 200);
    for id in ["id=\"tenant\"", "id=\"accept\"", "id=\"cancel\""] {
        assert!(page.contains(id), "{id} in {page}");
    }
    assert!(page.contains(&huber.to_string()) && page.contains(&nord.to_string()));
    assert!(page.contains("Mail.Send"));

    // What the browser sends when the admin picks "Labor Nord" and clicks Accept.
    let response = app
        .http
        .post(&url)
        .form(&[
            ("tenant", nord.to_string().as_str()),
            ("decision", "accept"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(query_of(&location)["tenant"], nord.to_string());
    assert!(app.sim.directory.consented_roles(nord, CLIENT_ID).is_some());
    assert_eq!(app.sim.directory.consented_roles(huber, CLIENT_ID), None);
}

#[tokio::test]
async fn a_test_can_answer_the_consent_url_in_rust() {
    let app = TestSimulator::start().await;
    let tenant = customer(&app, "Praxis Dr. Huber");
    let url = v2_url(&app, "organizations", CALLBACK, "");

    let accepted = app
        .sim
        .directory
        .answer_admin_consent(&url, ConsentDecision::Accept, Some(tenant))
        .unwrap();
    let refused = app
        .sim
        .directory
        .answer_admin_consent(
            &v2_url(&app, "organizations", "https://attacker.example/", ""),
            ConsentDecision::Accept,
            Some(tenant),
        )
        .unwrap_err();

    assert_eq!(query_of(&accepted)["tenant"], tenant.to_string());
    assert_eq!(refused.code, 50011);
}

#[tokio::test]
async fn a_consent_reaches_the_token_endpoint_only_after_the_propagation_delay() {
    let app = TestSimulator::start().await;
    let set = app
        .http
        .put(format!("{}/_sim/consent-propagation", app.base()))
        .json(&serde_json::json!({ "seconds": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 204);
    let shown: serde_json::Value = app
        .http
        .get(format!("{}/_sim/consent-propagation", app.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["seconds"], 2.0);

    // A first consent: the app's service principal is not known yet, as before it.
    let tenant = customer(&app, "Praxis Geduld");
    let url = v2_url(&app, &tenant.to_string(), CALLBACK, "");
    let back = app
        .sim
        .directory
        .answer_admin_consent(&url, ConsentDecision::Accept, Some(tenant))
        .unwrap();
    assert_eq!(
        query_of(&back)["admin_consent"],
        "True",
        "the redirect comes at once"
    );
    let early = app.secret_token(&tenant.to_string(), CLIENT_SECRET).await;
    assert_eq!(early.status, 400, "{early:?}");
    assert_eq!(early.aadsts(), Some(700016));

    // A consent again (adding a role) to an app whose roles were revoked: tokens
    // keep the earlier roles — none — until it has propagated.
    let again = customer(&app, "Praxis Wieder");
    app.sim.directory.consent(again, CLIENT_ID, &[]);
    let url = v2_url(&app, &again.to_string(), CALLBACK, "");
    app.sim
        .directory
        .answer_admin_consent(&url, ConsentDecision::Accept, Some(again))
        .unwrap();
    let early = app.secret_token(&again.to_string(), CLIENT_SECRET).await;
    assert_eq!(early.status, 200, "{early:?}");
    assert_eq!(
        early.claims("access_token")["roles"],
        serde_json::Value::Null
    );

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    for tenant in [tenant, again] {
        let late = app.secret_token(&tenant.to_string(), CLIENT_SECRET).await;
        assert_eq!(late.status, 200, "{late:?}");
        assert_eq!(late.claims("access_token")["roles"][0], ROLE_MAIL_SEND);
    }
}
