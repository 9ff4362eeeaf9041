//! `sandcell bench`: how fast sessions start and answer, in process and over `sandcell
//! serve`'s HTTP API, how many one machine holds, and the same work on stock Jupyter
//! (ipykernel driven by jupyter_client, and Jupyter Kernel Gateway over HTTP) in the same
//! run.
//!
//! For: measuring. Not for: tests (no timing assertion lives here or anywhere else).

mod drivers;
mod http;
mod stats;
mod table;

use sandcell_pyenv::Environment;
use sandcell_session::{
    ExecOptions, Execution, Limits, Runtime, RuntimeOptions, Session, SessionConfig, Status,
};
use serde::Serialize;
use std::time::{Duration, Instant};

pub use stats::{Latency, Throughput};

/// The first cell of a fresh session: the data stack at work, a plot returned as PNG.
pub const FIRST_CELL: &str = "import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt\ndf = pd.DataFrame({'x': np.arange(50), 'y': np.arange(50) ** 0.5})\ntotal = df['y'].sum()\nplt.plot(df['x'], df['y'])\nplt.show()\ntotal";
const TRIVIAL_CELL: &str = "1 + 1";
const POOL_REFILL_PAUSE: Duration = Duration::from_millis(200);
/// Stock Jupyter's packages (ipykernel, jupyter_client, Jupyter Kernel Gateway),
/// installed into the environment for the comparison.
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
    /// Measure over `sandcell serve`'s HTTP API too (and on Jupyter Kernel Gateway).
    pub http: Option<HttpPlan>,
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

/// How much to measure over HTTP, on one side.
#[derive(Debug, Clone, Serialize)]
pub struct HttpSamples {
    /// Sessions created, for each of the two first cells (trivial, plotting).
    pub ready_samples: usize,
    pub trivial_cells: usize,
    /// Concurrent clients for the throughput, each with its own connection and session.
    pub clients: usize,
    pub cells_per_client: usize,
}

#[derive(Debug, Clone)]
pub struct HttpPlan {
    pub sandcell: HttpSamples,
    /// The same work on Jupyter Kernel Gateway (kernels start in about a second, so
    /// fewer of them).
    pub gateway: Option<HttpSamples>,
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
            http: Some(HttpPlan {
                sandcell: HttpSamples {
                    ready_samples: 50,
                    trivial_cells: 1000,
                    clients: 8,
                    cells_per_client: 250,
                },
                gateway: Some(HttpSamples {
                    ready_samples: 10,
                    trivial_cells: 300,
                    clients: 8,
                    cells_per_client: 50,
                }),
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
    #[error("Jupyter Kernel Gateway could not be measured: {0}")]
    Gateway(String),
    #[error("the server could not be started: {0}")]
    Server(#[from] sandcell_server::ServerError),
    #[error("a request to the server failed: {0}")]
    Http(String),
}

/// What one way of running cells costs: first cells, the plotting cell's floor, round
/// trips and throughput.
#[derive(Debug, Clone, Serialize)]
pub struct CellFigures {
    /// Asking for a session until the result of a trivial first cell: the runtime's own cost.
    pub session_ready_trivial: Latency,
    /// Asking for a session until the result of [`FIRST_CELL`] (a PNG plot).
    pub session_ready: Latency,
    /// [`FIRST_CELL`] run again in the session that just ran it: what the cell itself
    /// costs in a warm process.
    pub plot_floor: Latency,
    /// Per session, `session_ready` minus its `plot_floor`: what starting costs on top of
    /// the work.
    pub plot_overhead: Latency,
    pub trivial_cell: Latency,
    pub throughput: Throughput,
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
    #[serde(flatten)]
    pub cells: CellFigures,
    pub density: Density,
}

/// The figures over HTTP: `sandcell serve` beside Jupyter Kernel Gateway.
#[derive(Debug, Clone, Serialize)]
pub struct HttpReport {
    pub sandcell: CellFigures,
    pub gateway: Option<CellFigures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sandcell: Measurements,
    pub jupyter: Option<Measurements>,
    pub http: Option<HttpReport>,
    pub cores: usize,
    pub memory_gib: f64,
}

/// Runs every measurement; `progress` hears what is being measured.
pub async fn run(
    env: &Environment,
    options: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, BenchError> {
    let runtime_options = RuntimeOptions {
        pool_size: options.pool_size,
        ..RuntimeOptions::default()
    };
    let sandcell = in_process(env, runtime_options.clone(), options, progress).await?;
    let http = match &options.http {
        Some(plan) => {
            progress("sandcell serve over HTTP (in this process, on a loopback port)");
            let sandcell = http::measure(env, runtime_options, &plan.sandcell).await?;
            let gateway = match &plan.gateway {
                Some(samples) => {
                    progress("Jupyter Kernel Gateway over HTTP and websockets: the same work");
                    Some(drivers::gateway(env, samples).await?)
                }
                None => None,
            };
            Some(HttpReport { sandcell, gateway })
        }
        None => None,
    };
    let jupyter = match &options.jupyter {
        Some(plan) => {
            progress("stock Jupyter: the same work (ipykernel + jupyter_client)");
            Some(drivers::jupyter(env, plan).await?)
        }
        None => None,
    };
    Ok(Report {
        sandcell,
        jupyter,
        http,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: total_memory_gib(),
    })
}

/// The runtime's own figures, sessions driven in this process.
async fn in_process(
    env: &Environment,
    runtime_options: RuntimeOptions,
    options: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Measurements, BenchError> {
    let runtime = Runtime::start(env, runtime_options).await?;
    progress("sandcell: session ready (create + trivial first cell)");
    let (ready_trivial, _) = session_ready(&runtime, options.ready_samples, TRIVIAL_CELL).await?;
    progress("sandcell: session ready (create + first cell with numpy, pandas, matplotlib), and that cell again");
    let (ready_plot, floor) = session_ready(&runtime, options.ready_samples, FIRST_CELL).await?;
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
    Ok(Measurements {
        cells: CellFigures {
            session_ready_trivial: Latency::of(&ready_trivial),
            session_ready: Latency::of(&ready_plot),
            plot_floor: Latency::of(&floor),
            plot_overhead: Latency::of(&stats::overhead(&ready_plot, &floor)),
            trivial_cell,
            throughput,
        },
        density,
    })
}

/// A session with a directory of its own and the default limits: the pool serves it.
async fn open(runtime: &Runtime) -> Result<Session, BenchError> {
    Ok(runtime
        .create_session(SessionConfig {
            workdir: None,
            limits: Limits::default(),
            network: sandcell_session::NetPolicy::None,
            environment: None,
        })
        .await?)
}

async fn run_cell(session: &mut Session, code: &str) -> Result<Execution, BenchError> {
    let execution = session
        .execute(code, &ExecOptions::default(), &mut |_| {})
        .await?;
    check(&execution, code)?;
    Ok(execution)
}

/// Refuses an execution that failed, or a plotting first cell that returned no PNG.
fn check(execution: &Execution, code: &str) -> Result<(), BenchError> {
    if execution.status != Status::Ok {
        return Err(BenchError::CellFailed(format!(
            "{:?}: {:?}",
            execution.status, execution.error
        )));
    }
    let wants_png = code == FIRST_CELL;
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
    Ok(())
}

/// Milliseconds from asking for a session to its first cell's result; for the plotting
/// cell also the floor: the same cell run again in that session.
async fn session_ready(
    runtime: &Runtime,
    samples: usize,
    first_cell: &str,
) -> Result<(Vec<f64>, Vec<f64>), BenchError> {
    let mut ready = Vec::with_capacity(samples);
    let mut floor = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let mut opened = open(runtime).await?;
        run_cell(&mut opened, first_cell).await?;
        ready.push(stats::ms(started.elapsed()));
        if first_cell == FIRST_CELL {
            let started = Instant::now();
            run_cell(&mut opened, first_cell).await?;
            floor.push(stats::ms(started.elapsed()));
        }
        opened.shutdown().await?;
        // Requests arrive one at a time, as users open sessions: the pool has refilled
        // in the background by the next one.
        tokio::time::sleep(POOL_REFILL_PAUSE).await;
    }
    Ok((ready, floor))
}

async fn trivial_cells(runtime: &Runtime, count: usize) -> Result<Latency, BenchError> {
    let mut opened = open(runtime).await?;
    run_cell(&mut opened, TRIVIAL_CELL).await?;
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        run_cell(&mut opened, TRIVIAL_CELL).await?;
        times.push(stats::ms(started.elapsed()));
    }
    opened.shutdown().await?;
    Ok(Latency::of(&times))
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
    let (finished, elapsed) = all_at_once(opened, cells, |mut bench| async move {
        run_cell(&mut bench, TRIVIAL_CELL).await?;
        Ok(bench)
    })
    .await?;
    for bench in finished {
        bench.shutdown().await?;
    }
    Ok(Throughput::of(sessions, sessions * cells, elapsed))
}

/// Runs `step` `cells` times on each of `workers`, every worker in a task of its own, all
/// at once; gives the workers back with the time they took together.
pub(crate) async fn all_at_once<W, F, Fut>(
    workers: Vec<W>,
    cells: usize,
    step: F,
) -> Result<(Vec<W>, Duration), BenchError>
where
    W: Send + 'static,
    F: Fn(W) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<W, BenchError>> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let step = step.clone();
            tokio::spawn(async move {
                for _ in 0..cells {
                    worker = step(worker).await?;
                }
                Ok::<_, BenchError>(worker)
            })
        })
        .collect();
    let mut finished = Vec::with_capacity(tasks.len());
    for task in tasks {
        finished.push(
            task.await
                .map_err(|e| BenchError::CellFailed(e.to_string()))??,
        );
    }
    Ok((finished, started.elapsed()))
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
        // The session's init, the Python process it runs (its child), its keeper (its
        // parent) and, once, the template they share.
        let keeper = parent_pid(pid);
        let template = keeper.and_then(parent_pid);
        let processes = children(pid)
            .into_iter()
            .chain([pid])
            .chain(keeper)
            .chain(template);
        for pid in processes {
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

/// The children of `pid` (none when the kernel does not list them).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
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
