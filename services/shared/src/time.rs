//! Conversions between `chrono` timestamps and protobuf `Timestamp`s.

use chrono::{DateTime, Utc};

pub fn to_proto(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A missing or out-of-range timestamp becomes the Unix epoch: timestamps come from our own
/// services, so this only guards against a malformed message.
pub fn from_proto(at: Option<&prost_types::Timestamp>) -> DateTime<Utc> {
    at.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_microseconds() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_000).expect("valid");
        assert_eq!(from_proto(Some(&to_proto(at))), at);
    }
}
