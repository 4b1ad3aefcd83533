//! The API's JSON request body: an axum extractor whose rejection is one of the
//! control plane's errors (`{"error": {"code", "message"}}`), so a body that is not
//! JSON, or not the JSON an operation takes, is answered like every other bad
//! request. Shared by the API router and the handler modules that serve API calls.

use axum::Json;
use axum::extract::{FromRequest, Request, rejection::JsonRejection};
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A JSON body whose rejection is one of our errors.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Error> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Error::Invalid(
                "send the body as JSON with Content-Type: application/json".into(),
            )),
            Err(e) => Err(Error::Invalid(e.body_text())),
        }
    }
}
