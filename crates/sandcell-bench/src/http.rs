//! `sandcell serve` measured over HTTP: the server started in this process on a loopback
//! port with a data directory of its own, driven by an HTTP/1.1 client with keep-alive as
//! a program would drive it.

use crate::stats::{self, Latency, Throughput};
use crate::{
    check, BenchError, CellFigures, HttpSamples, FIRST_CELL, POOL_REFILL_PAUSE, TRIVIAL_CELL,
};
use reqwest::header::ACCEPT;
use sandcell_pyenv::Environment;
use sandcell_server::{Server, ServerConfig, API_PREFIX};
use sandcell_session::{Execution, Runtime, RuntimeOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

/// Starts a server with a runtime of `runtime_options`, measures, and stops it.
pub(crate) async fn measure(
    env: &Environment,
    runtime_options: RuntimeOptions,
    samples: &HttpSamples,
) -> Result<CellFigures, BenchError> {
    let data_dir = tempfile::Builder::new()
        .prefix("sandcell-bench-serve-")
        .tempdir()?;
    // The server keeps its own warm sessions (the runtime's pool serves only sessions
    // without a directory of their own, which a server never asks for).
    let warm_sessions = runtime_options.pool_size;
    let runtime_options = RuntimeOptions {
        pool_size: 0,
        ..runtime_options
    };
    let mut config = ServerConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ..ServerConfig::new(data_dir.path())
    };
    // Room for every client's session, the one being created beside them and the warm ones.
    config.service.max_sessions = samples.clients + 2 + warm_sessions;
    config.service.max_sessions_per_user = config.service.max_sessions;
    config.service.warm_sessions = warm_sessions;
    let server = Server::bind(config).await?;
    let base = format!("http://{}{API_PREFIX}", server.local_addr()?);
    let runtime = Runtime::start(env, runtime_options).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(runtime, env.info().clone(), async move {
        // A dropped sender stops the server as well.
        let _ = stopped.await;
    }));
    let figures = drive(&base, samples).await;
    let _ = stop.send(());
    let served = serving
        .await
        .map_err(|e| BenchError::Http(format!("the server task failed: {e}")))?;
    let figures = figures?;
    served?;
    Ok(figures)
}

async fn drive(base: &str, samples: &HttpSamples) -> Result<CellFigures, BenchError> {
    let client = Client::new(base)?;
    let (ready_trivial, _) = session_ready(&client, samples.ready_samples, TRIVIAL_CELL).await?;
    let (ready_plot, floor) = session_ready(&client, samples.ready_samples, FIRST_CELL).await?;
    Ok(CellFigures {
        session_ready_trivial: Latency::of(&ready_trivial),
        session_ready: Latency::of(&ready_plot),
        plot_floor: Latency::of(&floor),
        plot_overhead: Latency::of(&stats::overhead(&ready_plot, &floor)),
        trivial_cell: trivial_cells(&client, samples.trivial_cells).await?,
        throughput: throughput(base, samples.clients, samples.cells_per_client).await?,
    })
}

/// One HTTP/1.1 client with its connection kept alive.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Result<Self, BenchError> {
        let http = reqwest::Client::builder()
            .http1_only()
            .build()
            .map_err(|e| BenchError::Http(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.to_owned(),
        })
    }

    /// `POST /sessions` with every default; the new session's id.
    async fn create_session(&self) -> Result<String, BenchError> {
        #[derive(serde::Deserialize)]
        struct Created {
            id: String,
        }
        let request = self
            .http
            .post(format!("{}/sessions", self.base))
            .json(&serde_json::json!({}));
        let created: Created = answer(request, "POST /sessions").await?;
        Ok(created.id)
    }

    /// `POST /sessions/ID/execute`, answered as JSON; refuses a failed cell.
    async fn execute(&self, id: &str, code: &str) -> Result<Execution, BenchError> {
        let request = self
            .http
            .post(format!("{}/sessions/{id}/execute", self.base))
            .header(ACCEPT, "application/json")
            .json(&serde_json::json!({ "code": code }));
        let execution: Execution = answer(request, "POST /sessions/ID/execute").await?;
        check(&execution, code)?;
        Ok(execution)
    }

    async fn delete_session(&self, id: &str) -> Result<(), BenchError> {
        let request = self.http.delete(format!("{}/sessions/{id}", self.base));
        send(request, "DELETE /sessions/ID").await.map(drop)
    }
}

/// Sends `request`; a response that is not a success is an error naming `what`.
async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<reqwest::Response, BenchError> {
    let response = request
        .send()
        .await
        .map_err(|e| BenchError::Http(format!("{what}: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(BenchError::Http(format!(
        "{what} answered {status}: {body}"
    )))
}

async fn answer<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, BenchError> {
    send(request, what)
        .await?
        .json()
        .await
        .map_err(|e| BenchError::Http(format!("{what}: the answer is not understood: {e}")))
}

/// Milliseconds from `POST /sessions` to the first cell's result; for the plotting cell
/// also the floor: the same cell run again in that session.
async fn session_ready(
    client: &Client,
    samples: usize,
    first_cell: &str,
) -> Result<(Vec<f64>, Vec<f64>), BenchError> {
    let mut ready = Vec::with_capacity(samples);
    let mut floor = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let id = client.create_session().await?;
        client.execute(&id, first_cell).await?;
        ready.push(stats::ms(started.elapsed()));
        if first_cell == FIRST_CELL {
            let started = Instant::now();
            client.execute(&id, first_cell).await?;
            floor.push(stats::ms(started.elapsed()));
        }
        client.delete_session(&id).await?;
        // As in process: one request at a time, with time for a pool to refill.
        tokio::time::sleep(POOL_REFILL_PAUSE).await;
    }
    Ok((ready, floor))
}

async fn trivial_cells(client: &Client, count: usize) -> Result<Latency, BenchError> {
    let id = client.create_session().await?;
    client.execute(&id, TRIVIAL_CELL).await?;
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        client.execute(&id, TRIVIAL_CELL).await?;
        times.push(stats::ms(started.elapsed()));
    }
    client.delete_session(&id).await?;
    Ok(Latency::of(&times))
}

/// `clients` clients at once, each with its own connection and session, each sending
/// `cells` trivial cells one after the other.
async fn throughput(base: &str, clients: usize, cells: usize) -> Result<Throughput, BenchError> {
    let mut sessions = Vec::with_capacity(clients);
    for _ in 0..clients {
        let client = Client::new(base)?;
        let id = client.create_session().await?;
        client.execute(&id, TRIVIAL_CELL).await?;
        sessions.push((client, id));
    }
    let (finished, elapsed) = crate::all_at_once(sessions, cells, |(client, id)| async move {
        client.execute(&id, TRIVIAL_CELL).await?;
        Ok((client, id))
    })
    .await?;
    for (client, id) in finished {
        client.delete_session(&id).await?;
    }
    Ok(Throughput::of(clients, clients * cells, elapsed))
}
