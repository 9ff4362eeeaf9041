//! A session's own filesystem seen from the host, through the HTTP API: the data
//! directory lies on a filesystem of its own (a tmpfs), so that its free bytes and inodes
//! move only with what sandcell does.

mod common;

use common::{config, json, python, TestServer};
use reqwest::{Method, StatusCode};
use sandcell_server::ServerConfig;
use sandcell_service::ServiceConfig;
use serde_json::json;
use std::path::Path;

const QUOTA_MIB: u64 = 16;
const MIB: u64 = 1 << 20;
/// What the host may pay beyond the quota: the database's growth, the session's
/// directory and image entries.
const OVERHEAD_BYTES: u64 = MIB;
const OVERHEAD_INODES: u64 = 8;

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn free(dir: &Path) -> (u64, u64) {
    let stat = nix::sys::statvfs::statvfs(dir).unwrap();
    (
        stat.blocks_available() * stat.fragment_size(),
        stat.files_available(),
    )
}

#[tokio::test]
async fn the_host_pays_at_most_the_quota_and_files_stay_usable() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIPPED: mounting a filesystem for the data directory needs root (and without root, disk quotas are measured, which bounds nothing between cells)"
        );
        return;
    }
    let python = python().await;
    if *python.runtime.disks().quota() != sandcell_session::DiskQuota::Kernel {
        panic!(
            "as root the kernel should enforce disk quotas here: {:?}",
            python.runtime.disks().quota()
        );
    }
    let data = Tmpfs(tempfile::tempdir().unwrap());
    nix::mount::mount(
        Some("tmpfs"),
        data.0.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=256m,nr_inodes=100000"),
    )
    .expect("a tmpfs for the data directory");
    let base = config(data.0.path());
    let config = ServerConfig {
        service: ServiceConfig {
            // Only the session below makes a disk.
            warm_sessions: 0,
            ..base.service.clone()
        },
        ..base
    };
    let server = TestServer::start(config.clone(), python.clone()).await;
    let api = server.api();
    // The database exists once the server serves.
    let (status, _) = json(api.get("/api/v1/sessions").await).await;
    assert_eq!(status, StatusCode::OK);
    let before = free(data.0.path());

    let (status, created) = json(
        api.request(Method::POST, "/api/v1/sessions")
            .json(&json!({ "limits": { "disk_quota_mib": QUOTA_MIB } }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let filled = api
        .execute(
            &id,
            r#"
import os
def fill():
    try:
        with open("big.bin", "wb") as f:
            for _ in range(64):
                f.write(b"\1" * (1 << 20))
                f.flush()
    except OSError as e:
        return e.strerror
os.makedirs("many")
def touch():
    try:
        for i in range(100_000):
            open(f"many/{i}", "w").close()
    except OSError as e:
        return e.strerror
print(fill(), touch())
"#,
        )
        .await;
    assert_eq!(
        filled["stdout"], "No space left on device No space left on device\n",
        "{filled}"
    );
    let after = free(data.0.path());
    let (bytes, inodes) = (before.0 - after.0, before.1 - after.1);
    eprintln!("the host paid {bytes} bytes and {inodes} inodes for a {QUOTA_MIB} MiB quota");
    assert!(bytes <= QUOTA_MIB * MIB + OVERHEAD_BYTES, "{bytes} bytes");
    assert!(inodes <= OVERHEAD_INODES, "{inodes} inodes");

    // The file API reads, lists and writes on that filesystem; a file that does not fit
    // is refused with a sentence.
    let files = format!("/api/v1/sessions/{id}/files");
    let (status, listed) = json(api.get(&files).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "big.bin"),
        "{listed}"
    );
    let read = api.get(&format!("{files}/big.bin")).await;
    assert_eq!(read.status(), StatusCode::OK);
    let kept = read.bytes().await.unwrap().len() as u64;
    assert!(kept > 8 * MIB && kept <= QUOTA_MIB * MIB, "{kept}");
    let too_big = api
        .request(Method::PUT, &format!("{files}/more.bin"))
        .body(vec![0u8; 4 << 20])
        .send()
        .await
        .unwrap();
    let (status, refused) = json(too_big).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("disk quota"), "{message}");
    // Deleting makes room again.
    let deleted = api
        .request(Method::DELETE, &format!("{files}/big.bin"))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    let put = api
        .request(Method::PUT, &format!("{files}/more.bin"))
        .body(vec![0u8; 4 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);

    // Files stay through a server restart (the image is mounted again), and the session
    // goes on.
    server.stop().await;
    let server = TestServer::start(config, python).await;
    let api = server.api();
    let again = api
        .execute(&id, "import os\nprint(os.path.getsize('more.bin'))")
        .await;
    assert_eq!(again["stdout"], format!("{}\n", 4 << 20), "{again}");
    let deleted = api
        .request(Method::DELETE, &format!("/api/v1/sessions/{id}"))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    let emptied = free(data.0.path());
    assert!(
        emptied.0 + OVERHEAD_BYTES >= before.0,
        "deleting the session gave the bytes back"
    );
    assert!(!data
        .0
        .path()
        .join("sessions")
        .join(format!("{id}.disk"))
        .exists());
    server.stop().await;
}
