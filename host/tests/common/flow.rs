//! The order flow under faults, shared by the fault and stall tests: a load of orders posted
//! at a rate (each posted again after `503` until accepted), a watch on `/readyz`, and the
//! outcomes of the orders counted from the committed topics (exactly one each, nothing
//! duplicated, no stock oversold).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Record, TestPipeline, read_to_end_at};

/// Stocks the `stock` stage's catalog for the orders of [`post_orders`]: enough of products
/// `fp-0`…`fp-17` that their orders ship, 30 units of `fp-18` and `fp-19` so some are rejected.
pub fn stocked(config: &mut toml::Table) {
    let stock = super::stage_mut(config, "stock");
    let catalog = stock["config"]["catalog"].as_table_mut().unwrap();
    for product in 0..20 {
        let units = if product < 18 { 100_000 } else { 30 };
        catalog.insert(format!("fp-{product}"), units.into());
    }
}

/// Units of `product` confirmed in `pipeline`'s OrderConfirmed topic.
pub async fn confirmed_units(pipeline: &TestPipeline, product: &str) -> u64 {
    super::read_to_end(&pipeline.topic("OrderConfirmed"), Duration::from_secs(60))
        .await
        .iter()
        .flat_map(|record| {
            record.value["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|item| item["product_id"] == product)
        .map(|item| item["quantity"].as_u64().unwrap_or(0))
        .sum()
}

/// How long the whole pipeline may take to give every accepted order its outcome after a fault.
pub const SETTLE: Duration = Duration::from_secs(240);

/// What the load saw.
#[derive(Default)]
pub struct LoadResult {
    /// Orders answered `202`.
    pub accepted: BTreeSet<String>,
    /// Answers `503`, and how many of them carried `Retry-After`.
    pub unavailable: usize,
    pub unavailable_with_retry_after: usize,
    /// The longest a single POST took to be answered.
    pub slowest_answer: Duration,
}

/// Posts `count` orders at `rate` per second, spread over the `targets` (HTTP addresses, one
/// after the other). Each order is posted again after `503` or a failed connection until it
/// gets a final answer; a POST not answered within 30 s fails the test (a hang).
pub async fn post_orders(
    prefix: String,
    count: usize,
    rate: f64,
    targets: Vec<String>,
) -> LoadResult {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let result = Arc::new(std::sync::Mutex::new(LoadResult::default()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..count {
        let at = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let (client, result) = (client.clone(), result.clone());
        let target = targets[i % targets.len()].clone();
        let id = format!("{prefix}-{i}");
        let body = super::order(&id, &format!("fp-{}", i % 20), 1);
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + SETTLE;
            loop {
                let sent = Instant::now();
                let answer = client
                    .post(format!("http://{target}/orders"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let took = sent.elapsed();
                {
                    let mut result = result.lock().unwrap();
                    result.slowest_answer = result.slowest_answer.max(took);
                    match answer {
                        Ok(response) if response.status().as_u16() == 202 => {
                            result.accepted.insert(id);
                            return;
                        }
                        Ok(response) if response.status().as_u16() == 503 => {
                            result.unavailable += 1;
                            if response.headers().contains_key("retry-after") {
                                result.unavailable_with_retry_after += 1;
                            }
                        }
                        Ok(response) => {
                            panic!("order {id}: unexpected answer {}", response.status())
                        }
                        Err(error) => {
                            assert!(!error.is_timeout(), "order {id}: POST hung for 30 s");
                        }
                    }
                }
                assert!(Instant::now() < deadline, "order {id} never accepted");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(result).ok().unwrap().into_inner().unwrap()
}

/// Watches `/readyz` of `http` until stopped; remembers whether it was ever unready and the
/// problems it named.
pub struct ReadyWatch {
    unready_seen: Arc<AtomicUsize>,
    problems: Arc<std::sync::Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
}

impl ReadyWatch {
    pub fn start(http: &str) -> Self {
        let watch = ReadyWatch {
            unready_seen: Arc::default(),
            problems: Arc::default(),
            stop: Arc::default(),
        };
        let (unready, problems, stop) = (
            watch.unready_seen.clone(),
            watch.problems.clone(),
            watch.stop.clone(),
        );
        let url = format!("http://{http}/readyz");
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(response) = client.get(&url).send().await
                    && response.status().as_u16() == 503
                {
                    unready.fetch_add(1, Ordering::Relaxed);
                    if let Ok(body) = response.json::<serde_json::Value>().await
                        && let Some(parts) = body["problems"].as_object()
                    {
                        problems.lock().unwrap().extend(parts.keys().cloned());
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        watch
    }

    pub fn finish(self) -> (usize, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        (
            self.unready_seen.load(Ordering::Relaxed),
            self.problems.lock().unwrap().clone(),
        )
    }
}

/// Final outcomes of the orders, counted from the committed topics.
pub struct Outcomes {
    /// Final notifications (`shipped` or `order_rejected`) per order.
    pub finals: HashMap<String, usize>,
    /// Committed records wrongly repeating a `ce_id`, per topic (see `super::repeated_ids`).
    pub duplicate_ids: BTreeMap<String, usize>,
    /// Identical repeats of requests on the ingress topic (dropped by the next stage).
    pub ingress_repeats: usize,
    /// Notifications not delivered exactly once.
    pub deliveries_wrong: usize,
    /// Ledger entries with a negative stock.
    pub oversold: usize,
    /// Reservations of an order line counted more than once in the ledger.
    pub reserved_twice: usize,
}

/// Reads the topics of `pipeline` to their ends (call it after the hosts stopped).
pub async fn outcomes(at: &str, pipeline: &TestPipeline) -> Outcomes {
    let read = |logical: &str| {
        let (topic, at) = (pipeline.topic(logical), at.to_string());
        async move { read_to_end_at(&at, &topic, Duration::from_secs(120)).await }
    };
    let mut duplicate_ids = BTreeMap::new();
    let mut ingress_repeats = 0;
    let mut by_topic: HashMap<&str, Vec<Record>> = HashMap::new();
    for topic in super::TOPICS {
        let records = read(topic).await;
        let (repeats, identical) = super::repeated_ids(&records, topic == super::INGRESS_TOPIC);
        ingress_repeats += identical;
        if repeats > 0 {
            duplicate_ids.insert(topic.to_string(), repeats);
        }
        by_topic.insert(topic, records);
    }
    let mut finals: HashMap<String, usize> = HashMap::new();
    for notification in &by_topic["Notification"] {
        if matches!(
            notification.value["kind"].as_str(),
            Some("shipped" | "order_rejected")
        ) {
            *finals
                .entry(notification.value["order_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let notification_ids: BTreeSet<&str> =
        by_topic["Notification"].iter().map(|n| n.ce_id()).collect();
    let mut deliveries: HashMap<&str, usize> = HashMap::new();
    for delivered in &by_topic["NotificationDelivered"] {
        *deliveries
            .entry(delivered.value["notification_id"].as_str().unwrap())
            .or_default() += 1;
    }
    let deliveries_wrong = notification_ids
        .iter()
        .filter(|id| deliveries.get(*id).copied() != Some(1))
        .count()
        + deliveries
            .keys()
            .filter(|id| !notification_ids.contains(*id))
            .count();
    let ledger = &by_topic["InventoryLedger"];
    let oversold = ledger
        .iter()
        .filter(|entry| entry.value["stock"].as_i64().is_some_and(|s| s < 0))
        .count();
    let mut reservations: HashMap<(String, String), usize> = HashMap::new();
    for entry in ledger {
        if entry.value["reason"].as_str() == Some("reserve")
            && let (Some(order), Some(product)) = (
                entry.value["order_id"].as_str(),
                entry.value["product_id"].as_str(),
            )
        {
            *reservations
                .entry((order.to_string(), product.to_string()))
                .or_default() += 1;
        }
    }
    let reserved_twice = reservations.values().filter(|n| **n > 1).count();
    Outcomes {
        finals,
        duplicate_ids,
        ingress_repeats,
        deliveries_wrong,
        oversold,
        reserved_twice,
    }
}

/// Asserts exactly one outcome per accepted order and no duplicate anywhere; prints the figures.
pub fn assert_exactly_once(
    name: &str,
    accepted: &BTreeSet<String>,
    outcomes: &Outcomes,
    heal: Duration,
) {
    let lost: Vec<&String> = accepted
        .iter()
        .filter(|id| !outcomes.finals.contains_key(*id))
        .collect();
    let duplicated: Vec<(&String, &usize)> =
        outcomes.finals.iter().filter(|(_, n)| **n > 1).collect();
    let unknown = outcomes
        .finals
        .keys()
        .filter(|id| !accepted.contains(*id))
        .count();
    eprintln!(
        "faults[{name}]: accepted {}, completed {}, lost {}, duplicated {}, outcomes of orders never accepted {}, \
         duplicate ids {:?}, identical ingress repeats {}, deliveries not exactly once {}, oversold {}, \
         order lines reserved twice {}, time to heal {:.1}s",
        accepted.len(),
        accepted.len() - lost.len(),
        lost.len(),
        duplicated.len(),
        unknown,
        outcomes.duplicate_ids,
        outcomes.ingress_repeats,
        outcomes.deliveries_wrong,
        outcomes.oversold,
        outcomes.reserved_twice,
        heal.as_secs_f64(),
    );
    assert!(lost.is_empty(), "{name}: lost orders: {lost:?}");
    assert!(
        duplicated.is_empty(),
        "{name}: orders with two outcomes: {duplicated:?}"
    );
    assert_eq!(
        unknown, 0,
        "{name}: outcomes of orders that were never accepted"
    );
    assert!(
        outcomes.duplicate_ids.is_empty(),
        "{name}: committed duplicates {:?}",
        outcomes.duplicate_ids
    );
    assert_eq!(
        outcomes.deliveries_wrong, 0,
        "{name}: notifications not delivered exactly once"
    );
    assert_eq!(outcomes.oversold, 0, "{name}: stock went negative");
    assert_eq!(
        outcomes.reserved_twice, 0,
        "{name}: order lines reserved twice"
    );
}

/// Waits until every accepted order has a final notification and every notification has been
/// delivered (the work is done, so stopping the hosts leaves nothing half-way); returns how
/// long that took.
pub async fn wait_for_outcomes(
    at: &str,
    hosts: &[&TestPipeline],
    accepted: &BTreeSet<String>,
) -> Duration {
    let pipeline = hosts[0];
    let started = Instant::now();
    let (notifications, delivered) = (
        pipeline.topic("Notification"),
        pipeline.topic("NotificationDelivered"),
    );
    loop {
        let sent = read_to_end_at(at, &notifications, Duration::from_secs(60)).await;
        let finals: BTreeSet<&str> = sent
            .iter()
            .filter(|n| matches!(n.value["kind"].as_str(), Some("shipped" | "order_rejected")))
            .filter_map(|n| n.value["order_id"].as_str())
            .collect();
        let unfinished: Vec<&String> = accepted
            .iter()
            .filter(|id| !finals.contains(id.as_str()))
            .collect();
        let done: BTreeSet<String> = read_to_end_at(at, &delivered, Duration::from_secs(60))
            .await
            .iter()
            .filter_map(|d| d.value["notification_id"].as_str().map(str::to_string))
            .collect();
        let undelivered: Vec<&str> = sent
            .iter()
            .map(|n| n.ce_id())
            .filter(|id| !done.contains(*id))
            .collect();
        if unfinished.is_empty() && undelivered.is_empty() {
            return started.elapsed();
        }
        if started.elapsed() > SETTLE {
            // Where the first unfinished orders got to, topic by topic.
            let mut trail = String::new();
            for topic in [
                "OrderReceived",
                "InventoryCommands",
                "InventoryResults",
                "OrderConfirmed",
                "OrderPickedAndPacked",
            ] {
                let records =
                    read_to_end_at(at, &pipeline.topic(topic), Duration::from_secs(60)).await;
                let found: Vec<String> = unfinished
                    .iter()
                    .take(5)
                    .map(|id| {
                        let hits: Vec<String> = records
                            .iter()
                            .filter(|r| r.value["order_id"].as_str() == Some(id.as_str()))
                            .map(|r| format!("p{}@{}", r.partition, r.offset))
                            .collect();
                        format!("{id}: {hits:?}")
                    })
                    .collect();
                trail.push_str(&format!("\n  {topic}: {}", found.join(", ")));
            }
            eprintln!("faults: where the unfinished orders are:{trail}");
            let logs: Vec<String> = hosts.iter().map(|host| host.logs()).collect();
            for (n, log) in logs.iter().enumerate() {
                let path = std::env::temp_dir().join(format!("faults-unfinished-host-{n}.log"));
                if std::fs::write(&path, log).is_ok() {
                    eprintln!("faults: host {n}'s whole log is in {}", path.display());
                }
            }
            let problems: Vec<&str> = logs
                .iter()
                .flat_map(|log| {
                    let lines: Vec<&str> = log
                        .lines()
                        .filter(|line| line.contains("ERROR") || line.contains("WARN"))
                        .collect();
                    lines[lines.len().saturating_sub(30)..].to_vec()
                })
                .collect();
            panic!(
                "timed out after {SETTLE:?} waiting for every accepted order to reach its outcome and every notification to be delivered: {} of {} orders without a final notification (first: {:?}), {} of {} notifications not delivered (first: {:?}); the host's last warnings and errors:\n{}",
                unfinished.len(),
                accepted.len(),
                unfinished.iter().take(5).collect::<Vec<_>>(),
                undelivered.len(),
                sent.len(),
                undelivered.iter().take(5).collect::<Vec<_>>(),
                problems.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
