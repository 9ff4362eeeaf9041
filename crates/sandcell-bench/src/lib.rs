//! `sandcell bench`: how fast sessions start and answer, how many one machine holds, and
//! the same work on stock Jupyter (ipykernel driven by jupyter_client) in the same run.
//!
//! For: measuring. Not for: tests (no timing assertion lives here or anywhere else).

use sandcell_pyenv::Environment;
use sandcell_session::{
    ExecOptions, Limits, Runtime, RuntimeOptions, Session, SessionConfig, Status,
};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The first cell of a fresh session: the data stack at work, a plot returned as PNG.
pub const FIRST_CELL: &str = "import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt\ndf = pd.DataFrame({'x': np.arange(50), 'y': np.arange(50) ** 0.5})\ntotal = df['y'].sum()\nplt.plot(df['x'], df['y'])\nplt.show()\ntotal";
const TRIVIAL_CELL: &str = "1 + 1";
const POOL_REFILL_PAUSE: Duration = Duration::from_millis(200);
const JUPYTER_SCRIPT: &str = include_str!("../../../python/bench/jupyter_bench.py");
/// Stock Jupyter's packages, installed into the environment for the comparison.
pub const JUPYTER_REQUIREMENTS: &str = include_str!("../../../python/bench/requirements.txt");

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub ready_samples: usize,
    pub trivial_cells: usize,
    pub throughput_sessions: usize,
    pub throughput_cells: usize,
    pub density_sessions: usize,
    /// Ready sessions kept forked ahead of demand, as a server would.
    pub pool_size: usize,
    /// Run the same work on stock Jupyter (with fewer kernels where it cannot hold more).
    pub jupyter: Option<JupyterPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JupyterPlan {
    pub ready_samples: usize,
    pub trivial_cells: usize,
    pub throughput_kernels: usize,
    pub throughput_cells: usize,
    pub density_kernels: usize,
    pub first_cell: &'static str,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            ready_samples: 200,
            trivial_cells: 2000,
            throughput_sessions: 50,
            throughput_cells: 200,
            density_sessions: 500,
            pool_size: 4,
            jupyter: Some(JupyterPlan {
                ready_samples: 10,
                trivial_cells: 500,
                throughput_kernels: 50,
                throughput_cells: 40,
                density_kernels: 20,
                first_cell: FIRST_CELL,
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Session(#[from] sandcell_session::SessionError),
    #[error("cannot create a working directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("a benchmark cell failed: {0}")]
    CellFailed(String),
    #[error("the Jupyter side failed: {0}")]
    Jupyter(String),
}

/// Latencies in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub sessions: usize,
    pub cells: usize,
    pub cells_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Density {
    pub sessions: usize,
    /// Proportional set size of all sessions together (template included for sandcell).
    pub total_pss_mib: f64,
    pub pss_per_session_mib: f64,
    pub uss_per_session_mib: f64,
    /// Every session answered a cell after all of them were started.
    pub all_answered: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Measurements {
    /// Asking for a session until the result of a trivial first cell: the runtime's own cost.
    pub session_ready_trivial: Latency,
    pub session_ready: Latency,
    pub trivial_cell: Latency,
    pub throughput: Throughput,
    pub density: Density,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sandcell: Measurements,
    pub jupyter: Option<Measurements>,
    pub cores: usize,
    pub memory_gib: f64,
}

/// Runs every measurement; `progress` hears what is being measured.
pub async fn run(
    env: &Environment,
    options: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, BenchError> {
    let runtime = Runtime::start(
        env,
        RuntimeOptions {
            pool_size: options.pool_size,
            ..RuntimeOptions::default()
        },
    )
    .await?;
    progress("sandcell: session ready (create + trivial first cell)");
    let session_ready_trivial =
        session_ready(&runtime, options.ready_samples, TRIVIAL_CELL).await?;
    progress("sandcell: session ready (create + first cell with numpy, pandas, matplotlib)");
    let session_ready = session_ready(&runtime, options.ready_samples, FIRST_CELL).await?;
    progress("sandcell: trivial cell round trip");
    let trivial_cell = trivial_cells(&runtime, options.trivial_cells).await?;
    progress("sandcell: throughput across concurrent sessions");
    let throughput = throughput(
        &runtime,
        options.throughput_sessions,
        options.throughput_cells,
    )
    .await?;
    progress("sandcell: density (live sessions and their memory)");
    let density = density(&runtime, options.density_sessions).await?;
    let sandcell = Measurements {
        session_ready_trivial,
        session_ready,
        trivial_cell,
        throughput,
        density,
    };
    let jupyter = match &options.jupyter {
        Some(plan) => {
            progress("stock Jupyter: the same work (ipykernel + jupyter_client)");
            Some(jupyter(env, plan).await?)
        }
        None => None,
    };
    Ok(Report {
        sandcell,
        jupyter,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: total_memory_gib(),
    })
}

/// A session with a directory of its own and the default limits: the pool serves it.
async fn open(runtime: &Runtime) -> Result<Session, BenchError> {
    Ok(runtime
        .create_session(SessionConfig {
            workdir: None,
            limits: Limits::default(),
        })
        .await?)
}

async fn run_cell(
    session: &mut Session,
    code: &str,
) -> Result<sandcell_session::Execution, BenchError> {
    let execution = session
        .execute(code, &ExecOptions::default(), &mut |_| {})
        .await?;
    if execution.status != Status::Ok {
        return Err(BenchError::CellFailed(format!("{:?}", execution.error)));
    }
    Ok(execution)
}

async fn session_ready(
    runtime: &Runtime,
    samples: usize,
    first_cell: &str,
) -> Result<Latency, BenchError> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let mut opened = open(runtime).await?;
        let execution = run_cell(&mut opened, first_cell).await?;
        times.push(started.elapsed());
        let wants_png = first_cell == FIRST_CELL;
        if wants_png
            && !execution
                .results
                .iter()
                .any(|r| r.contains_key("image/png"))
        {
            return Err(BenchError::CellFailed(
                "the first cell returned no PNG".into(),
            ));
        }
        opened.shutdown().await?;
        // Requests arrive one at a time, as users open sessions: the pool has refilled
        // in the background by the next one.
        tokio::time::sleep(POOL_REFILL_PAUSE).await;
    }
    Ok(latency(times))
}

async fn trivial_cells(runtime: &Runtime, count: usize) -> Result<Latency, BenchError> {
    let mut opened = open(runtime).await?;
    run_cell(&mut opened, TRIVIAL_CELL).await?;
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        run_cell(&mut opened, TRIVIAL_CELL).await?;
        times.push(started.elapsed());
    }
    opened.shutdown().await?;
    Ok(latency(times))
}

async fn throughput(
    runtime: &Runtime,
    sessions: usize,
    cells: usize,
) -> Result<Throughput, BenchError> {
    let mut opened = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        opened.push(open(runtime).await?);
    }
    let started = Instant::now();
    let workers: Vec<_> = opened
        .into_iter()
        .map(|mut bench| {
            tokio::spawn(async move {
                for _ in 0..cells {
                    run_cell(&mut bench, TRIVIAL_CELL).await?;
                }
                Ok::<_, BenchError>(bench)
            })
        })
        .collect();
    let mut finished = Vec::with_capacity(sessions);
    for worker in workers {
        finished.push(
            worker
                .await
                .map_err(|e| BenchError::CellFailed(e.to_string()))??,
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    for bench in finished {
        bench.shutdown().await?;
    }
    Ok(Throughput {
        sessions,
        cells: sessions * cells,
        cells_per_second: (sessions * cells) as f64 / seconds,
    })
}

async fn density(runtime: &Runtime, sessions: usize) -> Result<Density, BenchError> {
    let mut opened = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let mut bench = open(runtime).await?;
        run_cell(&mut bench, "import numpy, pandas, matplotlib.pyplot").await?;
        opened.push(bench);
    }
    let mut total_pss = 0u64;
    let mut total_uss = 0u64;
    let mut counted = std::collections::HashSet::new();
    for bench in &opened {
        let Some(pid) = bench.pid() else { continue };
        // The session, its keeper (its parent) and, once, the template they share.
        let keeper = parent_pid(pid);
        let template = keeper.and_then(parent_pid);
        for pid in [Some(pid), keeper, template].into_iter().flatten() {
            if counted.insert(pid) {
                let (pss, uss) = memory_kib(pid);
                total_pss += pss;
                total_uss += uss;
            }
        }
    }
    let mut all_answered = true;
    for bench in &mut opened {
        all_answered &= run_cell(bench, TRIVIAL_CELL).await.is_ok();
    }
    for bench in opened {
        bench.shutdown().await?;
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(Density {
        sessions,
        total_pss_mib: mib(total_pss),
        pss_per_session_mib: mib(total_pss) / sessions.max(1) as f64,
        uss_per_session_mib: mib(total_uss) / sessions.max(1) as f64,
        all_answered,
    })
}

#[derive(serde::Deserialize)]
struct JupyterRaw {
    session_ready_trivial_ms: Vec<f64>,
    session_ready_ms: Vec<f64>,
    trivial_cell_ms: Vec<f64>,
    throughput: JupyterThroughput,
    density: JupyterDensity,
}

#[derive(serde::Deserialize)]
struct JupyterThroughput {
    sessions: usize,
    cells: usize,
    seconds: f64,
}

#[derive(serde::Deserialize)]
struct JupyterDensity {
    sessions: usize,
    pss_kib: Vec<u64>,
    uss_kib: Vec<u64>,
}

async fn jupyter(env: &Environment, plan: &JupyterPlan) -> Result<Measurements, BenchError> {
    use tokio::io::AsyncWriteExt;
    let jupyter_error = |e: &dyn std::fmt::Display| BenchError::Jupyter(e.to_string());
    let mut child = tokio::process::Command::new(&env.info().python)
        .arg("-c")
        .arg(JUPYTER_SCRIPT)
        .env("MPLCONFIGDIR", env.mplconfig())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| jupyter_error(&e))?;
    let plan_json = serde_json::to_vec(plan).map_err(|e| jupyter_error(&e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&plan_json).await?;
    }
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        return Err(BenchError::Jupyter(format!(
            "the driver exited with {}",
            output.status
        )));
    }
    let raw: JupyterRaw = serde_json::from_slice(&output.stdout).map_err(|e| jupyter_error(&e))?;
    let to_durations = |ms: &[f64]| {
        ms.iter()
            .map(|m| Duration::from_secs_f64(m / 1000.0))
            .collect()
    };
    let kernels = raw.density.sessions.max(1) as f64;
    let pss: u64 = raw.density.pss_kib.iter().sum();
    let uss: u64 = raw.density.uss_kib.iter().sum();
    Ok(Measurements {
        session_ready_trivial: latency(to_durations(&raw.session_ready_trivial_ms)),
        session_ready: latency(to_durations(&raw.session_ready_ms)),
        trivial_cell: latency(to_durations(&raw.trivial_cell_ms)),
        throughput: Throughput {
            sessions: raw.throughput.sessions,
            cells: raw.throughput.cells,
            cells_per_second: raw.throughput.cells as f64 / raw.throughput.seconds,
        },
        density: Density {
            sessions: raw.density.sessions,
            total_pss_mib: pss as f64 / 1024.0,
            pss_per_session_mib: pss as f64 / 1024.0 / kernels,
            uss_per_session_mib: uss as f64 / 1024.0 / kernels,
            all_answered: true,
        },
    })
}

fn latency(mut times: Vec<Duration>) -> Latency {
    times.sort();
    let at = |q: f64| {
        if times.is_empty() {
            return 0.0;
        }
        let index = ((times.len() as f64 - 1.0) * q).round() as usize;
        times[index].as_secs_f64() * 1000.0
    };
    Latency {
        samples: times.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}

/// (PSS, USS) in KiB from `/proc/PID/smaps_rollup`; zeros if the process is gone.
pub fn memory_kib(pid: i32) -> (u64, u64) {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        rollup
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    )
}

fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its closing parenthesis.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn total_memory_gib() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0)
}

impl Report {
    /// A Markdown table: each figure beside stock Jupyter's, with the ratio.
    pub fn table(&self) -> String {
        let s = &self.sandcell;
        let j = self.jupyter.as_ref();
        let mut rows = vec![
            "| figure | sandcell | stock Jupyter | ratio |".to_string(),
            "| --- | --- | --- | --- |".to_string(),
        ];
        let ratio = |ours: f64, theirs: Option<f64>, lower_is_better: bool| match theirs {
            Some(theirs) if ours > 0.0 && theirs > 0.0 => {
                let r = if lower_is_better {
                    theirs / ours
                } else {
                    ours / theirs
                };
                format!("{r:.1}× better")
            }
            _ => "–".into(),
        };
        let lat = |l: &Latency| {
            format!(
                "p50 {:.2} ms, p99 {:.2} ms ({} samples)",
                l.p50_ms, l.p99_ms, l.samples
            )
        };
        let latencies = [
            (
                "session ready, trivial first cell `1 + 1`",
                &s.session_ready_trivial,
                j.map(|j| &j.session_ready_trivial),
            ),
            (
                "session ready (create + first cell: DataFrame sum and a PNG plot)",
                &s.session_ready,
                j.map(|j| &j.session_ready),
            ),
            (
                "trivial cell `1 + 1` round trip",
                &s.trivial_cell,
                j.map(|j| &j.trivial_cell),
            ),
        ];
        for (label, ours, theirs) in latencies {
            rows.push(format!(
                "| {label} | {} | {} | {} |",
                lat(ours),
                theirs.map_or("–".into(), lat),
                ratio(ours.p50_ms, theirs.map(|t| t.p50_ms), true)
            ));
        }
        let thr = |t: &Throughput| {
            format!(
                "{:.0} cells/s ({} sessions)",
                t.cells_per_second, t.sessions
            )
        };
        rows.push(format!(
            "| throughput, trivial cells | {} | {} | {} |",
            thr(&s.throughput),
            j.map_or("–".into(), |j| thr(&j.throughput)),
            ratio(
                s.throughput.cells_per_second,
                j.map(|j| j.throughput.cells_per_second),
                false
            )
        ));
        let den = |d: &Density| {
            format!(
                "{} live: {:.0} MiB PSS in all, {:.1} MiB PSS / {:.1} MiB USS each{}",
                d.sessions,
                d.total_pss_mib,
                d.pss_per_session_mib,
                d.uss_per_session_mib,
                if d.all_answered {
                    ""
                } else {
                    " (some did not answer)"
                }
            )
        };
        rows.push(format!(
            "| density (numpy, pandas, matplotlib imported) | {} | {} | {} |",
            den(&s.density),
            j.map_or("–".into(), |j| den(&j.density)),
            ratio(
                s.density.pss_per_session_mib,
                j.map(|j| j.density.pss_per_session_mib),
                true
            )
        ));
        rows.join("\n")
    }
}
