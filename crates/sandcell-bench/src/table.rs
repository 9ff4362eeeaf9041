//! The report as a Markdown table: each figure beside stock Jupyter's, with the ratio.

use crate::stats::{Latency, Throughput};
use crate::{CellFigures, Density, Report};

/// A row's figure: one of the latencies, or the throughput.
enum Figure {
    Latency(fn(&CellFigures) -> &Latency),
    Throughput,
}

impl Report {
    pub fn table(&self) -> String {
        let mut rows = vec![
            "| figure | sandcell | stock Jupyter | ratio |".to_string(),
            "| --- | --- | --- | --- |".to_string(),
        ];
        let jupyter = self.jupyter.as_ref().map(|j| &j.cells);
        rows.extend(cell_rows("", &self.sandcell.cells, jupyter, &IN_PROCESS));
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
        let jupyter_density = self.jupyter.as_ref().map(|j| &j.density);
        rows.push(format!(
            "| density (numpy, pandas, matplotlib imported) | {} | {} | {} |",
            den(&self.sandcell.density),
            jupyter_density.map_or("–".into(), den),
            ratio(
                self.sandcell.density.pss_per_session_mib,
                jupyter_density.map(|d| d.pss_per_session_mib),
                true
            )
        ));
        if let Some(http) = &self.http {
            rows.extend(cell_rows(
                "over HTTP: ",
                &http.sandcell,
                http.gateway.as_ref(),
                &OVER_HTTP,
            ));
        }
        rows.join("\n")
    }
}

/// The labels of the cell figures; over HTTP they carry the targets sandcell aims at.
struct Labels {
    ready_trivial: &'static str,
    ready_plot: &'static str,
    floor: &'static str,
    overhead: &'static str,
    trivial: &'static str,
    throughput: &'static str,
}

const IN_PROCESS: Labels = Labels {
    ready_trivial: "session ready, trivial first cell `1 + 1`",
    ready_plot: "session ready (create + first cell: DataFrame sum and a PNG plot)",
    floor: "the plotting cell again in that warm session (the floor)",
    overhead: "session ready with plot, over the floor",
    trivial: "trivial cell `1 + 1` round trip",
    throughput: "throughput, trivial cells",
};

const OVER_HTTP: Labels = Labels {
    ready_trivial: "`POST /sessions` to the result of `1 + 1` (target p50 ≤ 10 ms)",
    ready_plot: "`POST /sessions` to the result of the plotting first cell",
    floor: "the plotting cell again in that warm session (the floor)",
    overhead: "session ready with plot, over the floor (target p50 ≤ 10 ms)",
    trivial: "`execute` of `1 + 1` round trip (target p50 ≤ 1.5 ms)",
    throughput: "throughput, trivial cells, one session per client (target ≥ 2000 cells/s with 8)",
};

fn cell_rows(
    prefix: &str,
    ours: &CellFigures,
    theirs: Option<&CellFigures>,
    labels: &Labels,
) -> Vec<String> {
    let figures: [(&str, Figure); 6] = [
        (
            labels.ready_trivial,
            Figure::Latency(|f| &f.session_ready_trivial),
        ),
        (labels.ready_plot, Figure::Latency(|f| &f.session_ready)),
        (labels.floor, Figure::Latency(|f| &f.plot_floor)),
        (labels.overhead, Figure::Latency(|f| &f.plot_overhead)),
        (labels.trivial, Figure::Latency(|f| &f.trivial_cell)),
        (labels.throughput, Figure::Throughput),
    ];
    figures
        .into_iter()
        .map(|(label, figure)| {
            let (ours, theirs, ratio) = match figure {
                Figure::Latency(of) => (
                    latency(of(ours)),
                    theirs.map_or("–".into(), |t| latency(of(t))),
                    ratio(of(ours).p50_ms, theirs.map(|t| of(t).p50_ms), true),
                ),
                Figure::Throughput => (
                    rate(&ours.throughput),
                    theirs.map_or("–".into(), |t| rate(&t.throughput)),
                    ratio(
                        ours.throughput.cells_per_second,
                        theirs.map(|t| t.throughput.cells_per_second),
                        false,
                    ),
                ),
            };
            format!("| {prefix}{label} | {ours} | {theirs} | {ratio} |")
        })
        .collect()
}

fn latency(l: &Latency) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms ({} samples)",
        l.p50_ms, l.p99_ms, l.samples
    )
}

fn rate(t: &Throughput) -> String {
    format!(
        "{:.0} cells/s ({} sessions)",
        t.cells_per_second, t.sessions
    )
}

/// How many times better (or worse) sandcell's figure is than the reference's.
fn ratio(ours: f64, theirs: Option<f64>, lower_is_better: bool) -> String {
    match theirs {
        Some(theirs) if ours > 0.0 && theirs > 0.0 => {
            let better = if lower_is_better {
                theirs / ours
            } else {
                ours / theirs
            };
            if better >= 1.0 {
                format!("{better:.1}× better")
            } else {
                format!("{:.1}× worse", 1.0 / better)
            }
        }
        _ => "–".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HttpReport, Measurements};

    fn figures(scale: f64) -> CellFigures {
        let latency = |ms: f64| Latency {
            samples: 10,
            p50_ms: ms * scale,
            p99_ms: 2.0 * ms * scale,
        };
        CellFigures {
            session_ready_trivial: latency(5.0),
            session_ready: latency(70.0),
            plot_floor: latency(60.0),
            plot_overhead: latency(10.0),
            trivial_cell: latency(0.5),
            throughput: Throughput {
                sessions: 8,
                cells: 2000,
                cells_per_second: 3000.0 / scale,
            },
        }
    }

    fn report(http: Option<HttpReport>) -> Report {
        Report {
            sandcell: Measurements {
                cells: figures(1.0),
                density: Density {
                    sessions: 500,
                    total_pss_mib: 3874.0,
                    pss_per_session_mib: 7.7,
                    uss_per_session_mib: 7.2,
                    all_answered: true,
                },
            },
            jupyter: None,
            http,
            cores: 2,
            memory_gib: 24.0,
        }
    }

    #[test]
    fn http_rows_stand_beside_the_gateway_with_their_ratio() {
        let table = report(Some(HttpReport {
            sandcell: figures(1.0),
            gateway: Some(figures(10.0)),
        }))
        .table();
        let trivial = table
            .lines()
            .find(|l| l.starts_with("| over HTTP: `execute` of `1 + 1`"))
            .unwrap();
        assert_eq!(
            trivial,
            "| over HTTP: `execute` of `1 + 1` round trip (target p50 ≤ 1.5 ms) | p50 0.50 ms, p99 1.00 ms (10 samples) | p50 5.00 ms, p99 10.00 ms (10 samples) | 10.0× better |"
        );
        let throughput = table
            .lines()
            .find(|l| l.starts_with("| over HTTP: throughput"))
            .unwrap();
        assert!(
            throughput.ends_with(
                "| 3000 cells/s (8 sessions) | 300 cells/s (8 sessions) | 10.0× better |"
            ),
            "{throughput}"
        );
        assert!(table.contains("| over HTTP: session ready with plot, over the floor (target p50 ≤ 10 ms) | p50 10.00 ms"));
    }

    #[test]
    fn a_figure_behind_the_reference_says_worse() {
        assert_eq!(ratio(120.0, Some(60.0), true), "2.0× worse");
        assert_eq!(ratio(60.0, Some(120.0), true), "2.0× better");
        assert_eq!(ratio(500.0, Some(1000.0), false), "2.0× worse");
        assert_eq!(ratio(-3.0, Some(60.0), true), "–");
    }

    #[test]
    fn without_a_reference_the_rows_say_so_and_without_http_there_are_none() {
        let table = report(Some(HttpReport {
            sandcell: figures(1.0),
            gateway: None,
        }))
        .table();
        let floor = table
            .lines()
            .find(|l| l.starts_with("| over HTTP: the plotting cell again"))
            .unwrap();
        assert!(floor.ends_with("| – | – |"), "{floor}");
        let in_process_only = report(None).table();
        assert!(!in_process_only.contains("over HTTP"));
        assert_eq!(in_process_only.lines().count(), 2 + 6 + 1);
    }
}
