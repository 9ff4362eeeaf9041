//! Request extractors whose every rejection is an [`ApiError`] (JSON, one sentence), so
//! no malformed request gets axum's plain-text answers.

use super::error::{ApiError, ErrorCode};
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("The URL path is not valid: {}.", rejection.body_text()),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("The query string is not valid: {}.", rejection.body_text()),
        )
    }
}

/// A JSON request body. Malformed JSON is a 400, JSON of the wrong shape a 422, another
/// declared content type a 415, a body over the request limit a 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let body = json_body(request, state).await?;
        if body.is_empty() {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "The request needs a JSON body.",
            ));
        }
        parse(&body).map(ApiJson)
    }
}

/// An optional JSON body: an empty one, or `null`, is `None`.
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let body = json_body(request, state).await?;
        if body.is_empty() {
            return Ok(None);
        }
        parse::<Option<T>>(&body).map(|value| value.map(ApiJson))
    }
}

async fn json_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    if let Some(content_type) = request.headers().get(CONTENT_TYPE) {
        let json = content_type.to_str().is_ok_and(|value| {
            let essence = value
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        });
        if !json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "The request body must be JSON (Content-Type: application/json).",
            ));
        }
    }
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == ErrorCode::PayloadTooLarge.status() {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "The request body is larger than this server accepts.",
                )
            } else {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "The request body could not be read: {}.",
                        rejection.body_text()
                    ),
                )
            }
        })
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => ApiError::invalid(format!(
            "The request body is not what this endpoint takes: {error}."
        )),
        _ => ApiError::new(
            ErrorCode::BadRequest,
            format!("The request body is not valid JSON: {error}."),
        ),
    })
}

/// A body that is either optional JSON or `multipart/form-data` (by its Content-Type),
/// for a route that takes files along with its fields. The route's general body limit is
/// off (uploads count against the upload limit as they stream to disk), so the JSON is
/// held to the request limit here.
pub enum JsonOrParts<T> {
    Json(Option<T>),
    Parts(Multipart),
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonOrParts<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let multipart = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            });
        if multipart {
            let FileParts(parts) = FileParts::from_request(request, state).await?;
            return Ok(Self::Parts(parts));
        }
        let limit = state.config.max_request_bytes;
        let request = request.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
        let json =
            <ApiJson<T> as OptionalFromRequest<AppState>>::from_request(request, state).await?;
        Ok(Self::Json(json.map(|ApiJson(value)| value)))
    }
}

/// The raw bytes of a file, as an upload body (and, in the OpenAPI document, as a
/// download). A declared length over `limit` is refused before anything is read; the
/// handler counts what actually arrives.
pub struct FileBytes {
    pub body: Body,
    pub declared_length: Option<u64>,
}

impl<S: Send + Sync> FromRequest<S> for FileBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let declared_length = match request.headers().get(CONTENT_LENGTH) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::BadRequest,
                            "The Content-Length header is not a number.",
                        )
                    })?,
            ),
        };
        Ok(Self {
            body: request.into_body(),
            declared_length,
        })
    }
}

impl PartialSchema for FileBytes {
    fn schema() -> RefOr<Schema> {
        binary().into()
    }
}

impl ToSchema for FileBytes {}

/// A `multipart/form-data` body of one or more files.
pub struct FileParts(pub Multipart);

impl<S: Send + Sync> FromRequest<S> for FileParts {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        <Multipart as FromRequest<S>>::from_request(request, state)
            .await
            .map(FileParts)
            .map_err(|rejection: MultipartRejection| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "The request is not a multipart upload: {}.",
                        rejection.body_text()
                    ),
                )
            })
    }
}

impl PartialSchema for FileParts {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "One or more parts named `file`, each with a filename that is its path in /mnt/data (subdirectories are created).",
            ))
            .property(
                "file",
                ArrayBuilder::new().items(binary()).min_items(Some(1)),
            )
            .required("file")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl ToSchema for FileParts {}

pub(super) fn binary() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
}
