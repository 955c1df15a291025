//! Per-route request counts and latency histograms, and throttled attempts, served as
//! Prometheus text on the operations port's `/metrics` (never on the API port).
//!
//! Every label has a bounded set of values, whatever clients send: the method is one of the
//! standard ones or `other`, the route is the matched template (`/api/users/{id}`) or
//! `unmatched`, the status one of a few hundred codes.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use crate::State;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThrottleLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

type Histograms = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The gateway's own figures. They are registered in the process's registry, which `/metrics`
/// serves whole: with `souk up` that holds every service, consumer and relayer of the shop too.
/// The registry belongs to one shop (not the process), so several shops in one process, as in
/// tests, keep their figures apart.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Histograms,
    throttled: Family<ThrottleLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    /// Registers the gateway's figures (`<prefix>_gateway_http_*`) in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_prefix("gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Histograms = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        let throttled = Family::<ThrottleLabels, Counter>::default();
        registry.register(
            "throttled_requests",
            "Attempts at credentials refused with 429, by limit",
            throttled.clone(),
        );
        Self {
            requests,
            latency,
            throttled,
        }
    }

    /// Counts one attempt refused by `limit` (`login_per_account`, `auth_per_address`).
    pub(crate) fn throttled(&self, limit: &'static str) {
        self.throttled
            .get_or_create(&ThrottleLabels { limit })
            .inc();
    }
}

/// The method as a label: a standard method's name, or `other` for anything a client invents.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Middleware: counts and times each request under its route template (`/api/users/{id}`, not
/// the concrete path, so that ids do not explode the label space).
pub async fn record(
    axum::extract::State(state): axum::extract::State<State>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = method_label(request.method()).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = RouteLabels { method, route };
    state
        .metrics
        .latency
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: labels.method,
            route: labels.route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&http::Method::GET), "GET");
        for invented in ["FOO", "BREW", "get", "X-1"] {
            let method = http::Method::from_bytes(invented.as_bytes()).expect("method");
            assert_eq!(method_label(&method), "other", "{invented}");
        }
    }
}
