//! The `stagehost trace` table: the events with their hops, the dead letters, the total.

use std::fmt::Write;

use super::model::Trace;

/// The human-readable trace: one line per event (time in UTC with milliseconds, hop from
/// the event before, topic, partition@offset, event type, id), then the dead letters, then
/// the time from the first event to the last.
pub fn render(trace: &Trace) -> String {
    let mut out = String::new();
    if trace.events.is_empty() {
        let _ = writeln!(
            out,
            "no event of key {} on the pipeline's topics ({}); check the key (an order id, \
             as in the record keys or the body's id field) and --config",
            trace.key,
            trace.topics.join(", ")
        );
    } else {
        table(trace, &mut out);
    }
    if !trace.missing_topics.is_empty() {
        let _ = writeln!(
            out,
            "not on the cluster (nothing written yet): {}",
            trace.missing_topics.join(", ")
        );
    }
    letters(trace, &mut out);
    if let Some(total) = trace.total_ms {
        let _ = writeln!(
            out,
            "\n{} event(s), {} dead letter(s); first → last {total} ms",
            trace.events.len(),
            trace.dead_letters.len()
        );
    }
    out
}

fn table(trace: &Trace, out: &mut String) {
    let header = [
        "time (UTC)",
        "+hop ms",
        "topic",
        "partition@offset",
        "event type",
        "id",
    ];
    let rows: Vec<[String; 6]> = trace
        .events
        .iter()
        .map(|event| {
            [
                event
                    .time
                    .replace('T', " ")
                    .trim_end_matches('Z')
                    .to_string(),
                event
                    .hop_ms
                    .map_or_else(|| "-".into(), |hop| hop.to_string()),
                event.topic.clone(),
                format!("{}@{}", event.partition, event.offset),
                event.event_type.clone().unwrap_or_else(|| "-".into()),
                event.id.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let [time, hop, topic, place, kind, id] = cells;
        format!(
            "{time:<w0$}  {hop:>w1$}  {topic:<w2$}  {place:<w3$}  {kind:<w4$}  {id}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        )
    };
    let _ = writeln!(out, "{}", line(header).trim_end());
    for row in &rows {
        let cells = [0, 1, 2, 3, 4, 5].map(|i| row[i].as_str());
        let _ = writeln!(out, "{}", line(cells).trim_end());
    }
}

fn letters(trace: &Trace, out: &mut String) {
    if trace.dead_letters.is_empty() {
        return;
    }
    let _ = writeln!(out, "\ndead letters:");
    for entry in &trace.dead_letters {
        let letter = &entry.letter;
        let _ = writeln!(
            out,
            "  {}  stage {}  {}  from {} {}@{}  id {}{}\n    error: {}",
            letter.timestamp,
            letter.origin.stage,
            entry.reason,
            letter.origin.source_topic,
            letter.origin.partition,
            letter.origin.offset,
            entry.id,
            entry.replayed_note(),
            letter.error,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::model::tests::event;

    #[test]
    fn a_table_of_events_and_the_total() {
        let trace = Trace::new(
            "o-1",
            vec!["OrderReceived".into(), "Notification".into()],
            Vec::new(),
            vec![
                event("Notification", 1_796_665_301_150, 3),
                event("OrderReceived", 1_796_665_301_123, 0),
            ],
            Vec::new(),
        );
        let text = render(&trace);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("time (UTC)"), "{text}");
        assert!(
            lines[1].starts_with("2026-12-07 17:41:41.123        -  OrderReceived  0@0"),
            "{text}"
        );
        assert!(lines[2].contains("     27  Notification   0@3"), "{text}");
        assert!(text.ends_with("first → last 27 ms\n"), "{text}");
    }

    #[test]
    fn a_trace_without_events_says_what_to_check() {
        let trace = Trace::new(
            "o-9",
            vec!["A".into()],
            vec!["A".into()],
            Vec::new(),
            Vec::new(),
        );
        let text = render(&trace);
        assert!(text.contains("no event of key o-9"), "{text}");
        assert!(text.contains("not on the cluster"), "{text}");
    }
}
