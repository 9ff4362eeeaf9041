//! Conversations: a model and a person, the model's code running in a session of its own.
//!
//! A conversation lives in the database, not in memory: its records (the person's
//! messages, the model's replies, each tool call with its code and output) are written
//! one by one as the turn goes, so a crash or a restart loses nothing already said. A
//! turn reads them back, borrows the session for its whole length (so the notebook view
//! cannot run a cell in the middle of it), and runs in a task of its own, so a client
//! that goes away does not cut it short. The only memory kept is the turns under way:
//! each one's events in an [`EventLog`] (so a page opened in the middle of a turn, after
//! a reload or in a second tab, shows the turn so far and follows it), and what cancels
//! it, from any client.

use crate::error::{sentence, ServiceError};
use crate::event_log::{EventLog, LogEntry};
use crate::limits::{LimitsRequest, SessionLimits};
use crate::models::Models;
use crate::page::{Page, PageRequest};
use crate::sessions::Sessions;
use crate::store::{self, ConversationRecord, Store, User};
use crate::users::random_hex;
use sandcell_agent::{
    notebook, Agent, AgentError, AgentEvent, AgentOptions, Record, RecordSink, TokenUsage,
    Transcript, TurnEnd,
};
use sandcell_pyenv::EnvInfo;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// A title is the start of the first message, at most this many characters.
const TITLE_CHARS: usize = 60;

/// What the API shows of a conversation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationInfo {
    pub id: String,
    /// The start of the first message; empty until there is one.
    pub title: String,
    /// `provider:model`.
    pub model: String,
    /// The session its code runs in (its files are the conversation's files).
    pub session_id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// When the last record was added, RFC 3339, UTC.
    pub updated_at: String,
}

/// A conversation with everything said and run in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    pub info: ConversationInfo,
    /// In order, each with a `type`: `start` {version, model}, `user` {text},
    /// `assistant` {text, tool_calls [{id, name, arguments}], usage}, `tool` {call_id,
    /// code, content (what the model read), execution (the execution result, null when
    /// the call did not run), images}, `note` {text}.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Value>,
    /// The turn under way, if any: its events are at `GET …/events`.
    pub turn: Option<TurnInfo>,
}

/// A turn under way, as a client opening the conversation in its middle needs it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TurnInfo {
    /// What the person said.
    pub text: String,
    /// How many of the records came before the turn: those after it are also in the
    /// turn's events.
    pub records_before: usize,
}

/// How a turn ended: the last event of its stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TurnOutcome {
    /// `answered`, `step_limit`, `cancelled` or `error`.
    pub outcome: &'static str,
    /// Why, when it did not end with an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Tokens used by the whole conversation.
    #[schema(value_type = Object)]
    pub usage: TokenUsage,
}

/// One event of a turn's stream.
#[derive(Debug, Clone)]
pub enum TurnEvent {
    /// Boxed: an execution's event is many times the size of the end.
    Agent(Box<AgentEvent>),
    End(TurnOutcome),
}

impl LogEntry for TurnEvent {
    fn is_end(&self) -> bool {
        matches!(self, Self::End(_))
    }
}

/// A turn's events, read by every client that follows it.
pub type TurnLog = EventLog<TurnEvent>;

/// A turn under way.
struct Turn {
    cancel: CancellationToken,
    log: Arc<TurnLog>,
    info: TurnInfo,
}

type Turns = Arc<Mutex<HashMap<String, Turn>>>;

/// All conversations of the server.
pub struct Conversations {
    store: Store,
    sessions: Arc<Sessions>,
    models: Models,
    python: EnvInfo,
    /// The highest limits; a conversation's session gets the defaults within them.
    max_limits: SessionLimits,
    /// The turns under way, by conversation id.
    turns: Turns,
}

impl Conversations {
    pub fn new(
        store: Store,
        sessions: Arc<Sessions>,
        models: Models,
        python: EnvInfo,
        max_limits: SessionLimits,
    ) -> Self {
        Self {
            store,
            sessions,
            models,
            python,
            max_limits,
            turns: Arc::default(),
        }
    }

    pub fn models(&self) -> &Models {
        &self.models
    }

    /// A new conversation, its code running in the user's session `session_id` (a
    /// notebook's: the model sees the variables and files the person made there), or in a
    /// new session (the server's default limits) of the configured `environment` (`None`:
    /// the base one), which a given session already has. Its model must be one the server
    /// can talk to.
    pub async fn create(
        &self,
        user: &User,
        model: Option<&str>,
        session_id: Option<&str>,
        environment: Option<&str>,
    ) -> Result<ConversationInfo, ServiceError> {
        if let (Some(session_id), Some(_)) = (session_id, environment) {
            return Err(ServiceError::invalid(format!(
                "Session {session_id} already runs in its own environment; leave environment out when you give session_id."
            )));
        }
        let model = self.models.pick(model)?;
        self.models.client(&model)?;
        let id =
            random_hex(16).map_err(|e| ServiceError::internal("No random conversation id", &e))?;
        let session = match session_id {
            Some(session_id) => self.sessions.adopt(user, session_id, &id)?,
            None => {
                let limits = LimitsRequest::default().resolve(&self.max_limits)?;
                self.sessions
                    .create_owned(
                        user,
                        limits,
                        self.sessions.network_for(None)?,
                        environment,
                        Some(&id),
                    )
                    .await?
            }
        };
        let now = store::now();
        let conversation = ConversationRecord {
            id,
            user_id: user.id,
            session_id: session.id.clone(),
            title: String::new(),
            model,
            created_at: now.clone(),
            updated_at: now,
        };
        let recorded = match self.store.insert_conversation(conversation.clone()).await {
            Ok(()) => {
                let sink = StoreSink::new(self.store.clone(), &conversation.id, 0);
                Transcript::with_sink(&conversation.model, Box::new(sink))
                    .map(drop)
                    .map_err(|e| ServiceError::internal("The conversation cannot be recorded", &e))
            }
            Err(error) => Err(ServiceError::internal(
                "The conversation cannot be recorded",
                &error,
            )),
        };
        if let Err(error) = recorded {
            if session_id.is_some() {
                // The session was there before; only the conversation goes.
                let _ = self.store.delete_conversation(&conversation.id).await;
                self.sessions.release(&session.id, &conversation.id);
            } else {
                // Its rows go with the session's.
                let _ = self.sessions.remove(user, &session.id).await;
            }
            return Err(error);
        }
        Ok(info(conversation))
    }

    /// A page of the user's conversations, the most recently used first.
    pub async fn list(
        &self,
        user: &User,
        page: &PageRequest,
    ) -> Result<Page<ConversationInfo>, ServiceError> {
        let conversations = self
            .store
            .conversations(user.id)
            .await
            .map_err(|e| ServiceError::internal("The conversations cannot be read", &e))?;
        page.page(
            conversations.into_iter().map(info).collect(),
            |conversation| &conversation.id,
        )
    }

    pub async fn get(&self, user: &User, id: &str) -> Result<ConversationDetail, ServiceError> {
        let conversation = self.find(user, id).await?;
        // Before the records: every record the turn adds is then among them or after.
        let turn = self.turns().get(id).map(|turn| turn.info.clone());
        let records = self
            .raw_records(id)
            .await?
            .iter()
            .map(|text| serde_json::from_str(text))
            .collect::<Result<Vec<Value>, _>>()
            .map_err(|e| ServiceError::internal("A record of the conversation is not JSON", &e))?;
        Ok(ConversationDetail {
            info: info(conversation),
            records,
            turn,
        })
    }

    /// The conversation as a Jupyter notebook, and its title.
    pub async fn notebook(&self, user: &User, id: &str) -> Result<(String, Value), ServiceError> {
        let conversation = self.find(user, id).await?;
        let records = self.records(id).await?;
        Ok((conversation.title, notebook::to_notebook(&records)))
    }

    /// Deletes the conversation with its session and the session's files, unless a
    /// notebook runs its cells in that session: the notebook keeps it. A turn under way
    /// is cancelled first.
    pub async fn delete(&self, user: &User, id: &str) -> Result<(), ServiceError> {
        let conversation = self.find(user, id).await?;
        if let Some(turn) = self.turns().get(id) {
            turn.cancel.cancel();
        }
        let session = &conversation.session_id;
        let in_a_notebook = self
            .store
            .notebook_uses_session(user.id, session)
            .await
            .map_err(|e| ServiceError::internal("The notebooks cannot be read", &e))?;
        if !in_a_notebook {
            // The conversation's rows go with its session's.
            return self.sessions.remove(user, session).await;
        }
        self.store
            .delete_conversation(id)
            .await
            .map_err(|e| ServiceError::internal("The conversation cannot be deleted", &e))?;
        self.sessions.release(session, id);
        Ok(())
    }

    /// Cancels the conversation's turn; false when none is under way.
    pub async fn cancel(&self, user: &User, id: &str) -> Result<bool, ServiceError> {
        self.find(user, id).await?;
        Ok(self
            .turns()
            .get(id)
            .map(|turn| turn.cancel.cancel())
            .is_some())
    }

    /// The events of the conversation's turn under way, for another client to follow.
    pub async fn turn(&self, user: &User, id: &str) -> Result<Arc<TurnLog>, ServiceError> {
        self.find(user, id).await?;
        self.turns()
            .get(id)
            .map(|turn| turn.log.clone())
            .ok_or_else(|| {
                // The conversation is there; only its state has nothing to follow.
                ServiceError::Conflict(format!(
                    "Conversation {id} has no turn under way; read the conversation for what was said."
                ))
            })
    }

    /// Cancels every turn (the server is shutting down); what was said is kept.
    pub fn cancel_all(&self) {
        for turn in self.turns().values() {
            turn.cancel.cancel();
        }
    }

    /// Starts a turn: the person says `text` (to `model` from now on, if given). The
    /// turn's events go to its log, [`TurnEvent::End`] last. Refused (and nothing
    /// recorded) when the conversation or its session is busy.
    pub async fn send(
        &self,
        user: &User,
        id: &str,
        text: String,
        model: Option<&str>,
    ) -> Result<Arc<TurnLog>, ServiceError> {
        if text.trim().is_empty() {
            return Err(ServiceError::invalid("The message is empty."));
        }
        let conversation = self.find(user, id).await?;
        let spec = self.models.pick(model.or(Some(&conversation.model)))?;
        let client = self.models.client(&spec)?;
        let cancel = CancellationToken::new();
        let log = Arc::new(TurnLog::default());
        let records = self.records(id).await?;
        let turn = TurnGuard::register(
            &self.turns,
            id,
            Turn {
                cancel: cancel.clone(),
                log: log.clone(),
                info: TurnInfo {
                    text: text.clone(),
                    records_before: records.len(),
                },
            },
        )?;
        let mut checkout = self
            .sessions
            .checkout(user, &conversation.session_id)
            .await?;
        // A shutdown cancels the checkout's token, and so the turn.
        let shutdown = checkout.cancellation();
        let cancel_on_shutdown = cancel.clone();
        let watch_shutdown = tokio::spawn(async move {
            shutdown.cancelled().await;
            cancel_on_shutdown.cancel();
        });

        let sink = StoreSink::new(self.store.clone(), id, records.len());
        let mut transcript = Transcript::resume(records, Box::new(sink));
        if spec != conversation.model {
            transcript
                .push(Record::Note {
                    text: format!("model changed to {spec}"),
                })
                .map_err(|e| ServiceError::internal("The conversation cannot be written", &e))?;
        }
        let title = if conversation.title.is_empty() {
            title_of(&text)
        } else {
            conversation.title.clone()
        };
        self.store
            .update_conversation(id, title, spec)
            .await
            .map_err(|e| ServiceError::internal("The conversation cannot be written", &e))?;
        let options = AgentOptions {
            max_steps: self.models.max_steps(),
            ..AgentOptions::default()
        };
        let max_steps = options.max_steps;
        let mut agent = Agent::new(client, self.python.clone(), transcript, options);

        let task_log = log.clone();
        tokio::spawn(async move {
            let _turn = turn;
            let result = match checkout.session() {
                Ok(session) => {
                    agent
                        .send(
                            session,
                            &text,
                            &mut |event| task_log.push(TurnEvent::Agent(Box::new(event))),
                            &cancel,
                        )
                        .await
                }
                Err(error) => Err(AgentError::Config(error.to_string())),
            };
            let broken = matches!(result, Err(AgentError::Session(_)));
            let shutting_down = checkout.shutting_down();
            checkout.finish(broken).await;
            watch_shutdown.abort();
            let usage = agent.usage();
            let outcome = match result {
                Ok(TurnEnd::Answered { .. }) => ("answered", None),
                Ok(TurnEnd::StepLimit) => ("step_limit", Some(format!(
                    "The model was still working after {max_steps} requests (the step limit); ask it to go on."
                ))),
                // A conversation sets no output token limit; a turn stopped at one is
                // told like one stopped at the step limit.
                Ok(TurnEnd::OutputLimit) => ("step_limit", Some(
                    "The model reached its output token limit before it answered; ask it to go on.".to_owned(),
                )),
                Ok(TurnEnd::Cancelled) if shutting_down => ("cancelled", Some(
                    "The server is shutting down; the conversation so far is kept.".to_owned(),
                )),
                Ok(TurnEnd::Cancelled) => ("cancelled", None),
                Err(error) => {
                    tracing::warn!("a conversation's turn failed: {error}");
                    ("error", Some(turn_error(&error)))
                }
            };
            task_log.push(TurnEvent::End(TurnOutcome {
                outcome: outcome.0,
                message: outcome.1,
                usage,
            }));
        });
        Ok(log)
    }

    /// The conversation `id` if it is the user's; another user's is "not found".
    async fn find(&self, user: &User, id: &str) -> Result<ConversationRecord, ServiceError> {
        self.store
            .conversation(user.id, id)
            .await
            .map_err(|e| ServiceError::internal("The conversation cannot be read", &e))?
            .ok_or_else(|| ServiceError::not_found(format!("conversation {id}")))
    }

    async fn raw_records(&self, id: &str) -> Result<Vec<String>, ServiceError> {
        self.store
            .conversation_records(id)
            .await
            .map_err(|e| ServiceError::internal("The conversation cannot be read", &e))
    }

    async fn records(&self, id: &str) -> Result<Vec<Record>, ServiceError> {
        self.raw_records(id)
            .await?
            .iter()
            .map(|text| serde_json::from_str(text))
            .collect::<Result<Vec<Record>, _>>()
            .map_err(|e| ServiceError::internal("A record of the conversation cannot be read", &e))
    }

    fn turns(&self) -> MutexGuard<'_, HashMap<String, Turn>> {
        lock(&self.turns)
    }
}

/// What the person is told when a turn fails.
fn turn_error(error: &AgentError) -> String {
    match error {
        AgentError::Session(_) => format!(
            "{error}; its Python process was stopped, and the next message starts a fresh one (variables are gone, files remain)."
        ),
        _ => sentence(&error.to_string()),
    }
}

/// Marks a conversation's turn as under way, until dropped.
struct TurnGuard {
    turns: Turns,
    id: String,
}

impl TurnGuard {
    fn register(turns: &Turns, id: &str, turn: Turn) -> Result<Self, ServiceError> {
        let mut map = lock(turns);
        if map.contains_key(id) {
            return Err(ServiceError::Busy(
                "This conversation is still answering the last message; wait for it, or cancel it."
                    .into(),
            ));
        }
        map.insert(id.to_owned(), turn);
        Ok(Self {
            turns: turns.clone(),
            id: id.to_owned(),
        })
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        let turn = lock(&self.turns).remove(&self.id);
        // A turn refused after it was registered (its session busy, say) never began:
        // whoever follows it sees it end. (After a turn's own end nothing more is added.)
        if let Some(turn) = turn {
            turn.log.push(TurnEvent::End(TurnOutcome {
                outcome: "error",
                message: Some("The message was not taken; send it again.".into()),
                usage: TokenUsage::default(),
            }));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The map is only inserted into and removed from: a panic cannot leave it torn.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes a transcript's records through to the database as they are added.
struct StoreSink {
    store: Store,
    conversation_id: String,
    next: usize,
}

impl StoreSink {
    /// Writes a conversation's records from number `next` on.
    fn new(store: Store, conversation_id: &str, next: usize) -> Self {
        Self {
            store,
            conversation_id: conversation_id.to_owned(),
            next,
        }
    }
}

impl RecordSink for StoreSink {
    fn append(&mut self, record: &Record) -> Result<(), AgentError> {
        let failed = |message: String| AgentError::Io {
            path: format!("conversation {}", self.conversation_id).into(),
            message,
        };
        let json = serde_json::to_value(record).map_err(|e| failed(e.to_string()))?;
        let kind = json.get("type").and_then(Value::as_str).unwrap_or("record");
        self.store
            .append_conversation_record(&self.conversation_id, self.next, kind, &json.to_string())
            .map_err(|e| failed(e.to_string()))?;
        self.next += 1;
        Ok(())
    }
}

fn info(conversation: ConversationRecord) -> ConversationInfo {
    ConversationInfo {
        id: conversation.id,
        title: conversation.title,
        model: conversation.model,
        session_id: conversation.session_id,
        created_at: conversation.created_at,
        updated_at: conversation.updated_at,
    }
}

/// A title from the first message: its first line, cut at a word near [`TITLE_CHARS`].
fn title_of(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or_default().trim();
    if line.chars().count() <= TITLE_CHARS {
        return line.to_owned();
    }
    let cut: String = line.chars().take(TITLE_CHARS).collect();
    let cut = match cut.rfind(char::is_whitespace) {
        Some(space) if space > TITLE_CHARS / 2 => &cut[..space],
        _ => &cut,
    };
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_turn_refused_after_it_was_registered_ends_for_its_followers() {
        let turns = Turns::default();
        let log = Arc::new(TurnLog::default());
        let turn = |log: &Arc<TurnLog>| Turn {
            cancel: CancellationToken::new(),
            log: log.clone(),
            info: TurnInfo {
                text: "hi".into(),
                records_before: 1,
            },
        };
        let guard = TurnGuard::register(&turns, "c1", turn(&log)).unwrap();
        assert!(matches!(
            TurnGuard::register(&turns, "c1", turn(&log)),
            Err(ServiceError::Busy(_))
        ));
        drop(guard);
        assert!(lock(&turns).is_empty());
        match log.end().await {
            Some(TurnEvent::End(outcome)) => assert_eq!(outcome.outcome, "error"),
            other => panic!("no end: {other:?}"),
        }
    }

    #[test]
    fn a_title_is_the_first_line_cut_at_a_word() {
        assert_eq!(title_of("  Plot this CSV\nplease "), "Plot this CSV");
        let long =
            "Split this image in two and invert one half, then save both halves as PNG files";
        let title = title_of(long);
        assert_eq!(
            title,
            "Split this image in two and invert one half, then save both…"
        );
        assert!(title.chars().count() <= TITLE_CHARS + 1);
        let word = "x".repeat(100);
        assert_eq!(title_of(&word).chars().count(), TITLE_CHARS + 1);
    }
}
