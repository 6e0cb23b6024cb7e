//! Golden tests of configuration errors: each `tests/config/<name>.toml` sits next to the exact
//! message it must produce in `<name>.err`. `UPDATE_GOLDEN=1 cargo test --test config` rewrites them.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use stagehost::config::{Overrides, parse};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config")
}

fn render(name: &str) -> String {
    let path = dir().join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let shown = PathBuf::from(format!("{name}.toml"));
    match parse(&text, &shown, &dir(), &Overrides::default()) {
        Ok(_) => "ok\n".to_string(),
        Err(error) => format!("{error}\n").replace(&dir().display().to_string(), "$DIR"),
    }
}

fn golden(name: &str) {
    let actual = render(name);
    let expected_path = dir().join(format!("{name}.err"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
        panic!(
            "missing {}; run with UPDATE_GOLDEN=1",
            expected_path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "configuration message for {name}.toml changed"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    golden("every-problem-at-once");
}

#[test]
fn out_of_range_values_are_each_reported() {
    golden("bad-values");
}

#[test]
fn an_unknown_key_is_refused_with_its_line() {
    golden("unknown-key");
}

#[test]
fn kafka_properties_are_checked_by_librdkafka_and_variables_must_be_set() {
    golden("kafka-settings");
}

#[test]
fn a_pipeline_without_stages_is_refused() {
    golden("no-stages");
}

/// A route or view with every kind of problem: each is named with the route.
#[test]
fn bad_routes_and_views_are_each_reported() {
    golden("bad-routes");
}

#[test]
fn the_repository_pipeline_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let path = root.join("pipeline.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = parse(&text, &path, root, &Overrides::default())
        .unwrap_or_else(|error| panic!("{error}\n(build the plugins first: make plugins)"));
    let names: Vec<&str> = config.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "order",
            "restock",
            "inventory",
            "stock",
            "reservation",
            "warehouse",
            "shipper",
            "notification",
            "order-status"
        ]
    );
}

#[test]
fn environment_overrides_replace_brokers_and_listen_address() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = std::fs::read_to_string(root.join("pipeline.toml")).unwrap();
    let overrides = Overrides {
        brokers: Some("kafka:29092".into()),
        http_listen: Some("0.0.0.0:9000".into()),
        admin_listen: Some("0.0.0.0:9001".into()),
        state_dir: None,
        instance_id: Some("host-b".into()),
        otlp_endpoint: Some("http://collector:4318".into()),
        admin_token_file: Some("secrets/admin-token".into()),
        admin_read_token_file: None,
        admin_allowed_hosts: vec!["stagehost".into()],
    };
    let config = parse(&text, Path::new("pipeline.toml"), root, &overrides).unwrap();
    assert_eq!(
        config.admin.token_file,
        Some(root.join("secrets/admin-token"))
    );
    assert_eq!(config.admin.allowed_hosts, ["stagehost"]);
    assert_eq!(
        config.telemetry.otlp_endpoint.as_deref(),
        Some("http://collector:4318")
    );
    assert_eq!(config.kafka.brokers, "kafka:29092");
    assert_eq!(config.http.listen, "0.0.0.0:9000");
    assert_eq!(config.admin.listen, "0.0.0.0:9001");
    assert_eq!(config.state.instance_id, "host-b");
}
