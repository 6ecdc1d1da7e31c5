//! `GET /metrics`: the Prometheus scrape. On the server's port it requires
//! the operator credential (`Authorization: Bearer`); on `--metrics-listen`
//! (plain HTTP, its own address, meant for a private network) it requires
//! nothing. What is measured is [`crate::metrics`]; this module only
//! translates.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::{App, OpContext};
use crate::auth::AdminAuth;

struct Scrape {
    app: Arc<App>,
    /// `None`: the unauthenticated listener.
    operator: Option<AdminAuth>,
}

/// `/metrics` for the main port, behind the operator credential.
pub fn router(app: Arc<App>, operator: AdminAuth) -> axum::Router {
    axum::Router::new().route("/metrics", get(metrics)).with_state(Arc::new(Scrape { app, operator: Some(operator) }))
}

/// `/metrics` for `--metrics-listen`, open to whoever reaches the address.
pub fn open_router(app: Arc<App>) -> axum::Router {
    axum::Router::new().route("/metrics", get(metrics)).with_state(Arc::new(Scrape { app, operator: None }))
}

async fn metrics(State(s): State<Arc<Scrape>>, req: axum::extract::Request) -> Response {
    let opctx = match &s.operator {
        None => OpContext::system("metrics-listen"),
        Some(auth) => {
            let presented = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            let Some(role) = auth.role_of_header(presented) else {
                let reason = if presented.is_some() { "wrong operator token" } else { "no operator token" };
                tracing::warn!(reason, "metrics scrape rejected");
                let peer = crate::auth::peer_addr(req.extensions());
                s.app.refusal_log().refused("operator".into(), peer, "authenticate", "metrics", reason);
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "/metrics needs the operator credential (Authorization: Bearer TOKEN), or scrape --metrics-listen\n",
                )
                    .into_response();
            };
            role.context()
        }
    };
    match s.app.scrape_metrics(&opctx).await {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            e.log_internal();
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}
