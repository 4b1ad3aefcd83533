//! The cloud the simulator answers as (`mailbridge sim --cloud`, `/_sim/cloud`):
//! public, US Government GCC High or China (21Vianet). Tokens are issued only for
//! that cloud's Graph and Exchange resources, with its name as `aud`; a scope of
//! another cloud is refused as Entra refuses a resource it does not know
//! (`AADSTS500011`), and Graph and Exchange accept only tokens for their own name.
//! Inside, roles keep the public names (`resource_of_role`); the cloud's names are
//! translated at the edges.

use std::sync::Arc;

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
pub use mailbridge_core::cloud::Cloud;
use serde::Deserialize;

use crate::{Directory, EXCHANGE_RESOURCE, GRAPH_RESOURCE};

impl Directory {
    /// Answers as `cloud` from now on.
    pub fn set_cloud(&self, cloud: Cloud) {
        self.lock().cloud = cloud;
    }

    pub fn cloud(&self) -> Cloud {
        self.lock().cloud
    }
}

/// The public name (as roles know it) of `resource` if it is one of `cloud`'s.
pub(crate) fn canonical_resource(cloud: Cloud, resource: &str) -> Option<&'static str> {
    let resource = resource.trim_end_matches('/');
    if resource == cloud.graph_url() {
        Some(GRAPH_RESOURCE)
    } else if resource == cloud.exchange_resource() {
        Some(EXCHANGE_RESOURCE)
    } else {
        None
    }
}

pub fn control_router() -> Router<Arc<Directory>> {
    Router::new().route("/_sim/cloud", get(get_cloud).put(set_cloud))
}

async fn get_cloud(State(directory): State<Arc<Directory>>) -> Json<serde_json::Value> {
    let cloud = directory.cloud();
    Json(serde_json::json!({
        "cloud": cloud.as_str(),
        "login": cloud.login_url(),
        "graph": cloud.graph_url(),
        "exchange_resource": cloud.exchange_resource(),
        "smtp": cloud.smtp_endpoint(),
    }))
}

#[derive(Debug, Deserialize)]
struct SetCloud {
    cloud: String,
}

async fn set_cloud(
    State(directory): State<Arc<Directory>>,
    Json(body): Json<SetCloud>,
) -> Result<StatusCode, (StatusCode, String)> {
    let cloud = body
        .cloud
        .parse()
        .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    directory.set_cloud(cloud);
    Ok(StatusCode::NO_CONTENT)
}
