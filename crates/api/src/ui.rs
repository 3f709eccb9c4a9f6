//! The web console (`/ui`): a page, a script, a style sheet and an icon, committed
//! in `crates/api/ui/` and embedded at compile time, so the binary serves
//! it with no build step and no Node.js. It signs in with the API's own
//! tokens (kept in the tab's `sessionStorage`, sent as `Authorization:
//! Bearer`, never in a URL) and does everything through the API.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;

const INDEX: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/app.css");
const ICON: &str = include_str!("../ui/favicon.svg");

/// No inline script or style, no eval, nothing from elsewhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The user id the dev sign-in gives a token for (the one `agentflow dev`
/// prints a token for, too).
pub const DEV_USER: i64 = 42;

#[derive(Clone, Copy)]
struct DevSignIn(bool);

/// The console's routes. With `dev_sign_in` (only `agentflow dev` sets
/// it), `POST /ui/dev-token` hands out a token for user 42: one click signs
/// in on a local stack.
pub fn routes(dev_sign_in: bool) -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route(
            "/ui",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route(
            "/ui/app.js",
            get(|| async { page("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { page("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/ui/favicon.svg",
            get(|| async { page("image/svg+xml", ICON) }),
        )
        // Where browsers look when a page names no icon (e.g. `/openapi.json`).
        .route(
            "/favicon.ico",
            get(|| async { page("image/svg+xml", ICON) }),
        )
        .route(
            "/ui/config.json",
            get(move || async move { axum::Json(json!({"dev_sign_in": dev_sign_in})) }),
        )
        .route("/ui/dev-token", post(dev_token))
        .layer(axum::Extension(DevSignIn(dev_sign_in)))
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

async fn dev_token(
    State(s): State<AppState>,
    axum::Extension(DevSignIn(enabled)): axum::Extension<DevSignIn>,
) -> Result<Response, ApiError> {
    if !enabled {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        ));
    }
    let token = s
        .jwt
        .mint(DEV_USER, false, std::time::Duration::from_secs(12 * 3600));
    Ok(axum::Json(json!({"token": token, "user_id": DEV_USER})).into_response())
}
