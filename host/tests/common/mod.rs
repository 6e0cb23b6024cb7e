//! Helpers of the black-box tests: a real broker (from `KAFKA_BROKERS`), a `stagehost` process
//! running the repository's own pipeline.toml on freshly named topics, and topic readers.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

pub mod chaos;
pub mod cluster;
pub mod flow;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The broker the end-to-end tests use. `make test` starts one and sets `KAFKA_BROKERS`.
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").expect(
        "end-to-end tests need a real Kafka broker: run `make test`, or start one with \
         `scripts/kafka.sh start` and export KAFKA_BROKERS=127.0.0.1:9092",
    )
}

/// The logical topic names of pipeline.toml.
pub const TOPICS: [&str; 11] = [
    "OrderReceived",
    "InventoryCommands",
    "InventoryResults",
    "InventoryLedger",
    "OrderConfirmed",
    "OrderPickedAndPacked",
    "Notification",
    "NotificationDelivered",
    "OrderStatus",
    "DeadLetterQueue",
    "KPIs",
];

/// A pipeline.toml rewritten for one test: its own topics, groups, state and port.
pub struct TestPipeline {
    pub prefix: String,
    /// The bootstrap servers of its cluster (`KAFKA_BROKERS` unless made for another).
    pub brokers: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub http: String,
    /// The admin API address.
    pub admin: String,
    /// Extra arguments of `stagehost run` (e.g. `--watch`).
    pub run_args: Vec<String>,
    /// The host's `STAGEHOST_LOG` filter (debug for tests; benchmarks use `info`).
    pub log: String,
    /// Extra environment variables of the host (e.g. a secret the configuration names).
    pub env: Vec<(String, String)>,
    host: Option<Child>,
    starts: usize,
}

impl TestPipeline {
    /// Writes the configuration of the repository's pipeline.toml; `edit` may change it
    /// further (e.g. the catalog).
    pub fn new(edit: impl FnOnce(&mut toml::Table)) -> Self {
        Self::from_file(&repo().join("pipeline.toml"), edit)
    }

    /// The same for another pipeline file (e.g. an example under `examples/`); its relative
    /// paths are resolved against its folder.
    pub fn from_file(file: &Path, edit: impl FnOnce(&mut toml::Table)) -> Self {
        Self::from_file_at(file, &brokers(), edit)
    }

    /// [`TestPipeline::new`] on the cluster at `brokers` (not `KAFKA_BROKERS`).
    pub fn on_cluster(brokers: &str, edit: impl FnOnce(&mut toml::Table)) -> Self {
        Self::from_file_at(&repo().join("pipeline.toml"), brokers, edit)
    }

    /// [`TestPipeline::from_file`] on the cluster at `brokers`.
    pub fn from_file_at(file: &Path, brokers: &str, edit: impl FnOnce(&mut toml::Table)) -> Self {
        let prefix = format!("t{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let http = format!("127.0.0.1:{port}");
        let text = std::fs::read_to_string(file).unwrap();
        let mut config: toml::Table = text.parse().unwrap();
        rename_topics(&mut config, &prefix);
        let set = |config: &mut toml::Table, section: &str, key: &str, value: toml::Value| {
            config
                .get_mut(section)
                .and_then(|s| s.as_table_mut())
                .unwrap()
                .insert(key.into(), value);
        };
        set(&mut config, "kafka", "brokers", brokers.into());
        set(&mut config, "http", "listen", http.clone().into());
        let admin = format!("127.0.0.1:{}", free_port());
        set(&mut config, "admin", "listen", admin.clone().into());
        set(
            &mut config,
            "state",
            "dir",
            dir.path().join("state").display().to_string().into(),
        );
        set(&mut config, "kpi", "interval", "1s".into());
        absolutize(&mut config, file.parent().unwrap());
        edit(&mut config);
        let config_path = dir.path().join("pipeline.toml");
        std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
        Self {
            prefix,
            brokers: brokers.to_string(),
            dir,
            config_path,
            http,
            admin,
            run_args: Vec::new(),
            log: "info,stagehost=debug".into(),
            env: Vec::new(),
            host: None,
            starts: 0,
        }
    }

    /// A second host instance of the same pipeline: same topics and groups, its own instance
    /// id, state directory and HTTP port.
    pub fn sibling(&self, instance: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let http = format!("127.0.0.1:{}", free_port());
        let mut config: toml::Table = std::fs::read_to_string(&self.config_path)
            .unwrap()
            .parse()
            .unwrap();
        let section = |config: &mut toml::Table, name: &str| -> toml::Table {
            config
                .get(name)
                .and_then(|s| s.as_table())
                .cloned()
                .unwrap_or_default()
        };
        let mut http_section = section(&mut config, "http");
        http_section.insert("listen".into(), http.clone().into());
        config.insert("http".into(), http_section.into());
        let admin = format!("127.0.0.1:{}", free_port());
        let mut admin_section = section(&mut config, "admin");
        admin_section.insert("listen".into(), admin.clone().into());
        config.insert("admin".into(), admin_section.into());
        let mut state = section(&mut config, "state");
        state.insert(
            "dir".into(),
            dir.path().join("state").display().to_string().into(),
        );
        state.insert("instance_id".into(), instance.into());
        config.insert("state".into(), state.into());
        let config_path = dir.path().join("pipeline.toml");
        std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
        Self {
            prefix: self.prefix.clone(),
            brokers: self.brokers.clone(),
            dir,
            config_path,
            http,
            admin,
            run_args: Vec::new(),
            log: "info,stagehost=debug".into(),
            env: Vec::new(),
            host: None,
            starts: 0,
        }
    }

    /// The real topic name of a logical one.
    pub fn topic(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// Starts `stagehost run` and waits until it is ready.
    pub fn start(&mut self) {
        self.launch();
        self.wait_ready(Duration::from_secs(60));
    }

    /// Whether the host process is still running.
    pub fn is_running(&mut self) -> bool {
        self.host
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// Starts `stagehost run` without waiting for it to be ready.
    pub fn launch(&mut self) {
        assert!(self.host.is_none(), "host already running");
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("host-{}.log", self.starts)))
            .unwrap();
        let child = Command::new(host_binary())
            .args(["run", "--config"])
            .arg(&self.config_path)
            .args(&self.run_args)
            .env_remove("KAFKA_BROKERS")
            .env_remove("STAGEHOST_HTTP_ADDR")
            .env_remove("STAGEHOST_ADMIN_ADDR")
            .env_remove("STAGEHOST_STATE_DIR")
            .env_remove("STAGEHOST_ADMIN_TOKEN")
            .env_remove("STAGEHOST_ADMIN_READ_TOKEN")
            .env_remove("STAGEHOST_ADMIN_TOKEN_FILE")
            .env_remove("STAGEHOST_ADMIN_READ_TOKEN_FILE")
            .env_remove("STAGEHOST_ADMIN_ALLOWED_HOSTS")
            .env("STAGEHOST_LOG", &self.log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.host = Some(child);
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let url = format!("http://{}/readyz", self.http);
        loop {
            if let Some(status) = self.host.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "stagehost exited with {status} while starting:\n{}",
                    self.logs()
                );
            }
            if let Ok(response) = get_status(&url)
                && response == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stagehost not ready in time:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` (e.g. `TERM`, `KILL`) to the host and waits for it to exit.
    pub fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.host.take().expect("host is not running");
        let status = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap()
    }

    /// Waits up to `timeout` for the host to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.host.as_mut().expect("host is not running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.host = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "stagehost still running after {timeout:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The running host's process id.
    pub fn pid(&self) -> Option<u32> {
        self.host.as_ref().map(Child::id)
    }

    /// Everything the host logged so far.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("host-{n}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----- restart -----\n")
    }

    /// The host's `state.dir`.
    pub fn state_dir(&self) -> PathBuf {
        let config: toml::Table = std::fs::read_to_string(&self.config_path)
            .unwrap()
            .parse()
            .unwrap();
        PathBuf::from(config["state"]["dir"].as_str().unwrap())
    }

    /// The admin token of the running host: `STAGEHOST_ADMIN_TOKEN` when the test gave the
    /// host one, else the token it generated at its last start into `<state.dir>/admin-token`.
    pub fn admin_token(&self) -> String {
        if let Some((_, token)) = self.env.iter().find(|(k, _)| k == "STAGEHOST_ADMIN_TOKEN") {
            return token.clone();
        }
        let file = self.state_dir().join("admin-token");
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("no generated admin token at {}: {e}", file.display()))
            .trim()
            .to_string()
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// An HTTP client that sends the admin token on every request (read when it is made: a
    /// restarted host generates a new one).
    pub fn admin_http(&self) -> reqwest::Client {
        admin_client(&self.admin_token())
    }

    /// Runs the `stagehost` command line against this host's admin API: `args` then `--admin`
    /// and `--config` (whence the CLI finds the generated token, as an operator's would).
    pub fn admin_cli(&self, args: &[&str]) -> (bool, String, String) {
        admin_cli(&self.admin, &self.config_path, args)
    }

    /// POSTs a body to the ingress; returns the status and the JSON answer.
    pub async fn post_order(&self, body: &str) -> (u16, serde_json::Value) {
        self.post("/orders", body).await
    }

    /// GETs a path; returns the status and the JSON answer.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .unwrap();
        status_and_json(response).await
    }

    /// POSTs a JSON body to a path; returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("http://{}{path}", self.http))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        status_and_json(response).await
    }

    /// POSTs until the host answers (it may be restarting); returns the status.
    pub async fn post_order_until_answered(&self, body: &str, timeout: Duration) -> u16 {
        self.post_until_answered("/orders", body, timeout).await.0
    }

    /// POSTs a JSON body to a path until the host answers with anything but `503` (it may be
    /// down or restarting); returns the status and the JSON answer.
    pub async fn post_until_answered(
        &self,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> (u16, serde_json::Value) {
        post_until_answered(&self.http, path, body, timeout).await
    }
}

/// POSTs a JSON body to `http://<http><path>` until the host answers with anything but `503`
/// (it may be down or restarting); returns the status and the JSON answer. A free function
/// so that spawned tasks can post without the [`TestPipeline`].
pub async fn post_until_answered(
    http: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        let result = client
            .post(format!("http://{http}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        match result {
            Ok(response) if response.status().as_u16() != 503 => {
                return status_and_json(response).await;
            }
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "no answer to POST {path} in time"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for TestPipeline {
    fn drop(&mut self) {
        if let Some(mut child) = self.host.take() {
            child.kill().ok();
            child.wait().ok();
        }
        if std::thread::panicking() {
            eprintln!("--- stagehost logs ---\n{}", self.logs());
        }
    }
}

/// A response's status, and its body as JSON (or as a JSON string when it is not JSON).
async fn status_and_json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

/// GET returning the status code, with a plain socket (usable outside an async runtime).
fn get_status(url: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let url = url.strip_prefix("http://").unwrap_or(url);
    let (address, path) = url.split_once('/').unwrap_or((url, ""));
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

fn rename_topics(config: &mut toml::Table, prefix: &str) {
    let rename = |name: &str| format!("{prefix}{name}");
    if let Some(topics) = config.get_mut("topics").and_then(|t| t.as_table_mut()) {
        let old = std::mem::take(topics);
        for (name, mut settings) in old {
            let table = settings.as_table_mut().unwrap();
            table
                .entry("event_type")
                .or_insert_with(|| name.clone().into());
            topics.insert(rename(&name), settings);
        }
    }
    if let Some(views) = config
        .get_mut("http")
        .and_then(|h| h.get_mut("views"))
        .and_then(|v| v.as_array_mut())
    {
        for view in views {
            let topic = view.get_mut("topic").unwrap();
            *topic = rename(topic.as_str().unwrap()).into();
        }
    }
    for section in ["dead_letter", "kpi"] {
        if let Some(topic) = config
            .get_mut(section)
            .and_then(|s| s.as_table_mut())
            .and_then(|s| s.get_mut("topic"))
        {
            *topic = rename(topic.as_str().unwrap()).into();
        }
    }
    for stage in config
        .get_mut("stages")
        .and_then(|s| s.as_array_mut())
        .unwrap()
    {
        let stage = stage.as_table_mut().unwrap();
        let name = stage["name"].as_str().unwrap().to_string();
        stage.insert("group".into(), format!("{prefix}{name}").into());
        let renamed: toml::Value = match &stage["input"] {
            toml::Value::String(input) if input == "http" => input.clone().into(),
            toml::Value::String(input) => rename(input).into(),
            toml::Value::Array(inputs) => inputs
                .iter()
                .map(|i| toml::Value::from(rename(i.as_str().unwrap())))
                .collect::<Vec<_>>()
                .into(),
            other => panic!("unexpected input {other}"),
        };
        stage.insert("input".into(), renamed);
        if let Some(outputs) = stage.get_mut("outputs").and_then(|o| o.as_table_mut()) {
            for (_, topic) in outputs.iter_mut() {
                *topic = rename(topic.as_str().unwrap()).into();
            }
        }
    }
}

fn absolutize(config: &mut toml::Table, root: &Path) {
    let fix = |value: &mut toml::Value| {
        let path = PathBuf::from(value.as_str().unwrap());
        if path.is_relative() {
            *value = root.join(path).display().to_string().into();
        }
    };
    if let Some(topics) = config.get_mut("topics").and_then(|t| t.as_table_mut()) {
        for (_, topic) in topics.iter_mut() {
            if let Some(schema) = topic.as_table_mut().unwrap().get_mut("schema") {
                fix(schema);
            }
        }
    }
    if let Some(routes) = config
        .get_mut("http")
        .and_then(|h| h.get_mut("routes"))
        .and_then(|r| r.as_array_mut())
    {
        for route in routes {
            if let Some(schema) = route.as_table_mut().unwrap().get_mut("schema") {
                fix(schema);
            }
        }
    }
    for stage in config
        .get_mut("stages")
        .and_then(|s| s.as_array_mut())
        .unwrap()
    {
        fix(stage.as_table_mut().unwrap().get_mut("plugin").unwrap());
    }
}

/// Keeps only the stages named in `keep`, and drops the HTTP read models and the routes of
/// the removed stages.
pub fn keep_stages(config: &mut toml::Table, keep: &[&str]) {
    config
        .get_mut("stages")
        .and_then(|s| s.as_array_mut())
        .unwrap()
        .retain(|s| keep.contains(&s["name"].as_str().unwrap()));
    let http = config
        .get_mut("http")
        .and_then(|h| h.as_table_mut())
        .unwrap();
    http.remove("views");
    if let Some(routes) = http.get_mut("routes").and_then(|r| r.as_array_mut()) {
        routes.retain(|r| keep.contains(&r["stage"].as_str().unwrap()));
    }
}

/// The topic-name prefix a [`TestPipeline`] gave this configuration.
pub fn prefix_of(config: &toml::Table) -> String {
    let dead_letter = config["dead_letter"]["topic"].as_str().unwrap();
    dead_letter.trim_end_matches("DeadLetterQueue").to_string()
}

/// Declares a topic (named `<prefix><logical>`) in a configuration.
pub fn add_topic(config: &mut toml::Table, logical: &str, partitions: i64) -> String {
    let name = format!("{}{logical}", prefix_of(config));
    let mut topic = toml::Table::new();
    topic.insert("partitions".into(), partitions.into());
    config
        .get_mut("topics")
        .and_then(|t| t.as_table_mut())
        .unwrap()
        .insert(name.clone(), topic.into());
    name
}

/// Adds a stage, with a consumer group of this test's own (so that tests running at the same
/// time never share a group or a transactional id).
pub fn add_stage(config: &mut toml::Table, mut stage: toml::Table) {
    let group = format!("{}{}", prefix_of(config), stage["name"].as_str().unwrap());
    stage.insert("group".into(), group.into());
    config
        .get_mut("stages")
        .and_then(|s| s.as_array_mut())
        .unwrap()
        .push(stage.into());
}

/// A built test component (`plugins/testing`) or stage plugin, by its file stem.
pub fn component(stem: &str) -> PathBuf {
    let path = repo().join(format!("plugins/target/wasm32-wasip2/release/{stem}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the test components (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The host binary the tests run: this build's, or the one `STAGEHOST_BIN` names (to measure
/// an earlier build with the same benchmark).
pub fn host_binary() -> std::path::PathBuf {
    std::env::var_os("STAGEHOST_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_stagehost").into())
}

/// An HTTP client that sends `token` as the admin API's bearer token on every request.
pub fn admin_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Runs `stagehost <args> --admin <admin> --config <config>` (a free function so that
/// blocking tasks can run it without the [`TestPipeline`]).
pub fn admin_cli(admin: &str, config: &Path, args: &[&str]) -> (bool, String, String) {
    let config = config.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--admin", admin, "--config", &config]);
    stagehost(&all)
}

/// Runs the `stagehost` binary with `args`; returns whether it succeeded, stdout and stderr.
pub fn stagehost(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_stagehost"))
        .args(args)
        // The configuration given names the brokers (the environment would override it).
        .env_remove("KAFKA_BROKERS")
        .env_remove("STAGEHOST_CONFIG")
        .env_remove("STAGEHOST_ADMIN")
        .env_remove("STAGEHOST_ADMIN_TOKEN")
        .env_remove("STAGEHOST_STATE_DIR")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A stage `name` of the `faulty` test component (it passes an event through unless its payload
/// asks for a fault) from `input` to `output`.
pub fn faulty_stage(name: &str, input: &str, output: &str) -> toml::Table {
    let mut stage = toml::Table::new();
    stage.insert("name".into(), name.into());
    stage.insert(
        "plugin".into(),
        component("faulty").display().to_string().into(),
    );
    stage.insert("input".into(), input.into());
    let mut outputs = toml::Table::new();
    outputs.insert("out".into(), output.into());
    stage.insert("outputs".into(), outputs.into());
    stage
}

/// Deletes `topic` from the test broker.
pub async fn delete_topic(topic: &str) {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create()
            .unwrap();
    let deleted = admin
        .delete_topics(&[topic], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
}

/// The stage table called `name` in a configuration.
pub fn stage_mut<'a>(config: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    config
        .get_mut("stages")
        .and_then(|s| s.as_array_mut())
        .unwrap()
        .iter_mut()
        .map(|s| s.as_table_mut().unwrap())
        .find(|s| s["name"].as_str() == Some(name))
        .unwrap()
}

/// A port free now, below Linux's ephemeral range (32768 and up): a port the kernel hands out
/// for `:0` can be taken by an outgoing connection (a Kafka client's) before the host binds it,
/// which failed a start in `make test` with "Address already in use".
fn free_port() -> u16 {
    use rand::Rng;
    loop {
        let port = rand::rng().random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Broker-side create time, unix milliseconds.
    pub timestamp_ms: i64,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub value: serde_json::Value,
    pub raw: Vec<u8>,
}

impl Record {
    fn of(message: &impl Message) -> Self {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let raw = message.payload().unwrap_or_default().to_vec();
        Record {
            timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            headers,
            value: serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null),
            raw,
        }
    }

    pub fn ce_id(&self) -> &str {
        self.headers.get("ce_id").map(String::as_str).unwrap_or("")
    }
}

/// A consumer of a group of its own that sees only committed records.
fn committed_reader(brokers: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap()
}

/// Reads `topic` from the beginning (committed records only) until at least `expected`
/// records arrived and then nothing more for `quiet`, or `timeout` passed. The result may be
/// partial (it stops at the first quiet window): fine for "at least N arrived", never for
/// "nothing missing, nothing repeated" or "empty"; use [`wait_for_records`] and
/// [`read_to_end`] for those.
pub async fn read_topic(
    topic: &str,
    expected: usize,
    quiet: Duration,
    timeout: Duration,
) -> Vec<Record> {
    let consumer = committed_reader(&brokers());
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len();
    assert!(partitions > 0, "topic {topic} does not exist");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition as i32, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return records;
        }
        let wait = if records.len() >= expected {
            quiet
        } else {
            deadline - now
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(message)) => records.push(Record::of(&message)),
            Ok(Err(error)) => panic!("reading {topic}: {error}"),
            Err(_) if records.len() >= expected => return records,
            Err(_) => return records,
        }
    }
}

/// A `read_committed` reader of every partition of `topic`, from the beginning.
pub fn from_beginning(topic: &str) -> StreamConsumer {
    let consumer = committed_reader(&brokers());
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..metadata.topics()[0].partitions().len() {
        assignment
            .add_partition_offset(topic, partition as i32, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    consumer
}

/// Every committed record of `topic`, read `read_committed` from the beginning up to the end
/// offsets the partitions have when this is called. Panics (failing the test) if those ends are
/// not reached within `timeout`: the result is never partial. Use it after the run (hosts
/// stopped or settled) to count outcomes.
pub async fn read_to_end(topic: &str, timeout: Duration) -> Vec<Record> {
    read_to_end_at(&brokers(), topic, timeout).await
}

/// [`read_to_end`] on the cluster at `brokers`.
pub async fn read_to_end_at(brokers: &str, topic: &str, timeout: Duration) -> Vec<Record> {
    let consumer = committed_reader(brokers);
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "topic {topic} does not exist");
    // The end of each partition now: the high watermark, which a read_committed reader reaches
    // once every transaction that wrote before it is complete.
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    let deadline = Instant::now() + timeout;
    for partition in 0..partitions {
        // Right after a broker restart the leaders may not be known yet: ask again.
        let (low, high) = loop {
            match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
                Ok(marks) => break marks,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("reading {topic}/{partition}: {error}; asking again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => panic!("reading {topic}/{partition}: {error}"),
            }
        };
        if high > low {
            ends.insert(partition, high);
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .unwrap();
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return records;
    }
    consumer.assign(&assignment).unwrap();
    loop {
        let position = consumer.position().unwrap();
        let reached = ends.iter().all(|(partition, end)| {
            matches!(position.find_partition(topic, *partition).map(|p| p.offset()),
                Some(Offset::Offset(at)) if at >= *end)
        });
        if reached {
            return records;
        }
        let now = Instant::now();
        assert!(
            now < deadline,
            "reading {topic}: the end offsets {ends:?} were not reached within {timeout:?} \
             (at {position:?}, {} records read)",
            records.len()
        );
        let wait = (deadline - now).min(Duration::from_millis(200));
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(message)) => records.push(Record::of(&message)),
            Ok(Err(error)) => panic!("reading {topic}: {error}"),
            Err(_) => {}
        }
    }
}

/// The topic the HTTP ingress publishes to. It may hold a repeat of an event (the same
/// `ce_id` and body): a request whose commit failed ambiguously and was posted again, or the
/// same order posted to two instances. The first stage drops the repeat.
pub const INGRESS_TOPIC: &str = "OrderReceived";

/// How many records repeat a `ce_id` of an earlier one: `(wrong, identical_ingress_repeats)`.
/// On the ingress topic (`ingress` true) a repeat with the same body is counted apart, not as
/// wrong; anywhere else every repeat is wrong.
pub fn repeated_ids(records: &[Record], ingress: bool) -> (usize, usize) {
    let mut seen: std::collections::HashMap<&str, &[u8]> = std::collections::HashMap::new();
    let (mut wrong, mut identical) = (0, 0);
    for record in records {
        match seen.insert(record.ce_id(), &record.raw) {
            None => {}
            Some(earlier) if ingress && earlier == record.raw.as_slice() => identical += 1,
            Some(_) => wrong += 1,
        }
    }
    (wrong, identical)
}

/// Waits until `condition` holds, checking every 200 ms; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `read_to_end(topic)` until `done` holds for the records read; returns those records.
/// Panics naming `what` (and how many records there were) after `timeout`. Use it to wait for
/// an expected outcome; count exact outcomes with [`read_to_end`] once the run is over.
pub async fn wait_for_records(
    topic: &str,
    what: &str,
    timeout: Duration,
    done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    wait_for_records_at(&brokers(), topic, what, timeout, done).await
}

/// [`wait_for_records`] on the cluster at `brokers`.
pub async fn wait_for_records_at(
    brokers: &str,
    topic: &str,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    let deadline = Instant::now() + timeout;
    loop {
        let records = read_to_end_at(brokers, topic, SETTLE).await;
        if done(&records) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what} in {topic} ({} records there)",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long [`read_to_end`] may take to reach the end offsets once the writers are done or
/// settled (open transactions commit every 100 ms; one left by a killed instance is aborted
/// when it restarts).
pub const SETTLE: Duration = Duration::from_secs(30);

/// How many records have each value of `key` (e.g. the order id, or the ce_id).
pub fn count_by<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    key: impl Fn(&Record) -> String,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts.entry(key(record)).or_default() += 1;
    }
    counts
}

/// The values of `key` that more than one record has, with their counts.
pub fn repeated_by<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    key: impl Fn(&Record) -> String,
) -> BTreeMap<String, usize> {
    count_by(records, key)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect()
}

/// A JSON string field of a record's value ("" when missing), e.g. `field(r, "order_id")`.
pub fn field(record: &Record, name: &str) -> String {
    record.value[name].as_str().unwrap_or_default().to_string()
}

/// Kafka headers with these names and values, in order.
pub fn headers_of(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs
        .iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(*value),
            })
        })
}

/// Writes a raw record straight into a topic, bypassing the host.
pub async fn produce_raw(topic: &str, key: &str, payload: &[u8], headers: &[(&str, &str)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    send(&producer, topic, key, payload, headers).await;
}

/// Writes a raw record with `producer` (one producer for many records).
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(headers_of(headers)),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .unwrap();
}

/// Writes a raw record straight into one partition of a topic, bypassing the host.
pub async fn produce_raw_at(
    topic: &str,
    partition: i32,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(payload)
                .headers(headers_of(headers)),
            Timeout::After(Duration::from_secs(10)),
        )
        .await
        .unwrap();
}

/// A valid `OrderConfirmed` payload: one unit of prod-789.
pub fn confirmed(order_id: &str) -> String {
    let mut order: serde_json::Value =
        serde_json::from_str(&order(order_id, "prod-789", 1)).unwrap();
    order["status"] = "confirmed".into();
    order.to_string()
}

/// Peak resident memory (VmHWM) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A valid order of `quantity` × `product` at 19.99.
pub fn order(order_id: &str, product: &str, quantity: u32) -> String {
    let total = (f64::from(quantity) * 1999.0).round() / 100.0;
    serde_json::json!({
        "order_id": order_id,
        "customer_id": "cust-456",
        "items": [{"product_id": product, "name": "Test Product", "quantity": quantity, "price": 19.99}],
        "total": total,
        "timestamp": "2026-11-25T10:00:00Z"
    })
    .to_string()
}

/// A broker of one test binary alone (`scripts/kafka.sh` with its own folder and ports),
/// reset (stopped, its data deleted) when dropped.
pub struct OwnBroker {
    /// Its `KAFKA_HOME_DIR`.
    pub home: PathBuf,
    /// Its PLAINTEXT port; the controller listens on the next one.
    pub port: u16,
    /// Extra `scripts/kafka.sh` environment (e.g. a SASL_SSL listener).
    env: Vec<(String, String)>,
    /// Who owns it, for messages.
    owner: &'static str,
}

impl OwnBroker {
    /// Resets and starts the broker of `owner` on the port in `port_var` (or `default_port`),
    /// in `.kafka/<owner>-<port>`, with `env` added to the script's environment.
    pub fn start(
        owner: &'static str,
        port_var: &str,
        default_port: u16,
        env: Vec<(String, String)>,
    ) -> Self {
        let port: u16 = std::env::var(port_var)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(default_port);
        let home = repo().join(format!(".kafka/{owner}-{port}"));
        std::fs::create_dir_all(&home).unwrap();
        let lib = home.join("lib");
        if !lib.exists() {
            std::os::unix::fs::symlink(repo().join(".kafka/lib"), &lib).unwrap();
        }
        let broker = OwnBroker {
            home,
            port,
            env,
            owner,
        };
        assert!(broker.script("reset"), "scripts/kafka.sh reset failed");
        assert!(
            broker.script("start"),
            "scripts/kafka.sh start failed (see {}/logs)",
            broker.home.display()
        );
        broker
    }

    /// The PLAINTEXT bootstrap address.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs `scripts/kafka.sh <command>` for this broker; whether it succeeded.
    pub fn script(&self, command: &str) -> bool {
        Command::new(repo().join("scripts/kafka.sh"))
            .arg(command)
            .env("KAFKA_HOME_DIR", &self.home)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", (self.port + 1).to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .status()
            .is_ok_and(|status| status.success())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if !self.script("reset") {
            eprintln!(
                "{}: could not stop the test broker in {}",
                self.owner,
                self.home.display()
            );
        }
    }
}
