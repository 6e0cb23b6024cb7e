//! The docker compose deployment, checked without Docker: the Grafana dashboard queries only
//! metrics and labels of `observe::catalogue`; Prometheus scrapes the host's admin listener
//! where docker-compose.yml has it listen; Prometheus and Grafana stay optional and mount only
//! files of deploy/; and the image builds from exactly what the Dockerfile copies.
//!
//! `cargo test --release --test deploy`. The build-context test resolves both workspaces and
//! checks the plugins with their own target folder, `target/tmp/docker-context-check`; with
//! `STAGEHOST_IMAGE_CHECK=1` (`make image-check`) it checks the host there too: about 10 minutes
//! the first time on 2 cores, seconds after. `docker compose config` runs only where
//! `docker compose` is installed.

#![allow(missing_docs, clippy::unwrap_used)]

#[path = "deploy/dockerfile.rs"]
mod dockerfile;
#[path = "deploy/promql.rs"]
mod promql;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use stagehost::observe::catalogue;

use dockerfile::{DockerIgnore, Dockerfile};

const DASHBOARD: &str = "deploy/grafana/dashboards/stagehost.json";
const PROMETHEUS: &str = "deploy/prometheus/prometheus.yml";
const DATASOURCES: &str = "deploy/grafana/provisioning/datasources/prometheus.yml";
const DASHBOARD_PROVIDERS: &str = "deploy/grafana/provisioning/dashboards/stagehost.yml";
/// The compose service that runs the host.
const HOST_SERVICE: &str = "stagehost";
/// The compose services that only `--profile observability` starts.
const OPTIONAL_SERVICES: [&str; 2] = ["prometheus", "grafana"];
/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn json(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn yaml(path: &str) -> Value {
    yaml_serde::from_str(&read(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

// ---- The dashboard ----------------------------------------------------------------------

/// Why `expr` does not fit the catalogue: metrics the host does not export, labels they lack.
fn catalogue_problems(expr: &str) -> Vec<String> {
    let found = match promql::references(expr) {
        Ok(found) => found,
        Err(error) => return vec![format!("cannot read `{expr}`: {error}")],
    };
    let mut problems = Vec::new();
    let mut labels: BTreeSet<&str> = TARGET_LABELS.into();
    for series in &found.metrics {
        match catalogue::find(series) {
            Some(metric) => {
                labels.extend(metric.labels);
                if series.ends_with("_bucket") {
                    labels.insert("le");
                }
            }
            None => problems.push(format!(
                "`{series}` is not a metric the host exports (host/src/observe/catalogue.rs)"
            )),
        }
    }
    for (series, label) in &found.matched {
        let Some(series) = series else {
            problems.push(format!(
                "`{{{label}…}}` selects series without naming a metric"
            ));
            continue;
        };
        let Some(metric) = catalogue::find(series) else {
            continue;
        };
        let bucket = series.ends_with("_bucket") && label == "le";
        if !metric.labels.contains(&label.as_str())
            && !TARGET_LABELS.contains(&label.as_str())
            && !bucket
        {
            problems.push(format!(
                "`{series}` has no label `{label}` (its labels: {:?})",
                metric.labels
            ));
        }
    }
    // With a metric unknown, its labels are too.
    let all_known = problems.is_empty();
    for label in &found.grouped {
        if all_known && !labels.contains(label.as_str()) {
            problems.push(format!(
                "groups by `{label}`, which none of its metrics has"
            ));
        }
    }
    problems
        .into_iter()
        .map(|problem| format!("{problem}, in `{expr}`"))
        .collect()
}

/// The dashboard's panels, those inside rows included, rows left out.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    for panel in list(&dashboard["panels"]) {
        if panel["type"] == "row" {
            found.extend(list(&panel["panels"]));
        } else {
            found.push(panel);
        }
    }
    found
}

/// Each panel's title, type and queries.
fn queries(dashboard: &Value) -> Vec<(String, String, Vec<String>)> {
    panels(dashboard)
        .into_iter()
        .map(|panel| {
            let exprs = list(&panel["targets"])
                .iter()
                .filter_map(|target| target["expr"].as_str().map(String::from))
                .collect();
            (
                panel["title"].as_str().unwrap_or("(untitled)").to_string(),
                panel["type"].as_str().unwrap_or_default().to_string(),
                exprs,
            )
        })
        .collect()
}

#[test]
fn the_dashboard_queries_only_metrics_and_labels_the_host_exports() {
    let dashboard = json(DASHBOARD);
    let mut problems = Vec::new();
    let mut checked = 0;
    for (title, _, exprs) in queries(&dashboard) {
        for expr in exprs {
            checked += 1;
            problems.extend(
                catalogue_problems(&expr)
                    .into_iter()
                    .map(|p| format!("panel {title:?}: {p}")),
            );
        }
    }
    for variable in list(&dashboard["templating"]["list"]) {
        let query = match &variable["query"] {
            Value::Object(query) => query
                .get("query")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            query => query.as_str().unwrap_or_default(),
        };
        let name = &variable["name"];
        // Grafana's `label_values(<selector>, <label>)`: the label must be one of the selector's.
        let expr = match query
            .strip_prefix("label_values(")
            .and_then(|inner| inner.strip_suffix(')'))
            .and_then(|inner| inner.rsplit_once(','))
        {
            Some((selector, label)) => format!("count by ({}) ({selector})", label.trim()),
            None => query.to_string(),
        };
        checked += 1;
        problems.extend(
            catalogue_problems(&expr)
                .into_iter()
                .map(|p| format!("variable {name}: {p}")),
        );
    }
    assert!(checked > 20, "only {checked} queries in {DASHBOARD}");
    assert!(problems.is_empty(), "{DASHBOARD}:\n{}", problems.join("\n"));
}

#[test]
fn the_catalogue_check_refuses_unknown_metrics_and_labels() {
    assert!(catalogue_problems(
        r#"histogram_quantile(0.99, sum by (stage, le) (rate(stagehost_stage_processing_seconds_bucket{stage=~"$stage"}[$__rate_interval])))"#
    )
    .is_empty());
    assert!(catalogue_problems(r#"process_resident_memory_bytes{job="stagehost"}"#).is_empty());
    let cases = [
        (
            "rate(stagehost_stage_events_total[5m])",
            "`stagehost_stage_events_total` is not",
        ),
        ("up", "`up` is not"),
        (
            "stagehost_stage_lag_records_bucket",
            "`stagehost_stage_lag_records_bucket` is not",
        ),
        (
            r#"stagehost_stage_lag_records{partition="0"}"#,
            "has no label `partition`",
        ),
        (
            "sum by (reason) (stagehost_stage_retries_total)",
            "groups by `reason`",
        ),
        (
            "sum by (le) (stagehost_stage_commit_seconds_sum)",
            "groups by `le`",
        ),
        (r#"{__name__="stagehost_build_info"}"#, "cannot read"),
    ];
    for (expr, expected) in cases {
        let problems = catalogue_problems(expr);
        assert!(
            problems.iter().any(|problem| problem.contains(expected)),
            "{expr}: {problems:?}"
        );
    }
}

#[test]
fn every_panel_queries_the_provisioned_prometheus() {
    let uid = list(&yaml(DATASOURCES)["datasources"])
        .iter()
        .find(|source| source["type"] == "prometheus")
        .and_then(|source| source["uid"].as_str())
        .map(String::from)
        .unwrap_or_else(|| panic!("{DATASOURCES} provisions no Prometheus with a uid"));
    let dashboard = json(DASHBOARD);
    let mut problems = Vec::new();
    for panel in panels(&dashboard) {
        let title = &panel["title"];
        if panel["type"] == "text" {
            continue;
        }
        if panel["datasource"]["uid"] != uid.as_str() {
            problems.push(format!(
                "panel {title}: its datasource is not the uid {uid:?}"
            ));
        }
        let targets = list(&panel["targets"]);
        if targets.is_empty() {
            problems.push(format!("panel {title}: no query"));
        }
        for target in targets {
            if target["expr"]
                .as_str()
                .is_none_or(|expr| expr.trim().is_empty())
            {
                problems.push(format!("panel {title}: a target without expr"));
            }
            if !target["datasource"].is_null() && target["datasource"]["uid"] != uid.as_str() {
                problems.push(format!(
                    "panel {title}: a target's datasource is not {uid:?}"
                ));
            }
        }
    }
    for variable in list(&dashboard["templating"]["list"]) {
        if variable["type"] == "query" && variable["datasource"]["uid"] != uid.as_str() {
            problems.push(format!(
                "variable {}: its datasource is not {uid:?}",
                variable["name"]
            ));
        }
    }
    assert!(problems.is_empty(), "{DASHBOARD}:\n{}", problems.join("\n"));
}

#[test]
fn the_dashboard_shows_throughput_lag_latency_dead_letters_and_versions() {
    use catalogue::*;
    // (series, panel type or "" for any, text its query must contain)
    let mut wanted: Vec<(String, &str, &str)> = Vec::new();
    for series in [STAGE_EVENTS_IN, STAGE_EVENTS_OUT, PROCESS_CPU] {
        wanted.push((series.into(), "", "rate("));
    }
    for histogram in [
        STAGE_PROCESSING_SECONDS,
        PLUGIN_CALL_SECONDS,
        STAGE_COMMIT_SECONDS,
        HTTP_REQUEST_SECONDS,
    ] {
        wanted.push((format!("{histogram}_bucket"), "", "histogram_quantile("));
    }
    for (series, label) in [
        (STAGE_LAG, "stage"),
        (CONSUMER_LAG, "partition"),
        (STAGE_DEAD_LETTERS, "reason"),
        (PART_READY, "part"),
        (HTTP_REQUESTS, "status"),
    ] {
        wanted.push((series.into(), "", label));
    }
    for series in [
        STAGE_STALLED_SECONDS,
        STAGE_RETRIES,
        STAGE_REBUILDS,
        STAGE_TRANSACTIONS_ABORTED,
        INGRESS_REPEATS,
        INGRESS_CONFLICTS,
        PROCESS_RSS,
    ] {
        wanted.push((series.into(), "", ""));
    }
    for series in [PLUGIN_INFO, PLUGIN_SWAPPED_IN] {
        wanted.push((series.into(), "table", ""));
    }

    let queries = queries(&json(DASHBOARD));
    let shown = |(series, kind, text): &(String, &str, &str)| {
        queries.iter().any(|(_, panel, exprs)| {
            (kind.is_empty() || kind == panel)
                && exprs.iter().any(|expr| {
                    expr.contains(text)
                        && promql::references(expr)
                            .is_ok_and(|found| found.metrics.contains(series))
                })
        })
    };
    let missing: Vec<_> = wanted.iter().filter(|want| !shown(want)).collect();
    assert!(
        missing.is_empty(),
        "{DASHBOARD} has no panel for (series, panel type, text of the query): {missing:?}"
    );
}

// ---- docker-compose.yml, Prometheus and Grafana ------------------------------------------

fn compose() -> Value {
    yaml("docker-compose.yml")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let service = &compose["services"][name];
    assert!(
        service.is_object(),
        "docker-compose.yml has no service {name:?}"
    );
    service
}

/// A service's environment, in either of compose's forms.
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| (key.clone(), text(value).unwrap_or_default()))
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|item| item.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A published port: (host port, container port); `None` for an ephemeral host port.
fn ports(service: &Value) -> Vec<(Option<String>, String)> {
    list(&service["ports"])
        .iter()
        .filter_map(|port| match port {
            Value::Object(long) => Some((text(&long["published"]), text(&long["target"])?)),
            short => {
                let short = text(short)?;
                let short = short.split('/').next().unwrap_or_default();
                let mut parts = short.rsplitn(3, ':');
                let container = parts.next()?.to_string();
                let published = parts.next().filter(|port| !port.is_empty());
                Some((published.map(String::from), container))
            }
        })
        .collect()
}

/// A mount: (source, target, whether the source is a path of this machine).
fn mounts(service: &Value) -> Vec<(String, String, bool)> {
    list(&service["volumes"])
        .iter()
        .filter_map(|volume| {
            let (source, target) = match volume {
                Value::Object(long) => (text(&long["source"])?, text(&long["target"])?),
                short => {
                    let short = text(short)?;
                    let mut parts = short.split(':');
                    (parts.next()?.to_string(), parts.next()?.to_string())
                }
            };
            let bind = source.starts_with(['.', '/', '~']);
            Some((source, target, bind))
        })
        .collect()
}

/// A path of the repository for a compose source (`./deploy/x` → `deploy/x`).
fn in_repo(source: &str) -> String {
    source
        .trim_start_matches("./")
        .trim_end_matches('/')
        .to_string()
}

/// The host's admin listen address in the compose service.
fn admin_address(compose: &Value) -> (String, String) {
    let environment = environment(service(compose, HOST_SERVICE));
    let address = environment.get("STAGEHOST_ADMIN_ADDR").unwrap_or_else(|| {
        panic!(
            "the {HOST_SERVICE} service must set STAGEHOST_ADMIN_ADDR (pipeline.toml's \
             admin.listen is 127.0.0.1, out of reach from outside the container)"
        )
    });
    let (host, port) = address.rsplit_once(':').unwrap();
    (host.to_string(), port.to_string())
}

#[test]
fn compose_publishes_the_admin_listener_and_prometheus_scrapes_it() {
    let compose = compose();
    let (host, port) = admin_address(&compose);
    assert_eq!(
        host, "0.0.0.0",
        "STAGEHOST_ADMIN_ADDR must listen on all the container's interfaces"
    );
    let published = ports(service(&compose, HOST_SERVICE));
    assert!(
        published
            .iter()
            .any(|(on, inside)| *inside == port && on.is_some()),
        "the {HOST_SERVICE} service must publish the admin port {port} (ports: {published:?})"
    );

    let prometheus = yaml(PROMETHEUS);
    let mut targets = Vec::new();
    for job in list(&prometheus["scrape_configs"]) {
        let path = job["metrics_path"].as_str().unwrap_or("/metrics");
        assert_eq!(
            path, "/metrics",
            "{PROMETHEUS}: job {} scrapes {path}",
            job["job_name"]
        );
        for config in list(&job["static_configs"]) {
            targets.extend(list(&config["targets"]).iter().filter_map(text));
        }
        // The admin listener takes no call without a token: the read-only one, from the file
        // the host reads too.
        let credentials = job["authorization"]["credentials_file"].as_str();
        let environment = environment(service(&compose, HOST_SERVICE));
        assert!(
            credentials.is_some()
                && environment
                    .get("STAGEHOST_ADMIN_READ_TOKEN_FILE")
                    .map(String::as_str)
                    == credentials,
            "{PROMETHEUS}: job {} must scrape with authorization.credentials_file naming the \
             {HOST_SERVICE} service's STAGEHOST_ADMIN_READ_TOKEN_FILE ({credentials:?})",
            job["job_name"]
        );
    }
    let expected = format!("{HOST_SERVICE}:{port}");
    assert_eq!(
        targets,
        [expected],
        "{PROMETHEUS} must scrape the {HOST_SERVICE} service's admin listener"
    );
}

#[test]
fn compose_keeps_the_image_plugins_and_mounts_only_what_exists() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    let mut problems = Vec::new();
    for (name, service) in services {
        for (source, target, bind) in mounts(service) {
            if source.contains("plugins/target") || target.contains("plugins/target") {
                problems.push(format!(
                    "{name} mounts {source} at {target}: the image carries its own plugins \
                     (and a fresh clone's plugins/target is empty)"
                ));
            }
            if bind && !repo().join(in_repo(&source)).exists() {
                problems.push(format!(
                    "{name} mounts {source}, which the repository does not have"
                ));
            }
        }
        let profiles: Vec<&str> = list(&service["profiles"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let optional = OPTIONAL_SERVICES.contains(&name.as_str());
        if optional && !profiles.contains(&"observability") {
            problems.push(format!(
                "{name} must be in the `observability` profile (it is optional)"
            ));
        }
        if !optional && !profiles.is_empty() {
            problems.push(format!(
                "{name} is in profiles {profiles:?}: plain `docker compose up` would not start it"
            ));
        }
        if optional {
            for (source, _, _) in mounts(service).into_iter().filter(|mount| mount.2) {
                if !in_repo(&source).starts_with("deploy/") {
                    problems.push(format!(
                        "{name} mounts {source}: its configuration belongs in deploy/"
                    ));
                }
            }
        }
    }
    for name in OPTIONAL_SERVICES {
        service(&compose, name);
    }
    assert!(
        problems.is_empty(),
        "docker-compose.yml:\n{}",
        problems.join("\n")
    );
}

#[test]
fn grafana_and_prometheus_find_their_configuration_where_compose_mounts_it() {
    let compose = compose();
    let mounted = |service_name: &str, target: &str| {
        mounts(service(&compose, service_name))
            .into_iter()
            .find(|mount| mount.1 == target)
            .map(|mount| in_repo(&mount.0))
    };
    assert_eq!(
        mounted("prometheus", "/etc/prometheus/prometheus.yml").as_deref(),
        Some(PROMETHEUS),
        "the prometheus service must mount {PROMETHEUS} at the image's config path"
    );
    assert_eq!(
        mounted("grafana", "/etc/grafana/provisioning").as_deref(),
        Some("deploy/grafana/provisioning"),
        "the grafana service must mount deploy/grafana/provisioning at /etc/grafana/provisioning"
    );
    for provider in list(&yaml(DASHBOARD_PROVIDERS)["providers"]) {
        let path = provider["options"]["path"].as_str().unwrap();
        let folder = mounted("grafana", path).unwrap_or_else(|| {
            panic!("{DASHBOARD_PROVIDERS} loads {path}, which compose does not mount")
        });
        assert!(
            repo().join(&folder).join("stagehost.json").is_file(),
            "{path} is {folder}, which has no stagehost.json"
        );
    }
    for source in list(&yaml(DATASOURCES)["datasources"]) {
        let url = source["url"].as_str().unwrap();
        let address = url.trim_start_matches("http://").trim_end_matches('/');
        let (host, port) = address.rsplit_once(':').unwrap();
        let listens = ports(service(&compose, host))
            .iter()
            .any(|(_, inside)| inside == port);
        assert!(
            listens,
            "{DATASOURCES}: {url} is not a port of the compose service {host}"
        );
    }
}

#[test]
fn docker_compose_accepts_the_file_where_it_is_installed() {
    let installed = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        eprintln!(
            "note: `docker compose` is not installed here: `docker compose config -q` skipped"
        );
        return;
    }
    let output = Command::new("docker")
        .args(["compose", "--profile", "observability", "config", "-q"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "docker compose config refuses docker-compose.yml:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---- The Dockerfile's build context -------------------------------------------------------

/// The platform rustc builds for by default (`x86_64-unknown-linux-gnu`).
fn host_triple() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).arg("-vV").output().unwrap();
    let version = String::from_utf8_lossy(&output.stdout);
    version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("`rustc -vV` names no host")
        .to_string()
}

/// Runs one cargo command in the laid-out context; panics naming what the context lacks.
fn cargo_in(context: &Path, folder: &str, args: &[&str], target_dir: &Path, copies: &str) {
    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(args)
        .current_dir(context.join(folder))
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap();
    let shown = format!("(cd {folder} && cargo {})", args.join(" "));
    eprintln!("{shown}: {:.1} s", started.elapsed().as_secs_f64());
    if output.status.success() {
        return;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let prefix = context.display().to_string();
    let mut missing = BTreeSet::new();
    for (at, _) in stderr.match_indices(&prefix) {
        let mentioned: String = stderr[at..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !"`'\"),:".contains(*c))
            .collect();
        if let Some(path) = dockerfile::missing_from(context, &mentioned)
            && repo().join(&path).exists()
        {
            missing.insert(path.display().to_string());
        }
    }
    let hint = if !missing.is_empty() {
        format!(
            "The build context lacks {missing:?}, which the repository has: add it to a COPY \
             line of the Dockerfile's build stage (or take it out of .dockerignore).\n"
        )
    } else if stderr.contains("offline") {
        "A crate is not in ~/.cargo yet: run `cargo fetch` in the repository and in plugins/ \
         once, then run this test again.\n"
            .to_string()
    } else {
        String::new()
    };
    panic!(
        "{hint}`{shown}` fails in the Dockerfile's build stage laid out from its COPY lines \
         ({copies}) in {prefix}:\n{stderr}"
    );
}

#[test]
fn the_image_builds_from_exactly_what_the_dockerfile_copies() {
    let started = Instant::now();
    let repo = repo();
    let dockerfile = Dockerfile::parse(&read("Dockerfile")).unwrap();
    let ignore = DockerIgnore::parse(&read(".dockerignore")).unwrap();
    let build = dockerfile.build_stages();
    assert_eq!(build.len(), 1, "the Dockerfile should have one build stage");
    let stage = build[0];

    // The other stages' context copies (schemas, pipeline.toml) must be there too.
    let mut problems: Vec<String> = Vec::new();
    let scratch = tempfile::tempdir().unwrap();
    for other in dockerfile
        .stages
        .iter()
        .filter(|other| !std::ptr::eq(*other, stage))
    {
        problems.extend(dockerfile::lay_out(other, &repo, &ignore, scratch.path()));
    }

    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-context-check");
    let context = work.join("context");
    if context.exists() {
        std::fs::remove_dir_all(&context).unwrap();
    }
    std::fs::create_dir_all(&context).unwrap();
    problems.extend(dockerfile::lay_out(stage, &repo, &ignore, &context));
    assert!(problems.is_empty(), "Dockerfile:\n{}", problems.join("\n"));

    let copies: Vec<String> = stage
        .copies
        .iter()
        .filter(|copy| copy.from.is_none())
        .map(|copy| copy.sources.join(" "))
        .collect();
    let copies = copies.join(", ");
    assert!(
        context.join("plugins/Cargo.toml").is_file(),
        "The build context lacks plugins/Cargo.toml, which the repository has: add `plugins` \
         to a COPY line of the Dockerfile's build stage (its COPY lines: {copies})"
    );
    let target = work.join("target");
    // Resolved for this machine's platform: the crates of other platforms (Windows, wasm-only
    // dev-dependencies) are never downloaded here. The checks compile what the image builds.
    let triple = host_triple();
    let metadata = [
        "metadata",
        "--locked",
        "--offline",
        "--format-version",
        "1",
        "--filter-platform",
        &triple,
    ];
    cargo_in(&context, ".", &metadata, &target, &copies);
    cargo_in(&context, "plugins", &metadata, &target, &copies);
    let host = [
        "check",
        "--release",
        "--locked",
        "--offline",
        "--bin",
        "stagehost",
    ];
    // Checking the host compiles every dependency again in a target of its own (about 10
    // minutes cold on 2 cores): `make image-check` does it; `make test` resolves the workspace
    // (which finds every path and patched crate the context lacks) and checks the plugins.
    if std::env::var_os("STAGEHOST_IMAGE_CHECK").is_some() {
        cargo_in(&context, ".", &host, &target, &copies);
    } else {
        eprintln!("the host's cargo check in the build context is left to `make image-check`");
    }
    let plugins = [
        "check",
        "--release",
        "--locked",
        "--offline",
        "--target",
        "wasm32-wasip2",
    ];
    cargo_in(&context, "plugins", &plugins, &target, &copies);
    eprintln!(
        "the build context checks in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
