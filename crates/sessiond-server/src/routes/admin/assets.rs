//! The console page and its assets under `/admin`, embedded in the binary and served
//! with a strict Content-Security-Policy and ETags.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sessiond::ApiError;
use sha2::{Digest, Sha256};

use crate::routes::ApiPath;

pub(super) struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

pub(super) const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../assets/console/index.html"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../assets/console/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../assets/console/console.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../../assets/console/favicon.svg"),
    },
];

/// `"<sha-256 prefix>"` of each asset, computed once.
pub(super) static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let d = Sha256::digest(a.body);
            format!("\"{}\"", sessiond_core::id::to_hex(&d[..12]))
        })
        .collect()
});

pub(super) fn serve_asset(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return ApiError::no_route().into_response();
    };
    let (asset, etag) = (&ASSETS[i], &ETAGS[i]);
    // Revalidated on every load (cheap: 304), so a new binary never runs old scripts.
    let cache = HeaderValue::from_static("no-cache");
    let etag_value = HeaderValue::from_str(etag).expect("hex");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, cache),
        ],
        asset.body,
    )
        .into_response()
}

pub(super) async fn index(headers: HeaderMap) -> Response {
    serve_asset("index.html", &headers)
}

pub(super) async fn asset(ApiPath(file): ApiPath<String>, headers: HeaderMap) -> Response {
    if file == "index.html" {
        return ApiError::no_route().into_response();
    }
    serve_asset(&file, &headers)
}
