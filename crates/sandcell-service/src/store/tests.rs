//! The store's suite, run on both databases: every case once on SQLite, and once on
//! PostgreSQL (ignored unless asked for, since it needs a server:
//! `scripts/with-postgres cargo test -p sandcell-service --lib store:: -- --include-ignored`,
//! which fails, saying why, when no server is given).

use super::*;
use crate::files::FileInfo;
use crate::limits::SessionLimits;
use sandcell_session::Allowlist;

/// A store on an empty database, and what keeps that database alive.
struct Fresh {
    store: Store,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("sandcell.db")).unwrap();
    Fresh {
        store,
        _dir: Some(dir),
    }
}

/// The URL of an empty schema of its own on the test server.
async fn postgres_url() -> String {
    let url = std::env::var("SANDCELL_TEST_POSTGRES_URL").expect(
        "SANDCELL_TEST_POSTGRES_URL names no PostgreSQL server: run the PostgreSQL cases \
         through scripts/with-postgres",
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(connection);
    let schema = format!("test_{}", crate::users::random_hex(8).unwrap());
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

async fn postgres() -> Fresh {
    let location = DatabaseLocation::Postgres(postgres_url().await);
    let store = Store::open_at(&location, Path::new("unused"))
        .await
        .unwrap();
    Fresh { store, _dir: None }
}

/// Each case as two tests: `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_databases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::sqlite().await.store).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "needs a PostgreSQL server: run through scripts/with-postgres with --include-ignored"]
                async fn $case() {
                    super::$case(&super::postgres().await.store).await
                }
            )*
        }
    };
}

on_both_databases![
    users_get_one_key_each_and_are_found_by_its_hash,
    sessions_keep_their_limits_network_and_environment,
    a_sessions_conversations_and_containers_go_with_it,
    conversations_keep_their_records_in_order,
    notebook_saves_name_the_revision_they_change,
    files_are_listed_in_the_order_they_came,
    container_files_follow_the_directory_in_one_transaction,
    a_failed_transaction_leaves_nothing_behind,
    responses_and_expired_containers_are_read_by_their_owner_only,
    records_written_from_many_tasks_at_once_all_land,
    a_session_is_claimed_from_a_gone_node_only_and_the_old_epoch_is_fenced,
    a_node_that_restarts_lets_go_of_its_sessions,
    sessions_are_routed_to_their_live_node_and_counted_per_user,
    objects_name_the_session_they_run_in,
    mcp_sessions_are_kept_replaced_and_dropped,
];

async fn mcp_sessions_are_kept_replaced_and_dropped(store: &Store) {
    let week = 7 * 24 * 60 * 60;
    store
        .save_mcp_session("m1", "{}".into(), 100)
        .await
        .unwrap();
    store
        .save_mcp_session("m1", "{\"v\":2}".into(), 100)
        .await
        .unwrap();
    assert_eq!(
        store.mcp_session("m1").await.unwrap().as_deref(),
        Some("{\"v\":2}")
    );
    assert_eq!(store.mcp_session("m2").await.unwrap(), None);
    // A week later, saving another session drops the old one.
    store
        .save_mcp_session("m2", "{}".into(), 101 + week)
        .await
        .unwrap();
    assert_eq!(store.mcp_session("m1").await.unwrap(), None);
    store.delete_mcp_session("m2").await.unwrap();
    assert_eq!(store.mcp_session("m2").await.unwrap(), None);
}

/// Nodes of the tests' cluster.
const NODE_A: &str = "node_a";
const NODE_B: &str = "node_b";

/// A heartbeat time; nodes are live when theirs is at or after the `alive_since` given.
const T0: i64 = 1_000_000;

async fn a_session_is_claimed_from_a_gone_node_only_and_the_old_epoch_is_fenced(store: &Store) {
    let user = store.local_user().await.unwrap();
    store.heartbeat(NODE_A, "http://a:1", T0).await.unwrap();
    store.heartbeat(NODE_B, "http://b:1", T0).await.unwrap();
    add_session(store, user.id, "s1").await;
    // Created on A, under the first epoch.
    assert!(store.holds_session("s1", NODE_A, 1).await.unwrap());
    // A is live: B is told where the session runs and changes nothing.
    assert_eq!(
        store.claim_session("s1", NODE_B, T0).await.unwrap(),
        Claim::Elsewhere {
            url: "http://a:1".into()
        }
    );
    assert!(store.holds_session("s1", NODE_A, 1).await.unwrap());
    // A's heartbeat is older than the liveness bound: B takes the session over.
    assert_eq!(
        store.claim_session("s1", NODE_B, T0 + 1).await.unwrap(),
        Claim::Held { epoch: 2 }
    );
    assert!(!store.holds_session("s1", NODE_A, 1).await.unwrap());
    assert!(store.holds_session("s1", NODE_B, 2).await.unwrap());
    // A, back, can neither release nor hold what it lost.
    store.release_session("s1", NODE_A, 1).await.unwrap();
    assert!(store.holds_session("s1", NODE_B, 2).await.unwrap());
    assert_eq!(
        store.claim_session("s1", NODE_A, T0).await.unwrap(),
        Claim::Elsewhere {
            url: "http://b:1".into()
        },
        "B is live (its heartbeat is the bound's)"
    );
    // B stops it: free for anyone, under a new epoch each time.
    store.release_session("s1", NODE_B, 2).await.unwrap();
    assert_eq!(
        store.claim_session("s1", NODE_A, T0 + 1).await.unwrap(),
        Claim::Held { epoch: 3 }
    );
    assert_eq!(
        store.claim_session("s1", NODE_A, T0 + 1).await.unwrap(),
        Claim::Held { epoch: 4 },
        "a node claiming its own session again raises the epoch"
    );
    assert_eq!(
        store.claim_session("gone", NODE_A, T0).await.unwrap(),
        Claim::Gone
    );
}

async fn a_node_that_restarts_lets_go_of_its_sessions(store: &Store) {
    let user = store.local_user().await.unwrap();
    store.heartbeat(NODE_A, "http://a:1", T0).await.unwrap();
    store.heartbeat(NODE_B, "http://b:1", T0).await.unwrap();
    add_session(store, user.id, "s1").await;
    add_session(store, user.id, "s2").await;
    assert_eq!(
        store.claim_session("s2", NODE_B, T0 + 1).await.unwrap(),
        Claim::Held { epoch: 2 }
    );
    store.release_node(NODE_A, false).await.unwrap();
    assert_eq!(
        store.session_owner("s1", NODE_B, T0).await.unwrap(),
        Owner::Free
    );
    assert!(store.holds_session("s2", NODE_B, 2).await.unwrap());
    store.release_node(NODE_B, true).await.unwrap();
    assert_eq!(
        store.session_owner("s2", NODE_A, T0).await.unwrap(),
        Owner::Free
    );
    // B left: a session it claims again names no address until its next heartbeat.
    assert_eq!(
        store.claim_session("s2", NODE_B, T0).await.unwrap(),
        Claim::Held { epoch: 3 }
    );
    assert_eq!(
        store.session_owner("s2", NODE_A, T0).await.unwrap(),
        Owner::Free,
        "a node without a heartbeat is not live"
    );
}

async fn sessions_are_routed_to_their_live_node_and_counted_per_user(store: &Store) {
    let user = store.local_user().await.unwrap();
    let other = store.set_user_key("other", vec![7; 32]).await.unwrap();
    store.heartbeat(NODE_A, "http://a:1", T0).await.unwrap();
    add_session(store, user.id, "s1").await;
    add_session(store, user.id, "s2").await;
    add_session(store, other.id, "s3").await;
    assert_eq!(
        store.session_owner("s1", NODE_B, T0).await.unwrap(),
        Owner::Node {
            url: "http://a:1".into()
        }
    );
    assert_eq!(
        store.session_owner("s1", NODE_A, T0).await.unwrap(),
        Owner::Free,
        "a node's own session is its own to handle"
    );
    assert_eq!(
        store.session_owner("s1", NODE_B, T0 + 1).await.unwrap(),
        Owner::Free,
        "a gone node's session is free"
    );
    assert_eq!(
        store.session_owner("nope", NODE_B, T0).await.unwrap(),
        Owner::Gone
    );
    assert_eq!(
        store
            .sessions_run_elsewhere(user.id, NODE_B, T0)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .sessions_run_elsewhere(user.id, NODE_A, T0)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .sessions_run_elsewhere(user.id, NODE_B, T0 + 1)
            .await
            .unwrap(),
        0
    );
    store.release_session("s2", NODE_A, 1).await.unwrap();
    let mut listed = store.sessions_of(user.id, T0).await.unwrap();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("s1".to_owned(), Some("http://a:1".to_owned())),
            ("s2".to_owned(), None)
        ]
    );
    let (record, conversation) = store.session_blocking("s3").unwrap().unwrap();
    assert_eq!((record.user_id, conversation), (other.id, None));
    assert!(store.session_blocking("nope").unwrap().is_none());
}

async fn objects_name_the_session_they_run_in(store: &Store) {
    let user = store.local_user().await.unwrap();
    add_session(store, user.id, "s1").await;
    add_conversation(store, user.id, "c1", "s1").await;
    add_container(store, user.id, "cntr_1", "s1").await;
    assert_eq!(
        store
            .session_of(InSession::Conversation, "c1")
            .await
            .unwrap(),
        Some("s1".into())
    );
    assert_eq!(
        store
            .session_of(InSession::Container, "cntr_1")
            .await
            .unwrap(),
        Some("s1".into())
    );
    assert_eq!(
        store.session_of(InSession::Notebook, "n1").await.unwrap(),
        None
    );
    let (_, conversation) = store.session_blocking("s1").unwrap().unwrap();
    assert_eq!(conversation.as_deref(), Some("c1"));
}

async fn users_get_one_key_each_and_are_found_by_its_hash(store: &Store) {
    assert!(!store.has_keys().await.unwrap());
    let local = store.local_user().await.unwrap();
    assert_eq!(store.local_user().await.unwrap(), local);
    // The local user can be given a key (its sessions go with it)…
    let keyed = store.set_user_key(LOCAL_USER, vec![1; 32]).await.unwrap();
    assert_eq!(keyed, local);
    // …but a user with a key keeps it.
    assert!(matches!(
        store.set_user_key(LOCAL_USER, vec![2; 32]).await,
        Err(StoreError::KeyExists(_))
    ));
    let alice = store.set_user_key("alice", vec![3; 32]).await.unwrap();
    assert_ne!(alice.id, local.id);
    assert!(store.has_keys().await.unwrap());
    assert_eq!(
        store.user_by_key_hash(vec![3; 32]).await.unwrap(),
        Some(alice)
    );
    assert_eq!(store.user_by_key_hash(vec![2; 32]).await.unwrap(), None);
}

fn session(id: &str, user_id: i64, created_at: &str) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        user_id,
        created_at: created_at.into(),
        last_used_at: created_at.into(),
        limits: SessionLimits {
            memory_mib: 512,
            processes: 64,
            timeout_secs: 2.5,
            file_size_mib: 100,
            disk_quota_mib: 1024,
        },
        network: Allowlist::default(),
        environment: None,
    }
}

async fn sessions_keep_their_limits_network_and_environment(store: &Store) {
    let user = store.local_user().await.unwrap();
    let mut second = session("s2", user.id, "2026-01-02T00:00:00.000Z");
    second.network = Allowlist::parse(&["pypi.org", "*.example.com:8443"]).unwrap();
    second.environment = Some("geo".into());
    second.limits.timeout_secs = 30.0;
    store.insert_session(second.clone(), NODE_A).await.unwrap();
    let first = session("s1", user.id, "2026-01-01T00:00:00.000Z");
    store.insert_session(first.clone(), NODE_A).await.unwrap();
    assert_eq!(
        store.sessions().await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    store
        .touch_session("s1", "2026-01-03T00:00:00.000Z".into())
        .await
        .unwrap();
    let sessions = store.sessions().await.unwrap();
    assert_eq!(sessions[0].last_used_at, "2026-01-03T00:00:00.000Z");
    store.delete_session("s2").await.unwrap();
    assert_eq!(store.sessions().await.unwrap().len(), 1);
}

/// The user's session `id`, made at the start of 2026.
async fn add_session(store: &Store, user_id: i64, id: &str) {
    store
        .insert_session(session(id, user_id, "2026-01-01T00:00:00.000Z"), NODE_A)
        .await
        .unwrap();
}

/// The user's conversation `id` on session `session_id`, made at the start of 2026.
async fn add_conversation(store: &Store, user_id: i64, id: &str, session_id: &str) {
    store
        .insert_conversation(conversation(
            id,
            user_id,
            session_id,
            "2026-01-01T00:00:00.000Z",
        ))
        .await
        .unwrap();
}

/// The user's container `id` on session `session_id`, made at second 100.
async fn add_container(store: &Store, user_id: i64, id: &str, session_id: &str) {
    store
        .insert_container(user_id, container(id, session_id, 100))
        .await
        .unwrap();
}

fn conversation(id: &str, user_id: i64, session_id: &str, at: &str) -> ConversationRecord {
    ConversationRecord {
        id: id.into(),
        user_id,
        session_id: session_id.into(),
        title: format!("about {id}"),
        model: "anthropic:claude-sonnet-4-5".into(),
        created_at: at.into(),
        updated_at: at.into(),
    }
}

fn container(id: &str, session_id: &str, created_at: i64) -> ContainerRecord {
    ContainerRecord {
        id: id.into(),
        name: format!("box {id}"),
        session_id: session_id.into(),
        created_at,
        last_active_at: created_at,
        expires_after_minutes: 20,
    }
}

async fn a_sessions_conversations_and_containers_go_with_it(store: &Store) {
    let user = store.local_user().await.unwrap();
    add_session(store, user.id, "s1").await;
    add_conversation(store, user.id, "c1", "s1").await;
    store
        .append_conversation_record("c1", 0, "user", r#"{"type":"user"}"#)
        .unwrap();
    add_container(store, user.id, "cntr_1", "s1").await;
    let owners = store.conversation_sessions().await.unwrap();
    assert_eq!(owners.get("s1").map(String::as_str), Some("c1"));
    store.delete_session("s1").await.unwrap();
    assert_eq!(store.conversation(user.id, "c1").await.unwrap(), None);
    assert!(store.conversation_records("c1").await.unwrap().is_empty());
    assert_eq!(store.container(user.id, "cntr_1").await.unwrap(), None);
    assert!(store.conversation_sessions().await.unwrap().is_empty());
}

async fn conversations_keep_their_records_in_order(store: &Store) {
    let user = store.local_user().await.unwrap();
    let other = store.set_user_key("bob", vec![9; 32]).await.unwrap();
    add_session(store, user.id, "s1").await;
    let older = conversation("c1", user.id, "s1", "2026-01-01T00:00:00.000Z");
    let newer = conversation("c2", user.id, "s1", "2026-01-02T00:00:00.000Z");
    store.insert_conversation(older.clone()).await.unwrap();
    store.insert_conversation(newer.clone()).await.unwrap();
    assert_eq!(
        store.conversations(user.id).await.unwrap(),
        vec![newer.clone(), older.clone()]
    );
    assert!(store.conversations(other.id).await.unwrap().is_empty());
    assert_eq!(store.conversation(other.id, "c1").await.unwrap(), None);
    for (seq, text) in ["one", "two", "three"].into_iter().enumerate() {
        store
            .append_conversation_record("c1", seq, "user", &format!(r#"{{"text":"{text}"}}"#))
            .unwrap();
    }
    // The same number twice is refused, and nothing of it lands.
    assert!(store
        .append_conversation_record("c1", 1, "user", r#"{"text":"again"}"#)
        .is_err());
    assert_eq!(
        store.conversation_records("c1").await.unwrap(),
        vec![
            r#"{"text":"one"}"#,
            r#"{"text":"two"}"#,
            r#"{"text":"three"}"#
        ]
    );
    // Appending marks it used: it comes first now.
    let listed = store.conversations(user.id).await.unwrap();
    assert_eq!(listed[0].id, "c1");
    assert!(listed[0].updated_at > older.updated_at);
    store
        .update_conversation("c1", "renamed".into(), "openai:gpt-4.1".into())
        .await
        .unwrap();
    let renamed = store.conversation(user.id, "c1").await.unwrap().unwrap();
    assert_eq!(
        (renamed.title.as_str(), renamed.model.as_str()),
        ("renamed", "openai:gpt-4.1")
    );
    store.delete_conversation("c1").await.unwrap();
    assert!(store.conversation_records("c1").await.unwrap().is_empty());
    assert_eq!(store.conversations(user.id).await.unwrap(), vec![newer]);
}

async fn notebook_saves_name_the_revision_they_change(store: &Store) {
    let user = store.local_user().await.unwrap();
    let notebook = NotebookRecord {
        id: "n1".into(),
        user_id: user.id,
        title: "Untitled".into(),
        session_id: Some("s1".into()),
        cells: r#"[{"source":"1 + 1"}]"#.into(),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:00.000Z".into(),
        revision: 0,
    };
    store.insert_notebook(notebook.clone()).await.unwrap();
    let listed = store.notebooks(user.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].cells, "", "lists leave the cells out");
    assert_eq!(
        store.notebook(user.id, "n1").await.unwrap(),
        Some(notebook.clone())
    );
    assert!(store.notebook_uses_session(user.id, "s1").await.unwrap());
    assert!(!store.notebook_uses_session(user.id, "s2").await.unwrap());
    let mut change = notebook.clone();
    change.cells = "[]".into();
    change.session_id = None;
    assert_eq!(
        store
            .update_notebook(change.clone(), Some(0))
            .await
            .unwrap(),
        NotebookSave::Saved(1)
    );
    // A save made from revision 0 again is stale; one that names none is written.
    assert_eq!(
        store
            .update_notebook(change.clone(), Some(0))
            .await
            .unwrap(),
        NotebookSave::Stale
    );
    assert_eq!(
        store.update_notebook(change.clone(), None).await.unwrap(),
        NotebookSave::Saved(2)
    );
    assert_eq!(
        store
            .update_notebook(change.clone(), Some(u64::MAX))
            .await
            .unwrap(),
        NotebookSave::Stale
    );
    let saved = store.notebook(user.id, "n1").await.unwrap().unwrap();
    assert_eq!((saved.cells.as_str(), saved.revision), ("[]", 2));
    let mut missing = change;
    missing.id = "n2".into();
    assert_eq!(
        store.update_notebook(missing, None).await.unwrap(),
        NotebookSave::NotFound
    );
    let stranger = store.set_user_key("eve", vec![5; 32]).await.unwrap();
    assert!(!store.delete_notebook(stranger.id, "n1").await.unwrap());
    assert!(store.delete_notebook(user.id, "n1").await.unwrap());
    assert!(store.notebooks(user.id).await.unwrap().is_empty());
}

async fn files_are_listed_in_the_order_they_came(store: &Store) {
    let user = store.local_user().await.unwrap();
    let other = store.set_user_key("bob", vec![9; 32]).await.unwrap();
    let file = |id: &str, created_at| StoredFile {
        id: id.into(),
        filename: format!("{id}.csv"),
        purpose: "user_data".into(),
        bytes: 5_000_000_000,
        created_at,
    };
    // Made in the same second, in an order their ids do not sort in.
    for id in ["file-c", "file-a", "file-b"] {
        store
            .insert_file(user.id, file(id, 1_700_000_000))
            .await
            .unwrap();
    }
    store
        .insert_file(user.id, file("file-0", 1_600_000_000))
        .await
        .unwrap();
    let ids: Vec<String> = store
        .files(user.id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(ids, ["file-0", "file-c", "file-a", "file-b"]);
    assert_eq!(
        store.file(user.id, "file-a").await.unwrap(),
        Some(file("file-a", 1_700_000_000))
    );
    assert_eq!(store.file(other.id, "file-a").await.unwrap(), None);
    store.delete_file("file-a").await.unwrap();
    assert_eq!(store.file(user.id, "file-a").await.unwrap(), None);
}

fn listed(paths: &[&str]) -> Vec<FileInfo> {
    paths
        .iter()
        .map(|path| FileInfo {
            path: (*path).into(),
            size: 10,
            mime: "text/plain".into(),
            modified: "2026-01-01T00:00:00.000Z".into(),
        })
        .collect()
}

async fn container_files_follow_the_directory_in_one_transaction(store: &Store) {
    let user = store.local_user().await.unwrap();
    add_session(store, user.id, "s1").await;
    add_session(store, user.id, "s2").await;
    add_container(store, user.id, "cntr_b", "s1").await;
    add_container(store, user.id, "cntr_a", "s2").await;
    let ids: Vec<String> = store
        .containers(user.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["cntr_b", "cntr_a"], "in the order they were made");
    store.touch_container("cntr_b", 500).await.unwrap();
    let with_owners = store.containers_with_owners().await.unwrap();
    assert_eq!(with_owners.len(), 2);
    assert!(with_owners
        .iter()
        .any(|(c, owner)| c.id == "cntr_b" && c.last_active_at == 500 && *owner == user));
    let uploaded = ContainerFile {
        id: "cfile_1".into(),
        container_id: "cntr_b".into(),
        path: "data.csv".into(),
        bytes: 10,
        source: FileSource::User,
        created_at: 100,
    };
    store.insert_container_file(uploaded.clone()).await.unwrap();
    // Uploading to the same path again replaces the row.
    let again = ContainerFile {
        id: "cfile_2".into(),
        ..uploaded.clone()
    };
    store.insert_container_file(again.clone()).await.unwrap();
    store
        .insert_container_file(ContainerFile {
            id: "cfile_3".into(),
            path: "old.txt".into(),
            ..uploaded
        })
        .await
        .unwrap();
    // The directory now holds data.csv and a new plot; old.txt is gone.
    let files = store
        .sync_container_files(
            "cntr_b",
            listed(&["data.csv", "plot.png"]),
            vec!["cfile_new1".into(), "cfile_new2".into()],
            200,
        )
        .await
        .unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0], again);
    assert_eq!(
        (files[1].id.as_str(), files[1].source, files[1].created_at),
        ("cfile_new2", FileSource::Assistant, 200)
    );
    // Listing again finds the same ids.
    let same = store
        .sync_container_files(
            "cntr_b",
            listed(&["data.csv", "plot.png"]),
            vec!["cfile_x".into(), "cfile_y".into()],
            300,
        )
        .await
        .unwrap();
    assert_eq!(same, files);
    store.delete_container_file("cfile_2").await.unwrap();
    let after = store
        .sync_container_files("cntr_b", listed(&["plot.png"]), vec!["cfile_z".into()], 400)
        .await
        .unwrap();
    assert_eq!(after, vec![files[1].clone()]);
}

async fn a_failed_transaction_leaves_nothing_behind(store: &Store) {
    let user = store.local_user().await.unwrap();
    add_session(store, user.id, "s1").await;
    add_container(store, user.id, "cntr_1", "s1").await;
    // Two new files given the same id: the second insert fails, and the first is undone.
    let failed = store
        .sync_container_files(
            "cntr_1",
            listed(&["a.txt", "b.txt"]),
            vec!["cfile_same".into(), "cfile_same".into()],
            100,
        )
        .await;
    assert!(failed.is_err());
    let files = store
        .sync_container_files("cntr_1", listed(&[]), vec![], 100)
        .await
        .unwrap();
    assert!(files.is_empty(), "{files:?}");
    // The connection is usable afterwards.
    assert_eq!(store.containers(user.id).await.unwrap().len(), 1);
}

async fn responses_and_expired_containers_are_read_by_their_owner_only(store: &Store) {
    let user = store.local_user().await.unwrap();
    let other = store.set_user_key("bob", vec![9; 32]).await.unwrap();
    let body = |status: &str| {
        serde_json::json!({
            "status": status,
            "output": [{"type": "code_interpreter_call", "status": "in_progress"}],
        })
        .to_string()
    };
    store
        .insert_response("resp_1", user.id, 100, body("in_progress"))
        .await
        .unwrap();
    store
        .insert_response("resp_2", user.id, 101, body("completed"))
        .await
        .unwrap();
    // Only the response itself being in progress counts, not an item of it.
    assert_eq!(
        store.unfinished_responses().await.unwrap(),
        vec![("resp_1".to_owned(), body("in_progress"))]
    );
    store
        .update_response("resp_1", body("failed"))
        .await
        .unwrap();
    assert!(store.unfinished_responses().await.unwrap().is_empty());
    assert_eq!(
        store
            .owned_body(OwnedTable::Responses, user.id, "resp_1")
            .await
            .unwrap(),
        Some(body("failed"))
    );
    assert_eq!(
        store
            .owned_body(OwnedTable::Responses, other.id, "resp_1")
            .await
            .unwrap(),
        None
    );
    assert!(!store
        .delete_owned(OwnedTable::Responses, other.id, "resp_1")
        .await
        .unwrap());
    assert!(store
        .delete_owned(OwnedTable::Responses, user.id, "resp_1")
        .await
        .unwrap());
    store.delete_response("resp_2").await.unwrap();
    assert_eq!(
        store
            .owned_body(OwnedTable::Responses, user.id, "resp_2")
            .await
            .unwrap(),
        None
    );

    store
        .set_chat_thread(user.id, "k1", "resp_1")
        .await
        .unwrap();
    store
        .set_chat_thread(user.id, "k1", "resp_9")
        .await
        .unwrap();
    assert_eq!(
        store.chat_thread(user.id, "k1").await.unwrap().as_deref(),
        Some("resp_9")
    );
    assert_eq!(store.chat_thread(other.id, "k1").await.unwrap(), None);

    store
        .insert_expired_container("cntr_1", user.id, 1000, "{\"v\":1}".into())
        .await
        .unwrap();
    store
        .insert_expired_container("cntr_1", user.id, 2000, "{\"v\":2}".into())
        .await
        .unwrap();
    store
        .insert_expired_container("cntr_2", user.id, 5000, "{}".into())
        .await
        .unwrap();
    let expired = |id: &'static str| store.owned_body(OwnedTable::ExpiredContainers, user.id, id);
    assert_eq!(
        expired("cntr_1").await.unwrap().as_deref(),
        Some("{\"v\":2}")
    );
    store.forget_expired_containers(3000).await.unwrap();
    assert_eq!(expired("cntr_1").await.unwrap(), None);
    assert!(expired("cntr_2").await.unwrap().is_some());
}

async fn records_written_from_many_tasks_at_once_all_land(store: &Store) {
    let user = store.local_user().await.unwrap();
    add_session(store, user.id, "s1").await;
    let ids: Vec<String> = (0..8).map(|n| format!("c{n}")).collect();
    for id in &ids {
        add_conversation(store, user.id, id, "s1").await;
    }
    let writers = ids.iter().map(|id| {
        let (store, id) = (store.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            for seq in 0..25 {
                store
                    .append_conversation_record(&id, seq, "user", &format!("{{\"n\":{seq}}}"))
                    .unwrap();
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap();
    }
    for id in &ids {
        let records = store.conversation_records(id).await.unwrap();
        assert_eq!(records.len(), 25, "{id}");
        assert_eq!(records[24], "{\"n\":24}");
    }
}

#[tokio::test]
#[ignore = "needs a PostgreSQL server: run through scripts/with-postgres with --include-ignored"]
async fn postgres_nodes_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let location = DatabaseLocation::Postgres(postgres_url().await);
    let opening = (0..3).map(|_| {
        let location = location.clone();
        tokio::spawn(async move { Store::open_at(&location, Path::new("unused")).await })
    });
    let stores = futures_util::future::join_all(opening).await;
    for store in &stores {
        assert!(
            store.as_ref().unwrap().is_ok(),
            "{:?}",
            store.as_ref().unwrap().as_ref().err()
        );
    }
    let store = stores.into_iter().next().unwrap().unwrap().unwrap();
    store.local_user().await.unwrap();
    store
        .call(|c| {
            c.execute("UPDATE sandcell_schema SET version = ?1", &values![99_i64])?;
            Ok(())
        })
        .await
        .unwrap();
    match Store::open_at(&location, Path::new("unused")).await {
        Err(StoreError::TooNew { found: 99, .. }) => {}
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a schema newer than this sandcell was used"),
    }
}

#[tokio::test]
#[ignore = "needs a PostgreSQL server: run through scripts/with-postgres with --include-ignored"]
async fn postgres_connections_are_encrypted_and_the_certificate_checked_as_asked() {
    let url = postgres_url().await;
    let authority = std::env::var("SANDCELL_TEST_POSTGRES_CA").expect(
        "SANDCELL_TEST_POSTGRES_CA names no certificate authority: run through scripts/with-postgres",
    );
    let encrypted = |url: String| async move {
        let store = Store::open_at(&DatabaseLocation::Postgres(url), Path::new("unused")).await?;
        store
            .call(|c| {
                c.query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )?
                .get::<bool>(0)
            })
            .await
    };
    // libpq's default (`prefer`): encrypted, the certificate not checked.
    assert!(encrypted(url.clone()).await.unwrap());
    assert!(!encrypted(format!("{url}&sslmode=disable")).await.unwrap());
    // The server's certificate is for 127.0.0.1, from the test's own authority.
    let full = format!("{url}&sslmode=verify-full&sslrootcert={authority}");
    assert!(encrypted(full.clone()).await.unwrap());
    let by_name = full.replacen("127.0.0.1", "localhost", 1);
    let refused = encrypted(by_name.clone()).await.unwrap_err().to_string();
    assert!(refused.contains("certificate"), "{refused}");
    assert!(encrypted(by_name.replace("verify-full", "verify-ca"))
        .await
        .unwrap());
    // Not an authority of the public ones.
    let unknown = encrypted(format!("{url}&sslmode=verify-ca"))
        .await
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("certificate"), "{unknown}");
}

#[tokio::test]
async fn a_database_url_is_told_apart_from_a_mistake() {
    assert_eq!(
        DatabaseLocation::parse("local"),
        Ok(DatabaseLocation::Local)
    );
    assert_eq!(DatabaseLocation::parse(""), Ok(DatabaseLocation::Local));
    assert_eq!(
        DatabaseLocation::parse("postgresql://db/sandcell"),
        Ok(DatabaseLocation::Postgres(
            "postgresql://db/sandcell".into()
        ))
    );
    let error = DatabaseLocation::parse("mysql://db").unwrap_err();
    assert!(error.contains("postgres://"), "{error}");
    // A server that is not there is one clear error, with no password in it.
    let location = DatabaseLocation::Postgres("postgres://me:secret@127.0.0.1:1/db".into());
    match Store::open_at(&location, Path::new("unused")).await {
        Err(error @ StoreError::Connect { .. }) => {
            let message = error.to_string();
            assert!(message.contains("me:***@127.0.0.1:1/db"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("connected to nothing"),
    }
}
