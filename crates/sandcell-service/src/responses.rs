//! Responses (the OpenAI door's): one turn of `sandcell-agent`'s interpreter loop in a
//! container's session, chained to earlier ones by `previous_response_id`.
//!
//! A response keeps the records of its turn (the person's message, the model's replies,
//! each tool call with its code and execution: `sandcell_agent::Record`, the same as a
//! conversation's); a chained response's history is the records of the responses before
//! it, oldest first. The turn borrows the container's session for its whole length and
//! runs in a task of its own, so a client that goes away does not cut it short; its row
//! is written when it starts (in progress) and again when it ends. A model that cannot
//! call tools is found out by its first request, so a response is answered only once the
//! model has begun (or failed): that refusal is then an invalid request, not a failed
//! response.

use crate::containers::{ContainerFile, Containers, NewContainer};
use crate::error::{sentence, ServiceError};
use crate::models::Models;
use crate::sessions::Sessions;
use crate::store::{OwnedTable, Store, StoreError, User};
use crate::user_files::{random_id, unix_now};
use sandcell_agent::{
    Agent, AgentError, AgentEvent, AgentOptions, ImageBase64, ModelError, Record, RecordSink,
    Sampling, TokenUsage, Transcript, TurnEnd,
};
use sandcell_pyenv::EnvInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Which container a response's code runs in.
#[derive(Debug, Clone)]
pub enum ContainerChoice {
    /// One of the user's containers, by id.
    Existing(String),
    /// A new one, made for this response.
    New(NewContainer),
}

/// What a new response asks for.
#[derive(Debug, Clone)]
pub struct NewResponse {
    /// `provider:model`; the server's default when `None`.
    pub model: Option<String>,
    /// What the person says.
    pub input: String,
    /// The images they give with it (shown to a model with vision).
    pub images: Vec<ImageBase64>,
    pub container: ContainerChoice,
    /// The response whose conversation this one goes on with.
    pub previous_response_id: Option<String>,
    /// Whether the response is kept (to be read again and chained to) once done.
    pub store: bool,
    /// How the model samples (the provider's defaults for each left out).
    pub sampling: Sampling,
    /// Tokens the model may write in the whole response, its requests together.
    pub max_output_tokens: Option<u32>,
    /// What the door keeps with the response to answer it again (kept as given; the
    /// core does not read it).
    pub door: serde_json::Value,
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    InProgress,
    /// The model answered.
    Completed,
    /// The model was still working at the step limit or at `max_output_tokens`, or the
    /// turn was cancelled.
    Incomplete,
    Failed,
}

/// A response as the core keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseRecord {
    /// `resp_…`.
    pub id: String,
    pub container_id: String,
    pub model: String,
    pub previous_response_id: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub status: ResponseStatus,
    /// Why it failed or is incomplete, a sentence.
    pub error: Option<String>,
    pub input: String,
    /// The records of this response's turn, in order.
    pub records: Vec<Record>,
    /// Tokens of this response's model requests.
    pub usage: TokenUsage,
    /// The container's files its code created or changed, in the order first touched.
    pub files: Vec<ContainerFile>,
    /// What the door asked to keep.
    pub door: serde_json::Value,
}

/// One event of a response under way.
#[derive(Debug, Clone)]
pub enum ResponseEvent {
    Agent(AgentEvent),
    /// The response as kept: always the last event.
    Done(ResponseRecord),
}

/// What the response's task sends: its events, or (first and alone) why the request
/// cannot be served after all (the model cannot call tools; nothing is kept).
type Sent = Result<ResponseEvent, ServiceError>;

/// The events of a response under way, in order.
pub struct ResponseEvents {
    /// The first event, already read to see whether the response was refused.
    first: Option<ResponseEvent>,
    rest: mpsc::UnboundedReceiver<Sent>,
}

impl ResponseEvents {
    /// The next event; `None` once [`ResponseEvent::Done`] has been read.
    pub async fn recv(&mut self) -> Option<ResponseEvent> {
        match self.first.take() {
            Some(first) => Some(first),
            // A refusal comes first or not at all.
            None => self.rest.recv().await?.ok(),
        }
    }
}

/// Every user's responses.
pub struct Responses {
    store: Store,
    sessions: Arc<Sessions>,
    containers: Arc<Containers>,
    models: Models,
    python: EnvInfo,
}

impl Responses {
    pub(crate) fn new(
        store: Store,
        sessions: Arc<Sessions>,
        containers: Arc<Containers>,
        models: Models,
        python: EnvInfo,
    ) -> Self {
        Self {
            store,
            sessions,
            containers,
            models,
            python,
        }
    }

    /// Starts a response; returns it as it begins (in progress) and its events, ending
    /// with [`ResponseEvent::Done`], once the model has begun. Refused before anything
    /// runs when the model, the container or the previous response cannot be had, or the
    /// session is busy; refused as invalid when the model cannot call tools.
    pub async fn create(
        &self,
        user: &User,
        new: NewResponse,
    ) -> Result<(ResponseRecord, ResponseEvents), ServiceError> {
        if new.input.trim().is_empty() {
            return Err(ServiceError::invalid(
                "The input is empty; say what the model should do.",
            ));
        }
        let model = self.models.pick(new.model.as_deref())?;
        let client = self.models.client(&model)?.with_sampling(new.sampling);
        let mut history = Vec::new();
        let mut previous = new.previous_response_id.clone();
        while let Some(id) = previous {
            let earlier = self.get(user, &id).await?;
            if earlier.status == ResponseStatus::InProgress {
                return Err(ServiceError::invalid(format!(
                    "Response {id} is still in progress; chain to it once it has finished."
                )));
            }
            previous = earlier.previous_response_id;
            history.splice(0..0, earlier.records);
        }
        let (container, made_for_it) = match new.container {
            ContainerChoice::Existing(id) => (self.containers.get(user, &id).await?, false),
            ContainerChoice::New(asked) => (self.containers.create(user, asked).await?, true),
        };
        let mut checkout = self.sessions.checkout(user, &container.session_id).await?;
        self.containers.touch(&container.id).await?;

        let transcript = if history.is_empty() {
            Transcript::in_memory(&model)
        } else {
            Transcript::resume(history, Box::new(Discard))
        };
        let earlier = transcript.records().len();
        let options = AgentOptions {
            max_steps: self.models.max_steps(),
            max_output_tokens: new.max_output_tokens,
            ..AgentOptions::default()
        };
        let max_steps = options.max_steps;
        let mut agent = Agent::new(client, self.python.clone(), transcript, options);
        let mut response = ResponseRecord {
            id: format!("resp_{}", random_id()?),
            container_id: container.id.clone(),
            model,
            previous_response_id: new.previous_response_id,
            created_at: unix_now(),
            status: ResponseStatus::InProgress,
            error: None,
            input: new.input,
            records: Vec::new(),
            usage: TokenUsage::default(),
            files: Vec::new(),
            door: new.door,
        };
        let started = response.clone();
        let store_it = new.store;
        if store_it {
            // Read while under way; written again when it ends.
            save(&self.store, user, &response).await?;
        }
        let max_output_tokens = new.max_output_tokens;
        let images = new.images;
        let (sender, receiver) = mpsc::unbounded_channel();
        let store = self.store.clone();
        let containers = self.containers.clone();
        let owner = user.clone();
        let cancel = checkout.cancellation();
        tokio::spawn(async move {
            let mut usage = TokenUsage::default();
            let result = match checkout.session() {
                Ok(session) => {
                    agent
                        .send_with_images(
                            session,
                            &response.input,
                            images,
                            &mut |event| {
                                if let AgentEvent::Usage { request, .. } = &event {
                                    usage = add(usage, *request);
                                }
                                // A client that went away no longer reads; the turn goes on.
                                let _ = sender.send(Ok(ResponseEvent::Agent(event)));
                            },
                            &cancel,
                        )
                        .await
                }
                Err(error) => Err(AgentError::Config(error.to_string())),
            };
            let broken = matches!(result, Err(AgentError::Session(_)));
            checkout.finish(broken).await;
            if let Err(refusal @ AgentError::Model(ModelError::ToolsUnsupported { .. })) = &result {
                if store_it {
                    if let Err(error) = store.delete_response(&response.id).await {
                        tracing::warn!("a refused response cannot be forgotten: {error}");
                    }
                }
                let refusal = ServiceError::invalid(sentence(&refusal.to_string()));
                let _ = sender.send(Err(refusal));
                return;
            }
            let (status, error) = match result {
                Ok(TurnEnd::Answered { .. }) => (ResponseStatus::Completed, None),
                Ok(TurnEnd::StepLimit) => (
                    ResponseStatus::Incomplete,
                    Some(format!(
                        "The model was still working after {max_steps} requests (the step limit); ask it to go on."
                    )),
                ),
                Ok(TurnEnd::OutputLimit) => (
                    ResponseStatus::Incomplete,
                    Some(format!(
                        "The model wrote max_output_tokens ({}) before it answered; allow more, or ask it to go on.",
                        max_output_tokens.unwrap_or_default()
                    )),
                ),
                Ok(TurnEnd::Cancelled) => (
                    ResponseStatus::Incomplete,
                    Some("The response was cancelled; the server is shutting down.".to_owned()),
                ),
                Err(error) => {
                    tracing::warn!("a response failed: {error}");
                    (ResponseStatus::Failed, Some(sentence(&error.to_string())))
                }
            };
            response.status = status;
            response.error = error;
            response.usage = usage;
            response.records = agent.transcript().records()[earlier..].to_vec();
            response.files = match touched_files(&containers, &owner, &response).await {
                Ok(files) => files,
                Err(error) => {
                    tracing::warn!("a response's files cannot be listed: {error}");
                    Vec::new()
                }
            };
            let _ = containers.touch(&response.container_id).await;
            if store_it {
                if let Err(error) = update(&store, &response).await {
                    tracing::warn!("a response cannot be recorded: {error}");
                }
            }
            let _ = sender.send(Ok(ResponseEvent::Done(response)));
        });
        let mut events = ResponseEvents {
            first: None,
            rest: receiver,
        };
        match events.rest.recv().await {
            Some(Err(refusal)) => {
                if made_for_it {
                    // Nobody was given its id: it would only wait for its expiry.
                    if let Err(error) = self.containers.delete(user, &started.container_id).await {
                        tracing::warn!("a refused response's container cannot be deleted: {error}");
                    }
                }
                Err(refusal)
            }
            Some(Ok(first)) => {
                events.first = Some(first);
                Ok((started, events))
            }
            None => Err(ServiceError::internal(
                "The response ended without a result",
                &"its task stopped",
            )),
        }
    }

    /// Marks the responses left in progress by a server that stopped as failed: no task
    /// will finish them.
    pub(crate) async fn fail_unfinished(&self) -> Result<(), StoreError> {
        let unfinished = self.store.unfinished_responses().await?;
        for (id, body) in unfinished {
            let Ok(mut response) = serde_json::from_str::<ResponseRecord>(&body) else {
                tracing::warn!(response = %id, "an unfinished response cannot be read");
                continue;
            };
            response.status = ResponseStatus::Failed;
            response.error =
                Some("The server stopped while the response was under way; send it again.".into());
            if let Err(error) = update(&self.store, &response).await {
                tracing::warn!(response = %id, "an unfinished response cannot be marked failed: {error}");
            }
        }
        Ok(())
    }

    /// The user's response `id`; another user's is "not found".
    pub async fn get(&self, user: &User, id: &str) -> Result<ResponseRecord, ServiceError> {
        let body = self
            .store
            .owned_body(OwnedTable::Responses, user.id, id)
            .await
            .map_err(|e| ServiceError::internal("The response cannot be read", &e))?;
        let body = body.ok_or_else(|| ServiceError::not_found(format!("response {id}")))?;
        serde_json::from_str(&body)
            .map_err(|e| ServiceError::internal("The response cannot be read", &e))
    }

    pub async fn delete(&self, user: &User, id: &str) -> Result<(), ServiceError> {
        let deleted = self
            .store
            .delete_owned(OwnedTable::Responses, user.id, id)
            .await
            .map_err(|e| ServiceError::internal("The response cannot be deleted", &e))?;
        if !deleted {
            return Err(ServiceError::not_found(format!("response {id}")));
        }
        Ok(())
    }
}

/// Chats that repeat their history with each request (Chat Completions) find the
/// response that ended it by a key the door makes of that history.
impl Responses {
    /// The response that ended the user's chat `key`, if it is still there.
    pub async fn thread(
        &self,
        user: &User,
        key: &str,
    ) -> Result<Option<ResponseRecord>, ServiceError> {
        let id = self
            .store
            .chat_thread(user.id, key)
            .await
            .map_err(|e| ServiceError::internal("The chat cannot be read", &e))?;
        match id {
            None => Ok(None),
            Some(id) => match self.get(user, &id).await {
                Ok(response) => Ok(Some(response)),
                Err(ServiceError::NotFound(_)) => Ok(None),
                Err(error) => Err(error),
            },
        }
    }

    /// Remembers that response `response_id` ended the user's chat `key`.
    pub async fn remember_thread(
        &self,
        user: &User,
        key: &str,
        response_id: &str,
    ) -> Result<(), ServiceError> {
        self.store
            .set_chat_thread(user.id, key, response_id)
            .await
            .map_err(|e| ServiceError::internal("The chat cannot be written", &e))
    }
}

/// The container's files the response's code created or changed, with their ids.
async fn touched_files(
    containers: &Containers,
    user: &User,
    response: &ResponseRecord,
) -> Result<Vec<ContainerFile>, ServiceError> {
    let mut seen = BTreeSet::new();
    let touched: Vec<&str> = response
        .records
        .iter()
        .filter_map(|record| match record {
            Record::Tool {
                execution: Some(execution),
                ..
            } => Some(execution.files.iter().map(|change| change.path.as_str())),
            _ => None,
        })
        .flatten()
        .filter(|path| seen.insert(*path))
        .collect();
    if touched.is_empty() {
        return Ok(Vec::new());
    }
    let files = containers.all_files(user, &response.container_id).await?;
    Ok(touched
        .iter()
        .filter_map(|path| files.iter().find(|file| file.path == *path).cloned())
        .collect())
}

/// Writes the response's row as it ends; a response deleted meanwhile stays deleted.
async fn update(store: &Store, response: &ResponseRecord) -> Result<(), ServiceError> {
    let body = serde_json::to_string(response)
        .map_err(|e| ServiceError::internal("The response cannot be recorded", &e))?;
    store
        .update_response(&response.id, body)
        .await
        .map_err(|e| ServiceError::internal("The response cannot be recorded", &e))
}

async fn save(store: &Store, user: &User, response: &ResponseRecord) -> Result<(), ServiceError> {
    let body = serde_json::to_string(response)
        .map_err(|e| ServiceError::internal("The response cannot be recorded", &e))?;
    store
        .insert_response(&response.id, user.id, response.created_at, body)
        .await
        .map_err(|e| ServiceError::internal("The response cannot be recorded", &e))
}

fn add(total: TokenUsage, request: TokenUsage) -> TokenUsage {
    TokenUsage {
        input_tokens: total.input_tokens + request.input_tokens,
        output_tokens: total.output_tokens + request.output_tokens,
    }
}

/// A transcript's records are kept with the response when it ends, not as they come.
struct Discard;

impl RecordSink for Discard {
    fn append(&mut self, _: &Record) -> Result<(), AgentError> {
        Ok(())
    }
}
