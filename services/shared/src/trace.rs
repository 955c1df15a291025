//! W3C trace context (`traceparent`) carried across the services, so that one checkout is one
//! trace: from the gateway's request, over gRPC metadata, into the outbox and event envelopes,
//! and into the handlers of the consumers. The current context lives in a task-local.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::service::Interceptor;

use crate::discovery::Balanced;

pub const HEADER: &str = "traceparent";

/// A trace id and the id of the current span within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
}

fn random_span_id() -> u64 {
    // The low half of a random UUID: 62 random bits, never zero in practice.
    (uuid::Uuid::new_v4().as_u128() as u64) | 1
}

impl TraceParent {
    /// The start of a new trace.
    pub fn root() -> Self {
        Self {
            trace_id: uuid::Uuid::new_v4().as_u128(),
            span_id: random_span_id(),
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: random_span_id(),
        }
    }

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; anything else is ignored (a new trace starts).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00"
            || trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
            || parts.next().is_some()
        {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|id| *id != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|id| *id != 0)?;
        Some(Self { trace_id, span_id })
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }
}

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// The trace context of the running task, if it is inside one.
pub fn current() -> Option<TraceParent> {
    CURRENT.try_with(|t| *t).ok()
}

/// Runs `future` inside `trace`.
pub async fn scope<F: Future>(trace: TraceParent, future: F) -> F::Output {
    CURRENT.scope(trace, future).await
}

/// The context to continue from an incoming `traceparent` value, or a new trace.
pub fn continue_from(header: Option<&str>) -> TraceParent {
    header
        .and_then(TraceParent::parse)
        .map_or_else(TraceParent::root, |parent| parent.child())
}

/// A gRPC client interceptor that sends the current trace context along.
#[derive(Debug, Clone, Copy, Default)]
pub struct Propagate;

impl Interceptor for Propagate {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = current().and_then(|t| t.child().to_string().parse().ok()) {
            request.metadata_mut().insert(HEADER, value);
        }
        Ok(request)
    }
}

/// A channel whose calls carry the trace context.
pub type TracedChannel = tonic::service::interceptor::InterceptedService<Balanced, Propagate>;

pub fn traced(channel: Balanced) -> TracedChannel {
    tonic::service::interceptor::InterceptedService::new(channel, Propagate)
}

/// A tower layer for servers: each request runs inside the trace its `traceparent` header
/// continues (or a new one), and in a span that names the trace id for the logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerLayer;

impl<S> tower::Layer<S> for ServerLayer {
    type Service = ServerTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace(inner)
    }
}

#[derive(Debug, Clone)]
pub struct ServerTrace<S>(S);

impl<S, B> tower::Service<http::Request<B>> for ServerTrace<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use tracing::Instrument as _;
        let trace = continue_from(request.headers().get(HEADER).and_then(|v| v.to_str().ok()));
        let span = tracing::info_span!("request", path = %request.uri().path(), trace_id = %trace.trace_id_hex());
        let future = self.0.call(request);
        Box::pin(scope(trace, future).instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_reject_garbage() {
        let root = TraceParent::root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
        for bad in [
            "",
            "00-abc-def-01",
            "01-00000000000000000000000000000001-0000000000000001-01",
            &format!("{root}-x"),
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        assert!(
            TraceParent::parse("00-00000000000000000000000000000000-0000000000000001-01").is_none()
        );
    }

    #[test]
    fn children_stay_in_the_trace() {
        let root = TraceParent::root();
        let child = continue_from(Some(&root.to_string()));
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_ne!(continue_from(Some("garbage")).trace_id, root.trace_id);
    }

    #[tokio::test]
    async fn the_context_is_task_local() {
        assert_eq!(current(), None);
        let trace = TraceParent::root();
        assert_eq!(scope(trace, async { current() }).await, Some(trace));
    }
}
