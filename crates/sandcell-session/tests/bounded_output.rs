//! Whatever a cell writes, the host keeps a bounded amount: floods of stdout, huge rich
//! results, raw frames written straight to the session socket, and output written between
//! cells. One test, run alone in this binary, so that the process's peak memory measures
//! only what the host kept of these floods.

use sandcell_pyenv::{Environment, Home};
use sandcell_session::{
    ExecEvent, ExecOptions, Execution, Limits, Runtime, RuntimeOptions, Session, SessionConfig,
    Status,
};
use std::time::{Duration, Instant};

/// What the host may grow by while cells flood it.
const MAX_GROWTH_KIB: u64 = 64 * 1024;

/// A `/proc/self/status` value in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs a cell; returns it with the bytes its events carried.
async fn run(session: &mut Session, code: &str) -> (Execution, usize) {
    let mut event_bytes = 0;
    let started = Instant::now();
    let options = ExecOptions {
        // Generous: a flood must come back truncated long before this, never time out.
        timeout: Some(Duration::from_secs(90)),
    };
    let execution = session
        .execute(code, &options, &mut |event| {
            event_bytes += match event {
                ExecEvent::Stdout(text) | ExecEvent::Stderr(text) => text.len(),
                ExecEvent::Result(data) => serde_json::to_string(data).unwrap().len(),
                ExecEvent::Error(_) => 0,
            }
        })
        .await
        .expect("the session can be driven");
    eprintln!(
        "{:?} after {:.1} s, {} bytes of events, stdout {} bytes, peak growth so far {} KiB",
        execution.status,
        started.elapsed().as_secs_f64(),
        event_bytes,
        execution.stdout.len(),
        status_kib("VmHWM:").saturating_sub(BASELINE.get().copied().unwrap_or(0)),
    );
    (execution, event_bytes)
}

static BASELINE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

fn assert_bounded(what: &str) {
    let growth = status_kib("VmHWM:").saturating_sub(*BASELINE.get().unwrap());
    assert!(
        growth < MAX_GROWTH_KIB,
        "{what}: the host's peak memory grew by {growth} KiB"
    );
}

async fn answers(session: &mut Session) {
    let (next, _) = run(session, "21 * 2").await;
    assert_eq!(next.status, Status::Ok, "{next:?}");
    assert!(!next.restarted, "the session had to be restarted");
    assert_eq!(next.results[0]["text/plain"], "42");
}

#[tokio::test]
async fn floods_cost_the_host_a_bounded_amount_of_memory() {
    let home = Home::from_env().expect("a data directory");
    let env = Environment::ensure(&home, &mut |step| eprintln!("setup: {step}"))
        .expect("the Python environment can be set up");
    let runtime = Runtime::start(&env, RuntimeOptions::default())
        .await
        .expect("the template starts");
    let mut session = runtime
        .create_session(SessionConfig {
            workdir: None,
            limits: Limits::default(),
            network: sandcell_session::NetPolicy::None,
            environment: None,
        })
        .await
        .expect("a session starts");
    answers(&mut session).await;
    BASELINE.get_or_init(|| status_kib("VmRSS:"));
    let output_limit = Limits::default().output_bytes();

    // 2 GiB on stdout.
    let (flood, event_bytes) = run(
        &mut session,
        "import sys\nprint('first')\nfor _ in range(2048):\n    sys.stdout.write('x' * (1 << 20))\nprint('\\nlast')",
    )
    .await;
    assert_eq!(flood.status, Status::Ok, "{:?}", flood.error);
    assert!(flood.truncated);
    assert!(flood.stdout.starts_with("first\n"));
    assert!(flood.stdout.ends_with("\nlast\n"));
    assert!(flood.stdout.contains(" bytes of output dropped …]\n"));
    assert!(
        flood.stdout.len() <= output_limit + 100,
        "{}",
        flood.stdout.len()
    );
    assert_eq!(
        event_bytes,
        flood.stdout.len(),
        "events saw more than was kept"
    );
    assert_bounded("2 GiB of stdout");
    answers(&mut session).await;

    // A 200 MB HTML result.
    let (html, _) = run(
        &mut session,
        "from IPython.display import HTML, display\ndisplay(HTML('<p>' + 'y' * 200_000_000))\n'after'",
    )
    .await;
    assert_eq!(html.status, Status::Ok, "{:?}", html.error);
    assert!(html.truncated);
    let note = html.results[0]["text/plain"].as_str().unwrap();
    assert!(note.contains("was dropped"), "{note}");
    assert!(note.contains("text/html"), "{note}");
    assert_eq!(html.results[1]["text/plain"], "'after'");
    assert_bounded("a 200 MB result");
    answers(&mut session).await;

    // A hundred 1 MiB results.
    let (many, event_bytes) = run(
        &mut session,
        "from IPython.display import display\nfor i in range(100):\n    display({'text/plain': str(i) * (1 << 20)}, raw=True)",
    )
    .await;
    assert_eq!(many.status, Status::Ok, "{:?}", many.error);
    assert!(many.truncated);
    assert_eq!(many.results.len(), 100, "kept or noted, each");
    let kept_bytes: usize = many
        .results
        .iter()
        .map(|r| serde_json::to_string(r).unwrap().len())
        .sum();
    assert!(
        kept_bytes <= Limits::default().results_bytes() + 100 * 200,
        "{kept_bytes}"
    );
    assert!(event_bytes <= kept_bytes);
    let last = many.results[99]["text/plain"].as_str().unwrap();
    assert!(last.contains("was dropped"), "{last}");
    assert_bounded("a hundred 1 MiB results");
    answers(&mut session).await;

    // A raw 300 MB frame written straight to the session socket, then a valid one.
    let (raw, _) = run(
        &mut session,
        r#"
import json, struct
channel = get_ipython().outbox._channel
junk = b'z' * (1 << 20)
with channel._send_lock:
    channel._sock.sendall(struct.pack('>I', 300 << 20))
    for _ in range(300):
        channel._sock.sendall(junk)
print('still in sync')
"#,
    )
    .await;
    assert_eq!(raw.status, Status::Ok, "{:?}", raw.error);
    assert!(raw.truncated);
    let note = raw.results[0]["text/plain"].as_str().unwrap();
    assert!(note.contains("314,572,800 bytes was dropped"), "{note}");
    assert_eq!(raw.stdout, "still in sync\n");
    assert_bounded("a raw 300 MB frame");
    answers(&mut session).await;

    // A thread that floods stdout after its cell returned, while no execution runs.
    let (started, _) = run(
        &mut session,
        r#"
import sys, threading
flooding = True
def flood():
    while flooding:
        sys.stdout.write('w' * (1 << 20))
threading.Thread(target=flood, daemon=True).start()
"#,
    )
    .await;
    assert_eq!(started.status, Status::Ok, "{:?}", started.error);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_bounded("a flood between cells");
    let (during, _) = run(&mut session, "21 * 2").await;
    assert_eq!(during.status, Status::Ok, "{:?}", during.error);
    assert_eq!(during.results[0]["text/plain"], "42");
    assert!(
        during.stdout.len() <= output_limit + 100,
        "{}",
        during.stdout.len()
    );
    let (stopped, _) = run(&mut session, "flooding = False").await;
    assert_eq!(stopped.status, Status::Ok, "{:?}", stopped.error);
    assert_bounded("a flood between cells, read by the next cells");
    answers(&mut session).await;
    session.shutdown().await.unwrap();
}
