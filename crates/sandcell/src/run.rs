//! `sandcell run`: files and `-c` snippets as the cells of one fresh session.

use crate::render::HumanRenderer;
use anyhow::{bail, Context};
use clap::ArgMatches;
use sandcell_session::{Limits, Runtime, RuntimeOptions, SessionConfig, Status};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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
    /// Directory to use as the session's /mnt/data (kept afterwards; default: a
    /// temporary directory removed after the run).
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Copy a file into the working directory before the first cell; repeatable.
    #[arg(long = "file", value_name = "PATH")]
    input_files: Vec<PathBuf>,
    /// Where images from the cells are written (default: --workdir, else the current directory).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Time limit of each cell, in seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Memory limit of the session, in MiB.
    #[arg(long, value_name = "MIB")]
    memory: Option<u64>,
    /// Largest single file the code may write, in MiB.
    #[arg(long, value_name = "MIB")]
    max_file_size: Option<u64>,
    /// Total size the working directory may reach, in MiB.
    #[arg(long, value_name = "MIB")]
    disk_quota: Option<u64>,
    /// Processes and threads the session may run at once.
    #[arg(long, value_name = "N")]
    max_processes: Option<u64>,
    /// Modules the session template imports before forking, comma-separated (default:
    /// numpy, pandas, matplotlib, matplotlib.pyplot, IPython).
    #[arg(long, value_name = "MODULES", value_delimiter = ',')]
    preload: Option<Vec<String>>,
    /// Run without any isolation (the code gets your user's full access). Not recommended.
    #[arg(long)]
    no_sandbox: bool,
}

/// A cell to run, in command-line order.
struct Cell {
    label: String,
    code: String,
}

pub async fn run(args: RunArgs, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let cells = cells_in_order(&args, matches)?;
    let mut limits = Limits::default();
    if let Some(secs) = args.timeout {
        if !(secs.is_finite() && secs > 0.0) {
            bail!("--timeout must be a positive number of seconds, not {secs}");
        }
        limits.timeout = Duration::from_secs_f64(secs);
    }
    if let Some(mib) = args.memory {
        if mib < 64 {
            bail!("--memory must be at least 64 MiB, not {mib}");
        }
        limits.memory_mib = mib;
    }
    if let Some(mib) = args.max_file_size {
        limits.file_size_mib = mib;
    }
    if let Some(mib) = args.disk_quota {
        limits.workdir_quota_mib = mib;
    }
    if let Some(n) = args.max_processes {
        if n < 8 {
            bail!("--max-processes must be at least 8, not {n}");
        }
        limits.processes = n;
    }

    let temporary;
    let workdir = match &args.workdir {
        Some(dir) => {
            prepare_workdir(dir)?;
            dir.clone()
        }
        None => {
            temporary = tempfile::Builder::new()
                .prefix("sandcell-")
                .tempdir()
                .context("cannot create a temporary working directory")?;
            temporary.path().to_path_buf()
        }
    };
    for file in &args.input_files {
        copy_input(file, &workdir)?;
    }
    let out_dir = match (&args.out, &args.workdir) {
        (Some(out), _) => {
            std::fs::create_dir_all(out)
                .with_context(|| format!("cannot create the output directory {}", out.display()))?;
            out.clone()
        }
        (None, Some(workdir)) => workdir.clone(),
        (None, None) => PathBuf::from("."),
    };

    let env = crate::environment()?;
    let mut options = RuntimeOptions {
        sandbox: !args.no_sandbox,
        ..RuntimeOptions::default()
    };
    if let Some(modules) = args.preload {
        options.template_modules = modules;
    }
    let runtime = Runtime::start(&env, options).await?;
    for warning in runtime.warnings() {
        eprintln!("sandcell: warning: {warning}");
    }
    let mut session = runtime
        .create_session(SessionConfig {
            workdir: Some(workdir),
            limits,
        })
        .await?;

    // Ctrl-C interrupts the running cell (its variables stay); a second one within
    // two seconds ends sandcell, which takes its sessions down with it.
    let interrupter = session.interrupter();
    let ctrl_c = tokio::spawn(async move {
        let mut last: Option<std::time::Instant> = None;
        while tokio::signal::ctrl_c().await.is_ok() {
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(2)) {
                eprintln!("sandcell: stopped");
                std::process::exit(130);
            }
            last = Some(std::time::Instant::now());
            interrupter.interrupt();
        }
    });

    let mut all_ok = true;
    let mut renderer = HumanRenderer::new(out_dir, args.workdir.is_none());
    for (index, cell) in cells.iter().enumerate() {
        let execution = if args.json {
            session.execute(&cell.code, &mut |_| {}).await?
        } else {
            renderer.start_cell(index + 1);
            session
                .execute(&cell.code, &mut |event| renderer.event(event))
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
    session.shutdown().await?;
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

fn prepare_workdir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("--workdir {} is not a directory", dir.display());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the working directory {}", dir.display()))?;
    std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the working directory {}", dir.display()))?;
    Ok(())
}

fn copy_input(file: &Path, workdir: &Path) -> anyhow::Result<()> {
    let name = file
        .file_name()
        .with_context(|| format!("--file {} does not name a file", file.display()))?;
    if !file.is_file() {
        bail!("--file {}: no such file", file.display());
    }
    std::fs::copy(file, workdir.join(name))
        .with_context(|| format!("cannot copy {} into the working directory", file.display()))?;
    Ok(())
}
