//! Dead letters against a real broker: `stagehost dlq list` shows them with their reasons;
//! after the plugin is fixed by a hot swap, `stagehost dlq replay` sends them back to the
//! failed stage only, and replaying again processes nothing twice.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    TestPipeline, add_topic, component, keep_stages, produce_raw, read_topic, stage_mut, stagehost,
};

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
        config
            .get_mut("stages")
            .unwrap()
            .as_array_mut()
            .unwrap()
            .push(audit.into());
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
    let dead = read_topic(
        &pipeline.topic("DeadLetterQueue"),
        3,
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(dead.len(), 3);
    assert!(
        dead.iter()
            .all(|r| r.value["error"].as_str().unwrap().starts_with("trap:"))
    );
    let audited = read_topic(
        &audit_topic,
        3,
        Duration::from_millis(500),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(audited.len(), 3);

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
    let (ok, _, err) = stagehost(&[
        "plugin",
        "swap",
        "warehouse",
        &green,
        "--admin",
        &pipeline.admin,
    ]);
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

    let packed = read_topic(
        &pipeline.topic("OrderPickedAndPacked"),
        3,
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await;
    let mut packed_orders: Vec<&str> = packed
        .iter()
        .map(|r| r.value["order_id"].as_str().unwrap())
        .collect();
    packed_orders.sort_unstable();
    assert_eq!(
        packed_orders, orders,
        "each dead letter processed exactly once"
    );
    assert!(
        packed.iter().all(|r| r.value["stamp"] == "green"),
        "by the current version"
    );
    let audited = read_topic(
        &audit_topic,
        3,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        audited.len(),
        3,
        "the other stage on the topic skipped the replays"
    );
    let (ok, out, _) = stagehost(&["dlq", "list", "--config", &config, "--stage", "warehouse"]);
    assert!(ok && out.matches("(replayed ").count() == 3, "{out}");
    pipeline.stop("TERM");
}
