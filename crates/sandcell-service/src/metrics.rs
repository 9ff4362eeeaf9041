//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sandcell_session::Execution;

type Labels = Vec<(&'static str, String)>;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Sessions whose Python process is running.
    pub sessions_live: Gauge,
    executions: Family<Labels, Counter>,
    duration: Histogram,
    errors: Family<Labels, Counter>,
    write_backs: Family<Labels, Counter>,
    objects_uploaded: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sandcell");
        let sessions_live = Gauge::default();
        registry.register(
            "sessions_live",
            "Sessions whose Python process is running",
            sessions_live.clone(),
        );
        let executions = Family::<Labels, Counter>::default();
        registry.register(
            "executions",
            "Executions that ended, by status",
            executions.clone(),
        );
        // 5 ms to about 11 minutes.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 18));
        registry.register(
            "execution_duration_seconds",
            "Wall-clock time of executions",
            duration.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        registry.register("errors", "Error responses, by error code", errors.clone());
        let write_backs = Family::<Labels, Counter>::default();
        registry.register(
            "file_write_backs",
            "Write-backs of a session's files to the bucket, by result",
            write_backs.clone(),
        );
        let objects_uploaded = Counter::default();
        registry.register(
            "file_objects_uploaded",
            "Contents uploaded to the bucket (unchanged contents are not uploaded again)",
            objects_uploaded.clone(),
        );
        Self {
            registry,
            write_backs,
            objects_uploaded,
            sessions_live,
            executions,
            duration,
            errors,
        }
    }

    pub fn record_execution(&self, execution: &Execution) {
        let status = serde_json::to_value(execution.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.executions
            .get_or_create(&vec![("status", status)])
            .inc();
        // Milliseconds to seconds: precision far beyond what a histogram keeps.
        #[allow(clippy::cast_precision_loss)]
        self.duration.observe(execution.duration_ms as f64 / 1000.0);
    }

    /// A write-back of a session's files: the objects it uploaded, or `None` when it failed.
    pub fn record_write_back(&self, uploaded: Option<usize>) {
        let result = if uploaded.is_some() { "ok" } else { "failed" };
        self.write_backs
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
        self.objects_uploaded
            .inc_by(uploaded.unwrap_or(0).try_into().unwrap_or(u64::MAX));
    }

    pub fn record_error(&self, code: &str) {
        self.errors
            .get_or_create(&vec![("code", code.to_owned())])
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
