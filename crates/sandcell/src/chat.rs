//! `sandcell chat`: a conversation with a model whose code runs in a sandcell session,
//! interactive on a terminal or one-shot (`sandcell chat "question"`).

use crate::chat_render::ChatRenderer;
use crate::kept_files::KeptFiles;
use crate::model_settings::ModelSettings;
use crate::session_args::{SessionArgs, StartedSession};
use anyhow::{bail, Context};
use sandcell_agent::{
    notebook, prompt, Agent, AgentError, AgentOptions, Config, ModelChoice, ModelClient,
    Transcript, TurnEnd, CONFIG_HINT,
};
use sandcell_session::Session;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Ask this, print the answer and exit; without it, chat interactively.
    #[arg(value_name = "MESSAGE")]
    message: Option<String>,
    /// The model: openai:MODEL, openai-responses:MODEL, anthropic:MODEL, ollama:MODEL,
    /// openai-compatible:MODEL (with --base-url), or a provider from the config file.
    /// Default: $SANDCELL_MODEL, else `model` in the config file.
    #[arg(short, long, value_name = "PROVIDER:MODEL")]
    model: Option<String>,
    /// The provider's base URL (as its SDK takes it, e.g. http://localhost:8000/v1).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Print the turn's events as JSON Lines (text deltas, code, execution results,
    /// the final answer, usage) instead of human output. Needs MESSAGE.
    #[arg(long)]
    json: bool,
    /// Model requests per turn at most (default 20, or `max_steps` in the config file).
    #[arg(long, value_name = "N")]
    max_steps: Option<usize>,
    /// When the chat ends, also write the conversation to PATH: a Jupyter notebook if
    /// PATH ends in .ipynb, else JSON Lines.
    #[arg(long, value_name = "PATH")]
    save: Option<PathBuf>,
    /// Where the files the code creates or changes are saved when the working directory
    /// is temporary (default: the current directory); a file already there is kept and
    /// the new one takes a numbered name (plot-1.png).
    #[arg(long, value_name = "DIR", conflicts_with = "workdir")]
    out: Option<PathBuf>,
    #[command(flatten)]
    session: SessionArgs,
}

pub async fn chat(args: ChatArgs) -> anyhow::Result<ExitCode> {
    if args.json && args.message.is_none() {
        bail!("--json needs a MESSAGE: sandcell chat --json \"your question\"");
    }
    let ModelSettings {
        config,
        config_path,
        model: spec,
    } = ModelSettings::load(args.model.as_deref())?;
    let Some(spec) = spec else {
        let at = config_path
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default();
        bail!("no model is configured: {CONFIG_HINT}{at}");
    };
    let client = model_client(&spec, args.base_url.as_deref(), &config)?;

    let StartedSession {
        mut session,
        env,
        workdir,
        keep_alive,
    } = args.session.start().await?;
    let transcript_path = new_transcript_path()?;
    let transcript = Transcript::create(&transcript_path, &client.choice().spec())?;
    let options = AgentOptions {
        max_steps: args.max_steps.or(config.max_steps).unwrap_or(20).max(1),
        ..AgentOptions::default()
    };
    let mut agent = Agent::new(client, env.info().clone(), transcript, options);
    let chat = &mut Chat {
        agent: &mut agent,
        session: &mut session,
    };

    // Ctrl-C cancels the running turn; the session, its files and the conversation stay.
    let cancel = Arc::new(Mutex::new(CancellationToken::new()));
    let current = cancel.clone();
    let ctrl_c = crate::interrupt::on_ctrl_c(move || {
        if let Ok(token) = current.lock() {
            token.cancel();
        }
    });

    let files = match (&args.session.workdir, &args.out) {
        (Some(_), _) => KeptFiles::in_place(&workdir),
        (None, Some(out)) => KeptFiles::copied_to(&workdir, out)?,
        (None, None) => {
            let here = std::env::current_dir().context("cannot find the current directory")?;
            KeptFiles::copied_to(&workdir, &here)?
        }
    };
    let mut renderer = ChatRenderer::new(args.json, &workdir, files);
    let code = match &args.message {
        Some(message) => {
            let token = fresh_token(&cancel);
            turn(chat, message, &mut renderer, &token).await
        }
        None => {
            interactive(chat, &mut renderer, &workdir, &config, &cancel).await?;
            eprintln!(
                "sandcell: conversation saved to {}",
                transcript_path.display()
            );
            ExitCode::SUCCESS
        }
    };
    ctrl_c.abort();
    if let Some(path) = &args.save {
        save(agent.transcript(), path)?;
    }
    session.shutdown().await?;
    drop(keep_alive);
    Ok(code)
}

fn model_client(
    spec: &str,
    base_url: Option<&str>,
    config: &Config,
) -> anyhow::Result<ModelClient> {
    let env = |name: &str| std::env::var(name).ok();
    let choice = ModelChoice::resolve(spec, base_url, config, &env)?;
    Ok(ModelClient::new(choice)?)
}

/// A new token for the next turn, which Ctrl-C will cancel.
fn fresh_token(current: &Mutex<CancellationToken>) -> CancellationToken {
    let token = CancellationToken::new();
    if let Ok(mut current) = current.lock() {
        *current = token.clone();
    }
    token
}

/// The conversation and the session its code runs in.
struct Chat<'a> {
    agent: &'a mut Agent,
    session: &'a mut Session,
}

/// Runs one turn and says how it ended; the exit status for a one-shot chat.
async fn turn(
    chat: &mut Chat<'_>,
    message: &str,
    renderer: &mut ChatRenderer,
    cancel: &CancellationToken,
) -> ExitCode {
    let result = chat
        .agent
        .send(
            chat.session,
            message,
            &mut |event| renderer.event(&event),
            cancel,
        )
        .await;
    let usage = chat.agent.usage();
    match result {
        Ok(TurnEnd::Answered { .. }) => {
            renderer.end("answered", None, usage);
            ExitCode::SUCCESS
        }
        Ok(TurnEnd::StepLimit) => {
            renderer.end(
                "step_limit",
                Some("the model was still working when the step limit was reached; raise --max-steps or ask it to go on"),
                usage,
            );
            ExitCode::from(1)
        }
        // `sandcell chat` sets no output token limit for a turn; were one reached, the
        // turn stopped short like at the step limit.
        Ok(TurnEnd::OutputLimit) => {
            renderer.end(
                "step_limit",
                Some(
                    "the model reached its output token limit before it answered; ask it to go on",
                ),
                usage,
            );
            ExitCode::from(1)
        }
        Ok(TurnEnd::Cancelled) => {
            renderer.end(
                "cancelled",
                Some("cancelled; the conversation, the session and its files are kept"),
                usage,
            );
            ExitCode::from(130)
        }
        Err(error) => {
            renderer.end("error", Some(&error.to_string()), usage);
            ExitCode::from(1)
        }
    }
}

const HELP: &str = "\
/files          list the files in /mnt/data
/model P:M      talk to another model from now on
/reset          start over: a new conversation and fresh Python state (files stay)
/save PATH      write the conversation (.ipynb: a notebook; else JSON Lines)
/help           this list
/quit           end the chat (also Ctrl-D)
Ctrl-C stops the model or the running code; the conversation stays.";

async fn interactive(
    chat: &mut Chat<'_>,
    renderer: &mut ChatRenderer,
    workdir: &Path,
    config: &Config,
    cancel: &Mutex<CancellationToken>,
) -> anyhow::Result<()> {
    let kept = match renderer.files().copied_to_dir() {
        Some(dir) => format!(" (files the code makes are saved to {})", dir.display()),
        None => String::new(),
    };
    eprintln!(
        "sandcell chat with {} · /mnt/data is {}{kept} · /help for commands, Ctrl-D to quit",
        chat.agent.client().choice().spec(),
        workdir.display()
    );
    let mut editor = rustyline::DefaultEditor::new().context("cannot read from the terminal")?;
    loop {
        // The line editor blocks: it gets a thread of its own.
        let (returned, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline("› ");
            (editor, line)
        })
        .await
        .context("the line editor stopped")?;
        editor = returned;
        let line = match line {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => return Ok(()),
            Err(e) => return Err(e).context("cannot read from the terminal"),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        let Some(command) = line.strip_prefix('/') else {
            let token = fresh_token(cancel);
            turn(chat, line, renderer, &token).await;
            continue;
        };
        let (name, argument) = command
            .split_once(char::is_whitespace)
            .map(|(n, a)| (n, a.trim()))
            .unwrap_or((command, ""));
        let outcome = match name {
            "quit" | "exit" => return Ok(()),
            "help" => {
                println!("{HELP}");
                Ok(())
            }
            "files" => {
                let files = prompt::describe_files(workdir);
                if files.is_empty() {
                    println!("/mnt/data is empty ({})", workdir.display());
                }
                for file in files {
                    println!("{file}");
                }
                Ok(())
            }
            "model" if !argument.is_empty() => model_client(argument, None, config)
                .and_then(|client| Ok(chat.agent.set_client(client)?))
                .map(|()| println!("now talking to {argument}")),
            "reset" => start_over(chat).await,
            "save" if !argument.is_empty() => save(chat.agent.transcript(), Path::new(argument))
                .map(|()| println!("saved to {argument}")),
            _ => Err(anyhow::anyhow!(
                "unknown command /{command}; /help lists them"
            )),
        };
        if let Err(error) = outcome {
            eprintln!("sandcell: {error:#}");
        }
    }
}

async fn start_over(chat: &mut Chat<'_>) -> anyhow::Result<()> {
    let path = new_transcript_path()?;
    let transcript = Transcript::create(&path, &chat.agent.client().choice().spec())?;
    chat.agent.start_over(chat.session, transcript).await?;
    println!(
        "new conversation (saved to {}); Python state is fresh, files are kept",
        path.display()
    );
    Ok(())
}

/// Writes the conversation as a notebook (`.ipynb`) or as JSON Lines.
fn save(transcript: &Transcript, path: &Path) -> anyhow::Result<()> {
    if path.extension().is_some_and(|e| e == "ipynb") {
        let text = serde_json::to_string_pretty(&notebook::to_notebook(transcript.records()))?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    } else {
        Ok(transcript.save_json_lines(path)?)
    }
}

/// `conversations/<time>-<pid>.jsonl` in sandcell's data directory.
fn new_transcript_path() -> Result<PathBuf, AgentError> {
    let home = sandcell_pyenv::Home::from_env().map_err(|e| AgentError::Config(e.to_string()))?;
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    Ok(home
        .root()
        .join("conversations")
        .join(format!("{seconds}-{}.jsonl", std::process::id())))
}
