//! What the faulty component does with one event, chosen by the payload's `"fault"` field.

use stagehost_sdk::{StageFailure, StageInput, StageOutput};

/// Output name of the pass-through (and of the malformed output).
pub const OUTPUT: &str = "out";
/// An output name no stage's `outputs` table maps to a topic.
pub const UNKNOWN_OUTPUT: &str = "nowhere";
/// The payload of the `"malformed"` fault: not a JSON document.
pub const MALFORMED_PAYLOAD: &str = "{not json";
/// The panic message of the `"trap"` fault.
pub const TRAP_MESSAGE: &str = "faulty plugin trapped on purpose";
/// The reject message of the `"reject"` fault.
pub const REJECT_MESSAGE: &str = "faulty plugin rejected the event";
/// The retry message of the `"retry"` and `"retry-once"` faults.
pub const RETRY_MESSAGE: &str = "faulty plugin asks for a retry";
/// The header that tells the `"retry-once"` fault which attempt this is (1 is the first).
pub const ATTEMPT_HEADER: &str = "stagehost-attempt";

/// A misbehaviour, named by the payload's `"fault"` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `"loop"`: never return.
    Loop,
    /// `"memory"`: allocate until the memory limit stops the instance.
    Memory,
    /// `"trap"`: panic (a trap, as plugins are built with `panic = "abort"`).
    Trap,
    /// `"malformed"`: one output `out` whose payload is not JSON.
    Malformed,
    /// `"unknown-output"`: one output to the name `nowhere`.
    UnknownOutput,
    /// `"reject"`: reject the event.
    Reject,
    /// `"retry"`: ask for a retry, every time.
    Retry,
    /// `"retry-once"`: ask for a retry unless the `stagehost-attempt` header is 2 or more.
    RetryOnce,
}

impl Fault {
    /// The fault the payload asks for: `Ok(None)` when the payload is not a JSON object or
    /// has no `"fault"` field.
    ///
    /// # Errors
    /// [`StageFailure::Reject`] if `"fault"` is not a string naming a known fault.
    pub fn of(payload: &str) -> Result<Option<Self>, StageFailure> {
        let Ok(serde_json::Value::Object(object)) = serde_json::from_str(payload) else {
            return Ok(None);
        };
        let Some(fault) = object.get("fault") else {
            return Ok(None);
        };
        let fault = match fault.as_str() {
            Some("loop") => Self::Loop,
            Some("memory") => Self::Memory,
            Some("trap") => Self::Trap,
            Some("malformed") => Self::Malformed,
            Some("unknown-output") => Self::UnknownOutput,
            Some("reject") => Self::Reject,
            Some("retry") => Self::Retry,
            Some("retry-once") => Self::RetryOnce,
            _ => {
                return Err(StageFailure::Reject(format!(
                    "faulty plugin does not know the fault {fault}"
                )));
            }
        };
        Ok(Some(fault))
    }
}

/// Handles one event: misbehaves as its payload's `"fault"` field asks, or passes it through
/// (one output `out` with the same key and payload).
///
/// # Errors
/// [`StageFailure::Reject`] for `"reject"` or an unknown fault, [`StageFailure::Retry`] for
/// `"retry"` (and `"retry-once"` on a first attempt).
///
/// # Panics
/// For `"trap"`, on purpose. `"loop"` and `"memory"` never return.
pub fn handle(event: &StageInput) -> Result<Vec<StageOutput>, StageFailure> {
    match Fault::of(&event.payload)? {
        None => Ok(vec![pass_through(event)]),
        Some(Fault::Loop) => spin_forever(),
        Some(Fault::Memory) => allocate_forever(),
        Some(Fault::Trap) => panic!("{TRAP_MESSAGE}"),
        Some(Fault::Malformed) => Ok(vec![StageOutput {
            output: OUTPUT.to_owned(),
            key: event.key.clone(),
            payload: MALFORMED_PAYLOAD.to_owned(),
        }]),
        Some(Fault::UnknownOutput) => Ok(vec![StageOutput {
            output: UNKNOWN_OUTPUT.to_owned(),
            key: event.key.clone(),
            payload: event.payload.clone(),
        }]),
        Some(Fault::Reject) => Err(StageFailure::Reject(REJECT_MESSAGE.to_owned())),
        Some(Fault::Retry) => Err(StageFailure::Retry(RETRY_MESSAGE.to_owned())),
        Some(Fault::RetryOnce) if attempt(event) >= 2 => Ok(vec![pass_through(event)]),
        Some(Fault::RetryOnce) => Err(StageFailure::Retry(RETRY_MESSAGE.to_owned())),
    }
}

/// The event unchanged as output `out`.
fn pass_through(event: &StageInput) -> StageOutput {
    StageOutput {
        output: OUTPUT.to_owned(),
        key: event.key.clone(),
        payload: event.payload.clone(),
    }
}

/// The attempt number in the `stagehost-attempt` header; 1 when it is absent or not a number.
fn attempt(event: &StageInput) -> u64 {
    event
        .header(ATTEMPT_HEADER)
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(1)
}

/// Never returns; `black_box` keeps the optimiser from removing the loop.
fn spin_forever() -> ! {
    let mut counter = 0_u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

/// Allocates 1 MiB chunks filled with a non-zero byte (so they are really written) and
/// keeps them all, until the allocation traps.
fn allocate_forever() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        chunks.push(vec![0xA5; 1 << 20]);
        std::hint::black_box(&mut chunks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &str) -> StageInput {
        StageInput::new("evt-1", "Test", Some("key-1"), payload)
    }

    fn pass(payload: &str) -> Vec<StageOutput> {
        vec![StageOutput {
            output: "out".into(),
            key: Some("key-1".into()),
            payload: payload.into(),
        }]
    }

    #[test]
    fn events_without_a_fault_pass_through() {
        for payload in [
            r#"{"order_id": "o-1"}"#,
            "{not json",
            "[1, 2]",
            r#""fault""#,
            "",
        ] {
            assert_eq!(handle(&event(payload)), Ok(pass(payload)), "{payload}");
        }
        let keyless = StageInput::new("e", "T", None, "{}");
        assert_eq!(handle(&keyless).expect("passes")[0].key, None);
    }

    #[test]
    fn bad_outputs_are_returned_not_refused() {
        let out = handle(&event(r#"{"fault": "malformed"}"#)).expect("ok");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].output, "out");
        assert_eq!(out[0].payload, "{not json");
        assert!(serde_json::from_str::<serde_json::Value>(&out[0].payload).is_err());

        let payload = r#"{"fault": "unknown-output", "n": 1}"#;
        let out = handle(&event(payload)).expect("ok");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].output, "nowhere");
        assert_eq!(out[0].payload, payload);
        assert_eq!(out[0].key.as_deref(), Some("key-1"));
    }

    #[test]
    fn reject_and_retry_are_typed() {
        assert_eq!(
            handle(&event(r#"{"fault": "reject"}"#)),
            Err(StageFailure::Reject(
                "faulty plugin rejected the event".into()
            ))
        );
        assert_eq!(
            handle(&event(r#"{"fault": "retry"}"#)),
            Err(StageFailure::Retry("faulty plugin asks for a retry".into()))
        );
        let err = handle(&event(r#"{"fault": "explode"}"#)).expect_err("unknown fault");
        assert!(matches!(err, StageFailure::Reject(_)));
        assert!(err.message().contains("\"explode\""), "{err}");
        let err = handle(&event(r#"{"fault": 3}"#)).expect_err("not a string");
        assert!(err.message().contains('3'), "{err}");
    }

    #[test]
    fn retry_once_passes_from_the_second_attempt() {
        let payload = r#"{"fault": "retry-once"}"#;
        let retry = Err(StageFailure::Retry(RETRY_MESSAGE.into()));
        assert_eq!(handle(&event(payload)), retry);
        for value in ["1", "0", "x", ""] {
            let first = event(payload).with_header("stagehost-attempt", value);
            assert_eq!(handle(&first), retry, "attempt {value:?}");
        }
        for value in ["2", "3", "10"] {
            let later = event(payload).with_header("stagehost-attempt", value);
            assert_eq!(handle(&later), Ok(pass(payload)), "attempt {value:?}");
        }
        // Another header's value does not count.
        let other = event(payload).with_header("attempt", "2");
        assert_eq!(handle(&other), retry);
    }

    #[test]
    #[should_panic(expected = "faulty plugin trapped on purpose")]
    fn trap_panics() {
        let _ = handle(&event(r#"{"fault": "trap"}"#));
    }

    #[test]
    fn faults_are_named_by_the_fault_field() {
        assert_eq!(Fault::of(r#"{"fault": "loop"}"#), Ok(Some(Fault::Loop)));
        assert_eq!(Fault::of(r#"{"fault": "memory"}"#), Ok(Some(Fault::Memory)));
        assert_eq!(Fault::of(r#"{"other": "loop"}"#), Ok(None));
        assert_eq!(Fault::of(r#"[{"fault": "loop"}]"#), Ok(None));
    }
}
