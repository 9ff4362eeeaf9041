//! The loop: send the conversation to the model, run the code it asks for in the
//! session, give it the results, and again, until it answers without calling the tool.

use sandcell_llm::{ChatEvent, FinishReason, ImageBase64, Tool};
use sandcell_pyenv::EnvInfo;
use sandcell_session::{ExecEvent, ExecOptions, Session};
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientEvent, ModelClient};
use crate::code_stream::CodeStream;
use crate::error::AgentError;
use crate::event::{AgentEvent, TokenUsage};
use crate::prompt::{system_prompt, Reach};
use crate::tool_result::{tool_output, ToolOutput, DEFAULT_OUTPUT_LIMIT};
use crate::transcript::{Record, RecordedCall, Transcript};

/// How far a turn may go.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Model requests per turn at most (each may run code).
    pub max_steps: usize,
    /// Characters of one tool result the model reads at most.
    pub output_limit: usize,
    /// Tokens the model may write in one turn, its requests together (each request's
    /// own cap only when `None`).
    pub max_output_tokens: Option<u32>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            max_steps: 20,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            max_output_tokens: None,
        }
    }
}

/// How a turn ended (failures are `Err`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEnd {
    /// The model answered without calling the tool.
    Answered { text: String },
    /// The model was still calling the tool after `max_steps` requests.
    StepLimit,
    /// The model wrote the turn's `max_output_tokens` before it answered.
    OutputLimit,
    /// The turn was cancelled; the conversation keeps what happened before.
    Cancelled,
}

/// A conversation with a model. Its code runs in a session lent to each turn: the
/// conversation outlives any one Python process (a server restarts it, stops it when
/// idle), and the owner of the session decides who else may use it between turns.
pub struct Agent {
    client: ModelClient,
    env: EnvInfo,
    transcript: Transcript,
    options: AgentOptions,
    usage: TokenUsage,
}

impl Agent {
    /// An agent going on with `transcript` (new, or read back); its token count starts
    /// from what the transcript's model replies used.
    pub fn new(
        client: ModelClient,
        env: EnvInfo,
        transcript: Transcript,
        options: AgentOptions,
    ) -> Agent {
        let usage = transcript.usage();
        Agent {
            client,
            env,
            transcript,
            options,
            usage,
        }
    }

    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    pub fn client(&self) -> &ModelClient {
        &self.client
    }

    /// Talks to another model from the next turn on; the conversation stays.
    pub fn set_client(&mut self, client: ModelClient) -> Result<(), AgentError> {
        self.transcript.push(Record::Note {
            text: format!("model changed to {}", client.choice().spec()),
        })?;
        self.client = client;
        Ok(())
    }

    /// A new conversation with fresh Python state in the same session (files stay).
    pub async fn start_over(
        &mut self,
        session: &mut Session,
        transcript: Transcript,
    ) -> Result<(), AgentError> {
        session.restart().await?;
        self.transcript = transcript;
        self.usage = TokenUsage::default();
        Ok(())
    }

    /// Tokens used by the whole conversation so far.
    pub fn usage(&self) -> TokenUsage {
        self.usage
    }

    /// One turn: the person says `text`; the model works until it answers, its code
    /// running in `session`. Events stream through `on_event`. Cancelling `cancel` stops
    /// the model's request or interrupts the running code; the session, its files and
    /// the conversation so far are kept.
    pub async fn send(
        &mut self,
        session: &mut Session,
        text: &str,
        on_event: &mut (dyn FnMut(AgentEvent) + Send),
        cancel: &CancellationToken,
    ) -> Result<TurnEnd, AgentError> {
        self.send_with_images(session, text, Vec::new(), on_event, cancel)
            .await
    }

    /// [`Agent::send`], the person giving `images` with their words (shown to a model
    /// with vision, not to others).
    pub async fn send_with_images(
        &mut self,
        session: &mut Session,
        text: &str,
        images: Vec<ImageBase64>,
        on_event: &mut (dyn FnMut(AgentEvent) + Send),
        cancel: &CancellationToken,
    ) -> Result<TurnEnd, AgentError> {
        self.transcript.push(Record::User {
            text: text.to_owned(),
            images,
        })?;
        // Built once per turn: the same prompt (the files as they were when the person
        // spoke) for every request of the turn keeps the providers' prompt caches warm.
        let reach = Reach {
            network: session.network_policy(),
            package_index: session.installs_packages(),
        };
        let environment = session
            .environment()
            .map(|name| (name, session.layer_packages()));
        let system = system_prompt(
            &self.env,
            environment,
            session.limits(),
            session.workdir(),
            reach,
        );
        let tools = [Tool::python()];
        let mut written: u32 = 0;
        for _ in 0..self.options.max_steps {
            let allowed = self
                .options
                .max_output_tokens
                .map(|max| max.saturating_sub(written));
            if allowed == Some(0) {
                return self.output_limit_reached();
            }
            let conversation = self
                .transcript
                .conversation(system.clone(), self.client.choice().vision);
            let mut partial_text = String::new();
            let mut code_streams: HashMap<usize, (String, CodeStream)> = HashMap::new();
            let mut forward = |event: ClientEvent| match event {
                ClientEvent::Chat(ChatEvent::TextDelta(text)) => {
                    partial_text.push_str(&text);
                    on_event(AgentEvent::TextDelta { text });
                }
                ClientEvent::Chat(ChatEvent::ToolCallStart { index, id, .. }) => {
                    code_streams.insert(index, (id, CodeStream::default()));
                }
                ClientEvent::Chat(ChatEvent::ToolCallArgumentsDelta { index, delta }) => {
                    if let Some((call_id, stream)) = code_streams.get_mut(&index) {
                        let text = stream.push(&delta);
                        if !text.is_empty() {
                            on_event(AgentEvent::CodeDelta {
                                call_id: call_id.clone(),
                                text,
                            });
                        }
                    }
                }
                ClientEvent::Chat(_) => {}
                ClientEvent::Retrying {
                    attempt,
                    delay,
                    reason,
                } => on_event(AgentEvent::Retrying {
                    attempt,
                    delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    reason,
                }),
            };
            let turn = tokio::select! {
                turn = self.client.turn(&conversation, &tools, allowed, &mut forward) => Some(turn),
                () = cancel.cancelled() => None,
            };
            let Some(turn) = turn else {
                // What the model had said stays in the conversation, marked as cut.
                if !partial_text.is_empty() {
                    self.transcript.push(Record::Assistant {
                        text: partial_text,
                        tool_calls: Vec::new(),
                        usage: None,
                    })?;
                }
                self.transcript.push(Record::Note {
                    text: "the turn was cancelled".into(),
                })?;
                return Ok(TurnEnd::Cancelled);
            };
            let turn = turn?;
            let usage = turn.usage.map(TokenUsage::from).unwrap_or_default();
            self.usage += usage;
            written =
                written.saturating_add(u32::try_from(usage.output_tokens).unwrap_or(u32::MAX));
            on_event(AgentEvent::Usage {
                request: usage,
                conversation: self.usage,
            });
            self.transcript.push(Record::Assistant {
                text: turn.text.clone(),
                tool_calls: turn
                    .tool_calls
                    .iter()
                    .map(|c| RecordedCall {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    })
                    .collect(),
                usage: turn.usage.map(TokenUsage::from),
            })?;
            // Cut at the turn's limit, the words are not a whole answer and the calls
            // not whole code.
            if allowed.is_some() && turn.finish_reason == FinishReason::Length {
                // Every call needs a result, or the providers refuse the history.
                for call in &turn.tool_calls {
                    self.push_not_run(&call.id, "[Not run: the output token limit cut it short.]")?;
                }
                return self.output_limit_reached();
            }
            if turn.tool_calls.is_empty() {
                on_event(AgentEvent::Final {
                    text: turn.text.clone(),
                });
                return Ok(TurnEnd::Answered { text: turn.text });
            }
            for call in &turn.tool_calls {
                if cancel.is_cancelled() {
                    // Every call needs a result, or the providers refuse the history.
                    self.push_not_run(&call.id, "[Not run: the user cancelled the turn.]")?;
                    continue;
                }
                let code = match python_code(&call.name, &call.input().ok()) {
                    Ok(code) => code,
                    Err(problem) => {
                        self.push_not_run(&call.id, &problem)?;
                        continue;
                    }
                };
                self.run_call(session, &call.id, code, on_event, cancel)
                    .await?;
            }
            if cancel.is_cancelled() {
                self.transcript.push(Record::Note {
                    text: "the turn was cancelled".into(),
                })?;
                return Ok(TurnEnd::Cancelled);
            }
        }
        self.transcript.push(Record::Note {
            text: format!(
                "the turn stopped after {} model requests (the step limit)",
                self.options.max_steps
            ),
        })?;
        Ok(TurnEnd::StepLimit)
    }

    fn output_limit_reached(&mut self) -> Result<TurnEnd, AgentError> {
        self.transcript.push(Record::Note {
            text: "the turn stopped at its output token limit".into(),
        })?;
        Ok(TurnEnd::OutputLimit)
    }

    /// Runs one call's code, streaming its output, and records its result.
    async fn run_call(
        &mut self,
        session: &mut Session,
        call_id: &str,
        code: String,
        on_event: &mut (dyn FnMut(AgentEvent) + Send),
        cancel: &CancellationToken,
    ) -> Result<(), AgentError> {
        on_event(AgentEvent::Code {
            call_id: call_id.to_owned(),
            code: code.clone(),
        });
        let interrupter = session.interrupter();
        let watch = cancel.clone();
        let interrupt_on_cancel = tokio::spawn(async move {
            watch.cancelled().await;
            interrupter.interrupt();
        });
        let execution = session
            .execute(&code, &ExecOptions::default(), &mut |event| {
                let call_id = call_id.to_owned();
                on_event(match event.clone() {
                    ExecEvent::Stdout(text) => AgentEvent::Stdout { call_id, text },
                    ExecEvent::Stderr(text) => AgentEvent::Stderr { call_id, text },
                    ExecEvent::Result(data) => AgentEvent::Result { call_id, data },
                    ExecEvent::Error(error) => AgentEvent::Error { call_id, error },
                })
            })
            .await;
        interrupt_on_cancel.abort();
        let execution = execution?;
        let number = self.transcript.tool_calls() + 1;
        // The call must get a result whatever happens (see ARCHITECTURE.md), so a
        // working directory sandcell cannot write to is said in the result itself.
        let output = tool_output(
            &execution,
            number,
            session.workdir(),
            self.options.output_limit,
        )
        .unwrap_or_else(|error| ToolOutput {
            content: format!("[sandcell could not prepare the output of this call: {error}]"),
            images: Vec::new(),
        });
        let images: Vec<String> = output.images.iter().map(|i| i.path.clone()).collect();
        on_event(AgentEvent::Execution {
            call_id: call_id.to_owned(),
            execution: execution.clone(),
            images: images.clone(),
        });
        self.transcript.push(Record::Tool {
            call_id: call_id.to_owned(),
            code,
            content: output.content,
            execution: Some(Box::new(execution)),
            images,
        })
    }

    fn push_not_run(&mut self, call_id: &str, why: &str) -> Result<(), AgentError> {
        self.transcript.push(Record::Tool {
            call_id: call_id.to_owned(),
            code: String::new(),
            content: why.to_owned(),
            execution: None,
            images: Vec::new(),
        })
    }
}

/// The code of a `python` call, or what the model must be told instead.
fn python_code(name: &str, input: &Option<serde_json::Value>) -> Result<String, String> {
    if name != "python" {
        return Err(format!(
            "[There is no tool named `{name}`; the only tool is `python`, which takes {{\"code\": \"...\"}}.]"
        ));
    }
    input
        .as_ref()
        .and_then(|input| input.get("code"))
        .and_then(|code| code.as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            "[Not run: the python tool takes its code as {\"code\": \"...\"}.]".to_owned()
        })
}
