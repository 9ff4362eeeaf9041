//! `sandcell bench`: sandcell's figures beside stock Jupyter's, measured in one run.

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
    /// Skip the stock Jupyter comparison.
    #[arg(long)]
    no_jupyter: bool,
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
    }
    if args.no_jupyter {
        options.jupyter = None;
    } else {
        env.ensure_extra("bench", JUPYTER_REQUIREMENTS, &mut |step| {
            eprintln!("sandcell: {step}")
        })?;
    }
    let report =
        sandcell_bench::run(&env, &options, &mut |step| eprintln!("bench: {step}")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "sandcell bench on {} cores, {:.0} GiB (sandbox on for sandcell; stock Jupyter runs unsandboxed)\n",
            report.cores, report.memory_gib
        );
        println!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}
