//! `GET /v1/models`: the models `model` accepts, by the names it accepts them.

use crate::error::OpenAiError;
use crate::extract::{Caller, Path};
use crate::DoorState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

pub(crate) fn routes() -> Router<DoorState> {
    Router::new()
        .route("/models", get(list))
        .route("/models/{model}", get(retrieve))
}

#[derive(Debug, Serialize)]
struct Model {
    /// `provider:model`, as `model` takes it.
    id: String,
    object: &'static str,
    /// Not known for a model of another provider: 0.
    created: i64,
    /// The provider.
    owned_by: String,
}

#[derive(Debug, Serialize)]
struct ModelList {
    object: &'static str,
    data: Vec<Model>,
}

/// The configured models: the server's default (more when the core knows more).
fn models(state: &DoorState) -> Vec<Model> {
    let models = state.service.conversations.models();
    models
        .default
        .iter()
        .map(|spec| Model {
            id: spec.clone(),
            object: "model",
            created: 0,
            owned_by: spec
                .split_once(':')
                .map_or(spec.as_str(), |(provider, _)| provider)
                .to_owned(),
        })
        .collect()
}

async fn list(State(state): State<DoorState>, _: Caller) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: models(&state),
    })
}

async fn retrieve(
    State(state): State<DoorState>,
    _: Caller,
    Path(id): Path<String>,
) -> Result<Json<Model>, OpenAiError> {
    models(&state)
        .into_iter()
        .find(|model| model.id == id)
        .map(Json)
        .ok_or_else(|| {
            OpenAiError::not_found(format!(
                "There is no model {id} on this server; GET /v1/models lists those there are."
            ))
            .param("model")
        })
}
