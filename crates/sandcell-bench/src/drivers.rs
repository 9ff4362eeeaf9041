//! The reference side: Python scripts that drive stock Jupyter and report raw samples as
//! JSON, turned here into the same figures as sandcell's.

use crate::stats::{Latency, Throughput};
use crate::{BenchError, CellFigures, Density, HttpSamples, JupyterPlan, Measurements, FIRST_CELL};
use sandcell_pyenv::Environment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// ipykernel started and driven by jupyter_client, in the driver's process.
const JUPYTER_SCRIPT: &str = include_str!("../../../python/bench/jupyter_bench.py");
/// Jupyter Kernel Gateway, started by the driver and driven over HTTP and websockets.
const GATEWAY_SCRIPT: &str = include_str!("../../../python/bench/gateway_bench.py");

/// The samples both drivers take of cells, in milliseconds.
#[derive(Debug, Deserialize)]
struct RawCells {
    session_ready_trivial_ms: Vec<f64>,
    session_ready_ms: Vec<f64>,
    plot_floor_ms: Vec<f64>,
    trivial_cell_ms: Vec<f64>,
    throughput: RawThroughput,
}

#[derive(Debug, Deserialize)]
struct RawThroughput {
    sessions: usize,
    cells: usize,
    seconds: f64,
}

#[derive(Debug, Deserialize)]
struct JupyterRaw {
    #[serde(flatten)]
    cells: RawCells,
    density: RawDensity,
}

#[derive(Debug, Deserialize)]
struct RawDensity {
    sessions: usize,
    pss_kib: Vec<u64>,
    uss_kib: Vec<u64>,
}

#[derive(Serialize)]
struct GatewayPlan<'a> {
    #[serde(flatten)]
    samples: &'a HttpSamples,
    first_cell: &'a str,
}

impl From<RawCells> for CellFigures {
    fn from(raw: RawCells) -> Self {
        Self {
            session_ready_trivial: Latency::of(&raw.session_ready_trivial_ms),
            session_ready: Latency::of(&raw.session_ready_ms),
            plot_floor: Latency::of(&raw.plot_floor_ms),
            plot_overhead: Latency::of(&crate::stats::overhead(
                &raw.session_ready_ms,
                &raw.plot_floor_ms,
            )),
            trivial_cell: Latency::of(&raw.trivial_cell_ms),
            throughput: Throughput::of(
                raw.throughput.sessions,
                raw.throughput.cells,
                Duration::from_secs_f64(raw.throughput.seconds.max(0.0)),
            ),
        }
    }
}

impl From<JupyterRaw> for Measurements {
    fn from(raw: JupyterRaw) -> Self {
        let kernels = raw.density.sessions.max(1) as f64;
        let pss_mib = raw.density.pss_kib.iter().sum::<u64>() as f64 / 1024.0;
        let uss_mib = raw.density.uss_kib.iter().sum::<u64>() as f64 / 1024.0;
        Self {
            cells: raw.cells.into(),
            density: Density {
                sessions: raw.density.sessions,
                total_pss_mib: pss_mib,
                pss_per_session_mib: pss_mib / kernels,
                uss_per_session_mib: uss_mib / kernels,
                all_answered: true,
            },
        }
    }
}

pub(crate) async fn jupyter(
    env: &Environment,
    plan: &JupyterPlan,
) -> Result<Measurements, BenchError> {
    let raw: JupyterRaw = run_driver(env, JUPYTER_SCRIPT, plan)
        .await
        .map_err(BenchError::Jupyter)?;
    Ok(raw.into())
}

pub(crate) async fn gateway(
    env: &Environment,
    samples: &HttpSamples,
) -> Result<CellFigures, BenchError> {
    let plan = GatewayPlan {
        samples,
        first_cell: FIRST_CELL,
    };
    let raw: RawCells = run_driver(env, GATEWAY_SCRIPT, &plan)
        .await
        .map_err(BenchError::Gateway)?;
    Ok(raw.into())
}

/// Runs a driver script with the environment's Python, `plan` as JSON on its stdin, and
/// reads its answer from its stdout; a failure is the driver's last word on stderr.
async fn run_driver<T: DeserializeOwned>(
    env: &Environment,
    script: &str,
    plan: &impl Serialize,
) -> Result<T, String> {
    use tokio::io::AsyncWriteExt;
    let plan = serde_json::to_vec(plan).map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(&env.info().python)
        .arg("-c")
        .arg(script)
        .env("MPLCONFIGDIR", env.mplconfig())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", env.info().python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&plan)
            .await
            .map_err(|e| format!("cannot send the plan to the driver: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("the driver could not be waited for: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last_word = stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("(nothing on stderr)");
        return Err(format!(
            "the driver exited with {}: {last_word}",
            output.status
        ));
    }
    parse(&output.stdout)
}

fn parse<T: DeserializeOwned>(stdout: &[u8]) -> Result<T, String> {
    serde_json::from_slice(stdout)
        .map_err(|e| format!("the driver's answer is not understood: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CELLS: &str = r#""session_ready_trivial_ms": [600.0, 640.0],
        "session_ready_ms": [1600.0, 1700.0, 1650.0],
        "plot_floor_ms": [100.0, 120.0, 110.0],
        "trivial_cell_ms": [4.0, 5.0, 6.0],
        "throughput": {"sessions": 8, "cells": 400, "seconds": 2.0}"#;

    #[test]
    fn the_gateway_answer_becomes_cell_figures() {
        let raw: RawCells = parse(format!("{{{CELLS}}}").as_bytes()).unwrap();
        let figures = CellFigures::from(raw);
        assert_eq!(figures.session_ready_trivial.samples, 2);
        assert_eq!(figures.session_ready.p50_ms, 1650.0);
        assert_eq!(figures.plot_floor.p50_ms, 110.0);
        // 1500, 1580, 1540: paired with each kernel's own floor.
        assert_eq!(figures.plot_overhead.p50_ms, 1540.0);
        assert_eq!(figures.trivial_cell.p99_ms, 6.0);
        assert_eq!(figures.throughput.cells_per_second, 200.0);
        assert_eq!(figures.throughput.sessions, 8);
    }

    #[test]
    fn the_jupyter_answer_adds_density_per_kernel() {
        let json = format!(
            r#"{{{CELLS}, "density": {{"sessions": 2, "pss_kib": [102400, 81920], "uss_kib": [10240, 10240]}}}}"#
        );
        let measurements = Measurements::from(parse::<JupyterRaw>(json.as_bytes()).unwrap());
        assert_eq!(measurements.density.total_pss_mib, 180.0);
        assert_eq!(measurements.density.pss_per_session_mib, 90.0);
        assert_eq!(measurements.density.uss_per_session_mib, 10.0);
        assert_eq!(measurements.cells.trivial_cell.p50_ms, 5.0);
    }

    #[test]
    fn an_answer_without_a_figure_is_refused_with_a_sentence() {
        let error = parse::<RawCells>(br#"{"session_ready_ms": []}"#).unwrap_err();
        assert!(
            error.starts_with("the driver's answer is not understood"),
            "{error}"
        );
    }

    #[test]
    fn the_gateway_plan_carries_the_samples_and_the_first_cell() {
        let samples = HttpSamples {
            ready_samples: 3,
            trivial_cells: 4,
            clients: 8,
            cells_per_client: 5,
        };
        let plan = serde_json::to_value(GatewayPlan {
            samples: &samples,
            first_cell: FIRST_CELL,
        })
        .unwrap();
        assert_eq!(plan["clients"], 8);
        assert_eq!(plan["cells_per_client"], 5);
        assert_eq!(plan["first_cell"], FIRST_CELL);
    }
}
