//! The chaos acceptance's parts, shared by `chaos.rs` (one broker) and `cluster.rs` (three):
//! the order plan, the load over HTTP with its faults at points of the load, the wait for the
//! run to settle, and the checks on every topic read `read_committed` to its end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

use super::{
    Record, TestPipeline, count_by, field, read_to_end_at, stage_mut, wait_for_records_at,
};

pub const PRODUCTS: usize = 40;
pub const CLIENTS: usize = 32;

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub struct Plan {
    pub orders: Vec<(String, String)>,
    pub initial: BTreeMap<String, i64>,
    pub restocks: Vec<(String, String, i64)>,
}

/// Orders of 1–3 lines of 1–3 units over `PRODUCTS` products whose stock covers about
/// three quarters of the demand, so some orders must be rejected.
pub fn plan(count: usize, seed: u64) -> Plan {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut demand = vec![0i64; PRODUCTS];
    let orders: Vec<(String, String)> = (0..count)
        .map(|i| {
            let id = format!("chaos-{seed}-{i}");
            let lines = rng.random_range(1..=3);
            let mut products = BTreeSet::new();
            while products.len() < lines {
                products.insert(rng.random_range(0..PRODUCTS));
            }
            let items: Vec<serde_json::Value> = products
                .iter()
                .map(|&p| {
                    let quantity = rng.random_range(1..=3);
                    demand[p] += quantity;
                    serde_json::json!({"product_id": format!("cp-{p}"), "quantity": quantity, "price": 2.5})
                })
                .collect();
            let total: f64 = items.iter().map(|i| i["quantity"].as_f64().unwrap() * 2.5).sum();
            let body = serde_json::json!({"order_id": id, "customer_id": "cust-chaos", "items": items, "total": total});
            (id, body.to_string())
        })
        .collect();
    let initial = (0..PRODUCTS)
        .map(|p| (format!("cp-{p}"), demand[p] * 3 / 4))
        .collect();
    let restocks = (0..PRODUCTS / 4)
        .map(|p| (format!("cp-{p}"), format!("restock-{seed}-{p}"), 5))
        .collect();
    Plan {
        orders,
        initial,
        restocks,
    }
}

pub fn configure(config: &mut toml::Table, initial: &BTreeMap<String, i64>) {
    let stock = stage_mut(config, "stock");
    let catalog = stock["config"]["catalog"].as_table_mut().unwrap();
    for (product, quantity) in initial {
        catalog.insert(product.clone(), (*quantity).into());
    }
}

/// Posts until the instance answers with a final status (it may be down or restarting).
pub async fn post_until_final(client: &reqwest::Client, http: &str, path: &str, body: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let result = client
            .post(format!("http://{http}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        match result {
            Ok(response) if response.status().as_u16() != 503 => return response.status().as_u16(),
            _ => {
                assert!(Instant::now() < deadline, "{path} never answered");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

pub struct Checked {
    pub accepted: usize,
    pub shipped: usize,
    pub rejected: usize,
    pub lost: usize,
    pub duplicated_outcomes: usize,
    pub confirmations_wrong: usize,
    pub duplicate_ids: usize,
    pub stock_mismatches: usize,
    pub ledger_breaks: usize,
    pub oversold: usize,
    pub deliveries_wrong: usize,
}

/// The outcome notification of an order: `shipped` or `order_rejected`.
pub fn is_outcome(notification: &Record) -> bool {
    matches!(
        notification.value["kind"].as_str(),
        Some("shipped" | "order_rejected")
    )
}

/// What the ledger must answer for an `InventoryCommands` record, if anything: a release
/// (`release/<order>/<product>`) or a restock (`restock/<restock_id>`). Reserves are answered
/// in `InventoryResults`.
pub fn ledger_key(record: &Record) -> Option<String> {
    let value = &record.value;
    let reason = value
        .get("command")
        .or_else(|| value.get("reason"))
        .and_then(|r| r.as_str())?;
    match reason {
        "release" => Some(format!(
            "release/{}/{}",
            field(record, "order_id"),
            field(record, "product_id")
        )),
        "restock" => Some(format!("restock/{}", field(record, "restock_id"))),
        _ => None,
    }
}

/// Waits until the run has settled: every accepted order has its outcome, every
/// notification is delivered, and every release and restock command is in the stock ledger.
/// (The hosts are then stopped cleanly and [`check`] reads every topic to its end.)
pub async fn wait_settled(pipeline: &TestPipeline, accepted: &BTreeSet<String>) {
    let timeout = Duration::from_secs(300);
    let brokers = &pipeline.brokers;
    let notifications = wait_for_records_at(
        brokers,
        &pipeline.topic("Notification"),
        "an outcome for every accepted order",
        timeout,
        |records| {
            let done: BTreeSet<String> = records
                .iter()
                .filter(|n| is_outcome(n))
                .map(|n| field(n, "order_id"))
                .collect();
            accepted.is_subset(&done)
        },
    )
    .await;
    // Every notification precedes its order's outcome (or is it): none is still to come.
    let notification_ids: BTreeSet<String> = notifications
        .iter()
        .map(|n| n.ce_id().to_string())
        .collect();
    wait_for_records_at(
        brokers,
        &pipeline.topic("NotificationDelivered"),
        "a delivery of every notification",
        timeout,
        |records| {
            let delivered: BTreeSet<String> = records
                .iter()
                .map(|d| field(d, "notification_id"))
                .collect();
            notification_ids.is_subset(&delivered)
        },
    )
    .await;
    // Release commands go out with the rejection; restocks were all accepted.
    let commands: BTreeSet<String> =
        read_to_end_at(brokers, &pipeline.topic("InventoryCommands"), super::SETTLE)
            .await
            .iter()
            .filter_map(ledger_key)
            .collect();
    wait_for_records_at(
        brokers,
        &pipeline.topic("InventoryLedger"),
        "every release and restock in the ledger",
        timeout,
        |records| {
            let answered: BTreeSet<String> = records.iter().filter_map(ledger_key).collect();
            commands.is_subset(&answered)
        },
    )
    .await;
}

/// Stops every instance cleanly (each finishes and commits its work).
pub async fn stop_all(instances: &[Arc<Mutex<TestPipeline>>]) {
    for instance in instances {
        let status = instance.lock().await.stop("TERM");
        assert!(
            status.success(),
            "an instance did not stop cleanly: {status}"
        );
    }
}

/// Reads every topic to its end (the hosts stopped) and applies the checks: one outcome per
/// accepted order (and a confirmation exactly for the shipped ones), no ce_id committed
/// twice, stock that adds up and never oversold, every notification delivered once.
pub async fn check(pipeline: &TestPipeline, plan: &Plan, accepted: &BTreeSet<String>) -> Checked {
    let mut by_topic = HashMap::new();
    let mut duplicate_ids = 0;
    for topic in super::TOPICS {
        let records =
            read_to_end_at(&pipeline.brokers, &pipeline.topic(topic), super::SETTLE).await;
        let (dups, identical) = super::repeated_ids(&records, topic == super::INGRESS_TOPIC);
        if dups > 0 {
            eprintln!("{topic}: {dups} committed duplicates");
        }
        if identical > 0 {
            eprintln!(
                "{topic}: {identical} identical repeats of requests (dropped by the next stage)"
            );
        }
        duplicate_ids += dups;
        by_topic.insert(topic, records);
    }
    let notifications = &by_topic["Notification"];

    let mut outcomes: HashMap<String, (usize, usize)> = HashMap::new();
    for n in notifications {
        let entry = outcomes.entry(field(n, "order_id")).or_default();
        match n.value["kind"].as_str() {
            Some("shipped") => entry.0 += 1,
            Some("order_rejected") => entry.1 += 1,
            _ => {}
        }
    }
    let confirmations = count_by(&by_topic["OrderConfirmed"], |r| field(r, "order_id"));
    let mut lost = 0;
    let mut duplicated_outcomes = 0;
    let mut confirmations_wrong = 0;
    let (mut shipped, mut rejected) = (0, 0);
    for id in accepted {
        let outcome = outcomes.get(id).copied().unwrap_or_default();
        match outcome {
            (0, 0) => lost += 1,
            (1, 0) => shipped += 1,
            (0, 1) => rejected += 1,
            _ => duplicated_outcomes += 1,
        }
        // Exactly one OrderConfirmed for a shipped order, none for a rejected one.
        let want = usize::from(outcome.0 > 0);
        if confirmations.get(id).copied().unwrap_or(0) != want {
            eprintln!(
                "{id}: {:?} confirmations, outcome {outcome:?}",
                confirmations.get(id)
            );
            confirmations_wrong += 1;
        }
    }
    // Outcomes or confirmations of orders nobody got a 202 for.
    let strays = outcomes
        .keys()
        .chain(confirmations.keys())
        .filter(|id| !accepted.contains(*id))
        .collect::<BTreeSet<_>>()
        .len();
    if strays > 0 {
        eprintln!("{strays} orders with an outcome but no 202");
    }
    lost += strays;

    // Supply per product: initial stock plus restocks.
    let mut supply: BTreeMap<String, i64> = plan.initial.clone();
    for (product, _, quantity) in &plan.restocks {
        *supply.get_mut(product).unwrap() += quantity;
    }
    // Units confirmed per product. More than the supply is overselling, whatever the ledger
    // says.
    let mut confirmed_units: BTreeMap<String, i64> = BTreeMap::new();
    for confirmed in &by_topic["OrderConfirmed"] {
        for item in confirmed.value["items"].as_array().unwrap() {
            *confirmed_units
                .entry(item["product_id"].as_str().unwrap().to_string())
                .or_default() += item["quantity"].as_i64().unwrap();
        }
    }
    // Products sold beyond their supply, by either sign below.
    let mut oversold = BTreeSet::new();
    for (product, units) in &confirmed_units {
        let have = supply.get(product).copied().unwrap_or(0);
        if *units > have {
            eprintln!("{product}: {units} units confirmed, only {have} supplied: oversold");
            oversold.insert(product.clone());
        }
    }
    // The ledger replayed from the catalog, one product at a time in its order (one product,
    // one partition): the running stock must never go below zero (the ledger's own `stock`
    // field is unsigned and cannot show it), and each entry's `stock` must be the previous
    // one plus its delta (a stock that jumps back, e.g. state restored from the catalog
    // again, breaks the chain).
    let mut running: BTreeMap<String, i64> = plan.initial.clone();
    let mut previous: BTreeMap<String, i64> = plan.initial.clone();
    let mut ledger_breaks = 0;
    let mut seen = BTreeSet::new();
    for entry in &by_topic["InventoryLedger"] {
        if !seen.insert(entry.ce_id().to_string()) {
            continue; // counted in duplicate_ids
        }
        let product = field(entry, "product_id");
        let delta = entry.value["delta"].as_i64().unwrap();
        let stock = entry.value["stock"].as_i64().unwrap();
        let now = running.entry(product.clone()).or_insert(0);
        *now += delta;
        if *now < 0 && oversold.insert(product.clone()) {
            eprintln!("{product}: the ledger's deltas take the stock to {now}: oversold");
        }
        let before = previous.insert(product.clone(), stock).unwrap_or(0);
        if stock != before + delta {
            eprintln!(
                "{product}: ledger entry {} says stock {stock} after delta {delta}, but the \
                 stock before was {before}",
                entry.ce_id()
            );
            ledger_breaks += 1;
        }
    }
    // The current stock (last ledger entry, or the catalog) is supply − confirmed.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for entry in &by_topic["InventoryLedger"] {
        last.insert(
            field(entry, "product_id"),
            entry.value["stock"].as_i64().unwrap(),
        );
    }
    let mut stock_mismatches = 0;
    for (product, have_supply) in &supply {
        let want = have_supply - confirmed_units.get(product).copied().unwrap_or(0);
        let have = last.get(product).copied().unwrap_or(plan.initial[product]);
        if have != want {
            eprintln!("stock of {product}: ledger says {have}, expected {want}");
            stock_mismatches += 1;
        }
    }

    // Each notification delivered exactly once.
    let notification_ids: BTreeSet<&str> = notifications.iter().map(|n| n.ce_id()).collect();
    let deliveries = count_by(&by_topic["NotificationDelivered"], |d| {
        field(d, "notification_id")
    });
    let deliveries_wrong = notification_ids
        .iter()
        .filter(|id| deliveries.get(**id).copied() != Some(1))
        .count()
        + deliveries
            .keys()
            .filter(|id| !notification_ids.contains(id.as_str()))
            .count();

    Checked {
        accepted: accepted.len(),
        shipped,
        rejected,
        lost,
        duplicated_outcomes,
        confirmations_wrong,
        duplicate_ids,
        stock_mismatches,
        ledger_breaks,
        oversold: oversold.len(),
        deliveries_wrong,
    }
}

pub fn report(name: &str, checked: &Checked, elapsed: Duration, recoveries: &[Duration]) {
    eprintln!(
        "chaos[{name}]: orders accepted {}, shipped {}, rejected {}, lost {}, duplicated outcomes {}, \
         confirmations not one per shipped order {}, duplicate ids {}, stock mismatches {}, \
         ledger breaks {}, oversold {}, deliveries not exactly once {}; \
         {:.1}s; recovery after each kill (kill → ready): {:?}",
        checked.accepted,
        checked.shipped,
        checked.rejected,
        checked.lost,
        checked.duplicated_outcomes,
        checked.confirmations_wrong,
        checked.duplicate_ids,
        checked.stock_mismatches,
        checked.ledger_breaks,
        checked.oversold,
        checked.deliveries_wrong,
        elapsed.as_secs_f64(),
        recoveries,
    );
    assert_eq!(checked.lost, 0, "lost orders");
    assert_eq!(checked.duplicated_outcomes, 0, "orders with two outcomes");
    assert_eq!(
        checked.confirmations_wrong, 0,
        "orders whose confirmations do not match their outcome"
    );
    assert_eq!(
        checked.duplicate_ids, 0,
        "committed events with the same ce_id"
    );
    assert_eq!(checked.oversold, 0, "oversold products");
    assert_eq!(
        checked.ledger_breaks, 0,
        "ledger entries that do not follow"
    );
    assert_eq!(checked.stock_mismatches, 0, "stock does not add up");
    assert_eq!(
        checked.deliveries_wrong, 0,
        "notifications not delivered exactly once"
    );
    assert!(
        checked.rejected > 0,
        "the plan must make some orders fail for lack of stock"
    );
    assert_eq!(checked.shipped + checked.rejected, checked.accepted);
}

pub fn broker_script(command: &str) {
    let status = std::process::Command::new(super::repo().join("scripts/kafka.sh"))
        .arg(command)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/kafka.sh {command} failed");
}

/// The faults of a chaos run besides the kills, each applied once at its point of the load.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// A clean broker restart (a few seconds down), half-way.
    pub broker_restart: bool,
    /// The broker down this long (longer than the transaction timeout), at a third.
    pub broker_outage: Option<Duration>,
    /// An instance frozen (SIGSTOP) this long (past the session timeout), at two thirds.
    pub freeze: Option<Duration>,
}

impl Faults {
    /// From CHAOS_BROKER_RESTART (1 to restart), CHAOS_BROKER_OUTAGE and CHAOS_FREEZE
    /// (seconds; 0 for none).
    pub fn from_env() -> Self {
        let seconds = |name| {
            Some(env_usize(name, 0))
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s as u64))
        };
        Faults {
            broker_restart: env_usize("CHAOS_BROKER_RESTART", 0) == 1,
            broker_outage: seconds("CHAOS_BROKER_OUTAGE"),
            freeze: seconds("CHAOS_FREEZE"),
        }
    }
}

/// What happens at one point of the load.
pub enum Action {
    /// SIGKILL of an instance (by its index, modulo their count), then its start again.
    Kill(usize),
    /// A clean restart of the single broker.
    BrokerRestart,
    /// The single broker stopped this long.
    BrokerOutage(Duration),
    /// An instance frozen with SIGSTOP this long.
    Freeze(usize, Duration),
    /// A fault of the test's own (e.g. a cluster's broker killed), run to its end.
    Custom(CustomFault),
}

/// A fault of a test's own: run once at its point of the load, the load going on meanwhile.
pub type CustomFault = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

pub async fn apply(
    action: Action,
    instances: &[Arc<Mutex<TestPipeline>>],
    at: usize,
) -> Option<Duration> {
    let started = Instant::now();
    match action {
        Action::Kill(victim) => {
            let victim = instances[victim % instances.len()].clone();
            tokio::task::spawn_blocking(move || {
                let mut host = victim.blocking_lock();
                host.stop("KILL");
                host.start();
            })
            .await
            .unwrap();
            eprintln!("kill at order {at}: back in {:?}", started.elapsed());
            return Some(started.elapsed());
        }
        Action::BrokerRestart => {
            tokio::task::spawn_blocking(|| broker_script("restart"))
                .await
                .unwrap();
            eprintln!("broker restarted at order {at} in {:?}", started.elapsed());
        }
        Action::BrokerOutage(down) => {
            tokio::task::spawn_blocking(|| broker_script("stop"))
                .await
                .unwrap();
            // The fault lasts this long (not a wait for a condition).
            tokio::time::sleep(down).await;
            tokio::task::spawn_blocking(|| broker_script("start"))
                .await
                .unwrap();
            eprintln!(
                "broker down at order {at} for {:?} in all",
                started.elapsed()
            );
        }
        Action::Freeze(victim, frozen) => {
            let pid = instances[victim % instances.len()]
                .lock()
                .await
                .pid()
                .unwrap();
            let signal = |name: &str| {
                let status = std::process::Command::new("kill")
                    .args([format!("-{name}"), pid.to_string()])
                    .status()
                    .unwrap();
                assert!(status.success(), "kill -{name} {pid}");
            };
            signal("STOP");
            tokio::time::sleep(frozen).await;
            signal("CONT");
            eprintln!("instance frozen at order {at} for {frozen:?}");
        }
        Action::Custom(fault) => {
            fault().await;
            eprintln!("fault at order {at}: over in {:?}", started.elapsed());
        }
    }
    None
}

/// What a load run saw.
pub struct Load {
    /// The orders answered `202`.
    pub accepted: BTreeSet<String>,
    /// Kill → ready of each instance kill.
    pub recoveries: Vec<Duration>,
    /// When each order was answered `202`, and how long it took from its first try.
    pub answers: Vec<(Instant, Duration)>,
}

impl Load {
    /// The longest time any one order took, from its first try to its `202`.
    pub fn longest_request(&self) -> Duration {
        self.answers
            .iter()
            .map(|(_, took)| *took)
            .max()
            .unwrap_or_default()
    }

    /// The longest time between `from` and `to` in which no order was accepted: what clients
    /// saw of a fault.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut times: Vec<Instant> = self
            .answers
            .iter()
            .map(|(at, _)| *at)
            .filter(|at| *at > from && *at < to)
            .collect();
        times.sort();
        let mut previous = from;
        let mut longest = Duration::ZERO;
        for at in times.into_iter().chain([to]) {
            longest = longest.max(at - previous);
            previous = at;
        }
        longest
    }
}

/// The kills spread over the posting, the other faults at fixed points.
pub fn planned_actions(
    total: usize,
    kills: usize,
    faults: Faults,
    instances: usize,
) -> Vec<(usize, Action)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut actions: Vec<(usize, Action)> = (0..kills)
        .map(|k| {
            let mark =
                (k + 1) * total / (kills + 2) + rng.random_range(0..total / (kills + 2) / 2 + 1);
            (mark, Action::Kill(k))
        })
        .collect();
    if faults.broker_restart {
        actions.push((total / 2, Action::BrokerRestart));
    }
    if let Some(down) = faults.broker_outage {
        actions.push((total / 3, Action::BrokerOutage(down)));
    }
    if let Some(frozen) = faults.freeze {
        actions.push((total * 2 / 3, Action::Freeze(instances - 1, frozen)));
    }
    actions
}

/// Drives the load over `instances` (each order sticks to one instance) while `kills`
/// SIGKILLs hit them in turn and `faults` happen; returns the accepted orders and the
/// recovery times of the kills.
pub async fn run_load(
    instances: Vec<Arc<Mutex<TestPipeline>>>,
    https: Vec<String>,
    plan: &Plan,
    kills: usize,
    faults: Faults,
) -> (BTreeSet<String>, Vec<Duration>) {
    let actions = planned_actions(plan.orders.len(), kills, faults, instances.len());
    let load = run_load_with(instances, https, plan, actions).await;
    (load.accepted, load.recoveries)
}

/// Drives the load over `instances` (each order sticks to one instance, `CLIENTS` clients)
/// and applies each action once the load reached its order number.
pub async fn run_load_with(
    instances: Vec<Arc<Mutex<TestPipeline>>>,
    https: Vec<String>,
    plan: &Plan,
    mut actions: Vec<(usize, Action)>,
) -> Load {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(std::sync::Mutex::new((BTreeSet::new(), Vec::new())));
    let orders = Arc::new(plan.orders.clone());
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, next, answers) = (client.clone(), next.clone(), answers.clone());
            let (orders, https) = (orders.clone(), https.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((id, body)) = orders.get(i) else {
                        break;
                    };
                    let http = &https[i % https.len()];
                    let started = Instant::now();
                    let status = post_until_final(&client, http, "/orders", body).await;
                    assert_eq!(status, 202, "order {id}");
                    let mut answers = answers.lock().unwrap();
                    answers.0.insert(id.clone());
                    answers.1.push((Instant::now(), started.elapsed()));
                }
            })
        })
        .collect();
    // Restocks go through the pipeline too.
    for (product, restock_id, quantity) in &plan.restocks {
        let body = format!(r#"{{"quantity": {quantity}, "restock_id": "{restock_id}"}}"#);
        let path = format!("/inventory/{product}/restock");
        let status = post_until_final(&client, &https[0], &path, &body).await;
        assert_eq!(status, 202);
    }
    let total = plan.orders.len();
    actions.sort_by_key(|(mark, _)| *mark);
    let mut recoveries = Vec::new();
    for (mark, action) in actions {
        while next.load(Ordering::Relaxed) < mark && next.load(Ordering::Relaxed) < total {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        recoveries.extend(apply(action, &instances, next.load(Ordering::Relaxed)).await);
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let (accepted, answers) = std::mem::take(&mut *answers.lock().unwrap());
    Load {
        accepted,
        recoveries,
        answers,
    }
}
