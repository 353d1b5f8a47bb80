//! The demo data, and the `guichet` binary itself: `guichet demo` on a new SQLite file and on
//! PostgreSQL serves the demo communes with free slots for every service, `guichet migrate`
//! migrates, and SIGTERM stops the server cleanly.

use crate::helpers::{TestApp, TestDb, monday_morning, postgres_schema_url};
use guichet::booking::Engine;
use guichet::domain::{Clock, ManualClock, Status};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

async fn seed_on(db: &TestDb) -> ManualClock {
    let clock = ManualClock::new(monday_morning());
    let engine = Engine::new(
        db.store.clone(),
        Arc::new(clock.clone()) as Arc<dyn Clock>,
        chrono::Duration::minutes(10),
    );
    assert!(
        guichet::demo::seed(&engine).await.unwrap(),
        "first start seeds"
    );
    assert!(
        !guichet::demo::seed(&engine).await.unwrap(),
        "later starts do not"
    );
    clock
}

/// Every demo commune, every service: free slots through the API.
async fn every_demo_service_has_slots(app: &TestApp) {
    let (_, communes) = app.get_json("/api/v1/communes").await;
    let slugs: Vec<_> = communes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["slug"].as_str().unwrap().to_owned(),
                c["phone_numbers"][0].clone(),
            )
        })
        .collect();
    assert_eq!(
        slugs,
        [
            ("annecy".to_owned(), "+33465710001".into()),
            ("sallanches".to_owned(), "+33465710003".into()),
            ("thonon-les-bains".to_owned(), "+33465710002".into()),
        ]
    );
    for (slug, _) in &slugs {
        let (_, services) = app
            .get_json(&format!("/api/v1/communes/{slug}/services"))
            .await;
        let services = services.as_array().unwrap();
        assert!(
            services.len() >= 3,
            "{slug}: a CNI/passport service and two others"
        );
        assert!(services.iter().any(|s| s["category"] == "titres"), "{slug}");
        for service in services {
            let (status, slots) = app
                .get_json(&format!(
                    "/api/v1/communes/{slug}/slots?service={}",
                    service["id"]
                ))
                .await;
            assert_eq!(status, 200);
            assert!(
                !slots.as_array().unwrap().is_empty(),
                "{slug}: no free slot for {}",
                service["name"]
            );
        }
    }
    let (_, locations) = app.get_json("/api/v1/communes/annecy/locations").await;
    assert_eq!(
        locations.as_array().unwrap().len(),
        2,
        "Annecy has two locations"
    );
}

#[tokio::test]
async fn demo_data_on_sqlite() {
    let db = TestDb::sqlite().await;
    let clock = seed_on(&db).await;
    let app = TestApp::spawn(&db, clock).await;
    every_demo_service_has_slots(&app).await;
    // Some appointments are already booked, through each channel.
    let annecy = db.store.commune_by_slug("annecy").await.unwrap().unwrap();
    let booked = db
        .store
        .appointments(
            annecy.id,
            monday_morning(),
            monday_morning() + chrono::Duration::days(30),
        )
        .await
        .unwrap();
    assert!(booked.len() >= 5, "{} appointments", booked.len());
    assert!(booked.iter().all(|a| a.status == Status::Confirmed));
}

#[tokio::test]
async fn demo_data_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let clock = seed_on(&db).await;
    let app = TestApp::spawn(&db, clock).await;
    every_demo_service_has_slots(&app).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(args: &[&str], database_url: &str, dir: &std::path::Path) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_guichet"))
            .args(args)
            .current_dir(dir)
            .env("GUICHET_DATABASE_URL", database_url)
            .env("GUICHET_LISTEN", format!("127.0.0.1:{port}"))
            .env("GUICHET_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start guichet");
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn wait_ready(&mut self) {
        let client = crate::helpers::http_client();
        for _ in 0..300 {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("guichet exited early: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("guichet did not become ready");
    }

    /// SIGTERM, then the exit status (the server finishes in-flight requests and exits 0).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("guichet ignored SIGTERM");
    }
}

/// A failed test must not leave a server behind (it would also hold the test's output open).
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn check_running_demo(server: &Server) {
    let client = crate::helpers::http_client();
    let healthz = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    let communes: serde_json::Value = client
        .get(format!("{}/api/v1/communes", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(communes.as_array().unwrap().len(), 3);
    let services: serde_json::Value = client
        .get(format!(
            "{}/api/v1/communes/sallanches/services",
            server.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for service in services.as_array().unwrap() {
        let slots: serde_json::Value = client
            .get(format!(
                "{}/api/v1/communes/sallanches/slots?service={}",
                server.base, service["id"]
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(!slots.as_array().unwrap().is_empty());
    }
}

#[tokio::test]
async fn the_binary_runs_the_demo_on_a_new_sqlite_file_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.db");
    let url = format!("sqlite://{}", file.display());
    let mut server = Server::start(&["demo"], &url, dir.path());
    server.wait_ready().await;
    assert!(file.exists(), "the SQLite file is created on first start");
    check_running_demo(&server).await;
    let status = server.terminate();
    assert!(status.success(), "graceful exit: {status}");
    // A second start reuses the data rather than seeding again.
    let mut server = Server::start(&["demo"], &url, dir.path());
    server.wait_ready().await;
    check_running_demo(&server).await;
    assert!(server.terminate().success());
}

#[tokio::test]
async fn the_binary_migrates_and_runs_the_demo_on_postgres() {
    let Some(url) = postgres_schema_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_guichet"))
        .arg("migrate")
        .current_dir(dir.path())
        .env("GUICHET_DATABASE_URL", &url)
        .status()
        .unwrap();
    assert!(status.success());
    let mut server = Server::start(&["demo"], &url, dir.path());
    server.wait_ready().await;
    check_running_demo(&server).await;
    assert!(server.terminate().success());
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no SQLite file written when running on PostgreSQL"
    );
}

#[test]
fn a_bad_configuration_is_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_guichet"))
        .args(["--config", "missing.toml", "serve"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

#[test]
fn a_broken_call_flow_stops_the_start_naming_the_file_and_the_node() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("voix/voice-flows")).unwrap();
    std::fs::write(
        dir.path().join("voix/voice-flows/mairie.toml"),
        "start = \"accueil\"\n[nodes.accueil]\nstep = \"danser\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_guichet"))
        .arg("serve")
        .env("GUICHET_VOICE_DIR", dir.path().join("voix"))
        .env("GUICHET_LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("voice-flows/mairie.toml: node « accueil »: unknown step « danser »"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() == 1,
        "nothing written before refusing"
    );
}
