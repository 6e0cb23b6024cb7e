//! The admin API's guard against a real host: every call needs a token (the admin token for
//! changes, the read-only one for reads), a `Host` the listener serves and no foreign browser
//! `Origin`; refusals are logged and counted; a loopback host without a configured token
//! generates one (mode 0600) that the CLI finds; off loopback without one the host does not
//! start.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{TestPipeline, keep_stages};

const ADMIN: &str = "test-admin-token-0123456789";
const READ: &str = "test-read-token-0123456789";

/// A pipeline of the warehouse stage only (quick to start).
fn warehouse_only() -> TestPipeline {
    TestPipeline::new(|config| keep_stages(config, &["warehouse"]))
}

/// Sends one request by hand (so `Host` is exactly what the test says); status and whole answer.
fn call(admin: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {admin}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    (status, answer)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn admin_calls_need_the_right_token_a_served_host_and_no_foreign_origin() {
    let mut pipeline = warehouse_only();
    pipeline.env = vec![
        ("STAGEHOST_ADMIN_TOKEN".into(), ADMIN.into()),
        ("STAGEHOST_ADMIN_READ_TOKEN".into(), READ.into()),
    ];
    pipeline.start();
    let admin = pipeline.admin.clone();
    let (admin_auth, read_auth) = (bearer(ADMIN), bearer(READ));
    let with_admin = [("Authorization", admin_auth.as_str())];
    let with_read = [("Authorization", read_auth.as_str())];

    // No token: 401 with the scheme to use; every data call, the console's too.
    for path in [
        "/plugins",
        "/stuck",
        "/metrics",
        "/api/topology",
        "/api/dlq",
    ] {
        let (status, answer) = call(&admin, "GET", path, &[]);
        assert_eq!(status, 401, "{path}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{answer}"
        );
    }
    // A wrong token, and the read-only token on changes: 403.
    let (status, answer) = call(
        &admin,
        "GET",
        "/plugins",
        &[("Authorization", "Bearer not-the-token-at-all")],
    );
    assert_eq!(status, 403, "{answer}");
    for (method, path) in [
        ("PUT", "/plugins/warehouse"),
        ("POST", "/plugins/warehouse/rollback"),
        ("POST", "/stuck/warehouse/t/0/skip"),
        ("POST", "/api/dlq/replay"),
    ] {
        let (status, answer) = call(&admin, method, path, &with_read);
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert!(answer.contains("read-only token"), "{answer}");
    }
    // The read-only token reads; the admin token does everything.
    for path in [
        "/plugins",
        "/plugins/warehouse",
        "/stuck",
        "/metrics",
        "/api/topology",
    ] {
        assert_eq!(call(&admin, "GET", path, &with_read).0, 200, "{path}");
        assert_eq!(call(&admin, "GET", path, &with_admin).0, 200, "{path}");
    }
    let (status, answer) = call(&admin, "POST", "/plugins/warehouse/rollback", &with_admin);
    assert_eq!(
        status, 409,
        "past the guard, nothing to roll back: {answer}"
    );
    // The page shell holds no data: served without a token.
    assert_eq!(call(&admin, "GET", "/", &[]).0, 200);
    assert_eq!(call(&admin, "GET", "/console/app.js", &[]).0, 200);

    // A foreign browser origin and a foreign Host (DNS rebinding): 403 even with the token.
    let evil = [
        ("Authorization", admin_auth.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let (status, answer) = call(&admin, "POST", "/plugins/warehouse/rollback", &evil);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("evil.example"), "{answer}");
    let own_origin = format!("http://{admin}");
    let own = [
        ("Authorization", admin_auth.as_str()),
        ("Origin", own_origin.as_str()),
    ];
    assert_eq!(call(&admin, "GET", "/plugins", &own).0, 200);
    let rebound = [
        ("Authorization", admin_auth.as_str()),
        ("Host", "attacker.example:80"),
    ];
    let (status, answer) = call(&admin, "GET", "/plugins", &rebound);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("attacker.example"), "{answer}");
    let localhost = admin.replace("127.0.0.1", "localhost");
    let by_name = [
        ("Authorization", admin_auth.as_str()),
        ("Host", localhost.as_str()),
    ];
    assert_eq!(call(&admin, "GET", "/plugins", &by_name).0, 200);

    // Every refusal is counted by reason and logged.
    let (_, metrics) = call(&admin, "GET", "/metrics", &with_read);
    for (reason, at_least) in [
        ("missing_token", 5),
        ("wrong_token", 1),
        ("read_only_token", 4),
        ("bad_origin", 1),
        ("bad_host", 1),
    ] {
        let line = format!("stagehost_admin_refused_total{{reason=\"{reason}\"}} ");
        let count: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in the metrics"))
            .trim()
            .parse()
            .unwrap();
        assert!(count >= f64::from(at_least), "{reason}: {count}");
    }
    let logs = pipeline.logs();
    assert!(
        logs.lines().any(|l| l.contains("admin API request refused")
            && l.contains("bad_host")
            && l.contains("attacker.example")),
        "{logs}"
    );
    assert!(
        !logs.contains(ADMIN) && !logs.contains(READ),
        "a token was logged"
    );

    // The CLI sends the token it is given; the read-only one lists but cannot swap.
    let (ok, out, err) = pipeline.admin_cli(&["plugin", "list", "--admin-token", READ]);
    assert!(ok && out.contains("warehouse: sha256:"), "{out}{err}");
    let green = common::component("warehouse_green").display().to_string();
    let (ok, _, err) =
        pipeline.admin_cli(&["plugin", "swap", "warehouse", &green, "--admin-token", READ]);
    assert!(
        !ok && err.contains("403") && err.contains("read-only"),
        "{err}"
    );
    let (ok, _, err) = pipeline.admin_cli(&["plugin", "list"]);
    assert!(
        !ok && err.contains("admin-token"),
        "no token to be found, says how: {err}"
    );
    assert!(pipeline.stop("TERM").success());
}

#[test]
fn a_loopback_host_generates_a_private_token_that_the_cli_finds() {
    let mut pipeline = warehouse_only();
    pipeline.start();
    let file = pipeline.state_dir().join("admin-token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{} has mode {mode:o}", file.display());
    let token = pipeline.admin_token();
    assert_eq!(token.len(), 64, "{token}");
    assert!(
        pipeline.logs().contains(&file.display().to_string()),
        "the log says where it is"
    );
    assert!(
        !pipeline.logs().contains(&token),
        "the token itself is not logged"
    );

    // No token flag: the CLI reads the file through --config's state.dir.
    let (ok, out, err) = pipeline.admin_cli(&["plugin", "list"]);
    assert!(ok && out.contains("warehouse: sha256:"), "{out}{err}");
    let (ok, out, err) = pipeline.admin_cli(&["stuck", "list"]);
    assert!(ok && out.contains("no record is held"), "{out}{err}");
    let (ok, out, err) = pipeline.admin_cli(&["console"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("http://{}/#token={token}", pipeline.admin)
    );
    let (ok, _, err) =
        pipeline.admin_cli(&["plugin", "list", "--admin-token", "wrong-token-0123456789"]);
    assert!(!ok && err.contains("403"), "{err}");
    // Unauthenticated, even on loopback.
    assert_eq!(call(&pipeline.admin, "GET", "/plugins", &[]).0, 401);

    // A restart makes a new token; the CLI follows.
    assert!(pipeline.stop("TERM").success());
    pipeline.start();
    assert_ne!(pipeline.admin_token(), token);
    let (ok, _, err) = pipeline.admin_cli(&["plugin", "list"]);
    assert!(ok, "{err}");
    assert!(pipeline.stop("TERM").success());
}

#[test]
fn an_admin_api_off_loopback_without_a_token_does_not_start() {
    let mut pipeline = TestPipeline::new(|config| {
        keep_stages(config, &["warehouse"]);
        let admin = config
            .get_mut("admin")
            .and_then(|a| a.as_table_mut())
            .unwrap();
        admin.insert("listen".into(), "0.0.0.0:0".into());
    });
    pipeline.launch();
    let status = pipeline.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "{status}");
    let logs = pipeline.logs();
    assert!(
        logs.contains("not a loopback address")
            && logs.contains("STAGEHOST_ADMIN_TOKEN")
            && logs.contains("admin.token_file"),
        "{logs}"
    );
    assert!(!pipeline.state_dir().join("admin-token").exists());
}
