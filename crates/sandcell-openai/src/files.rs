//! `/v1/files`: a user's files, kept outside any container and copied into containers by
//! id (the core's `UserFiles`).

use crate::error::OpenAiError;
use crate::extract::{Caller, Path, Query};
use crate::list::{Deleted, List, ListQuery, Order};
use crate::upload::{content, receive};
use crate::DoorState;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use sandcell_service::StoredFile;
use serde::{Deserialize, Serialize};

/// The purposes OpenAI's upload accepts.
const PURPOSES: [&str; 6] = [
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];

pub(crate) fn routes() -> Router<DoorState> {
    Router::new()
        .route(
            "/files",
            get(list).post(create).layer(DefaultBodyLimit::disable()),
        )
        .route("/files/{file_id}", get(retrieve).delete(delete))
        .route("/files/{file_id}/content", get(download))
}

/// OpenAI's file object.
#[derive(Debug, Serialize)]
struct FileObject {
    id: String,
    object: &'static str,
    bytes: u64,
    created_at: i64,
    filename: String,
    purpose: String,
    /// Deprecated by OpenAI, still required by its schema.
    status: &'static str,
}

impl From<StoredFile> for FileObject {
    fn from(file: StoredFile) -> Self {
        Self {
            id: file.id,
            object: "file",
            bytes: file.bytes,
            created_at: file.created_at,
            filename: file.filename,
            purpose: file.purpose,
            status: "processed",
        }
    }
}

/// A list's query with a filter (its fields spelled out: `serde(flatten)` would read
/// every value of a query string as a string).
#[derive(Debug, Deserialize)]
struct FilesQuery {
    purpose: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
    order: Option<Order>,
}

async fn create(
    State(state): State<DoorState>,
    Caller(user): Caller,
    multipart: Multipart,
) -> Result<Json<FileObject>, OpenAiError> {
    let mut upload = receive(&state, multipart).await?;
    let purpose = upload.field("purpose").unwrap_or_default().to_owned();
    if !PURPOSES.contains(&purpose.as_str()) {
        return Err(OpenAiError::bad_request(format!(
            "purpose must be one of {}, not {purpose:?}.",
            PURPOSES.join(", ")
        ))
        .param("purpose"));
    }
    let (filename, staged) = upload.take_file()?;
    let file = state
        .service
        .files
        .create(&user, &filename, &purpose, staged)
        .await?;
    Ok(Json(file.into()))
}

async fn list(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Query(query): Query<FilesQuery>,
) -> Result<Json<List<FileObject>>, OpenAiError> {
    let list = ListQuery {
        after: query.after,
        limit: query.limit,
        order: query.order,
    };
    let page = state
        .service
        .files
        .list(
            &user,
            query.purpose.as_deref(),
            list.newest_first(),
            &list.page(),
        )
        .await?;
    Ok(Json(List::of(page, |file| &file.id, FileObject::from)))
}

async fn retrieve(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<FileObject>, OpenAiError> {
    Ok(Json(state.service.files.get(&user, &id).await?.into()))
}

async fn delete(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, OpenAiError> {
    state.service.files.delete(&user, &id).await?;
    Ok(Json(Deleted {
        id,
        object: "file",
        deleted: true,
    }))
}

async fn download(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Response, OpenAiError> {
    let (opened, file) = state.service.files.open(&user, &id).await?;
    Ok(content(opened, file.bytes, &file.filename))
}
