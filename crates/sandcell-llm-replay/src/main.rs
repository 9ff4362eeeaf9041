//! `sandcell-llm-replay`: the replay server as a process, for tests not written in Rust.
//!
//! Prints `listening on http://ADDRESS:PORT` once bound, then serves until killed.

use sandcell_llm_replay::{ReplayError, ReplayServer, Script};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: sandcell-llm-replay --script FILE [--fixtures DIR] [--listen ADDRESS:PORT]

Plays a language-model provider for tests: answers POST /v1/chat/completions,
/v1/responses, /v1/messages and /api/chat with the steps of the script (a JSON list),
one step per request, and lists the requests received at GET /_requests.

  --script FILE           the script
  --fixtures DIR          where the script's fixture files are (default: .)
  --listen ADDRESS:PORT   where to listen (default: 127.0.0.1:0, a free port)";

struct Arguments {
    script: PathBuf,
    fixtures: PathBuf,
    listen: SocketAddr,
}

/// What the command line asks for.
enum Command {
    Serve(Arguments),
    Help,
}

fn parse(mut arguments: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut script = None;
    let mut fixtures = PathBuf::from(".");
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    while let Some(argument) = arguments.next() {
        if argument == "--help" || argument == "-h" {
            return Ok(Command::Help);
        }
        // `--name value` or `--name=value`.
        let (name, inline_value) = match argument.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (argument, None),
        };
        let mut value = || {
            inline_value
                .clone()
                .or_else(|| arguments.next())
                .ok_or_else(|| format!("{name} needs a value; see --help."))
        };
        match name.as_str() {
            "--script" => script = Some(PathBuf::from(value()?)),
            "--fixtures" => fixtures = PathBuf::from(value()?),
            "--listen" => {
                let address = value()?;
                listen = address.parse().map_err(|_| {
                    format!("--listen takes an ADDRESS:PORT such as 127.0.0.1:0, not {address}.")
                })?;
            }
            _ => return Err(format!("unknown argument {name}; see --help.")),
        }
    }
    let script = script.ok_or("--script FILE is required; see --help.")?;
    Ok(Command::Serve(Arguments {
        script,
        fixtures,
        listen,
    }))
}

fn main() -> ExitCode {
    let arguments = match parse(std::env::args().skip(1)) {
        Ok(Command::Serve(arguments)) => arguments,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => return fail(&message, 2),
    };
    let script = match Script::from_file(&arguments.script) {
        Ok(script) => script,
        Err(error) => return fail(&format!("{error}."), 2),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}."), 1),
    };
    runtime.block_on(serve(arguments, script))
}

async fn serve(arguments: Arguments, script: Script) -> ExitCode {
    let server = match ReplayServer::start_on(arguments.listen, script, &arguments.fixtures).await {
        Ok(server) => server,
        Err(error @ ReplayError::Listen { .. }) => return fail(&format!("{error}."), 1),
        // The script's own mistakes: a missing fixture, an invalid status or header.
        Err(error) => return fail(&format!("{error}."), 2),
    };
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "listening on {}", server.base_url())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        // Whoever started us can no longer learn the address: serving is pointless.
        return ExitCode::FAILURE;
    }
    std::future::pending().await
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("sandcell-llm-replay: {message}");
    ExitCode::from(code)
}
