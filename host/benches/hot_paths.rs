//! Micro-benchmarks of the host's per-event hot paths, without Kafka:
//!
//! - `plugin_call/warehouse`: one [`StageInstance::handle`] call of the real warehouse plugin
//!   with a valid `OrderConfirmed` (about 350 bytes; it parses the order and serializes two
//!   outputs); `plugin_call/identity`: the same call of the `identity` test component, which
//!   returns the event unchanged without parsing it: the bare cost of crossing into a plugin
//!   and back (copying the event in and the output out).
//! - `process/warehouse`: [`StageContext::process`] end to end for the same event: UTF-8
//!   check, JSON decode and input schema validation, the plugin call, decode and schema
//!   validation of both outputs, output ids and CloudEvents headers.
//! - `envelope/encode`: [`CloudEvent::to_headers`] for one output and the librdkafka header
//!   list built from them as it is sent; `envelope/decode`:
//!   [`cloudevents::header_pairs`] over those headers, then `find` of `ce_id` and `ce_type`
//!   (what the consume loop does per record); `dead_letter/to_json`: serializing a
//!   [`DeadLetter`] of the same order.
//! - `idempotency/processed_among_500`: one [`LocalStore::processed_among`] lookup of 500 ids,
//!   half of them known, in a store that holds 200 000 ids (what a stage records for about
//!   12 000 orders); `idempotency/mark_processed_500`: one [`LocalStore::mark_processed`] of
//!   500 new ids (one durable fjall batch: a journal append and an `fdatasync` of a file in
//!   the temporary directory).
//!
//! Run from the repository root with
//!
//! ```text
//! cargo bench --bench hot_paths
//! ```
//!
//! after building the plugins: `make plugins` (for `warehouse.wasm`) and
//! `cd plugins && cargo build --release --target wasm32-wasip2 -p identity` (a test
//! component, not a default member; `scripts/test.sh` builds it too). A filter runs a
//! subset, e.g. `cargo bench --bench hot_paths -- plugin_call`. Samples are few and short so
//! that the whole run takes about a minute; the figures are for comparing builds on one
//! machine, not absolute.

#![allow(missing_docs)] // criterion_group! generates undocumented public items

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use stagehost::config::{LimitsConfig, Overrides, PipelineConfig};
use stagehost::event::cloudevents::{self, CloudEvent};
use stagehost::event::dead_letter::{DeadLetter, Origin};
use stagehost::event::schema::SchemaRegistry;
use stagehost::plugin::{InputEvent, InstanceSettings, PluginEngine, StageInstance};
use stagehost::stage::{Input, Route, StageContext};
use stagehost::store::LocalStore;

/// A valid `OrderConfirmed` (schemas/order-confirmed.schema.json): three lines whose total is
/// right to the cent, as the inventory stage emits it.
const ORDER_CONFIRMED: &str = r#"{"order_id":"order-1","customer_id":"cust-456","items":[{"product_id":"prod-789","name":"Test Product","quantity":2,"price":19.99},{"product_id":"product-222","name":"Another Test Product","quantity":1,"price":49.5},{"product_id":"product-333","name":"Third Product","quantity":3,"price":5.25}],"total":105.23,"timestamp":"2026-11-25T10:00:00Z","status":"confirmed"}"#;

const EVENT_ID: &str = "0b6f3c1e-6a57-5d8e-9c1f-2f4a9b7d3e10";
const ORDER_ID: &str = "order-1";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent folder")
        .to_path_buf()
}

fn instance(engine: &PluginEngine, file: &str, config: serde_json::Value) -> StageInstance {
    let path = root().join(format!("plugins/target/wasm32-wasip2/release/{file}.wasm"));
    let plugin = engine.load(&path).unwrap_or_else(|error| {
        panic!(
            "{error} (build the plugins first: `make plugins`, and \
             `cd plugins && cargo build --release --target wasm32-wasip2 -p identity`)"
        )
    });
    let settings = InstanceSettings {
        stage: Arc::from(file),
        config: Arc::new(config.as_object().cloned().unwrap_or_default()),
        limits: LimitsConfig::default(),
        capabilities: Default::default(),
    };
    StageInstance::new(engine, plugin, settings).expect("the plugin instantiates")
}

/// The CloudEvents headers the previous stage (reservation) wrote on the input record.
fn input_attributes() -> CloudEvent {
    CloudEvent {
        id: EVENT_ID.into(),
        event_type: "OrderConfirmed".into(),
        source: "/stagehost/reservation".into(),
        time: "2026-11-25T10:00:01.123456789Z".into(),
        plugin_version: Some("sha256:0123456789abcdef".into()),
    }
}

fn input_event() -> InputEvent {
    InputEvent {
        id: EVENT_ID.into(),
        event_type: "OrderConfirmed".into(),
        key: Some(ORDER_ID.into()),
        payload: ORDER_CONFIRMED.into(),
        headers: Vec::new(),
        topic: "OrderConfirmed".into(),
    }
}

fn origin() -> Origin {
    Origin {
        stage: "warehouse".into(),
        source_topic: "OrderConfirmed".into(),
        partition: 0,
        offset: 41,
    }
}

fn plugin_call(c: &mut Criterion) {
    let engine = PluginEngine::new(None, false).expect("the engine starts");
    let event = input_event();
    let mut group = c.benchmark_group("plugin_call");
    for file in ["warehouse", "identity"] {
        let mut stage = instance(&engine, file, serde_json::json!({}));
        let outputs = stage.handle(&event).expect("the plugin accepts the order");
        assert!(!outputs.is_empty(), "{file} returned no output");
        group.bench_function(file, |b| {
            b.iter(|| black_box(stage.handle(black_box(&event))));
        });
    }
    group.finish();
}

fn process(c: &mut Criterion) {
    let config: PipelineConfig =
        stagehost::config::load(&root().join("pipeline.toml"), &Overrides::default())
            .expect("pipeline.toml loads");
    let schemas = SchemaRegistry::from_config(&config).expect("the schemas compile");
    let stage = config
        .stages
        .iter()
        .find(|stage| stage.name == "warehouse")
        .expect("pipeline.toml has a warehouse stage");
    let route = |topic: &str, event_type: &str| Route {
        topic: topic.into(),
        event_type: event_type.into(),
        latest_per_key: false,
    };
    let context = StageContext {
        name: Arc::from("warehouse"),
        routes: BTreeMap::from([
            (
                "packed".to_string(),
                route("OrderPickedAndPacked", "OrderPickedAndPacked"),
            ),
            ("notify".to_string(), route("Notification", "Notification")),
        ]),
        dead_letter: route(&config.dead_letter.topic, "DeadLetter"),
        schemas,
        limits: Arc::default(),
    };
    let engine = PluginEngine::new(None, false).expect("the engine starts");
    let mut instance = instance(
        &engine,
        "warehouse",
        serde_json::to_value(&stage.config).expect("the stage config is JSON"),
    );
    let headers = input_attributes().to_headers([]).to_kafka();
    let input = Input {
        id: EVENT_ID.into(),
        event_type: "OrderConfirmed".into(),
        key: Some(ORDER_ID),
        payload: ORDER_CONFIRMED.as_bytes(),
        headers: cloudevents::header_pairs(Some(headers.as_borrowed())),
        origin: origin(),
    };
    let processed = context
        .process(&mut instance, &input, true, None)
        .expect("the warehouse processes the order");
    assert_eq!(processed.records.len(), 2);

    let mut group = c.benchmark_group("process");
    group.bench_function("warehouse", |b| {
        b.iter(|| black_box(context.process(&mut instance, black_box(&input), true, None)));
    });
    group.finish();
}

fn envelope(c: &mut Criterion) {
    let output = CloudEvent {
        id: cloudevents::output_id(EVENT_ID, "warehouse", 0),
        event_type: "OrderPickedAndPacked".into(),
        source: "/stagehost/warehouse".into(),
        time: cloudevents::now_rfc3339(),
        plugin_version: Some("sha256:fedcba9876543210".into()),
    };
    let mut group = c.benchmark_group("envelope");
    group.bench_function("encode", |b| {
        b.iter(|| black_box(black_box(&output).to_headers([]).to_kafka()));
    });
    let headers = output.to_headers([]).to_kafka();
    group.bench_function("decode", |b| {
        b.iter(|| {
            let pairs = cloudevents::header_pairs(Some(black_box(&headers).as_borrowed()));
            let id = cloudevents::find(&pairs, cloudevents::ID).map(str::to_string);
            let event_type = cloudevents::find(&pairs, cloudevents::TYPE).map(str::to_string);
            black_box((id, event_type, pairs))
        });
    });
    group.finish();

    let letter = DeadLetter::new(
        ORDER_CONFIRMED.as_bytes(),
        "rejected: OrderConfirmed: items[0].quantity: must be at least 1".into(),
        origin(),
        "sha256:fedcba9876543210",
        EVENT_ID,
    );
    let mut group = c.benchmark_group("dead_letter");
    group.bench_function("to_json", |b| {
        b.iter(|| black_box(black_box(&letter).to_json()));
    });
    group.finish();
}

fn idempotency(c: &mut Criterion) {
    const STAGE: &str = "warehouse";
    const BATCH: usize = 500;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = LocalStore::open(dir.path()).expect("the store opens");
    let known: Vec<String> = (0..200_000).map(|i| format!("known-{i:08}")).collect();
    for chunk in known.chunks(5_000) {
        store
            .mark_processed(STAGE, chunk.iter().map(String::as_str))
            .expect("ids are recorded");
    }
    // Every other id of the batch is known.
    let batch: Vec<String> = (0..BATCH)
        .map(|i| {
            if i % 2 == 0 {
                known[i * 17].clone()
            } else {
                format!("unknown-{i:08}")
            }
        })
        .collect();
    let ids: Vec<&str> = batch.iter().map(String::as_str).collect();
    let seen = store.processed_among(STAGE, &ids).expect("lookup works");
    assert_eq!(seen.iter().filter(|&&known| known).count(), BATCH / 2);

    let mut group = c.benchmark_group("idempotency");
    group.bench_function("processed_among_500", |b| {
        b.iter(|| black_box(store.processed_among(STAGE, black_box(&ids))));
    });
    let mut next = 0_u64;
    group.bench_function("mark_processed_500", |b| {
        b.iter_batched(
            || {
                (0..BATCH)
                    .map(|_| {
                        next += 1;
                        format!("new-{next:012}")
                    })
                    .collect::<Vec<String>>()
            },
            |fresh| {
                store
                    .mark_processed(STAGE, fresh.iter().map(String::as_str))
                    .expect("ids are recorded");
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = plugin_call, process, envelope, idempotency
}
criterion_main!(hot_paths);
