//! A session's lifecycle driven through the fake launcher: no Python, no sandbox, paused
//! time; each test runs in milliseconds.

use crate::fake::FakeLauncher;
use crate::{
    ExecEvent, ExecOptions, Execution, Limits, Runtime, Session, SessionConfig, SessionError,
    SessionState, Status, StopReason,
};
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::Duration;

async fn session_with(limits: Limits) -> (Session, Arc<FakeLauncher>) {
    let launcher = FakeLauncher::new();
    let runtime = Runtime::with_launcher(launcher.clone(), 0);
    let session = runtime
        .create_session(SessionConfig {
            workdir: None,
            limits,
            network: crate::NetPolicy::None,
            environment: None,
        })
        .await
        .expect("a fake session starts");
    (session, launcher)
}

async fn session() -> (Session, Arc<FakeLauncher>) {
    session_with(Limits::default()).await
}

async fn run(session: &mut Session, code: &str) -> Execution {
    session
        .execute(code, &ExecOptions::default(), &mut |_| {})
        .await
        .expect("the session can be driven")
}

fn text(execution: &Execution) -> &str {
    execution.results[0]["text/plain"].as_str().unwrap()
}

fn evalue(execution: &Execution) -> &str {
    &execution.error.as_ref().expect("an error").evalue
}

fn short_timeout() -> Limits {
    Limits {
        timeout: Duration::from_millis(100),
        ..Limits::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_starts_runs_cells_and_keeps_its_state() {
    let (mut s, launcher) = session().await;
    let first = run(&mut s, "set x 41\nprint hello\neprint careful").await;
    assert_eq!(first.status, Status::Ok, "{first:?}");
    assert_eq!(first.stdout, "hello\n");
    assert_eq!(first.stderr, "careful\n");
    assert!(!first.restarted);
    let second = run(&mut s, "get x").await;
    assert_eq!(text(&second), "41");
    let error = run(&mut s, "raise ValueError").await;
    assert_eq!(error.status, Status::Error);
    assert_eq!(error.error.unwrap().ename, "ValueError");
    assert_eq!(launcher.launches(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_crash_is_reported_and_the_next_execution_restarts() {
    let (mut s, launcher) = session().await;
    run(&mut s, "set x 1").await;
    let crash = run(&mut s, "crash 11").await;
    assert_eq!(crash.status, Status::Crashed);
    assert!(evalue(&crash).contains("segmentation fault"), "{crash:?}");
    let next = run(&mut s, "get x").await;
    assert!(next.restarted);
    assert_eq!(next.error.unwrap().ename, "NameError", "state is gone");
    let after = run(&mut s, "print again").await;
    assert!(!after.restarted, "a restart is said once");
    assert_eq!(launcher.launches(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_exit_code_is_the_crash_reason() {
    let (mut s, _launcher) = session().await;
    let exit = run(&mut s, "exit 3").await;
    assert_eq!(exit.status, Status::Crashed);
    assert!(evalue(&exit).contains("exited with code 3"), "{exit:?}");
}

#[tokio::test(start_paused = true)]
async fn a_timeout_interrupts_and_keeps_the_state() {
    let (mut s, launcher) = session_with(short_timeout()).await;
    run(&mut s, "set x 7").await;
    let e = run(&mut s, "hang").await;
    assert_eq!(e.status, Status::Timeout, "{e:?}");
    assert!(evalue(&e).contains("0.1 s time limit"), "{e:?}");
    let pid = s.pid().unwrap();
    assert_eq!(launcher.signals(), [(pid, Signal::SIGINT)]);
    let next = run(&mut s, "get x").await;
    assert!(!next.restarted);
    assert_eq!(text(&next), "7");
}

#[tokio::test(start_paused = true)]
async fn a_timeout_that_an_interrupt_does_not_stop_kills_the_process() {
    let (mut s, launcher) = session_with(short_timeout()).await;
    run(&mut s, "set x 7").await;
    let pid = s.pid().unwrap();
    let e = run(&mut s, "hang-hard").await;
    assert_eq!(e.status, Status::Timeout, "{e:?}");
    assert!(
        evalue(&e).contains("did not stop when interrupted"),
        "{e:?}"
    );
    assert_eq!(
        launcher.signals(),
        [(pid, Signal::SIGINT), (pid, Signal::SIGKILL)]
    );
    assert!(launcher.live().is_empty(), "the killed process is gone");
    let next = run(&mut s, "get x").await;
    assert!(next.restarted);
    assert_eq!(next.error.unwrap().ename, "NameError");
}

#[tokio::test(start_paused = true)]
async fn a_per_execution_timeout_names_itself_and_leaves_the_session_alone() {
    let (mut s, _launcher) = session().await;
    let options = ExecOptions {
        timeout: Some(Duration::from_millis(250)),
    };
    let e = s.execute("hang", &options, &mut |_| {}).await.unwrap();
    assert_eq!(e.status, Status::Timeout);
    assert!(evalue(&e).contains("0.25 s time limit"), "{e:?}");
    assert_eq!(s.limits().timeout, Limits::default().timeout);
}

#[tokio::test(start_paused = true)]
async fn a_user_interrupt_stops_the_cell_and_keeps_the_state() {
    let (mut s, launcher) = session().await;
    run(&mut s, "set x 7").await;
    let interrupter = s.interrupter();
    let e = s
        .execute(
            "print started\nhang",
            &ExecOptions::default(),
            &mut |event| {
                if matches!(event, ExecEvent::Stdout(_)) {
                    assert!(interrupter.interrupt());
                }
            },
        )
        .await
        .unwrap();
    assert_eq!(e.status, Status::Interrupted, "{e:?}");
    assert_eq!(e.error.unwrap().ename, "KeyboardInterrupt");
    assert_eq!(launcher.signals().len(), 1);
    assert_eq!(text(&run(&mut s, "get x").await), "7");
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_while_idle_changes_nothing() {
    let (mut s, _launcher) = session().await;
    run(&mut s, "set x 7").await;
    assert!(s.interrupter().interrupt());
    let next = run(&mut s, "get x").await;
    assert_eq!(next.status, Status::Ok, "{next:?}");
    assert_eq!(text(&next), "7");
}

#[tokio::test(start_paused = true)]
async fn restart_gives_fresh_state_in_a_new_process() {
    let (mut s, launcher) = session().await;
    run(&mut s, "set x 7").await;
    let old = s.pid().unwrap();
    s.restart().await.unwrap();
    assert_ne!(s.pid().unwrap(), old);
    assert_eq!(launcher.live(), [s.pid().unwrap()]);
    let next = run(&mut s, "get x").await;
    assert!(!next.restarted, "a restart asked for is not news");
    assert_eq!(next.error.unwrap().ename, "NameError");
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_the_process() {
    let (s, launcher) = session().await;
    assert_eq!(launcher.live().len(), 1);
    s.shutdown().await.unwrap();
    assert!(launcher.live().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_frame_stops_the_process() {
    let (mut s, launcher) = session().await;
    let e = run(&mut s, "garbage").await;
    assert_eq!(e.status, Status::Crashed, "{e:?}");
    assert!(evalue(&e).contains("broke the session protocol"), "{e:?}");
    assert!(launcher.live().is_empty());
    assert!(run(&mut s, "print back").await.restarted);
}

#[tokio::test(start_paused = true)]
async fn a_keeper_that_fails_fails_the_start() {
    let launcher = FakeLauncher::new();
    launcher.fail_next_launch("Landlock is missing");
    let runtime = Runtime::with_launcher(launcher.clone(), 0);
    let started = runtime
        .create_session(SessionConfig {
            workdir: None,
            limits: Limits::default(),
            network: crate::NetPolicy::None,
            environment: None,
        })
        .await;
    match started {
        Err(SessionError::Sandbox(message)) => assert_eq!(message, "Landlock is missing"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the session started"),
    }
}

#[tokio::test(start_paused = true)]
async fn pooled_sessions_come_ready() {
    let launcher = FakeLauncher::new();
    let runtime = Runtime::with_launcher(launcher.clone(), 2);
    let mut s = runtime
        .create_session(SessionConfig {
            workdir: None,
            limits: Limits::default(),
            network: crate::NetPolicy::None,
            environment: None,
        })
        .await
        .unwrap();
    assert_eq!(text(&run(&mut s, "result pooled").await), "pooled");
    // The refill task keeps the pool full behind the session taken.
    while launcher.launches() < 3 {
        tokio::task::yield_now().await;
    }
}

const IDLE: SessionState = SessionState::Idle {
    replaces_lost: false,
};

#[tokio::test(start_paused = true)]
async fn the_state_follows_executions_crashes_and_kills() {
    let (mut s, launcher) = session_with(short_timeout()).await;
    assert_eq!(s.state(), IDLE);
    let watch = s.watch_state();
    let mut seen_while_running = None;
    s.execute("print running", &ExecOptions::default(), &mut |_| {
        seen_while_running = Some(*watch.borrow());
    })
    .await
    .unwrap();
    assert_eq!(seen_while_running, Some(SessionState::Running));
    assert_eq!(s.state(), IDLE);

    run(&mut s, "crash 9").await;
    assert_eq!(
        s.state(),
        SessionState::Stopped {
            reason: StopReason::Died
        }
    );
    run(&mut s, "hang-hard").await;
    assert_eq!(
        s.state(),
        SessionState::Stopped {
            reason: StopReason::Killed
        }
    );

    launcher.fail_next_launch("no sandbox today");
    let failed = s
        .execute("print x", &ExecOptions::default(), &mut |_| {})
        .await;
    assert!(matches!(failed, Err(SessionError::Sandbox(_))));
    assert_eq!(
        s.state(),
        SessionState::Stopped {
            reason: StopReason::StartFailed
        }
    );
    let back = run(&mut s, "print back").await;
    assert!(back.restarted);
    assert_eq!(s.state(), IDLE);
}

#[tokio::test(start_paused = true)]
async fn a_session_standing_in_for_a_lost_one_says_so_once() {
    let (mut s, _launcher) = session().await;
    s.mark_state_lost();
    assert_eq!(
        s.state(),
        SessionState::Idle {
            replaces_lost: true
        }
    );
    assert!(run(&mut s, "print first").await.restarted);
    assert!(!run(&mut s, "print second").await.restarted);
}

#[tokio::test(start_paused = true)]
async fn a_process_that_dies_while_idle_is_replaced_by_the_next_execution() {
    let (mut s, launcher) = session().await;
    let pid = s.pid().unwrap();
    // SIGTERM ends a fake process whatever it does, as a kill from outside would.
    assert!(launcher.signals().is_empty());
    s.interrupter().interrupt(); // ignored while idle
    crate::Launcher::signal(&*launcher, pid, Signal::SIGTERM);
    while !launcher.live().is_empty() {
        tokio::task::yield_now().await;
    }
    // Time for the session to read the keeper's report (paused time: no real wait).
    tokio::time::sleep(Duration::from_millis(10)).await;
    let next = run(&mut s, "print fresh").await;
    assert!(next.restarted);
    assert_eq!(next.stdout, "fresh\n");
    assert_ne!(s.pid().unwrap(), pid);
}

#[tokio::test(start_paused = true)]
async fn an_execution_given_up_midway_leaves_a_process_that_is_replaced() {
    let (mut s, launcher) = session().await;
    let abandoned = tokio::time::timeout(
        Duration::from_secs(1),
        s.execute("hang", &ExecOptions::default(), &mut |_| {}),
    )
    .await;
    assert!(abandoned.is_err(), "the execution was given up");
    assert_eq!(s.state(), SessionState::Running);
    let old = s.pid().unwrap();
    let next = run(&mut s, "print fresh").await;
    assert!(next.restarted);
    assert_eq!(next.stdout, "fresh\n");
    assert!(launcher.signals().contains(&(old, Signal::SIGKILL)));
    assert_eq!(launcher.live(), [s.pid().unwrap()]);
}

#[tokio::test(start_paused = true)]
async fn a_flood_is_kept_to_the_output_limit() {
    let limits = Limits {
        output_mib: 1,
        ..Limits::default()
    };
    let (mut s, _launcher) = session_with(limits).await;
    let e = run(&mut s, "print first\nflood 16\nprint last").await;
    assert_eq!(e.status, Status::Ok, "{e:?}");
    assert!(e.truncated);
    assert!(e.stdout.starts_with("first\n"));
    assert!(e.stdout.ends_with("last\n"));
    assert!(e.stdout.contains("bytes of output dropped"));
    assert!(e.stdout.len() < (1 << 20) + 100, "{}", e.stdout.len());
}

#[tokio::test(start_paused = true)]
async fn a_frame_whose_body_never_comes_stalls_only_its_own_session() {
    let (mut s, launcher) = session_with(short_timeout()).await;
    let e = run(&mut s, "announce 1000000000\nprint swallowed").await;
    assert_eq!(e.status, Status::Timeout, "{e:?}");
    assert!(
        launcher.live().is_empty(),
        "the stalled process was stopped"
    );
    let next = run(&mut s, "print back").await;
    assert!(next.restarted);
    assert_eq!(next.stdout, "back\n");
}

#[tokio::test(start_paused = true)]
async fn completion_asks_the_idle_process_and_a_dead_one_offers_nothing() {
    let (mut s, launcher) = session().await;
    run(&mut s, "set total 1\nset tally 2\nset other 3").await;
    let completion = s.complete("x = t", 5).await.unwrap();
    assert_eq!(completion.matches, ["tally", "total"]);
    assert_eq!((completion.cursor_start, completion.cursor_end), (4, 5));
    // A cursor past the end is taken as the end.
    assert_eq!(s.complete("t", 9).await.unwrap().cursor_end, 1);
    // The session still runs cells after completing.
    assert_eq!(text(&run(&mut s, "get total").await), "1");

    run(&mut s, "crash 9").await;
    // Completion starts no process: a stopped session offers nothing.
    let completion = s.complete("t", 1).await.unwrap();
    assert!(completion.matches.is_empty(), "{completion:?}");
    assert_eq!(launcher.launches(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_kernel_that_does_not_answer_a_completion_is_replaced() {
    let (mut s, launcher) = session().await;
    run(&mut s, "set kept 1\nmute-completion").await;
    let error = s.complete("k", 1).await.unwrap_err();
    assert!(error.to_string().contains("no answer"), "{error}");
    assert!(
        matches!(s.state(), SessionState::Stopped { .. }),
        "{:?}",
        s.state()
    );
    let next = run(&mut s, "print fresh").await;
    assert!(next.restarted, "{next:?}");
    assert_eq!(next.stdout, "fresh\n");
    assert_eq!(launcher.launches(), 2);
}
