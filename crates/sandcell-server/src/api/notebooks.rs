//! `/notebooks`: notebooks saved as a person works, exported and imported as `.ipynb`.

use super::conversations::ipynb_response;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use sandcell_service::{NotebookChange, NotebookDetail, NotebookInfo, Page, PageRequest, User};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_notebook, list_notebooks))
        .routes(routes!(get_notebook, update_notebook, delete_notebook))
        .routes(routes!(export_notebook))
        .routes(routes!(import_notebook))
}

/// The path of a notebook's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NotebookRoute {
    /// The notebook's id.
    pub id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportNotebook {
    /// The file's name; its title without `.ipynb`.
    pub name: Option<String>,
    /// The `.ipynb` document (nbformat 4).
    #[schema(value_type = Object)]
    pub notebook: Value,
}

/// Make a notebook.
///
/// Empty unless the body gives its title, cells and session.
#[utoipa::path(
    post,
    path = "/notebooks",
    tag = "notebooks",
    request_body(content = Option<NotebookChange>, description = "Optional"),
    responses(
        (status = 201, description = "The new notebook", body = NotebookDetail),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "A title or cell that is not valid, or an unknown field", body = ErrorBody),
    )
)]
async fn create_notebook(
    State(state): State<AppState>,
    user: User,
    body: Option<ApiJson<NotebookChange>>,
) -> Result<(StatusCode, Json<NotebookDetail>), ApiError> {
    let change = body.map(|ApiJson(change)| change).unwrap_or_default();
    let notebook = state.service.notebooks.create(&user, change).await?;
    Ok((StatusCode::CREATED, Json(notebook)))
}

/// List your notebooks, the most recently saved first.
#[utoipa::path(
    get,
    path = "/notebooks",
    tag = "notebooks",
    params(PageRequest),
    responses(
        (status = 200, description = "A page of the notebooks", body = Page<NotebookInfo>),
        (status = 400, description = "A query string that is not valid (a limit that is not a number)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 422, description = "A limit out of range, or an unknown cursor", body = ErrorBody),
    )
)]
async fn list_notebooks(
    State(state): State<AppState>,
    user: User,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> Result<Json<Page<NotebookInfo>>, ApiError> {
    Ok(Json(state.service.notebooks.list(&user, &page).await?))
}

/// Get a notebook with its cells.
#[utoipa::path(
    get,
    path = "/notebooks/{id}",
    tag = "notebooks",
    params(NotebookRoute),
    responses(
        (status = 200, description = "The notebook", body = NotebookDetail),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such notebook", body = ErrorBody),
    )
)]
async fn get_notebook(
    State(state): State<AppState>,
    user: User,
    ApiPath(NotebookRoute { id }): ApiPath<NotebookRoute>,
) -> Result<Json<NotebookDetail>, ApiError> {
    Ok(Json(state.service.notebooks.get(&user, &id).await?))
}

/// Save a notebook: rename it, set its session, or replace its cells.
///
/// The fields left out stay as they are. A save that names the `revision` it changes is
/// refused (409, nothing written) when the notebook was saved since.
#[utoipa::path(
    patch,
    path = "/notebooks/{id}",
    tag = "notebooks",
    params(NotebookRoute),
    request_body(content = NotebookChange),
    responses(
        (status = 200, description = "The notebook as saved", body = NotebookInfo),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such notebook or session", body = ErrorBody),
        (status = 409, description = "The notebook was saved since the `revision` given", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "A title or cell that is not valid, or an unknown field", body = ErrorBody),
    )
)]
async fn update_notebook(
    State(state): State<AppState>,
    user: User,
    ApiPath(NotebookRoute { id }): ApiPath<NotebookRoute>,
    ApiJson(change): ApiJson<NotebookChange>,
) -> Result<Json<NotebookInfo>, ApiError> {
    Ok(Json(
        state.service.notebooks.update(&user, &id, change).await?,
    ))
}

/// Delete a notebook, with its session and the session's files.
#[utoipa::path(
    delete,
    path = "/notebooks/{id}",
    tag = "notebooks",
    params(NotebookRoute),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such notebook", body = ErrorBody),
    )
)]
async fn delete_notebook(
    State(state): State<AppState>,
    user: User,
    ApiPath(NotebookRoute { id }): ApiPath<NotebookRoute>,
) -> Result<StatusCode, ApiError> {
    state.service.notebooks.delete(&user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Export a notebook as a Jupyter notebook.
///
/// Its code and Markdown cells with their outputs and execution counts (nbformat 4.5),
/// as Jupyter writes them.
#[utoipa::path(
    get,
    path = "/notebooks/{id}/ipynb",
    tag = "notebooks",
    params(NotebookRoute),
    responses(
        (status = 200, description = "The notebook", content_type = "application/x-ipynb+json", body = Object),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such notebook", body = ErrorBody),
    )
)]
async fn export_notebook(
    State(state): State<AppState>,
    user: User,
    ApiPath(NotebookRoute { id }): ApiPath<NotebookRoute>,
) -> Result<Response, ApiError> {
    let (title, notebook) = state.service.notebooks.to_ipynb(&user, &id).await?;
    Ok(ipynb_response(&title, "notebook", notebook))
}

/// Open an `.ipynb` file as a new notebook.
///
/// Its code and Markdown cells with their outputs and execution counts; raw cells are
/// left out. The notebook has no session until one is set.
#[utoipa::path(
    post,
    path = "/notebooks/import",
    tag = "notebooks",
    request_body(content = ImportNotebook),
    responses(
        (status = 201, description = "The new notebook", body = NotebookDetail),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "Not a notebook of nbformat 4, or an unknown field", body = ErrorBody),
    )
)]
async fn import_notebook(
    State(state): State<AppState>,
    user: User,
    ApiJson(request): ApiJson<ImportNotebook>,
) -> Result<(StatusCode, Json<NotebookDetail>), ApiError> {
    let notebook = state
        .service
        .notebooks
        .import(&user, request.name.as_deref(), &request.notebook)
        .await?;
    Ok((StatusCode::CREATED, Json(notebook)))
}
