//! `sandcell run`: files and `-c` snippets as the cells of one fresh session.

use crate::render::HumanRenderer;
use crate::session_args::SessionArgs;
use anyhow::{bail, Context};
use clap::ArgMatches;
use sandcell_safedir::SafeDir;
use sandcell_session::{ExecOptions, Status};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Python files to run, each as one cell.
    #[arg(value_name = "FILE.py")]
    files: Vec<PathBuf>,
    /// Code to run as one cell; repeatable. Files and snippets run in the order given.
    #[arg(short = 'c', long = "code", value_name = "CODE")]
    code: Vec<String>,
    /// Print one JSON object per cell (JSON Lines) instead of human output.
    #[arg(long)]
    json: bool,
    /// Where images from the cells are written (default: --workdir, else the current directory).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    session: SessionArgs,
}

/// A cell to run, in command-line order.
struct Cell {
    label: String,
    code: String,
}

pub async fn run(args: RunArgs, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let cells = cells_in_order(&args, matches)?;
    let out_dir = match (&args.out, &args.session.workdir) {
        (Some(out), _) => {
            std::fs::create_dir_all(out)
                .with_context(|| format!("cannot create the output directory {}", out.display()))?;
            out.clone()
        }
        (None, Some(workdir)) => workdir.clone(),
        (None, None) => PathBuf::from("."),
    };
    let mut started = args.session.start().await?;
    // Held open before any cell runs: the output directory may be the working directory
    // (or inside it), where a cell can plant links or swap the directory itself.
    let out = SafeDir::open(&out_dir)
        .with_context(|| format!("cannot open the output directory {}", out_dir.display()))?;
    let session = &mut started.session;

    // Ctrl-C interrupts the running cell (its variables stay).
    let interrupter = session.interrupter();
    let ctrl_c = crate::interrupt::on_ctrl_c(move || {
        interrupter.interrupt();
    });

    let mut all_ok = true;
    let mut renderer = HumanRenderer::new(out, out_dir, args.session.workdir.is_none());
    for (index, cell) in cells.iter().enumerate() {
        let execution = if args.json {
            session
                .execute(&cell.code, &ExecOptions::default(), &mut |_| {})
                .await?
        } else {
            renderer.start_cell(index + 1, &cell.label);
            session
                .execute(&cell.code, &ExecOptions::default(), &mut |event| {
                    renderer.event(event)
                })
                .await?
        };
        all_ok &= execution.status == Status::Ok;
        if args.json {
            let mut stdout = std::io::stdout().lock();
            serde_json::to_writer(&mut stdout, &execution)?;
            writeln!(stdout)?;
            stdout.flush()?;
        } else {
            renderer.finish_cell(&cell.label, &execution);
        }
    }
    ctrl_c.abort();
    started.session.shutdown().await?;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Files and `-c` snippets, interleaved as they appeared on the command line.
fn cells_in_order(args: &RunArgs, matches: &ArgMatches) -> anyhow::Result<Vec<Cell>> {
    let mut cells: Vec<(usize, Cell)> = Vec::new();
    let file_indices = matches.indices_of("files").into_iter().flatten();
    for (file, index) in args.files.iter().zip(file_indices) {
        let code = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        cells.push((
            index,
            Cell {
                label: file.display().to_string(),
                code,
            },
        ));
    }
    let code_indices = matches.indices_of("code").into_iter().flatten();
    for (n, (code, index)) in args.code.iter().zip(code_indices).enumerate() {
        cells.push((
            index,
            Cell {
                label: format!("-c #{}", n + 1),
                code: code.clone(),
            },
        ));
    }
    if cells.is_empty() {
        bail!("nothing to run: give one or more FILE.py or -c CODE (see `sandcell run --help`)");
    }
    cells.sort_by_key(|(index, _)| *index);
    Ok(cells.into_iter().map(|(_, cell)| cell).collect())
}
