//! The catalog cache: product and category reads answered from memory, kept correct by the
//! product service's own `catalog.changed` events.
//!
//! Every write to the catalog (an admin's, or stock moved by the checkout) commits a
//! `catalog.changed` event through the product service's outbox; its relayer publishes it, and
//! every gateway replica, subscribed to the subject, drops what it names. So a replica serves a
//! copy only while it can hear those events:
//! - while NATS is not connected, nothing is served from memory or kept;
//! - after any (re)connection, everything is dropped, since events may have passed unheard;
//! - a copy read from the product service while an event arrived is not kept (a generation
//!   counter, bumped by every invalidation, is compared before keeping it).
//!
//! The replica that forwards an admin's write also drops the copies at once, so the writer
//! reads its own write there without waiting for the event.
//!
//! Every answer carries a strong `ETag` (a hash of the exact body) and `Cache-Control: no-cache`
//! (clients may keep it but must revalidate); `If-None-Match` with the current tag answers 304.

use std::{
    collections::{HashMap, HashSet},
    hash::Hasher as _,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use souk_protos::v1::CatalogChanged;
use souk_shared::{
    Shutdown,
    bus::Bus,
    events::{self, Envelope, Event as _},
};
use uuid::Uuid;

/// At most this many answers are kept; past it, new ones are served but not kept.
const MAX_ENTRIES: usize = 20_000;

/// `x-cache`: whether an answer came from memory (`hit`) or from the product service (`miss`).
pub(crate) const X_CACHE: &str = "x-cache";

/// What is cached: one answer of a catalog read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Product(Uuid),
    /// A page of all products (`category: None`) or of one category's.
    Page {
        category: Option<Uuid>,
        page: i64,
        page_size: i64,
    },
    Categories,
}

/// A JSON body and its strong entity tag.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    body: Bytes,
    etag: HeaderValue,
}

impl Cached {
    pub fn new(body: Bytes) -> Self {
        Self {
            etag: entity_tag(&body),
            body,
        }
    }

    /// The answer to a request with `headers`: 304 when its `If-None-Match` holds our tag.
    pub fn respond(&self, headers: &HeaderMap, hit: bool) -> Response {
        let not_modified = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .any(|value| names_tag(value, &self.etag, Comparison::Weak));
        let status = if not_modified {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        };
        let mut response = if not_modified {
            status.into_response()
        } else {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                self.body.clone(),
            )
                .into_response()
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            X_CACHE,
            HeaderValue::from_static(if hit { "hit" } else { "miss" }),
        );
        response
    }
}

/// A strong tag: the 64-bit FNV-1a hash of the body, the same on every replica and release.
pub(crate) fn entity_tag(body: &[u8]) -> HeaderValue {
    let mut hasher = Fnv1a::default();
    hasher.write(body);
    HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

#[derive(Debug)]
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// How a list of entity tags is compared with ours (RFC 9110 8.8.3.2).
#[derive(Debug, Clone, Copy)]
enum Comparison {
    /// `If-None-Match`: `W/"x"` matches `"x"`.
    Weak,
    /// `If-Match`: a weak tag matches nothing.
    Strong,
}

/// Whether a list of entity tags (an `If-None-Match` or `If-Match` value) names `etag`, or is
/// `*`.
fn names_tag(value: &HeaderValue, etag: &HeaderValue, comparison: Comparison) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let ours = etag.to_str().unwrap_or_default();
    value.split(',').map(str::trim).any(|tag| {
        let tag = match comparison {
            Comparison::Weak => tag.strip_prefix("W/").unwrap_or(tag),
            Comparison::Strong => tag,
        };
        tag == "*" || tag == ours
    })
}

/// Whether an `If-Match` value holds for `etag`: names it (strongly), or is `*`.
pub(crate) fn if_match_holds(value: &HeaderValue, etag: &HeaderValue) -> bool {
    names_tag(value, etag, Comparison::Strong)
}

/// The cache of one gateway replica.
#[derive(Debug, Default)]
pub(crate) struct CatalogCache {
    entries: RwLock<HashMap<Key, Cached>>,
    /// Bumped by every invalidation; a fill that saw another value keeps nothing.
    generation: AtomicU64,
    /// Where the catalog's events come from; none: nothing is ever kept.
    events: Option<Events>,
}

#[derive(Debug)]
struct Events {
    client: async_nats::Client,
    /// The subscription is open.
    subscribed: AtomicBool,
    /// NATS connections made when the cache was last emptied.
    connects: AtomicU64,
}

impl CatalogCache {
    /// A cache that keeps nothing (no event bus to keep it correct).
    pub fn disabled() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A cache kept correct by the `catalog.changed` events of `bus`'s shop, heard until
    /// `shutdown`.
    pub async fn subscribed(bus: &Bus, shutdown: Shutdown) -> anyhow::Result<Arc<Self>> {
        let subject = events::subject(bus.shop(), CatalogChanged::TYPE);
        let mut subscriber = bus
            .client()
            .subscribe(subject.clone())
            .await
            .map_err(|err| anyhow::anyhow!("cannot subscribe to {subject}: {err}"))?;
        let cache = Arc::new(Self {
            events: Some(Events {
                client: bus.client().clone(),
                subscribed: AtomicBool::new(true),
                connects: AtomicU64::new(u64::MAX),
            }),
            ..Self::default()
        });
        let listener = cache.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.wait() => break,
                    message = subscriber.next() => match message {
                        Some(message) => listener.heard(&message.payload),
                        None => break,
                    },
                }
            }
            if let Some(events) = &listener.events {
                events.subscribed.store(false, Ordering::SeqCst);
            }
            listener.clear();
        });
        Ok(cache)
    }

    /// Whether copies may be served and kept now: events are being heard, and none can have
    /// been missed since the cache was last emptied.
    fn live(&self) -> bool {
        let Some(events) = &self.events else {
            return false;
        };
        if !events.subscribed.load(Ordering::SeqCst)
            || events.client.connection_state() != async_nats::connection::State::Connected
        {
            return false;
        }
        let connects = events.client.statistics().connects.load(Ordering::SeqCst);
        if events.connects.load(Ordering::SeqCst) != connects {
            // A new connection: what was published while there was none went unheard.
            self.clear();
            events.connects.store(connects, Ordering::SeqCst);
        }
        true
    }

    /// The answer for `key`: from memory when there, else from `fill` (kept when nothing
    /// changed meanwhile). The flag says whether it came from memory.
    pub async fn get_or_fill<F, E>(&self, key: Key, fill: F) -> Result<(Cached, bool), E>
    where
        F: Future<Output = Result<Bytes, E>>,
    {
        let live = self.live();
        if live && let Some(hit) = self.read().get(&key).cloned() {
            return Ok((hit, true));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let cached = Cached::new(fill.await?);
        if live {
            let mut entries = self.write();
            // Under the lock invalidations take, so none slips between the check and the insert.
            if self.generation.load(Ordering::SeqCst) == generation && entries.len() < MAX_ENTRIES {
                entries.insert(key, cached.clone());
            }
        }
        Ok((cached, false))
    }

    /// Drops what a change to these products and categories makes stale: the products
    /// themselves and every page (a product's fields and stock show in pages, and a new or
    /// deleted product moves them); the category list and those categories' pages.
    pub fn invalidate(&self, products: &[Uuid], categories: &[Uuid]) {
        if products.is_empty() && categories.is_empty() {
            return;
        }
        let products: HashSet<&Uuid> = products.iter().collect();
        let categories: HashSet<Option<&Uuid>> = categories.iter().map(Some).collect();
        let mut entries = self.write();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.retain(|key, _| match key {
            Key::Product(id) => !products.contains(id),
            Key::Page { category, .. } => {
                products.is_empty() && !categories.contains(&category.as_ref())
            }
            Key::Categories => categories.is_empty(),
        });
    }

    /// Drops everything.
    pub fn clear(&self) {
        let mut entries = self.write();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }

    fn heard(&self, payload: &[u8]) {
        let changed = Envelope::decode(payload).and_then(|envelope| {
            let event = envelope.event::<CatalogChanged>()?;
            let ids = |raw: &[String]| {
                raw.iter()
                    .map(|id| events::uuid_field("id", id))
                    .collect::<Result<Vec<_>, _>>()
            };
            Ok((ids(&event.product_ids)?, ids(&event.category_ids)?))
        });
        match changed {
            Ok((products, categories)) => self.invalidate(&products, &categories),
            Err(err) => {
                // Something changed, we cannot tell what: nothing kept can be trusted.
                tracing::warn!(error = %err, "unreadable catalog event; catalog cache emptied");
                self.clear();
            }
        }
    }

    // A std lock: held for a map operation, never across an await.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Cached>> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, Cached>> {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_compares_strongly_and_if_none_match_weakly() {
        let ours = HeaderValue::from_static("\"abc\"");
        let list = HeaderValue::from_static;
        assert!(if_match_holds(&list("\"abc\""), &ours));
        assert!(if_match_holds(&list("\"x\", \"abc\""), &ours));
        assert!(if_match_holds(&list("*"), &ours));
        assert!(!if_match_holds(&list("\"abd\""), &ours));
        assert!(!if_match_holds(&list("W/\"abc\""), &ours));
        assert!(!if_match_holds(&list(""), &ours));
        assert!(names_tag(&list("W/\"abc\""), &ours, Comparison::Weak));
    }

    fn unsubscribed() -> CatalogCache {
        CatalogCache::default()
    }

    #[test]
    fn tags_are_strong_and_follow_the_body() {
        let a = Cached::new(Bytes::from_static(b"{\"a\":1}"));
        let b = Cached::new(Bytes::from_static(b"{\"a\":2}"));
        assert_ne!(a.etag, b.etag);
        assert_eq!(a.etag, Cached::new(Bytes::from_static(b"{\"a\":1}")).etag);
        let tag = a.etag.to_str().expect("ascii");
        assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    }

    #[test]
    fn if_none_match_answers_304_only_for_our_tag() {
        let cached = Cached::new(Bytes::from_static(b"[]"));
        let tag = cached.etag.to_str().expect("ascii").to_owned();
        for (value, expected) in [
            (tag.clone(), StatusCode::NOT_MODIFIED),
            (format!("W/{tag}"), StatusCode::NOT_MODIFIED),
            (format!("\"other\", {tag}"), StatusCode::NOT_MODIFIED),
            ("*".to_owned(), StatusCode::NOT_MODIFIED),
            ("\"other\"".to_owned(), StatusCode::OK),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, value.parse().expect("header"));
            let response = cached.respond(&headers, false);
            assert_eq!(response.status(), expected, "{value}");
            assert_eq!(response.headers()[header::ETAG], cached.etag);
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        }
    }

    #[tokio::test]
    async fn without_events_nothing_is_kept() {
        let cache = unsubscribed();
        let key = Key::Product(Uuid::new_v4());
        let fill = || async { Ok::<_, ()>(Bytes::from_static(b"1")) };
        assert!(!cache.get_or_fill(key.clone(), fill()).await.expect("ok").1);
        assert!(!cache.get_or_fill(key, fill()).await.expect("ok").1);
        assert!(cache.read().is_empty());
    }

    #[test]
    fn a_product_change_drops_it_and_every_page_but_not_other_products() {
        let cache = unsubscribed();
        let (changed, other, category) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let page = |category| Key::Page {
            category,
            page: 1,
            page_size: 20,
        };
        {
            let mut entries = cache.write();
            for key in [
                Key::Product(changed),
                Key::Product(other),
                page(None),
                page(Some(category)),
                Key::Categories,
            ] {
                entries.insert(key, Cached::new(Bytes::new()));
            }
        }
        cache.invalidate(&[changed], &[]);
        let mut kept: Vec<Key> = cache.read().keys().cloned().collect();
        kept.sort_by_key(|key| format!("{key:?}"));
        assert_eq!(kept, vec![Key::Categories, Key::Product(other)]);
        cache.invalidate(&[], &[category]);
        assert_eq!(
            cache.read().keys().cloned().collect::<Vec<_>>(),
            vec![Key::Product(other)]
        );
    }
}
