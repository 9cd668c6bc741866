//! A message's payload on the commands stream, decoded as the applier decodes it.
//!
//! Properties: decoding never panics; a refusal carries one of the dead-letter reasons the
//! applier knows; an accepted command satisfies every bound `validate` promises, is kept at
//! microsecond precision, and survives re-encoding unchanged — the ledger stores the
//! command's JSON and compares a redelivery against it, so a command that changed on the
//! way through JSON would be dead-lettered as an `id_conflict` of itself.
#![no_main]

use learning_progress::messaging::NatsConfig;
use learning_progress::model::{Action, MAX_SEQ, decode_command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let command = match decode_command(payload) {
        Ok(command) => command,
        Err(error) => {
            assert!(
                matches!(error.reason(), "malformed" | "unknown_type" | "invalid"),
                "unexpected reason {:?}",
                error.reason()
            );
            assert!(!error.to_string().is_empty());
            return;
        }
    };

    assert!((1..=MAX_SEQ).contains(&command.seq));
    assert_eq!(command.occurred_at.timestamp_subsec_nanos() % 1_000, 0);
    command.validate().expect("a decoded command is valid");
    if let Action::AssessmentRecorded {
        score, max_score, ..
    } = command.action
    {
        assert!(max_score.is_finite() && max_score > 0.0);
        assert!(score.is_finite() && (0.0..=max_score).contains(&score));
        // PostgreSQL's jsonb prints numbers as plain decimals (`1e-7` comes back `0.0000001`)
        for x in [score, max_score] {
            let plain = plain_decimal(&serde_json::to_string(&x).unwrap());
            let back: f64 = serde_json::from_str(&plain).expect("a plain decimal parses");
            assert_eq!(
                back.to_bits(),
                x.to_bits(),
                "{x} read back from {plain} as {back}"
            );
        }
    }

    // as the ledger keeps it (jsonb: the same JSON text, reformatted) and reads it back
    let text = serde_json::to_string(&command).expect("a command serialises");
    let again = decode_command(text.as_bytes()).expect("a re-encoded command decodes");
    assert_eq!(again, command, "re-encoding changed the command: {text}");
    let value = serde_json::to_value(&command).expect("a command serialises");
    let stored: learning_progress::model::ProgressCommand =
        serde_json::from_value(value).expect("the stored form decodes");
    assert_eq!(stored, command);

    // the subject it must have come on names exactly its learner and track
    let subject = NatsConfig::isolated("nats://unused", "fuzz")
        .command_subject(command.user_id, command.track_id);
    let tail: Vec<&str> = subject.rsplitn(3, '.').collect();
    assert_eq!(tail[1], command.user_id.to_string());
    assert_eq!(tail[0], command.track_id.to_string());
    assert_eq!(
        serde_json::to_value(&command).unwrap()["type"],
        command.kind()
    );
});

/// `1.5e-7` as `0.00000015`, `2e3` as `2000`: how PostgreSQL's `numeric` prints a number.
fn plain_decimal(number: &str) -> String {
    let (mantissa, exponent) = match number.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().expect("a JSON exponent")),
        None => return number.to_owned(),
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    // the decimal point sits after `point` digits
    let point = int.len() as i32 + exponent;
    let text = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (a, b) = digits.split_at(point as usize);
        format!("{a}.{b}")
    };
    format!("{sign}{text}")
}
