//! `/v1/containers` and their files: a container is a sandcell session with a name and an
//! idle expiry (the core's `Containers`); its files are those of its `/mnt/data`.

use crate::error::OpenAiError;
use crate::extract::{Caller, Json, Path, Query};
use crate::list::{Deleted, List, ListQuery, Order};
use crate::upload::{content, receive};
use crate::DoorState;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use sandcell_service::{ContainerFile, ContainerInfo, LimitsRequest, NewContainer};
use serde::{Deserialize, Serialize};

/// Where a container's files are, as its code sees them.
const MOUNT: &str = "/mnt/data";

pub(crate) fn routes() -> Router<DoorState> {
    Router::new()
        .route("/containers", get(list).post(create))
        .route("/containers/{container_id}", get(retrieve).delete(delete))
        .route(
            "/containers/{container_id}/files",
            get(list_files)
                .post(create_file)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/containers/{container_id}/files/{file_id}",
            get(retrieve_file).delete(delete_file),
        )
        .route(
            "/containers/{container_id}/files/{file_id}/content",
            get(download_file),
        )
}

/// OpenAI's memory limits, in MiB of the session.
const MEMORY_LIMITS: [(&str, u64); 4] = [
    ("1g", 1024),
    ("4g", 4 * 1024),
    ("16g", 16 * 1024),
    ("64g", 64 * 1024),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateContainer {
    name: String,
    #[serde(default)]
    file_ids: Vec<String>,
    expires_after: Option<ExpiresAfter>,
    memory_limit: Option<String>,
    network_policy: Option<NetworkPolicy>,
}

/// OpenAI's `network_policy`: no network, or the domains the container may reach (here:
/// any entry `--allow-net` takes, within what the operator allows).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum NetworkPolicy {
    Disabled,
    Allowlist { allowed_domains: Vec<String> },
}

impl NetworkPolicy {
    fn allow_net(self) -> Vec<String> {
        match self {
            NetworkPolicy::Disabled => Vec::new(),
            NetworkPolicy::Allowlist { allowed_domains } => allowed_domains,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpiresAfter {
    anchor: Anchor,
    minutes: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Anchor {
    LastActiveAt,
}

/// OpenAI's container object.
#[derive(Debug, Serialize)]
struct ContainerObject {
    id: String,
    object: &'static str,
    name: String,
    created_at: i64,
    status: &'static str,
    last_active_at: i64,
    expires_after: ExpiresAfter,
    /// OpenAI's name of the session's memory limit, when it is one of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_limit: Option<&'static str>,
}

impl From<ContainerInfo> for ContainerObject {
    fn from(container: ContainerInfo) -> Self {
        Self {
            id: container.id,
            object: "container",
            name: container.name,
            created_at: container.created_at,
            status: container.status.as_str(),
            last_active_at: container.last_active_at,
            expires_after: ExpiresAfter {
                anchor: Anchor::LastActiveAt,
                minutes: container.expires_after_minutes,
            },
            memory_limit: MEMORY_LIMITS
                .iter()
                .find(|(_, mib)| *mib == container.limits.memory_mib)
                .map(|(name, _)| *name),
        }
    }
}

/// OpenAI's container file object.
#[derive(Debug, Serialize)]
struct ContainerFileObject {
    id: String,
    object: &'static str,
    container_id: String,
    created_at: i64,
    bytes: u64,
    /// Absolute, under `/mnt/data`.
    path: String,
    source: &'static str,
}

impl From<ContainerFile> for ContainerFileObject {
    fn from(file: ContainerFile) -> Self {
        Self {
            id: file.id,
            object: "container.file",
            container_id: file.container_id,
            created_at: file.created_at,
            bytes: file.bytes,
            path: format!("{MOUNT}/{}", file.path),
            source: file.source.as_str(),
        }
    }
}

/// A list's query with a filter (its fields spelled out: `serde(flatten)` would read
/// every value of a query string as a string).
#[derive(Debug, Deserialize)]
struct ContainersQuery {
    /// Only containers of this name.
    name: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
    order: Option<Order>,
}

#[derive(Debug, Deserialize)]
struct FileRoute {
    container_id: String,
    file_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyFile {
    file_id: String,
}

/// The session memory, in MiB, of OpenAI's `memory_limit`.
pub(crate) fn memory_mib(memory_limit: Option<&str>) -> Result<Option<u64>, OpenAiError> {
    let Some(asked) = memory_limit else {
        return Ok(None);
    };
    MEMORY_LIMITS
        .iter()
        .find(|(name, _)| *name == asked)
        .map(|(_, mib)| Some(*mib))
        .ok_or_else(|| {
            OpenAiError::bad_request(format!(
                "memory_limit must be one of 1g, 4g, 16g or 64g, not {asked:?}."
            ))
            .param("memory_limit")
        })
}

async fn create(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Json(body): Json<CreateContainer>,
) -> Result<axum::Json<ContainerObject>, OpenAiError> {
    let memory_mib = memory_mib(body.memory_limit.as_deref())?;
    let container = state
        .service
        .containers
        .create(
            &user,
            NewContainer {
                name: body.name,
                file_ids: body.file_ids,
                expires_after_minutes: body.expires_after.map(|expiry| expiry.minutes),
                limits: LimitsRequest {
                    memory_mib,
                    ..LimitsRequest::default()
                },
                allow_net: body.network_policy.map(NetworkPolicy::allow_net),
            },
        )
        .await?;
    Ok(axum::Json(container.into()))
}

async fn list(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Query(query): Query<ContainersQuery>,
) -> Result<axum::Json<List<ContainerObject>>, OpenAiError> {
    let list = ListQuery {
        after: query.after,
        limit: query.limit,
        order: query.order,
    };
    let page = state
        .service
        .containers
        .list(
            &user,
            query.name.as_deref(),
            list.newest_first(),
            &list.page(),
        )
        .await?;
    Ok(axum::Json(List::of(
        page,
        |container| &container.id,
        ContainerObject::from,
    )))
}

async fn retrieve(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<ContainerObject>, OpenAiError> {
    Ok(axum::Json(
        state.service.containers.retrieve(&user, &id).await?.into(),
    ))
}

async fn delete(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Deleted>, OpenAiError> {
    state.service.containers.delete(&user, &id).await?;
    Ok(axum::Json(Deleted {
        id,
        object: "container.deleted",
        deleted: true,
    }))
}

/// A file uploaded (multipart, its `file` part) or copied from Files (JSON `{"file_id"}`).
async fn create_file(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    request: Request,
) -> Result<axum::Json<ContainerFileObject>, OpenAiError> {
    let multipart = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("multipart/form-data"));
    let containers = &state.service.containers;
    let file = if multipart {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| OpenAiError::bad_request(format!("{}.", e.body_text())))?;
        let (filename, staged) = receive(&state, multipart).await?.take_file()?;
        containers.add_file(&user, &id, &filename, staged).await?
    } else {
        let Json(CopyFile { file_id }) = Json::from_request(request, &state).await?;
        containers.copy_file(&user, &id, &file_id).await?
    };
    Ok(axum::Json(file.into()))
}

async fn list_files(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<List<ContainerFileObject>>, OpenAiError> {
    let page = state
        .service
        .containers
        .files(&user, &id, query.newest_first(), &query.page())
        .await?;
    Ok(axum::Json(List::of(
        page,
        |file| &file.id,
        ContainerFileObject::from,
    )))
}

async fn retrieve_file(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(route): Path<FileRoute>,
) -> Result<axum::Json<ContainerFileObject>, OpenAiError> {
    let file = state
        .service
        .containers
        .file(&user, &route.container_id, &route.file_id)
        .await?;
    Ok(axum::Json(file.into()))
}

async fn delete_file(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(route): Path<FileRoute>,
) -> Result<axum::Json<Deleted>, OpenAiError> {
    state
        .service
        .containers
        .delete_file(&user, &route.container_id, &route.file_id)
        .await?;
    Ok(axum::Json(Deleted {
        id: route.file_id,
        object: "container.file.deleted",
        deleted: true,
    }))
}

async fn download_file(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(route): Path<FileRoute>,
) -> Result<Response, OpenAiError> {
    let (opened, file) = state
        .service
        .containers
        .open_file(&user, &route.container_id, &route.file_id)
        .await?;
    Ok(content(opened, file.bytes, &file.path))
}
