//! The core's session lifecycle on fake session processes (the runtime's `Launcher`
//! seam): idle stop, crashes, per-execution timeouts, re-attaching to executions, warm
//! sessions, the quotas, containers' idle expiry, responses a stopped server left
//! unfinished, and two nodes on one database taking a session over, in milliseconds and
//! without Python.

use sandcell_agent::TokenUsage;
use sandcell_pyenv::EnvInfo;
use sandcell_service::{
    Auth, ContainerStatus, ExecutionState, LoggedEvent, NewContainer, PageRequest, ResponseRecord,
    ResponseStatus, Route, Routed, Service, ServiceConfig, ServiceError, SessionLimits, Store,
    User, MAX_EXPIRY_MINUTES,
};
use sandcell_session::fake::FakeLauncher;
use sandcell_session::{Allowlist, ExecEvent, Runtime, Status};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

struct Core {
    service: Arc<Service>,
    fake: Arc<FakeLauncher>,
    user: User,
    _data: TempDir,
}

async fn core(configure: impl FnOnce(&mut ServiceConfig)) -> Core {
    let data = tempfile::tempdir().unwrap();
    let mut config = ServiceConfig::new(data.path());
    config.warm_sessions = 0;
    configure(&mut config);
    let store = Store::open(&config.sqlite_file()).unwrap();
    let user = store.local_user().await.unwrap();
    let fake = FakeLauncher::new();
    let service = start(config, store, &user, &fake).await;
    Core {
        service,
        fake,
        user,
        _data: data,
    }
}

/// The core on `store`, its sessions' processes faked by `fake`.
async fn start(
    config: ServiceConfig,
    store: Store,
    user: &User,
    fake: &Arc<FakeLauncher>,
) -> Arc<Service> {
    let runtime = Runtime::with_launcher(fake.clone(), 0);
    let python = EnvInfo {
        python_version: "3.0.0".into(),
        python: "python".into(),
        prefix: "/".into(),
        base_prefix: "/".into(),
        base_executable_dir: "/".into(),
        packages: Vec::new(),
    };
    Service::start(config, store, Auth::Local(user.clone()), runtime, python)
        .await
        .unwrap()
}

impl Core {
    async fn create(&self, user: &User) -> String {
        let limits = SessionLimits::standard();
        self.service
            .sessions
            .create(user, limits, Allowlist::default(), None)
            .await
            .unwrap()
            .id
    }

    async fn run(&self, id: &str, code: &str, timeout: Option<f64>) -> sandcell_session::Execution {
        let log = self
            .service
            .sessions
            .execute(&self.user, id, code.into(), timeout)
            .await
            .unwrap();
        log.result().await.unwrap()
    }
}

#[tokio::test]
async fn an_idle_session_is_stopped_and_its_next_execution_says_it_restarted() {
    let core = core(|config| config.idle_timeout = Duration::from_millis(30)).await;
    let id = core.create(&core.user).await;
    assert_eq!(core.run(&id, "set x 1", None).await.status, Status::Ok);
    assert_eq!(core.fake.live().len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    core.service.sessions.stop_idle().await;
    assert_eq!(core.fake.live().len(), 0, "its process is gone");
    let info = core.service.sessions.get(&core.user, &id).unwrap();
    assert_eq!(serde_json::to_value(info.state).unwrap(), "stopped");
    let after = core.run(&id, "get x", None).await;
    assert!(after.restarted);
    assert_eq!(after.error.unwrap().ename, "NameError");
}

#[tokio::test]
async fn a_crash_is_reported_and_the_next_execution_runs_in_a_fresh_process() {
    let core = core(|_| {}).await;
    let id = core.create(&core.user).await;
    let crashed = core.run(&id, "set x 1\ncrash 11", None).await;
    assert_eq!(crashed.status, Status::Crashed);
    assert!(crashed.error.unwrap().evalue.contains("segmentation fault"));
    let next = core.run(&id, "print alive", None).await;
    assert!(next.restarted);
    assert_eq!(next.stdout, "alive\n");
}

#[tokio::test]
async fn a_per_execution_timeout_applies_to_that_execution_only() {
    let core = core(|_| {}).await;
    let id = core.create(&core.user).await;
    let timed_out = core.run(&id, "hang", Some(0.05)).await;
    assert_eq!(timed_out.status, Status::Timeout);
    assert!(
        timed_out.error.unwrap().evalue.contains("0.05 s"),
        "the message names the limit that applied"
    );
    // The next execution has the session's own limit (120 s): it is still running well
    // past 0.05 s, until interrupted.
    let log = core
        .service
        .sessions
        .execute(&core.user, &id, "hang".into(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(log.state(), ExecutionState::Running);
    assert!(core.service.sessions.interrupt(&core.user, &id).unwrap());
    assert_eq!(log.result().await.unwrap().status, Status::Interrupted);
    let refused = core
        .service
        .sessions
        .execute(&core.user, &id, "print x".into(), Some(121.0))
        .await
        .unwrap_err();
    assert!(matches!(refused, ServiceError::Invalid(_)), "{refused}");
}

#[tokio::test]
async fn an_execution_is_kept_under_its_id_for_readers_that_come_late() {
    let core = core(|_| {}).await;
    let id = core.create(&core.user).await;
    let log = core
        .service
        .sessions
        .execute(&core.user, &id, "print a\nprint b".into(), None)
        .await
        .unwrap();
    let result = log.result().await.unwrap();
    assert_eq!(result.stdout, "a\nb\n");
    let kept = core
        .service
        .sessions
        .execution(&core.user, &id, &log.id)
        .unwrap();
    let outputs: Vec<String> = kept
        .entries_from(0)
        .await
        .into_iter()
        .filter_map(|entry| match entry {
            LoggedEvent::Output(ExecEvent::Stdout(text)) => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(outputs.concat(), "a\nb\n");
    let missing = core
        .service
        .sessions
        .execution(&core.user, &id, "exec_none")
        .unwrap_err();
    assert!(matches!(missing, ServiceError::NotFound(_)));
}

#[tokio::test]
async fn warm_sessions_become_new_sessions_without_a_launch() {
    let core = core(|config| {
        config.warm_sessions = 2;
        config.max_sessions = 3;
    })
    .await;
    let refill = core.service.sessions.spawn_warm_refill();
    for _ in 0..200 {
        if core.fake.live().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(core.fake.live().len(), 2, "two warm sessions are started");
    // With the refill stopped, a new session that launches nothing must be a warm one.
    refill.abort();
    let launches = core.fake.launches();
    // Whatever the refill had started by the time it stopped.
    let live = core.fake.live().len();
    let id = core.create(&core.user).await;
    assert_eq!(
        core.fake.launches(),
        launches,
        "the new session was a warm one"
    );
    assert_eq!(core.fake.live().len(), live);
    assert_eq!(core.run(&id, "print hi", None).await.stdout, "hi\n");
    let refill = core.service.sessions.spawn_warm_refill();
    // Three places: the session, and two warm ones again at most.
    for _ in 0..200 {
        if core.fake.live().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        core.fake.live().len(),
        3,
        "the pool never exceeds the server's quota"
    );
    refill.abort();
}

#[tokio::test]
async fn a_user_at_their_quota_is_refused_and_others_are_not() {
    let core = core(|config| config.max_sessions_per_user = 1).await;
    let alice = core.user.clone();
    let bob = core
        .service
        .store
        .set_user_key("bob", vec![1, 2, 3])
        .await
        .unwrap();
    let id = core.create(&alice).await;
    let busy = core
        .service
        .sessions
        .execute(&alice, &id, "hang".into(), None)
        .await
        .unwrap();
    let refused = core
        .service
        .sessions
        .create(
            &alice,
            SessionLimits::standard(),
            Allowlist::default(),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ServiceError::UserLimit { .. }),
        "{refused}"
    );
    assert!(refused.retry_after().is_some());
    core.create(&bob).await;
    core.service.sessions.interrupt(&alice, &id).unwrap();
    busy.result().await.unwrap();
    // Alice's idle session gives way to her next one.
    let second = core.create(&alice).await;
    let page = core
        .service
        .sessions
        .list(&alice, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.data.len(), 2);
    let first = page.data.iter().find(|s| s.id == id).unwrap();
    assert_eq!(serde_json::to_value(first.state).unwrap(), "stopped");
    assert!(page.data.iter().any(|s| s.id == second));
}

#[tokio::test]
async fn a_session_created_in_a_given_directory_works_there_and_leaves_it_when_deleted() {
    let core = core(|_| {}).await;
    let given = tempfile::tempdir().unwrap();
    std::fs::write(given.path().join("input.csv"), "a,b\n").unwrap();
    let sessions = &core.service.sessions;
    let id = sessions
        .create_in(
            &core.user,
            SessionLimits::standard(),
            Allowlist::default(),
            None,
            given.path().into(),
        )
        .await
        .unwrap()
        .id;
    let files = sessions
        .workdir(&core.user, &id)
        .await
        .unwrap()
        .list()
        .unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, "input.csv");
    // Stopped (idle) and started again, it comes back to the same directory.
    sessions.restart(&core.user, &id).await.unwrap();
    assert_eq!(
        sessions
            .workdir(&core.user, &id)
            .await
            .unwrap()
            .list()
            .unwrap()[0]
            .path,
        "input.csv"
    );
    sessions.delete(&core.user, &id).await.unwrap();
    assert!(
        given.path().join("input.csv").exists(),
        "the directory is kept"
    );
    assert!(matches!(
        sessions.get(&core.user, &id),
        Err(ServiceError::NotFound(_))
    ));
}

#[tokio::test]
async fn an_idle_container_expires_with_its_session_and_files_though_nobody_touches_it() {
    // A container's "minute" lasts 200 ms here, so one of a minute expires within seconds.
    let core = core(|config| config.container_minute = Duration::from_millis(200)).await;
    let containers = &core.service.containers;
    let short = containers
        .create(
            &core.user,
            NewContainer {
                name: "short".into(),
                expires_after_minutes: Some(1),
                ..NewContainer::default()
            },
        )
        .await
        .unwrap();
    let long = containers
        .create(
            &core.user,
            NewContainer {
                name: "long".into(),
                expires_after_minutes: Some(MAX_EXPIRY_MINUTES),
                ..NewContainer::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        core.run(&short.session_id, "set x 1", None).await.status,
        Status::Ok
    );
    assert_eq!(core.fake.live().len(), 2);
    let short_dir = core.service.config.sessions_dir().join(&short.session_id);
    assert!(short_dir.is_dir());

    let reaper = containers.spawn_expiry_reaper();
    let mut waited = Duration::ZERO;
    // Until the expiry has run to its end: aborting the reaper sooner could cut it short.
    while core
        .service
        .sessions
        .get(&core.user, &short.session_id)
        .is_ok()
        || short_dir.exists()
        || containers
            .retrieve(&core.user, &short.id)
            .await
            .is_ok_and(|container| container.status != ContainerStatus::Expired)
    {
        assert!(
            waited < Duration::from_secs(10),
            "the idle container did not expire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    reaper.abort();

    assert_eq!(
        core.fake.live().len(),
        1,
        "its Python process is gone, the other's not"
    );
    assert!(!short_dir.exists(), "its files are gone");
    let expired = containers.retrieve(&core.user, &short.id).await.unwrap();
    assert_eq!(expired.status, ContainerStatus::Expired);
    assert_eq!(expired.name, "short");
    match containers.get(&core.user, &short.id).await {
        Err(ServiceError::Invalid(message)) => assert!(message.contains("expired"), "{message}"),
        other => panic!("using an expired container: {other:?}"),
    }
    let listed = containers
        .list(&core.user, None, false, &PageRequest::default())
        .await
        .unwrap();
    let names: Vec<&str> = listed.data.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["long"],
        "only the container still running is listed"
    );
    let running = containers.get(&core.user, &long.id).await.unwrap();
    assert_eq!(running.status, ContainerStatus::Running);

    containers.delete(&core.user, &short.id).await.unwrap();
    assert!(matches!(
        containers.retrieve(&core.user, &short.id).await,
        Err(ServiceError::NotFound(_))
    ));
    assert!(
        matches!(
            containers.delete(&core.user, &short.id).await,
            Err(ServiceError::NotFound(_))
        ),
        "an expired container's record is deleted once"
    );
}

#[tokio::test]
async fn a_response_left_in_progress_by_a_server_that_stopped_is_failed_when_the_core_starts() {
    let core = core(|_| {}).await;
    let unfinished = ResponseRecord {
        id: "resp_unfinished".into(),
        container_id: "cntr_gone".into(),
        model: "anthropic:claude-replay".into(),
        previous_response_id: None,
        created_at: 1,
        status: ResponseStatus::InProgress,
        error: None,
        input: "Go on.".into(),
        records: Vec::new(),
        usage: TokenUsage::default(),
        files: Vec::new(),
        door: serde_json::Value::Null,
    };
    let body = serde_json::to_string(&unfinished).unwrap();
    core.service
        .store
        .insert_response("resp_unfinished", core.user.id, 1, body)
        .await
        .unwrap();
    let before = core
        .service
        .responses
        .get(&core.user, "resp_unfinished")
        .await
        .unwrap();
    assert_eq!(before.status, ResponseStatus::InProgress);

    // The server stops and starts again on the same data.
    let restarted = start(
        core.service.config.clone(),
        core.service.store.clone(),
        &core.user,
        &core.fake,
    )
    .await;
    let after = restarted
        .responses
        .get(&core.user, "resp_unfinished")
        .await
        .unwrap();
    assert_eq!(after.status, ResponseStatus::Failed);
    assert!(after.error.unwrap().contains("server stopped"));
    assert_eq!(after.input, "Go on.");
}

/// A node of a two-node cluster on the SQLite database `db`, reached at `url`, whose peers
/// count it gone a second after its last heartbeat (long enough for a loaded machine to
/// do the steps between a heartbeat and the claim it must win).
async fn node(db: &std::path::Path, url: &str) -> (Arc<Service>, Arc<FakeLauncher>, User, TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = ServiceConfig::new(data.path());
    config.warm_sessions = 0;
    config.advertise_url = url.into();
    config.node_timeout = NODE_TIMEOUT;
    let store = Store::open(db).unwrap();
    let user = store.local_user().await.unwrap();
    let fake = FakeLauncher::new();
    let service = start(config, store, &user, &fake).await;
    (service, fake, user, data)
}

const NODE_TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_gone_nodes_session_is_taken_over_and_the_old_node_can_no_longer_run_it() {
    let shared = tempfile::tempdir().unwrap();
    let db = shared.path().join("sandcell.db");
    let (a, fake_a, user, _a_data) = node(&db, "http://a").await;
    let (b, fake_b, _, b_data) = node(&db, "http://b").await;
    let id = a
        .sessions
        .create(&user, SessionLimits::standard(), Allowlist::default(), None)
        .await
        .unwrap()
        .id;
    let run = |service: &Arc<Service>, code: &str| {
        let (service, id, user, code) =
            (service.clone(), id.clone(), user.clone(), code.to_owned());
        async move {
            let log = service.sessions.execute(&user, &id, code, None).await?;
            Ok::<_, ServiceError>(log.result().await.unwrap())
        }
    };
    assert_eq!(run(&a, "set x 1").await.unwrap().status, Status::Ok);
    // A's heartbeat now (its first tick), so that it is live for the checks that follow.
    let a_heartbeat = a.sessions.spawn_heartbeat();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen_by_b = b
        .sessions
        .list(&user, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(seen_by_b.data[0].node.as_deref(), Some("http://a"));

    // A is live: B sends the session's requests there, and will not run it itself.
    assert_eq!(
        b.route(Routed::Session(&id)).await.unwrap(),
        Route::Node("http://a".into())
    );
    let refused = run(&b, "get x").await.unwrap_err();
    assert!(
        matches!(&refused, ServiceError::Unavailable { message, .. } if message.contains("http://a")),
        "{refused:?}"
    );
    assert!(fake_b.live().is_empty());

    // A falls silent: B takes over,
    // once it has the session's files (a bucket's work; these nodes keep files locally).
    a_heartbeat.abort();
    tokio::time::sleep(NODE_TIMEOUT + Duration::from_millis(200)).await;
    assert_eq!(b.route(Routed::Session(&id)).await.unwrap(), Route::Here);
    let no_files = run(&b, "get x").await.unwrap_err();
    assert!(
        matches!(&no_files, ServiceError::Conflict(message) if message.contains("--files s3://")),
        "{no_files:?}"
    );
    std::fs::create_dir(b_data.path().join("sessions").join(&id)).unwrap();
    let taken = run(&b, "get x").await.unwrap();
    assert!(taken.restarted, "variables are gone with A's process");
    assert_eq!(taken.error.unwrap().ename, "NameError");
    assert_eq!(run(&b, "set x 2").await.unwrap().status, Status::Ok);

    // A comes back while B is live: its process of the session is no longer the
    // session's, and it must not run anything in it.
    let heartbeat = b.sessions.spawn_heartbeat();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake_a.live().len(), 1, "A still has its old process");
    let fenced = run(&a, "set x 3").await.unwrap_err();
    assert!(
        matches!(&fenced, ServiceError::Unavailable { message, .. } if message.contains("http://b")),
        "{fenced:?}"
    );
    assert!(fake_a.live().is_empty(), "A stopped its stale process");
    let kept = run(&b, "get x").await.unwrap();
    assert!(!kept.restarted);
    assert!(kept.error.is_none(), "{:?}", kept.error);
    heartbeat.abort();
}
