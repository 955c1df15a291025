//! The storefront's static files, embedded in the binary. Each is served under a name that holds
//! a hash of its bytes (`app.3f2a….css`), so it may be cached for a year: a new build with other
//! bytes has another name, and pages link to it by that name.

use std::sync::LazyLock;

use axum::{
    Router,
    extract::Path,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderValue, StatusCode, header};

use crate::State;

/// A year: the longest lifetime caches honour, and the name changes with the content.
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";

pub(crate) struct Asset {
    /// `/assets/<stem>.<hash>.<ext>`
    pub path: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, bytes: &'static [u8]) -> Self {
        Self {
            path: format!("/assets/{stem}.{:016x}.{ext}", fnv1a(bytes)),
            content_type,
            bytes,
        }
    }
}

/// FNV-1a, 64 bits: a fingerprint of the content for its name, not a security measure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "app",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    )
});

pub(crate) static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "app",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    )
});

pub(crate) static ICON: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "icon",
        "svg",
        "image/svg+xml",
        include_bytes!("assets/icon.svg"),
    )
});

pub fn router() -> Router<State> {
    Router::new().route("/assets/{file}", get(serve))
}

async fn serve(Path(file): Path<String>) -> Response {
    let path = format!("/assets/{file}");
    let Some(asset) = [&*STYLE, &*SCRIPT, &*ICON]
        .into_iter()
        .find(|a| a.path == path)
    else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(CACHE_FOREVER),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_change_with_their_content() {
        let a = Asset::new("app", "css", "text/css", b"body{}");
        let b = Asset::new("app", "css", "text/css", b"body{ }");
        assert!(a.path.starts_with("/assets/app.") && a.path.ends_with(".css"));
        assert_ne!(a.path, b.path);
        assert_eq!(a.path, Asset::new("app", "css", "text/css", b"body{}").path);
    }
}
