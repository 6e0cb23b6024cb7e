//! The closing table of `make bench`: each figure of issue 13's and issue 23's target tables
//! (issue 23's target where both name one), what this run measured, the target, and whether
//! it is met (`not run` when its row was not selected).

/// The figures the targets are about, as measured by this run's rows.
#[derive(Debug, Default)]
pub struct Figures {
    /// Row 2: raw consume→produce, msg/s.
    pub raw: Option<f64>,
    /// Row 3: one stage with the warehouse plugin, events/s.
    pub warehouse: Option<f64>,
    /// Row 3: one stage with the identity plugin, events/s.
    pub identity: Option<f64>,
    /// Row 4: whole pipeline draining a backlog, at-least-once, orders/s.
    pub whole_alo: Option<f64>,
    /// Row 4: the same, exactly-once.
    pub whole_eos: Option<f64>,
    /// Row 6: host CPU s per 1,000 orders draining the backlog, per mode.
    pub drain_cpu: Vec<(String, f64)>,
    /// Row 5 at 100 orders/s (at-least-once): p50 and p99, µs.
    pub e2e_alo_100: Option<(u64, u64)>,
    /// Row 5 at 1,000 orders/s (at-least-once): p99, µs.
    pub e2e_alo_1000_p99: Option<u64>,
    /// Row 9: p99 at 100 orders/s exactly-once, µs.
    pub e2e_eos_100_p99: Option<u64>,
    /// Row 8, default modes: p50 and p99 `POST` → OrderPickedAndPacked, µs.
    pub packed_eos: Option<(u64, u64)>,
    /// Row 8, every stage at-least-once.
    pub packed_alo: Option<(u64, u64)>,
    /// Row 7: completed orders/s with 32 clients.
    pub clients_32: Option<f64>,
    /// Row 8: host + broker CPU ms per order at 50 orders/s (default modes).
    pub cpu_per_order: Option<f64>,
    /// Row 10: host CPU when idle, cores.
    pub idle_cores: Option<f64>,
    /// Row 8, default modes: the host's peak RSS, MiB.
    pub rss_at_50: Option<f64>,
    /// Row 12: Kafka records written per order.
    pub records_per_order: Option<f64>,
}

/// One line: figure, measured, target, met.
struct Line {
    figure: &'static str,
    measured: Option<String>,
    target: &'static str,
    met: Option<bool>,
}

fn line(figure: &'static str, target: &'static str, measured: Option<(String, bool)>) -> Line {
    let (measured, met) = match measured {
        Some((text, met)) => (Some(text), Some(met)),
        None => (None, None),
    };
    Line {
        figure,
        measured,
        target,
        met,
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Figures {
    fn lines(&self) -> Vec<Line> {
        let ratio = |stage: Option<f64>, at_least: f64| {
            let (stage, raw) = (stage?, self.raw?);
            let ratio = stage / raw;
            Some((format!("{ratio:.2}"), ratio >= at_least))
        };
        let drain = (!self.drain_cpu.is_empty()).then(|| {
            let text = self
                .drain_cpu
                .iter()
                .map(|(mode, cpu)| format!("{cpu:.2} s ({mode})"))
                .collect::<Vec<_>>()
                .join(", ");
            let met = self.drain_cpu.iter().all(|(_, cpu)| *cpu <= 0.3);
            (text, met)
        });
        let pair = |figures: Option<(u64, u64)>, p50: f64, p99: f64| {
            figures.map(|(a, b)| {
                (
                    format!("{:.1} / {:.1} ms", ms(a), ms(b)),
                    ms(a) <= p50 && ms(b) <= p99,
                )
            })
        };
        vec![
            line(
                "identity stage / raw passthrough",
                "≥ 0.5",
                ratio(self.identity, 0.5),
            ),
            line(
                "warehouse stage / raw passthrough",
                "≥ 0.3",
                ratio(self.warehouse, 0.3),
            ),
            line(
                "whole pipeline, at-least-once",
                "≥ 5,000 orders/s",
                self.whole_alo
                    .map(|r| (format!("{r:.0} orders/s"), r >= 5000.0)),
            ),
            line(
                "exactly-once / at-least-once throughput",
                "≥ 0.9",
                self.whole_eos.zip(self.whole_alo).map(|(eos, alo)| {
                    let ratio = eos / alo;
                    (format!("{ratio:.2}"), ratio >= 0.9)
                }),
            ),
            line(
                "e2e at 100 orders/s, at-least-once, p50 / p99",
                "≤ 20 / ≤ 50 ms",
                pair(self.e2e_alo_100, 20.0, 50.0),
            ),
            line(
                "e2e at 100 orders/s, exactly-once, p99",
                "≤ 150 ms",
                self.e2e_eos_100_p99
                    .map(|p99| (format!("{:.1} ms", ms(p99)), ms(p99) <= 150.0)),
            ),
            line(
                "e2e at 1,000 orders/s, at-least-once, p99",
                "≤ 100 ms",
                self.e2e_alo_1000_p99
                    .map(|p99| (format!("{:.1} ms", ms(p99)), ms(p99) <= 100.0)),
            ),
            line(
                "host CPU per 1,000 orders (backlog drain)",
                "≤ 0.3 s",
                drain,
            ),
            line(
                "POST → OrderPickedAndPacked at 50 orders/s, default (exactly-once), p50 / p99",
                "≤ 40 / ≤ 100 ms",
                pair(self.packed_eos, 40.0, 100.0),
            ),
            line(
                "the same with every stage at-least-once, p50 / p99",
                "≤ 8 / ≤ 15 ms (the Go system's)",
                pair(self.packed_alo, 8.0, 15.0),
            ),
            line(
                "orders/s with 32 concurrent HTTP clients, default modes",
                "≥ 2,000",
                self.clients_32
                    .map(|r| (format!("{r:.0} orders/s"), r >= 2000.0)),
            ),
            line(
                "host + broker CPU per order at 50 orders/s, default modes",
                "≤ 14 ms (the Go system's)",
                self.cpu_per_order
                    .filter(|c| c.is_finite())
                    .map(|c| (format!("{c:.1} ms"), c <= 14.0)),
            ),
            line(
                "host peak RSS at 50 orders/s, default modes",
                "≤ 130 MiB",
                self.rss_at_50.map(|m| (format!("{m:.0} MiB"), m <= 130.0)),
            ),
            line(
                "Kafka records written per order (default modes)",
                "≤ 12 (2× the 6 business records)",
                self.records_per_order
                    .map(|r| (format!("{r:.1}"), r <= 12.0)),
            ),
            line(
                "host CPU when idle",
                "≤ 0.01 cores",
                self.idle_cores
                    .map(|c| (format!("{c:.3} cores"), c <= 0.01)),
            ),
        ]
    }

    /// The summary table in Markdown.
    pub fn render(&self) -> String {
        let mut out = String::from("| figure | measured | target | met? |\n|---|---|---|---|\n");
        for line in self.lines() {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                line.figure,
                line.measured.as_deref().unwrap_or("not run"),
                line.target,
                match line.met {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "–",
                }
            ));
        }
        out
    }
}
