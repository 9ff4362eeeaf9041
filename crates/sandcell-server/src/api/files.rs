//! `/sessions/{id}/files`: the files of a session's `/mnt/data`.

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{ApiPath, ApiQuery, FileBytes, FileParts};
use super::sessions::SessionRoute;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sandcell_service::User;
use sandcell_service::{FileInfo, FilePath, Page, PageRequest, WorkDir};
use serde::Deserialize;
use std::path::Path;
use tempfile::NamedTempFile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utoipa::IntoParams;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(unlimited(routes!(list_files, upload_files)))
        .routes(unlimited(routes!(download_file, put_file, delete_file)))
}

/// Uploads count their own bytes against `max_upload_bytes` as they stream to disk, so
/// the general request-size limit does not apply to these routes.
pub(super) fn unlimited(
    (schemas, paths, router): UtoipaMethodRouter<AppState>,
) -> UtoipaMethodRouter<AppState> {
    (
        schemas,
        paths,
        router.layer(axum::extract::DefaultBodyLimit::disable()),
    )
}

/// The path of a file's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FileRoute {
    /// The session's id.
    pub id: String,
    /// The file's path in /mnt/data, parts separated by `/`: relative, without `.` or `..`
    /// parts, at most 255 bytes a part and 4096 in all (longer ones are refused with 400).
    #[param(
        pattern = r"^(?:[^/.\x00]|\.[^/.\x00]|\.\.[^/\x00])[^/\x00]*(?:/(?:[^/.\x00]|\.[^/.\x00]|\.\.[^/\x00])[^/\x00]*)*$"
    )]
    pub path: String,
}

/// List the files in the session's /mnt/data.
///
/// Every regular file, recursively, sorted by path. Symbolic links are not listed (nor
/// followed), nor are names that are not UTF-8.
#[utoipa::path(
    get,
    path = "/sessions/{id}/files",
    tag = "files",
    params(SessionRoute, PageRequest),
    responses(
        (status = 200, description = "A page of the files", body = Page<FileInfo>),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 400, description = "A query string that is not valid (a limit that is not a number)", body = ErrorBody),
        (status = 422, description = "A limit out of range, or an unknown cursor", body = ErrorBody),
    )
)]
async fn list_files(
    State(state): State<AppState>,
    user: User,
    ApiPath(SessionRoute { id }): ApiPath<SessionRoute>,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> Result<Json<Page<FileInfo>>, ApiError> {
    let workdir = state.service.sessions.workdir(&user, &id).await?;
    let files = blocking(move || workdir.list()).await??;
    Ok(Json(page.page(files, |file| &file.path)?))
}

/// Upload files (multipart).
///
/// Each part's filename is its path in /mnt/data; missing directories are made and
/// existing files replaced. Every part is received in full before any is put in place.
#[utoipa::path(
    post,
    path = "/sessions/{id}/files",
    tag = "files",
    params(SessionRoute),
    request_body(content = FileParts, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "The files as stored", body = Page<FileInfo>),
        (status = 400, description = "Not a multipart body, a part without a filename, or a path that is absolute, has `..` or goes through a symbolic link", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "A directory is in the way", body = ErrorBody),
        (status = 413, description = "The upload is larger than the server accepts", body = ErrorBody),
    )
)]
async fn upload_files(
    State(state): State<AppState>,
    user: User,
    ApiPath(SessionRoute { id }): ApiPath<SessionRoute>,
    FileParts(mut multipart): FileParts,
) -> Result<(StatusCode, Json<Page<FileInfo>>), ApiError> {
    let workdir = state.service.sessions.workdir(&user, &id).await?;
    let upload = receive(&state, &mut multipart, &[]).await?;
    if upload.files.is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "The upload has no file in it.",
        ));
    }
    let files = upload.place(workdir).await?;
    Ok((
        StatusCode::CREATED,
        Json(Page {
            data: files,
            next: None,
        }),
    ))
}

/// A multipart body received: its files staged on disk, its text fields in memory.
pub(super) struct Upload {
    files: Vec<(FilePath, NamedTempFile)>,
    /// The text parts (without a filename) whose names were allowed.
    pub fields: Vec<(String, String)>,
}

/// Receives every part of `multipart`: a part with a filename is a file (its path in
/// /mnt/data), staged against the upload limit; any other part must be one of
/// `text_fields` (at most 64 KiB each).
pub(super) async fn receive(
    state: &AppState,
    multipart: &mut axum::extract::Multipart,
    text_fields: &[&str],
) -> Result<Upload, ApiError> {
    const TEXT_LIMIT: usize = 64 * 1024;
    let limit = state.config.max_upload_bytes;
    let mut budget = limit;
    let mut upload = Upload {
        files: Vec::new(),
        fields: Vec::new(),
    };
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        if let Some(name) = field.file_name() {
            let path = FilePath::parse(name)?;
            let file = stage(
                &state.service.config.staging_dir(),
                field,
                &mut budget,
                limit,
            )
            .await?;
            upload.files.push((path, file));
            continue;
        }
        let name = field.name().unwrap_or_default().to_owned();
        if !text_fields.contains(&name.as_str()) {
            let expected = match text_fields {
                [] => String::new(),
                fields => format!(" or one of the fields {}", fields.join(", ")),
            };
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("Each part of the upload must be a file with a filename{expected}."),
            ));
        }
        let value = field.text().await.map_err(multipart_error)?;
        if value.len() > TEXT_LIMIT {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("The field {name} is longer than 64 KiB."),
            ));
        }
        upload.fields.push((name, value));
    }
    Ok(upload)
}

impl Upload {
    /// Puts the files in place in `workdir` (directories made, files replaced).
    pub(super) async fn place(self, workdir: WorkDir) -> Result<Vec<FileInfo>, ApiError> {
        let files = self.files;
        blocking(move || {
            files
                .into_iter()
                .map(|(path, file)| workdir.place(&path, file))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
        .map_err(ApiError::from)
    }
}

/// Upload one file (the raw request body).
///
/// Missing directories are made and an existing file is replaced.
#[utoipa::path(
    put,
    path = "/sessions/{id}/files/{*path}",
    tag = "files",
    params(FileRoute),
    request_body(content = FileBytes, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "The file as stored", body = FileInfo),
        (status = 400, description = "A path that is absolute, has `..` or goes through a symbolic link", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "A directory is in the way", body = ErrorBody),
        (status = 413, description = "The file is larger than the server accepts", body = ErrorBody),
    )
)]
async fn put_file(
    State(state): State<AppState>,
    user: User,
    ApiPath(FileRoute { id, path: raw_path }): ApiPath<FileRoute>,
    upload: FileBytes,
) -> Result<(StatusCode, Json<FileInfo>), ApiError> {
    let workdir = state.service.sessions.workdir(&user, &id).await?;
    let path = FilePath::parse(&raw_path)?;
    let limit = state.config.max_upload_bytes;
    if upload.declared_length.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    let mut budget = limit;
    let chunks = upload.body.into_data_stream();
    let file = stage(
        &state.service.config.staging_dir(),
        chunks,
        &mut budget,
        limit,
    )
    .await?;
    let info = blocking(move || workdir.place(&path, file)).await??;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Download a file.
///
/// Served with its guessed Content-Type and `Content-Disposition: attachment`.
#[utoipa::path(
    get,
    path = "/sessions/{id}/files/{*path}",
    tag = "files",
    params(FileRoute),
    responses(
        (status = 200, description = "The file's content, with the Content-Type its name suggests", body = FileBytes, content_type = "*/*",
            headers(("Content-Disposition" = String, description = "`attachment` with the file's name"))),
        (status = 400, description = "A path that is absolute, has `..` or goes through a symbolic link", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session or file", body = ErrorBody),
        (status = 409, description = "The path is a directory or not a regular file", body = ErrorBody),
    )
)]
async fn download_file(
    State(state): State<AppState>,
    user: User,
    ApiPath(FileRoute { id, path: raw_path }): ApiPath<FileRoute>,
) -> Result<Response, ApiError> {
    let workdir = state.service.sessions.workdir(&user, &id).await?;
    let path = FilePath::parse(&raw_path)?;
    let disposition = attachment(path.file_name());
    let (file, info) = blocking(move || workdir.open(&path)).await??;
    // Only the bytes counted in Content-Length, even if the file grows meanwhile.
    let reader = tokio::fs::File::from_std(file).take(info.size);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    let content_type = HeaderValue::from_str(&info.mime)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_LENGTH, HeaderValue::from(info.size)),
            (header::CONTENT_DISPOSITION, disposition),
            // A browser must not guess a type (and run an uploaded page, say).
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response())
}

/// Delete a file.
#[utoipa::path(
    delete,
    path = "/sessions/{id}/files/{*path}",
    tag = "files",
    params(FileRoute),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A path that is absolute, has `..` or goes through a symbolic link", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session or file", body = ErrorBody),
        (status = 409, description = "The path is a directory", body = ErrorBody),
    )
)]
async fn delete_file(
    State(state): State<AppState>,
    user: User,
    ApiPath(FileRoute { id, path: raw_path }): ApiPath<FileRoute>,
) -> Result<StatusCode, ApiError> {
    let workdir = state.service.sessions.workdir(&user, &id).await?;
    let path = FilePath::parse(&raw_path)?;
    blocking(move || workdir.remove(&path)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// Writes a body to a new file in the staging directory, taking its size from `budget`;
/// past the budget the upload is refused (and the partial file removed).
async fn stage<S, E>(
    staging_dir: &Path,
    mut chunks: S,
    budget: &mut u64,
    limit: u64,
) -> Result<NamedTempFile, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let staged = NamedTempFile::new_in(staging_dir)
        .map_err(|e| ApiError::internal("The upload cannot be stored", &e))?;
    let writer = staged
        .as_file()
        .try_clone()
        .map_err(|e| ApiError::internal("The upload cannot be stored", &e))?;
    let mut writer = tokio::fs::File::from_std(writer);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("The upload could not be read: {e}."),
            )
        })?;
        *budget = budget
            .checked_sub(chunk.len() as u64)
            .ok_or_else(|| too_large(limit))?;
        writer
            .write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal("The upload cannot be stored", &e))?;
    }
    writer
        .flush()
        .await
        .map_err(|e| ApiError::internal("The upload cannot be stored", &e))?;
    Ok(staged)
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "The upload is larger than this server accepts ({} MiB).",
            limit / (1024 * 1024)
        ),
    )
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(
        ErrorCode::BadRequest,
        format!(
            "The multipart body could not be read: {}.",
            error.body_text()
        ),
    )
}

/// Runs a blocking file operation off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal("A file operation stopped", &e))
}

/// Characters RFC 5987 lets through unencoded in `filename*`.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment` with the name twice: plain ASCII for old clients, UTF-8 for the rest.
pub(super) fn attachment(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' ' => ' ',
            '"' | '\\' => '_',
            c if c.is_ascii_graphic() => c,
            _ => '_',
        })
        .collect();
    let encoded = utf8_percent_encode(name, ATTR_CHAR);
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or(HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_quoted_safely() {
        assert_eq!(
            attachment("plot.png"),
            "attachment; filename=\"plot.png\"; filename*=UTF-8''plot.png"
        );
        assert_eq!(
            attachment("résumé \"v2\".pdf"),
            "attachment; filename=\"r_sum_ _v2_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
        );
    }
}
