//! Dead letters against a real broker: `stagehost dlq list` shows them with their reasons;
//! after the plugin is fixed by a hot swap, `stagehost dlq replay` sends them back to the
//! failed stage only, and replaying again processes nothing twice.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    SETTLE, TestPipeline, add_stage, add_topic, component, count_by, field, keep_stages,
    produce_raw, produce_raw_at, read_to_end, stage_mut, stagehost, wait_for_records,
};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_once_to_the_failed_stage_only() {
    let mut audit_topic = String::new();
    let mut pipeline = TestPipeline::new(|config| {
        keep_stages(config, &["warehouse"]);
        stage_mut(config, "warehouse").insert(
            "plugin".into(),
            component("always_trap").display().to_string().into(),
        );
        // A second stage reads the same topic; replays are not meant for it.
        audit_topic = add_topic(config, "Audit", 1);
        let input = format!("{}OrderConfirmed", common::prefix_of(config));
        let mut audit = toml::Table::new();
        audit.insert("name".into(), "audit".into());
        audit.insert(
            "plugin".into(),
            component("faulty").display().to_string().into(),
        );
        audit.insert("input".into(), input.into());
        let mut outputs = toml::Table::new();
        outputs.insert("out".into(), audit_topic.clone().into());
        audit.insert("outputs".into(), outputs.into());
        add_stage(config, audit);
    });
    pipeline.start();
    let input = pipeline.topic("OrderConfirmed");
    let orders = ["dlq-1", "dlq-2", "dlq-3"];
    for order in orders {
        produce_raw(
            &input,
            order,
            common::confirmed(order).as_bytes(),
            &[
                ("ce_id", &format!("c-{order}")),
                ("ce_type", "OrderConfirmed"),
            ],
        )
        .await;
    }
    let dead_topic = pipeline.topic("DeadLetterQueue");
    let dead = wait_for_records(&dead_topic, "three dead letters", TIMEOUT, |r| r.len() >= 3).await;
    assert_eq!(dead.len(), 3, "{dead:#?}");
    assert!(
        dead.iter()
            .all(|r| r.value["error"].as_str().unwrap().starts_with("trap:"))
    );
    wait_for_records(&audit_topic, "the three audited orders", TIMEOUT, |r| {
        r.len() >= 3
    })
    .await;

    let config = pipeline.config_path.display().to_string();
    let (ok, out, err) = stagehost(&["dlq", "list", "--config", &config, "--stage", "warehouse"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("3 dead letter(s)") && out.contains("error: trap:"),
        "{out}"
    );
    let (ok, out, _) = stagehost(&["dlq", "list", "--config", &config, "--stage", "audit"]);
    assert!(ok && out.contains("0 dead letter(s)"), "{out}");
    let (ok, out, err) = stagehost(&[
        "dlq", "list", "--config", &config, "--since", "1h", "--json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    let (ok, _, err) = stagehost(&[
        "dlq",
        "list",
        "--config",
        &config,
        "--since",
        "last tuesday",
    ]);
    assert!(!ok && err.contains("last tuesday"), "{err}");

    // Fix the plugin, then replay one dead letter by id, then all of them, then again.
    let green = component("warehouse_green").display().to_string();
    let (ok, _, err) = pipeline.admin_cli(&["plugin", "swap", "warehouse", &green]);
    assert!(ok, "{err}");
    let first = dead[0].ce_id().to_string();
    let (ok, out, err) = stagehost(&[
        "dlq",
        "replay",
        "--config",
        &config,
        "--stage",
        "warehouse",
        "--id",
        &first,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("1 replayed, 0 already replayed"), "{out}");
    let (ok, out, err) = stagehost(&["dlq", "replay", "--config", &config, "--stage", "warehouse"]);
    assert!(ok, "{err}");
    assert!(out.contains("2 replayed, 1 already replayed"), "{out}");
    let (ok, out, err) = stagehost(&["dlq", "replay", "--config", &config, "--stage", "warehouse"]);
    assert!(ok, "{err}");
    assert!(out.contains("0 replayed, 3 already replayed"), "{out}");
    let (ok, _, err) = stagehost(&["dlq", "replay", "--config", &config, "--stage", "nope"]);
    assert!(!ok && err.contains("no stage named 'nope'"), "{err}");

    // A barrier: one more order per partition of the topic, after the replays. Once both
    // stages have handled the barriers, they have handled (or skipped) every replay before
    // them, so the counts below are final.
    let partitions = 3;
    let barriers: Vec<String> = (0..partitions).map(|p| format!("barrier-{p}")).collect();
    for (partition, barrier) in barriers.iter().enumerate() {
        produce_raw_at(
            &input,
            partition as i32,
            barrier,
            common::confirmed(barrier).as_bytes(),
            &[
                ("ce_id", &format!("c-{barrier}")),
                ("ce_type", "OrderConfirmed"),
            ],
        )
        .await;
    }
    let has_barriers = |records: &[common::Record]| {
        barriers
            .iter()
            .all(|b| records.iter().any(|r| field(r, "order_id") == *b))
    };
    let packed_topic = pipeline.topic("OrderPickedAndPacked");
    wait_for_records(&packed_topic, "the barriers packed", TIMEOUT, has_barriers).await;
    wait_for_records(&audit_topic, "the barriers audited", TIMEOUT, has_barriers).await;
    let (ok, out, _) = stagehost(&["dlq", "list", "--config", &config, "--stage", "warehouse"]);
    assert!(ok && out.matches("(replayed ").count() == 3, "{out}");
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host stopped cleanly: {status}");

    let expected = |ids: &[&str]| -> std::collections::BTreeMap<String, usize> {
        ids.iter()
            .map(|id| id.to_string())
            .chain(barriers.iter().cloned())
            .map(|id| (id, 1))
            .collect()
    };
    let packed = read_to_end(&packed_topic, SETTLE).await;
    assert_eq!(
        count_by(&packed, |r| field(r, "order_id")),
        expected(&orders),
        "each dead letter processed exactly once (and the barriers)"
    );
    assert!(
        packed.iter().all(|r| r.value["stamp"] == "green"),
        "by the current version"
    );
    let audited = read_to_end(&audit_topic, SETTLE).await;
    assert_eq!(
        count_by(&audited, |r| field(r, "order_id")),
        expected(&orders),
        "the other stage on the topic saw each order once and skipped the replays"
    );
    let dead = read_to_end(&dead_topic, SETTLE).await;
    assert_eq!(dead.len(), 3, "nothing more dead-lettered: {dead:#?}");
}
