//! The files of the top-level `web/` folder the binary carries, reached from the code
//! in this one place (the templates are askama's, by `askama.toml`; the German
//! catalogue is `mailbridge_core::i18n`'s): the stylesheet and script the pages load,
//! and the data the pages are built from — Microsoft's dates for the migration board
//! and the device-model catalogue.

use axum::{
    Router,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};

/// `web/static/mailbridge.css`, served at `/static/mailbridge.css`.
const STYLESHEET: &str = include_str!("../../../web/static/mailbridge.css");

/// `web/static/mailbridge.js`, served at `/static/mailbridge.js`.
const SCRIPT: &str = include_str!("../../../web/static/mailbridge.js");

/// `web/data/microsoft-deadlines.toml`: Microsoft's dates the migration board counts
/// down to, unless an operator names a file of their own.
pub const MICROSOFT_DEADLINES: &str = include_str!("../../../web/data/microsoft-deadlines.toml");

/// `web/data/device-models.toml`: what is known about device families and their SMTP.
pub const DEVICE_MODELS: &str = include_str!("../../../web/data/device-models.toml");

/// The static files' routes (outside the pages' session middleware).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/static/mailbridge.css", get(stylesheet))
        .route("/static/mailbridge.js", get(script))
}

async fn stylesheet() -> Response {
    serve("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    serve("text/javascript; charset=utf-8", SCRIPT)
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}
