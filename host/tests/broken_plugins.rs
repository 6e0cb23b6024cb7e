//! The sandbox against deliberately broken and variant components (plugins/testing, built by
//! scripts/test.sh): every misbehaviour of a plugin comes back as the right `CallError` and
//! leaves an instance that still works, components that do not fit are refused at load, and
//! two builds of one stage are told apart by their version.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use stagehost::config::LimitsConfig;
use stagehost::plugin::{
    CallError, Header, InputEvent, InstanceSettings, OutputEvent, PluginEngine, PluginError,
    StageInstance,
};

/// Longest a call may take before the test gives up on the host stopping the plugin.
const CALL_WATCHDOG: Duration = Duration::from_secs(30);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn wasm(name: &str) -> PathBuf {
    root().join(format!("plugins/target/wasm32-wasip2/release/{name}.wasm"))
}

fn instance(
    engine: &PluginEngine,
    name: &str,
    config: serde_json::Value,
    limits: LimitsConfig,
) -> StageInstance {
    let plugin = engine.load(&wasm(name)).unwrap_or_else(|error| {
        panic!("{error} (build the test components first: scripts/test.sh builds them)")
    });
    let settings = InstanceSettings {
        stage: Arc::from(name),
        config: Arc::new(config.as_object().unwrap().clone()),
        limits,
        // The default sandbox: nothing granted.
        capabilities: Default::default(),
    };
    StageInstance::new(engine, plugin, settings).unwrap()
}

fn event(payload: &serde_json::Value) -> InputEvent {
    InputEvent {
        id: "event-1".into(),
        event_type: "Test".into(),
        key: Some("key-1".into()),
        payload: payload.to_string(),
        headers: Vec::new(),
        topic: "Test".into(),
    }
}

/// An instance of faulty.wasm whose calls run on a thread under a watchdog, so that a plugin
/// the host fails to stop fails the test instead of hanging it.
struct Faulty {
    _engine: PluginEngine,
    stage: Option<StageInstance>,
}

impl Faulty {
    fn new(limits: LimitsConfig) -> Self {
        let engine = PluginEngine::new(None, false).unwrap();
        let stage = instance(&engine, "faulty", serde_json::json!({}), limits);
        Self {
            _engine: engine,
            stage: Some(stage),
        }
    }

    fn call(&mut self, event: InputEvent) -> Result<Vec<OutputEvent>, CallError> {
        let mut stage = self.stage.take().expect("a previous call did not return");
        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            let outcome = stage.handle(&event);
            done.send((stage, outcome)).ok();
        });
        let (stage, outcome) = result.recv_timeout(CALL_WATCHDOG).unwrap_or_else(|_| {
            panic!("the call did not return within {CALL_WATCHDOG:?}: the host did not stop it")
        });
        self.stage = Some(stage);
        outcome
    }

    fn fault(&mut self, fault: &str) -> Result<Vec<OutputEvent>, CallError> {
        self.call(event(
            &serde_json::json!({"fault": fault, "order_id": "o-1"}),
        ))
    }

    /// An event without a fault comes back unchanged as output `out`.
    fn assert_passes_through(&mut self) {
        let payload = serde_json::json!({"order_id": "o-1", "n": 7});
        let outputs = self
            .call(event(&payload))
            .unwrap_or_else(|error| panic!("the pass-through failed: {error}"));
        assert_eq!(outputs.len(), 1, "{outputs:?}");
        assert_eq!(outputs[0].output, "out");
        assert_eq!(outputs[0].key.as_deref(), Some("key-1"));
        assert_eq!(outputs[0].payload, payload.to_string());
    }
}

/// Calls faulty.wasm with `fault` between pass-through events (one before, two after) on the
/// same instance, and returns the error of the faulty call.
fn fails_and_recovers(fault: &str, limits: LimitsConfig) -> CallError {
    let mut faulty = Faulty::new(limits);
    faulty.assert_passes_through();
    let error = faulty
        .fault(fault)
        .expect_err(&format!("fault {fault:?} must fail the call"));
    faulty.assert_passes_through();
    faulty.assert_passes_through();
    error
}

fn expect_trap(error: CallError) -> String {
    match error {
        CallError::Trap(message) => message,
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn an_endless_loop_is_stopped_by_the_deadline() {
    let limits = LimitsConfig {
        max_event_time: Duration::from_millis(100),
        ..Default::default()
    };
    let started = Instant::now();
    // A loop the deadline does not stop fails the test through the call watchdog; how soon
    // after the deadline it stops is a figure, printed, not asserted.
    let message = expect_trap(fails_and_recovers("loop", limits));
    assert!(message.starts_with("timeout"), "{message}");
    assert!(message.contains("100ms"), "names the limit: {message}");
    println!(
        "a 100 ms deadline stopped the loop; loading faulty.wasm and four calls took {:?}",
        started.elapsed()
    );
}

#[test]
fn unbounded_allocation_is_stopped_by_the_memory_limit() {
    let limits = LimitsConfig {
        max_memory_bytes: 16 * 1024 * 1024,
        ..Default::default()
    };
    let message = expect_trap(fails_and_recovers("memory", limits));
    assert!(message.starts_with("memory limit"), "{message}");
    assert!(message.contains("16777216"), "names the limit: {message}");
}

#[test]
fn a_panic_is_a_trap() {
    let message = expect_trap(fails_and_recovers("trap", LimitsConfig::default()));
    assert!(message.starts_with("trap:"), "{message}");
    // Plugins are built with `panic = "abort"`: the panic message goes to the guest's stderr
    // (discarded by the default sandbox, never part of the trap), and the abort is an
    // `unreachable` instruction.
    assert!(
        message.contains("wasm `unreachable` instruction executed"),
        "{message}"
    );
}

#[test]
fn reject_and_retry_come_back_typed() {
    assert_eq!(
        fails_and_recovers("reject", LimitsConfig::default()),
        CallError::Reject("faulty plugin rejected the event".into())
    );
    assert_eq!(
        fails_and_recovers("retry", LimitsConfig::default()),
        CallError::Retry("faulty plugin asks for a retry".into())
    );
}

#[test]
fn bad_outputs_are_returned_by_the_instance() {
    // The instance hands them over; the stage's processor is what refuses them.
    let mut faulty = Faulty::new(LimitsConfig::default());
    let malformed = faulty.fault("malformed").unwrap();
    assert_eq!(malformed.len(), 1, "{malformed:?}");
    assert_eq!(malformed[0].output, "out");
    assert_eq!(malformed[0].payload, "{not json");
    faulty.assert_passes_through();

    let payload = serde_json::json!({"fault": "unknown-output", "order_id": "o-1"});
    let unknown = faulty.call(event(&payload)).unwrap();
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0].output, "nowhere");
    assert_eq!(unknown[0].payload, payload.to_string());
    faulty.assert_passes_through();
}

#[test]
fn retry_once_succeeds_from_the_second_attempt() {
    let mut faulty = Faulty::new(LimitsConfig::default());
    let payload = serde_json::json!({"fault": "retry-once"});
    assert_eq!(
        faulty.call(event(&payload)).unwrap_err(),
        CallError::Retry("faulty plugin asks for a retry".into())
    );
    let attempt = |value: &str| {
        let mut event = event(&payload);
        event.headers.push(Header {
            name: "stagehost-attempt".into(),
            value: value.into(),
        });
        event
    };
    assert!(matches!(
        faulty.call(attempt("1")),
        Err(CallError::Retry(_))
    ));
    let outputs = faulty.call(attempt("2")).unwrap();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert_eq!(outputs[0].output, "out");
    assert_eq!(outputs[0].payload, payload.to_string());
}

#[test]
fn a_component_that_always_traps_loads_but_fails_every_call() {
    let engine = PluginEngine::new(None, false).unwrap();
    let mut stage = instance(
        &engine,
        "always_trap",
        serde_json::json!({}),
        LimitsConfig::default(),
    );
    for _ in 0..2 {
        let error = stage
            .handle(&event(&serde_json::json!({"order_id": "o-1"})))
            .unwrap_err();
        let message = expect_trap(error);
        assert!(message.starts_with("trap:"), "{message}");
        assert!(message.contains("unreachable"), "{message}");
    }
}

#[test]
fn a_component_of_another_world_is_refused_at_load() {
    let engine = PluginEngine::new(None, false).unwrap();
    let path = wasm("not_a_stage");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        bytes[..8],
        *b"\0asm\x0d\x00\x01\x00",
        "wasm-component-ld makes a component of it"
    );
    match engine.load(&path).unwrap_err() {
        error @ PluginError::World { .. } => {
            let text = error.to_string();
            assert!(
                text.contains("not_a_stage.wasm")
                    && text.contains("does not fit the stagehost:pipeline stage world"),
                "{text}"
            );
            assert!(text.contains("handler"), "names the missing export: {text}");
        }
        other => panic!("expected PluginError::World, got {other:?}"),
    }
}

#[test]
fn a_file_of_random_bytes_does_not_compile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.wasm");
    // A fixed xorshift sequence: the same "random" bytes on every run.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    let engine = PluginEngine::new(None, false).unwrap();
    match engine.load(&path).unwrap_err() {
        error @ PluginError::Compile { .. } => {
            let text = error.to_string();
            assert!(
                text.contains("random.wasm") && text.contains("not a valid WebAssembly component"),
                "{text}"
            );
        }
        other => panic!("expected PluginError::Compile, got {other:?}"),
    }
}

#[test]
fn blue_and_green_builds_differ_in_version_and_stamp() {
    let engine = PluginEngine::new(None, false).unwrap();
    // The config's stamp is overridden by the build; its other keys still apply.
    let config = serde_json::json!({"warehouse_id": "wh-test", "stamp": "from-config"});
    let confirmed = serde_json::json!({
        "order_id": "order-1",
        "customer_id": "cust-456",
        "items": [{"product_id": "prod-789", "name": "Test Product", "quantity": 2, "price": 19.99}],
        "total": 39.98,
        "timestamp": "2026-11-25T10:00:00Z",
        "status": "confirmed"
    });
    let packed_schema = stagehost::event::schema::compile(
        &root().join("schemas/order-picked-and-packed.schema.json"),
    )
    .unwrap();
    let mut versions = Vec::new();
    for color in ["blue", "green"] {
        let mut stage = instance(
            &engine,
            &format!("warehouse_{color}"),
            config.clone(),
            LimitsConfig::default(),
        );
        assert!(
            stage.version().starts_with("sha256:"),
            "{}",
            stage.version()
        );
        versions.push(stage.version().to_owned());
        let outputs = stage.handle(&event(&confirmed)).unwrap();
        let names: Vec<&str> = outputs.iter().map(|o| o.output.as_str()).collect();
        assert_eq!(names, ["packed", "notify"]);
        let packed: serde_json::Value = serde_json::from_str(&outputs[0].payload).unwrap();
        assert_eq!(packed["stamp"], color, "{packed}");
        assert_eq!(packed["warehouse"], "wh-test", "{packed}");
        assert_eq!(packed["status"], "picked_and_packed", "{packed}");
        let errors: Vec<String> = packed_schema
            .iter_errors(&packed)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{packed} does not fit: {errors:?}");
    }
    assert_ne!(versions[0], versions[1]);
}
