//! Events between services: protobuf messages of `events.proto` inside an `EventEnvelope`, on
//! subject `<shop>.<aggregate>.<event>` of the shop's stream `<SHOP>_EVENTS`.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prost::Message as _;
use souk_protos::v1::{
    CatalogChanged, EventEnvelope, OrderCancelled, OrderConfirmed, OrderCreated, StockRejected,
    StockReserved,
};
use uuid::Uuid;

use crate::config::ShopName;

/// An event message and its type name (`order.created`), which is also its subject's tail.
pub trait Event: prost::Message + Default {
    const TYPE: &'static str;
}

impl Event for OrderCreated {
    const TYPE: &'static str = "order.created";
}
impl Event for StockReserved {
    const TYPE: &'static str = "stock.reserved";
}
impl Event for StockRejected {
    const TYPE: &'static str = "stock.rejected";
}
impl Event for OrderConfirmed {
    const TYPE: &'static str = "order.confirmed";
}
impl Event for OrderCancelled {
    const TYPE: &'static str = "order.cancelled";
}
impl Event for CatalogChanged {
    const TYPE: &'static str = "catalog.changed";
}

/// The shop's stream: every subject of the shop, one stream per shop.
pub fn stream_name(shop: &ShopName) -> String {
    souk_contract::bus::stream_name(shop.as_str())
}

/// The subject an event type travels on in this shop.
pub fn subject(shop: &ShopName, event_type: &str) -> String {
    souk_contract::bus::subject(shop.as_str(), event_type)
}

/// Where a consumer sends what it could not handle.
pub fn dead_letter_subject(shop: &ShopName, consumer: &str) -> String {
    souk_contract::bus::dead_letter_subject(shop.as_str(), consumer)
}

/// Why an incoming message cannot be an event: handling it again will not help.
#[derive(Debug, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct MalformedEvent(pub String);

/// An event with its metadata, as it travels.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub id: Uuid,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub traceparent: Option<String>,
    pub payload: Bytes,
}

impl Envelope {
    /// A new event with a fresh id (UUIDv7: ordered by time), in the current trace.
    pub fn new<E: Event>(event: &E) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: E::TYPE.to_owned(),
            occurred_at: Utc::now(),
            traceparent: crate::trace::current().map(|t| t.child().to_string()),
            payload: event.encode_to_vec().into(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        EventEnvelope {
            id: self.id.to_string(),
            r#type: self.event_type.clone(),
            occurred_at: Some(crate::time::to_proto(self.occurred_at)),
            traceparent: self.traceparent.clone().unwrap_or_default(),
            payload: self.payload.to_vec(),
        }
        .encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MalformedEvent> {
        let envelope = EventEnvelope::decode(bytes)
            .map_err(|err| MalformedEvent(format!("envelope: {err}")))?;
        let id = Uuid::parse_str(&envelope.id)
            .map_err(|_| MalformedEvent(format!("event id {:?}", envelope.id)))?;
        if envelope.r#type.is_empty() {
            return Err(MalformedEvent("event type missing".into()));
        }
        Ok(Self {
            id,
            event_type: envelope.r#type,
            occurred_at: crate::time::from_proto(envelope.occurred_at.as_ref()),
            traceparent: Some(envelope.traceparent).filter(|t| !t.is_empty()),
            payload: envelope.payload.into(),
        })
    }

    /// The event inside, when it is of type `E`.
    pub fn event<E: Event>(&self) -> Result<E, MalformedEvent> {
        if self.event_type != E::TYPE {
            return Err(MalformedEvent(format!(
                "expected {}, got {}",
                E::TYPE,
                self.event_type
            )));
        }
        E::decode(self.payload.as_ref())
            .map_err(|err| MalformedEvent(format!("{}: {err}", E::TYPE)))
    }
}

/// A UUID field of an event, or why the event is malformed.
pub fn uuid_field(name: &str, value: &str) -> Result<Uuid, MalformedEvent> {
    Uuid::parse_str(value).map_err(|_| MalformedEvent(format!("{name} {value:?} is not a UUID")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_check_their_type() {
        let event = StockReserved {
            order_id: Uuid::new_v4().to_string(),
        };
        let envelope = Envelope::new(&event);
        let decoded = Envelope::decode(&envelope.encode()).expect("decodes");
        assert_eq!(decoded.id, envelope.id);
        assert_eq!(decoded.event::<StockReserved>().expect("right type"), event);
        assert!(decoded.event::<StockRejected>().is_err());
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(Envelope::decode(b"\xff\xff\xff").is_err());
        let no_id = EventEnvelope {
            r#type: "order.created".into(),
            ..Default::default()
        };
        assert!(Envelope::decode(&no_id.encode_to_vec()).is_err());
    }

    #[test]
    fn names_are_prefixed_by_the_shop() {
        let shop: ShopName = "demo-shop".parse().expect("valid");
        assert_eq!(stream_name(&shop), "DEMO-SHOP_EVENTS");
        assert_eq!(
            subject(&shop, OrderCreated::TYPE),
            "demo-shop.order.created"
        );
        assert_eq!(
            dead_letter_subject(&shop, "product"),
            "demo-shop.deadletter.product"
        );
    }
}
