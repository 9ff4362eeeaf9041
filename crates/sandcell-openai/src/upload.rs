//! Multipart uploads (one `file` part, a few text fields) staged on disk against the
//! upload limit, files sent inline (`data:` URLs) kept as Files, and file contents
//! streamed back.

use crate::error::OpenAiError;
use crate::DoorState;
use axum::body::Body;
use axum::extract::multipart::MultipartError;
use axum::extract::Multipart;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sandcell_agent::ImageBase64;
use sandcell_service::User;
use std::io::Write;
use tempfile::NamedTempFile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest text field.
const TEXT_LIMIT: usize = 64 * 1024;

/// A multipart body received.
pub struct Upload {
    /// The `file` part: its filename and its bytes, on disk.
    pub file: Option<(String, NamedTempFile)>,
    /// The text parts, by name.
    pub fields: Vec<(String, String)>,
}

impl Upload {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    /// The `file` part, which the request must have.
    pub fn take_file(&mut self) -> Result<(String, NamedTempFile), OpenAiError> {
        self.file.take().ok_or_else(|| {
            OpenAiError::bad_request("The upload has no `file` part with a filename.").param("file")
        })
    }
}

/// Receives every part: the `file` part is staged (at most the upload limit), the others
/// kept as text.
pub async fn receive(state: &DoorState, mut multipart: Multipart) -> Result<Upload, OpenAiError> {
    let limit = state.config.max_upload_bytes;
    let mut upload = Upload {
        file: None,
        fields: Vec::new(),
    };
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let filename = field.file_name().unwrap_or_default().to_owned();
            let staged = NamedTempFile::new_in(state.service.config.staging_dir())
                .map_err(|e| OpenAiError::internal("The upload cannot be stored", &e))?;
            let writer = staged
                .as_file()
                .try_clone()
                .map_err(|e| OpenAiError::internal("The upload cannot be stored", &e))?;
            let mut writer = tokio::fs::File::from_std(writer);
            let mut size = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                size += chunk.len() as u64;
                if size > limit {
                    return Err(OpenAiError::too_large(format!(
                        "The file is larger than this server accepts ({} MiB).",
                        limit / (1024 * 1024)
                    )));
                }
                writer
                    .write_all(&chunk)
                    .await
                    .map_err(|e| OpenAiError::internal("The upload cannot be stored", &e))?;
            }
            writer
                .flush()
                .await
                .map_err(|e| OpenAiError::internal("The upload cannot be stored", &e))?;
            upload.file = Some((filename, staged));
            continue;
        }
        let value = field.text().await.map_err(multipart_error)?;
        if value.len() > TEXT_LIMIT {
            return Err(OpenAiError::too_large(format!(
                "The field {name} is longer than 64 KiB."
            )));
        }
        upload.fields.push((name, value));
    }
    Ok(upload)
}

fn multipart_error(error: MultipartError) -> OpenAiError {
    OpenAiError::bad_request(format!(
        "The multipart body could not be read: {}.",
        error.body_text().trim_end_matches('.')
    ))
}

/// A file's bytes (only the `size` counted, even if it grows meanwhile), typed by its name.
pub fn content(file: std::fs::File, size: u64, name: &str) -> Response {
    let reader = tokio::fs::File::from_std(file).take(size);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    let mime = mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream");
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (header::CONTENT_LENGTH, HeaderValue::from(size)),
            // A browser must not guess a type (and run an uploaded page, say).
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The bytes of a `data:` URL (or plain base64) in the request's field `param`. An
/// http(s) URL is refused: the server fetches nothing a request points at.
pub(crate) fn decode(data: &str, param: &str) -> Result<Vec<u8>, OpenAiError> {
    let encoded = match data.strip_prefix("data:") {
        Some(url) => url
            .split_once(";base64,")
            .map(|(_, data)| data)
            .ok_or_else(|| {
                OpenAiError::bad_request(
                    "An attached file's data: URL must be base64 (data:TYPE;base64,…).",
                )
                .param(param)
            })?,
        None if data.starts_with("http://") || data.starts_with("https://") => {
            return Err(OpenAiError::bad_request(
                "This server does not fetch URLs; send the image as a data: URL.",
            )
            .param(param))
        }
        None => data,
    };
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| OpenAiError::bad_request("An attached file is not valid base64.").param(param))
}

/// An image sent inline: its bytes, for `/mnt/data`, and the image the model is given.
pub(crate) struct InlineImage {
    /// Of its file, by its media type.
    pub extension: &'static str,
    pub bytes: Vec<u8>,
    pub for_model: ImageBase64,
}

/// The image of a `data:` URL (or plain base64, taken as PNG) in the request's field
/// `param`; one the models cannot read is refused, as is an http(s) URL.
pub(crate) fn inline_image(url: &str, param: &str) -> Result<InlineImage, OpenAiError> {
    let media_type = url.strip_prefix("data:").map_or("image/png", |rest| {
        rest.split([';', ',']).next().unwrap_or_default()
    });
    let (media_type, extension) = match media_type {
        "image/png" => ("image/png", "png"),
        "image/jpeg" | "image/jpg" => ("image/jpeg", "jpg"),
        "image/gif" => ("image/gif", "gif"),
        "image/webp" => ("image/webp", "webp"),
        other => {
            return Err(OpenAiError::bad_request(format!(
                "An image must be PNG, JPEG, GIF or WebP, not {other:?}."
            ))
            .param(param))
        }
    };
    let bytes = decode(url, param)?;
    let for_model = ImageBase64 {
        media_type: media_type.to_owned(),
        data: base64::engine::general_purpose::STANDARD.encode(&bytes),
    };
    Ok(InlineImage {
        extension,
        bytes,
        for_model,
    })
}

/// Keeps `bytes` as one of the user's Files named `name`; returns its id.
pub(crate) async fn keep_as_file(
    state: &DoorState,
    user: &User,
    name: &str,
    bytes: Vec<u8>,
) -> Result<String, OpenAiError> {
    let staging = state.service.config.staging_dir();
    let staged = tokio::task::spawn_blocking(move || {
        let mut staged = NamedTempFile::new_in(staging)?;
        staged.write_all(&bytes)?;
        Ok::<_, std::io::Error>(staged)
    })
    .await
    .map_err(|e| OpenAiError::internal("The attached file cannot be stored", &e))?
    .map_err(|e| OpenAiError::internal("The attached file cannot be stored", &e))?;
    let file = state
        .service
        .files
        .create(user, name, "user_data", staged)
        .await?;
    Ok(file.id)
}
