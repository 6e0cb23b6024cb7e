//! The console in a real browser: a host runs the repository's pipeline against a real broker
//! while orders flow, and `host/tests/browser/console.test.mjs` (playwright-core driving
//! Debian's Chromium) checks the page: every stage drawn, a rate that rises, a poison event
//! in the dead-letter table that a click replays, a rollback that changes the version shown,
//! a key lookup drawn as a timeline. It saves a screenshot under load as
//! `target/test-artifacts/console.png`.
//!
//! `scripts/setup.sh` installs what it needs (`chromium`, and `npm ci` in host/tests/browser).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TestPipeline, component, produce_raw, repo, stage_mut, wait_until};
use stagehost::plugin::content_version;

const TIMEOUT: Duration = Duration::from_secs(90);
/// Longest the browser script may run (it gives up by itself a little earlier).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Orders per second posted while the browser looks.
const ORDER_RATE: u64 = 20;
const CHROMIUM: &str = "/usr/bin/chromium";

fn version_of(stem: &str) -> String {
    content_version(&std::fs::read(component(stem)).unwrap())
}

/// Fails with what to install when the browser or the npm packages are missing.
/// What `stagehost console` prints for the pipeline's host: its console's address with the
/// generated admin token in the fragment.
fn console_url(pipeline: &TestPipeline) -> String {
    let (ok, out, err) = pipeline.admin_cli(&["console"]);
    assert!(ok, "stagehost console failed: {err}");
    let url = out.trim().to_string();
    assert!(
        url.starts_with(&format!("http://{}/#token=", pipeline.admin)),
        "{url}"
    );
    url
}

fn assert_browser_installed(browser_dir: &Path) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium)"
    );
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing in {}: run scripts/setup.sh (it runs npm ci there)",
        browser_dir.display()
    );
}

/// Posts orders `<prefix>-0`, `<prefix>-1`, … at [`ORDER_RATE`] until `stop`; counts those
/// accepted.
fn post_orders_until(
    http: String,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut ticker = tokio::time::interval(Duration::from_millis(1000 / ORDER_RATE));
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            let body = common::order(&format!("{prefix}-{n}"), "prod-789", 1);
            let answer = client
                .post(format!("http://{http}/orders"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().as_u16() == 202) {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            n += 1;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_pipeline_live_in_a_real_browser() {
    let browser_dir = repo().join("host/tests/browser");
    assert_browser_installed(&browser_dir);
    let blue = component("warehouse_blue");
    let mut pipeline = TestPipeline::new(|config| {
        stage_mut(config, "warehouse").insert("plugin".into(), blue.display().to_string().into());
    });
    pipeline.start();

    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let load = post_orders_until(
        pipeline.http.clone(),
        "console",
        stop.clone(),
        accepted.clone(),
    );
    // The order the page traces: the first, once its last event is written.
    wait_until("order console-0 shipped", TIMEOUT, || async {
        let (_, doc) = pipeline.get("/orders/console-0").await;
        doc["status"] == "shipped" && doc["notifications_delivered"] == 3
    })
    .await;

    // A second warehouse version, for the page to roll back.
    let green = std::fs::read(component("warehouse_green")).unwrap();
    let swapped = pipeline
        .admin_http()
        .put(pipeline.admin_url("/plugins/warehouse"))
        .body(green)
        .send()
        .await
        .unwrap();
    assert_eq!(swapped.status().as_u16(), 200, "{:?}", swapped.text().await);

    // A poison event: an OrderConfirmed that breaks its topic's schema.
    let poison = "console-poison";
    let body = serde_json::json!({"order_id": poison, "items": "none"}).to_string();
    produce_raw(
        &pipeline.topic("OrderConfirmed"),
        poison,
        body.as_bytes(),
        &[("ce_id", "console-poison-1"), ("ce_type", "OrderConfirmed")],
    )
    .await;

    let config: toml::Table = std::fs::read_to_string(&pipeline.config_path)
        .unwrap()
        .parse()
        .unwrap();
    let stages: Vec<&str> = config["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| stage["name"].as_str().unwrap())
        .collect();
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("console.png");
    std::fs::remove_file(&screenshot).ok();
    let mut script = Command::new("node");
    script
        .arg("console.test.mjs")
        .current_dir(&browser_dir)
        // The address `stagehost console` prints: the token in the fragment.
        .env("CONSOLE_URL", console_url(&pipeline))
        .env("EXPECT_STAGES", stages.join(","))
        .env("RATE_STAGE", "inventory")
        .env("POISON_KEY", poison)
        .env("ROLLBACK_STAGE", "warehouse")
        .env("ROLLED_FROM", version_of("warehouse_green"))
        .env("ROLLED_TO", version_of("warehouse_blue"))
        .env("TRACE_KEY", "console-0")
        .env("SCREENSHOT", &screenshot)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || run_with_timeout(script, SCRIPT_TIMEOUT))
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    eprintln!(
        "{} orders accepted while the browser looked\n--- console.test.mjs ---\n{}{}",
        accepted.load(Ordering::Relaxed),
        output.stdout,
        output.stderr
    );
    assert!(
        output.success,
        "the browser test failed (see its output above; a screenshot of the page as it was is \
         next to {})",
        screenshot.display()
    );
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 50_000,
        "{} is missing or nearly empty ({size} bytes)",
        screenshot.display()
    );
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host stopped cleanly: {status}");
}

/// What a finished command said.
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `command`, killing it after `timeout`. Blocking.
fn run_with_timeout(mut command: Command, timeout: Duration) -> Output {
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node (scripts/setup.sh installs it): {e}"));
    // Read both pipes while it runs, so that a full pipe never blocks it.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_string(&mut text).ok();
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = stderr.join().unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\nkilled after {timeout:?}\n"));
    }
    Output {
        success: status.is_some_and(|s| s.success()),
        stdout: stdout.join().unwrap_or_default(),
        stderr,
    }
}
