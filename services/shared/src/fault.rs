//! Fault points: named instants inside multi-step operations (between a payment call and the
//! commit that records it, say) where a fault-injection run makes the process die, to prove that
//! a crash at that instant loses nothing.
//!
//! Compiled in always and inert unless armed: `souk` arms one from `SOUK_FAULT_POINT`
//! (`<point>` aborts the process there, `<point>:fail` fails the operation once, as a crash of
//! that operation alone would). A point costs one uncontended lock when reached.

use std::sync::Mutex;

/// The environment variable `souk` reads to arm a fault point.
pub const ENV: &str = "SOUK_FAULT_POINT";

/// What an armed fault point does when reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Abort the process at once (no unwinding, no drop, no commit): a SIGKILL at that instant.
    Abort,
    /// Fail the operation once with an `Unavailable` error, then disarm.
    Fail,
}

static ARMED: Mutex<Option<(String, Action)>> = Mutex::new(None);

/// Parses a `SOUK_FAULT_POINT` value: `<point>` or `<point>:abort` or `<point>:fail`.
pub fn parse(value: &str) -> Result<(String, Action), String> {
    let (point, action) = value.split_once(':').unwrap_or((value, "abort"));
    let action = match action {
        "abort" => Action::Abort,
        "fail" => Action::Fail,
        other => return Err(format!("{ENV}: unknown action {other:?} (abort or fail)")),
    };
    if point.is_empty() {
        return Err(format!("{ENV}: empty fault point"));
    }
    Ok((point.to_owned(), action))
}

/// Arms `point` for this process (replacing any point armed before).
pub fn arm(point: &str, action: Action) {
    *ARMED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((point.into(), action));
}

/// Reached `point`: does what it is armed to do, if it is the armed one.
pub fn hit(point: &'static str) -> Result<(), crate::Error> {
    let mut armed = ARMED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match armed.as_ref() {
        Some((name, action)) if name == point => match action {
            Action::Abort => {
                eprintln!("fault point {point} reached: aborting");
                std::process::abort();
            }
            Action::Fail => {
                *armed = None;
                tracing::warn!(point, "fault point reached: failing");
                Err(crate::Error::Unavailable(format!(
                    "fault injected at {point}"
                )))
            }
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse() {
        assert_eq!(
            parse("cancel.after_refund"),
            Ok(("cancel.after_refund".into(), Action::Abort))
        );
        assert_eq!(
            parse("charge.after_call:fail"),
            Ok(("charge.after_call".into(), Action::Fail))
        );
        assert!(parse("x:maybe").is_err());
        assert!(parse(":fail").is_err());
    }

    #[test]
    fn an_unarmed_point_is_inert_and_fail_fires_once() {
        assert!(hit("nowhere.armed").is_ok());
        arm("test.point", Action::Fail);
        assert!(hit("other.point").is_ok());
        assert!(hit("test.point").is_err());
        assert!(hit("test.point").is_ok());
    }
}
