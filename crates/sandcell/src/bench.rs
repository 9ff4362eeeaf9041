//! `sandcell bench`: sandcell's figures, in process and over HTTP, beside stock Jupyter's
//! (and Jupyter Kernel Gateway's), measured in one run.

use anyhow::Context;
use sandcell_bench::{BenchOptions, JUPYTER_REQUIREMENTS};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Live sessions for the density figure.
    #[arg(long, value_name = "N", default_value_t = 500)]
    sessions: usize,
    /// Ready sessions the pool keeps forked ahead of demand.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pool: usize,
    /// Fewer samples everywhere (a smoke run, not a measurement).
    #[arg(long)]
    quick: bool,
    /// Skip the stock Jupyter comparisons (jupyter_client and Jupyter Kernel Gateway).
    #[arg(long)]
    no_jupyter: bool,
    /// Skip the figures over HTTP (`sandcell serve` and Jupyter Kernel Gateway).
    #[arg(long)]
    no_http: bool,
    /// Print the measurements as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let env = crate::environment()?;
    let mut options = BenchOptions {
        density_sessions: args.sessions,
        pool_size: args.pool,
        ..BenchOptions::default()
    };
    if args.quick {
        options.ready_samples = 20;
        options.trivial_cells = 200;
        options.throughput_sessions = 10;
        options.throughput_cells = 50;
        if let Some(plan) = options.jupyter.as_mut() {
            plan.ready_samples = 2;
            plan.trivial_cells = 50;
            plan.throughput_kernels = 4;
            plan.throughput_cells = 20;
            plan.density_kernels = 4;
        }
        if let Some(plan) = options.http.as_mut() {
            plan.sandcell.ready_samples = 5;
            plan.sandcell.trivial_cells = 100;
            plan.sandcell.cells_per_client = 25;
            if let Some(gateway) = plan.gateway.as_mut() {
                gateway.ready_samples = 2;
                gateway.trivial_cells = 30;
                gateway.cells_per_client = 10;
            }
        }
    }
    if args.no_http {
        options.http = None;
    }
    if args.no_jupyter {
        options.jupyter = None;
        if let Some(plan) = options.http.as_mut() {
            plan.gateway = None;
        }
    } else {
        env.ensure_extra("bench", JUPYTER_REQUIREMENTS, &mut |step| {
            eprintln!("sandcell: {step}")
        })
        .context(
            "cannot install stock Jupyter (ipykernel, jupyter_client and Jupyter Kernel Gateway) \
             into the environment for the comparison; `--no-jupyter` measures sandcell alone",
        )?;
    }
    let report =
        sandcell_bench::run(&env, &options, &mut |step| eprintln!("bench: {step}")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "sandcell bench on {} cores, {:.0} GiB (sandbox on for sandcell; stock Jupyter runs unsandboxed; \
             over HTTP: `sandcell serve` in this process beside Jupyter Kernel Gateway, both on loopback)\n",
            report.cores, report.memory_gib
        );
        println!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}
