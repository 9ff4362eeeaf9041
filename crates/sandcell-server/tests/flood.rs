//! A flood of output over HTTP, in a test binary of its own: it measures this process's
//! memory, which tests running beside it in one binary would disturb.

mod common;

use common::{config, python, TestServer};
use std::time::Duration;

fn text_result(execution: &serde_json::Value) -> &str {
    execution["results"][0]["text/plain"]
        .as_str()
        .unwrap_or_else(|| panic!("no text/plain result: {execution}"))
}

/// The largest resident set this process reaches while `work` runs, over what it had
/// before, sampled every few milliseconds on a thread of its own.
async fn rss_growth<T>(work: impl std::future::Future<Output = T>) -> (T, u64) {
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap()
    }
    let before = rss_kib();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(rss_kib());
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let output = work.await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    (output, peak.saturating_sub(before) * 1024)
}

#[tokio::test]
async fn a_two_gigabyte_flood_of_output_costs_the_server_little_memory_over_json_and_sse() {
    const FLOOD: &str = "import sys\nfor _ in range(2048):\n    sys.stdout.write('x' * (1 << 20))";
    const MIB: u64 = 1024 * 1024;
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(data.path()), python().await).await;
    let api = server.api();
    let id = api.create_session().await;
    // Warm up the paths once, so that their one-time allocations are not counted.
    api.execute(&id, "print('warm')").await;

    let started = std::time::Instant::now();
    let (result, growth) = rss_growth(api.execute(&id, FLOOD)).await;
    let stdout = result["stdout"].as_str().unwrap();
    assert!(
        stdout.len() as u64 <= 8 * MIB,
        "{} bytes kept",
        stdout.len()
    );
    assert!(stdout.contains("dropped"), "a marker says what was dropped");
    assert_eq!(result["truncated"], true, "{}", &stdout[..200]);
    assert!(
        growth < 64 * MIB,
        "JSON: the server grew by {} MiB",
        growth / MIB
    );
    eprintln!(
        "JSON: {} MiB of growth, {:?}",
        growth / MIB,
        started.elapsed()
    );

    let (events, growth) =
        rss_growth(async { api.execute_stream(&id, FLOOD).await.rest().await }).await;
    let streamed: usize = events
        .iter()
        .filter(|e| e.name == "stdout")
        .map(|e| e.data["text"].as_str().unwrap().len())
        .sum();
    assert!(streamed as u64 <= 8 * MIB, "{streamed} bytes streamed");
    let end = events.last().unwrap();
    assert_eq!(end.name, "end");
    assert!(end.data["stdout"].as_str().unwrap().len() as u64 <= 8 * MIB);
    assert!(
        growth < 64 * MIB,
        "SSE: the server grew by {} MiB",
        growth / MIB
    );
    eprintln!("SSE: {} MiB of growth", growth / MIB);

    // The session still answers, with its state.
    assert_eq!(
        text_result(&api.execute(&id, "sys.maxsize > 0").await),
        "True"
    );
    server.stop().await;
}
