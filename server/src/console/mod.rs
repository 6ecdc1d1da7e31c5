//! The web console (`--console-listen`): server-rendered HTML pages, a small
//! script and a style sheet built into the binary, and live updates over
//! server-sent events. Like every front door it only translates: what it
//! shows and changes comes from [`crate::app`] methods, called with the
//! logged-in operator's [`OpContext`].
//!
//! Security, in one place:
//! - login with the operator credential (the CLI's), checked by
//!   [`AdminAuth::role`] (the operator or the read-only operator); a server-side session whose random id is the
//!   only thing the browser keeps (HttpOnly, SameSite=Strict, Secure and
//!   `__Host-` under TLS, expiring);
//! - every POST carries the session's CSRF token and a same-origin `Origin`
//!   header, or gets 403;
//! - every response carries a strict Content-Security-Policy (scripts and
//!   styles from this server only, no inline ones), `nosniff`,
//!   `no-referrer` and `frame-ancestors 'none'`;
//! - everything shown is escaped by the template engine (maud) or set with
//!   `textContent` by the script: names, metadata and log lines are data.

mod pages;
mod session;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::app::{Actor, App, AppError, OpContext};
use crate::auth::AdminAuth;
use session::{Session, Sessions};

/// The Content-Security-Policy of every response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// What every console handler shares.
pub struct Console {
    app: Arc<App>,
    operator: AdminAuth,
    sessions: Sessions,
    /// The list streams' shared serialisation of each feed batch.
    batch_json: stream::BatchJson,
    /// Served over TLS: cookies are `Secure` (and `__Host-`), origins
    /// `https://`.
    tls: bool,
}

/// The console's routes.
pub fn router(app: Arc<App>, operator: AdminAuth, tls: bool) -> Router {
    let console =
        Arc::new(Console { app, operator, sessions: Sessions::new(tls), batch_json: Default::default(), tls });
    Router::new()
        .route("/", get(|| async { Redirect::to("/machines") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/machines", get(machines))
        .route("/workflows", get(workflows))
        .route("/workflows/stream", get(stream::workflow_list))
        .route("/workflows/{id}", get(workflow))
        .route("/workflows/{id}/stream", get(stream::workflow))
        .route("/workflows/{id}/retry", post(retry))
        .route("/workflows/{id}/artifact", get(artifact))
        .route("/templates", get(templates))
        .route("/templates/{name}", get(template))
        .route("/events", get(events))
        .route("/events/stream", get(stream::events))
        .route("/static/console.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/static/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(console)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The headers every console response carries.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The logged-in session of a request, or the answer to give instead (a
/// redirect to the login page).
#[allow(clippy::result_large_err)] // axum's Response, returned as it is
fn session(c: &Console, headers: &HeaderMap) -> Result<Session, Response> {
    c.sessions.of_request(headers).ok_or_else(|| Redirect::to("/login").into_response())
}

/// Whether `actor` may change anything (the console then shows write
/// buttons; the app decides regardless).
pub fn can_write(actor: &Actor) -> bool {
    matches!(actor, Actor::Operator)
}

/// A POST's checks: it comes from a page of this console, and, once logged
/// in, carries the session's CSRF token. 403 otherwise.
///
/// "From this console": `Sec-Fetch-Site: same-origin` where the browser
/// sends it (every current browser, on HTTPS and localhost), otherwise an
/// `Origin` equal to ours. Under `Referrer-Policy: no-referrer` browsers
/// send `Origin: null` on form posts, so the first is what usually
/// decides; `null` is never accepted.
#[allow(clippy::result_large_err)] // axum's Response, returned as it is
fn check_post(c: &Console, uri: &Uri, headers: &HeaderMap, session: Option<(&Session, &str)>) -> Result<(), Response> {
    let forbidden = |why: &str| (StatusCode::FORBIDDEN, format!("forbidden: {why}\n")).into_response();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    match text(header::HeaderName::from_static("sec-fetch-site")) {
        Some("same-origin") => {}
        Some(_) => return Err(forbidden("cross-origin request")),
        None => {
            // HTTP/2 names the host in the URI (`:authority`), HTTP/1.1 in `Host`.
            let host = uri
                .authority()
                .map(|a| a.as_str())
                .or_else(|| text(header::HOST))
                .ok_or_else(|| forbidden("no Host header"))?;
            let expected = format!("{}://{host}", if c.tls { "https" } else { "http" });
            match text(header::ORIGIN) {
                Some(origin) if origin == expected => {}
                Some(_) => return Err(forbidden("cross-origin request")),
                None => return Err(forbidden("no Origin header")),
            }
        }
    }
    if let Some((session, presented)) = session
        && !session.csrf_matches(presented)
    {
        return Err(forbidden("missing or wrong CSRF token"));
    }
    Ok(())
}

fn peer(req_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    crate::auth::peer_addr(req_extensions)
}

/// An app error as a page.
fn error_page(session: Option<&Session>, e: AppError) -> Response {
    e.log_internal();
    let status = match &e {
        AppError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        AppError::NotFound(_) => StatusCode::NOT_FOUND,
        AppError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        AppError::Conflict(_) | AppError::FailedPrecondition(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, pages::error(session, status, &e.to_string())).into_response()
}

async fn login_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.sessions.of_request(&headers).is_some() {
        return Redirect::to("/machines").into_response();
    }
    pages::login(None).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(c): State<Arc<Console>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Read before any refusal (see `retry`).
    let form = Form::<LoginForm>::from_request(Request::from_parts(parts.clone(), body), &()).await;
    if let Err(r) = check_post(&c, &parts.uri, &parts.headers, None) {
        return r;
    }
    let Ok(Form(form)) = form else {
        return (StatusCode::BAD_REQUEST, pages::login(Some("the form needs a token field"))).into_response();
    };
    // The one mapping of a credential to an actor: the same as for the CLI.
    match c.operator.role(form.token.trim()).map(|role| role.context().actor) {
        Some(actor) => {
            let cookie = c.sessions.create(actor);
            (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, "/machines".to_string())])
                .into_response()
        }
        None => {
            c.operator.note_refusal(peer(&parts.extensions), "console login", "wrong operator token");
            (StatusCode::UNAUTHORIZED, pages::login(Some("That is not an operator credential."))).into_response()
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(c): State<Arc<Console>>, uri: Uri, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    let Some(s) = c.sessions.of_request(&headers) else { return Redirect::to("/login").into_response() };
    if let Err(r) = check_post(&c, &uri, &headers, Some((&s, &form.csrf))) {
        return r;
    }
    c.sessions.remove(&s);
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, c.sessions.clearing_cookie()), (header::LOCATION, "/login".into())])
        .into_response()
}

async fn machines(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let s = match session(&c, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match c.app.machines(&s.opctx()).await {
        Ok(list) => pages::machines(&s, &list).into_response(),
        Err(e) => error_page(Some(&s), e),
    }
}

/// The workflows list's query string.
#[derive(Deserialize, Default)]
pub struct ListParams {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub template: String,
    #[serde(default)]
    pub machine: String,
    #[serde(default)]
    pub sort: String,
    #[serde(default)]
    pub dir: String,
    #[serde(default)]
    pub page: Option<u64>,
    #[serde(default)]
    pub per_page: Option<u32>,
}

/// Rows per page of the workflows list.
pub const PER_PAGE: u32 = 50;

impl ListParams {
    fn query(&self) -> Result<crate::store::WorkflowListQuery, AppError> {
        use crate::model::WorkflowState;
        use crate::store::{WorkflowListQuery, WorkflowSort};
        let nonempty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        let state = match nonempty(&self.state) {
            None => None,
            Some(s) => Some(WorkflowState::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
                AppError::InvalidArgument(format!(
                    "state: {s:?} is not one of PENDING, RUNNING, SUCCESS, FAILED, TIMEOUT"
                ))
            })?),
        };
        let sort = match nonempty(&self.sort) {
            None => WorkflowSort::default(),
            Some(s) => WorkflowSort::parse(&s).ok_or_else(|| {
                AppError::InvalidArgument(format!(
                    "sort: {s:?} is not one of id, template, hardware, state, created, finished"
                ))
            })?,
        };
        let descending = match self.dir.as_str() {
            "" => sort == WorkflowSort::Created,
            "desc" => true,
            "asc" => false,
            other => return Err(AppError::InvalidArgument(format!("dir: {other:?} is not asc or desc"))),
        };
        let limit = self.per_page.unwrap_or(PER_PAGE);
        let page = self.page.unwrap_or(1);
        if page == 0 {
            return Err(AppError::InvalidArgument("page: pages count from 1".into()));
        }
        Ok(WorkflowListQuery {
            id: None,
            state,
            template: nonempty(&self.template),
            hardware: nonempty(&self.machine),
            sort,
            descending,
            offset: (page - 1).saturating_mul(u64::from(limit)),
            limit,
        })
    }
}

async fn workflows(State(c): State<Arc<Console>>, headers: HeaderMap, Query(params): Query<ListParams>) -> Response {
    let s = match session(&c, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let query = params.query()?;
        let page = c.app.workflow_page(&s.opctx(), query.clone()).await?;
        let templates = c.app.list_templates(&s.opctx()).await?;
        Ok::<_, AppError>(pages::workflows(&s, &params, &query, &page, &templates))
    };
    match result.await {
        Ok(html) => html.into_response(),
        Err(e) => error_page(Some(&s), e),
    }
}

async fn workflow(State(c): State<Arc<Console>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = match session(&c, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let wf = c.app.get_workflow(&s.opctx(), &id).await?;
        let artifacts = c.app.list_artifacts(&s.opctx(), &id).await?;
        Ok::<_, AppError>(pages::workflow(&s, &wf.workflow, &artifacts))
    };
    match result.await {
        Ok(html) => html.into_response(),
        Err(e) => error_page(Some(&s), e),
    }
}

async fn retry(State(c): State<Arc<Console>>, headers: HeaderMap, Path(id): Path<String>, req: Request) -> Response {
    let peer = peer(req.extensions());
    let uri = req.uri().clone();
    // The (small, bounded) form is read before any refusal: answering
    // while the client's body is still unread lets the connection close
    // with data pending, and the TCP reset can destroy the 403 before the
    // client reads it (seen in CI under load).
    let form = Form::<CsrfForm>::from_request(req, &()).await;
    let Some(s) = c.sessions.of_request(&headers) else {
        return (StatusCode::FORBIDDEN, "forbidden: not logged in\n").into_response();
    };
    let Ok(Form(form)) = form else {
        return (StatusCode::BAD_REQUEST, "the form needs a csrf field\n").into_response();
    };
    if let Err(r) = check_post(&c, &uri, &headers, Some((&s, &form.csrf))) {
        return r;
    }
    match c.app.retry_workflow(&s.opctx().with_peer(peer), &id).await {
        Ok(_) => Redirect::to(&format!("/workflows/{}", pages::path_segment(&id))).into_response(),
        Err(e) => error_page(Some(&s), e),
    }
}

#[derive(Deserialize)]
struct ArtifactParams {
    action: String,
    path: String,
}

async fn artifact(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(p): Query<ArtifactParams>,
) -> Response {
    let s = match session(&c, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match c.app.open_artifact(&s.opctx(), &id, &p.action, &p.path).await {
        Ok((artifact, file)) => {
            let name = artifact.path.rsplit('/').next().unwrap_or("artifact");
            // Only safe characters in the header; the browser needs no more.
            let name: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
            let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, artifact.size.to_string()),
                    (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
                ],
                body,
            )
                .into_response()
        }
        Err(e) => error_page(Some(&s), e),
    }
}

async fn templates(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let s = match session(&c, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match c.app.list_templates(&s.opctx()).await {
        Ok(list) => pages::templates(&s, &list).into_response(),
        Err(e) => error_page(Some(&s), e),
    }
}

#[derive(Deserialize)]
struct TemplateParams {
    #[serde(default)]
    workflow: String,
}

async fn template(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(p): Query<TemplateParams>,
) -> Response {
    let s = match session(&c, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let template = c.app.get_template(&s.opctx(), &name).await?;
        // The workflows of this template to choose a plan from (newest 50).
        let query = crate::store::WorkflowListQuery {
            template: Some(name.clone()),
            descending: true,
            limit: 50,
            ..Default::default()
        };
        let choices = c.app.workflow_page(&s.opctx(), query).await?;
        let plan = match p.workflow.trim() {
            "" => None,
            // A stored workflow is not rendered again: no warnings.
            id => {
                let source = crate::app::apply::PlanSource::Workflow(id.to_string());
                let (wf, template_images, _) = c.app.plan(&s.opctx(), source).await?;
                Some((wf, template_images))
            }
        };
        Ok::<_, AppError>(pages::template(&s, &template, &choices.rows, plan.as_ref()))
    };
    match result.await {
        Ok(html) => html.into_response(),
        Err(e) => error_page(Some(&s), e),
    }
}

async fn events(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let s = match session(&c, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let filter = crate::app::audit::EventFilter { limit: 200, ..Default::default() };
    match c.app.list_events(&s.opctx(), &filter).await {
        Ok(list) => pages::events(&s, &list).into_response(),
        Err(e) => error_page(Some(&s), e),
    }
}

use axum::extract::FromRequest;

impl Session {
    /// The context the app's use cases are called with.
    pub fn opctx(&self) -> OpContext {
        OpContext { actor: self.actor.clone(), peer: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WorkflowState;
    use crate::store::WorkflowSort;

    fn params(state: &str, sort: &str, dir: &str, page: Option<u64>) -> ListParams {
        ListParams {
            state: state.into(),
            sort: sort.into(),
            dir: dir.into(),
            page,
            machine: " hw-1 ".into(),
            ..Default::default()
        }
    }

    #[test]
    fn list_parameters_become_a_query_or_an_error_naming_the_field() {
        let q = params("failed", "id", "", Some(3)).query().unwrap();
        assert_eq!(q.state, Some(WorkflowState::Failed));
        assert_eq!((q.sort, q.descending), (WorkflowSort::Id, false));
        assert_eq!((q.offset, q.limit), (100, PER_PAGE));
        assert_eq!(q.hardware.as_deref(), Some("hw-1"));
        assert_eq!(q.template, None);
        let newest_first = params("", "", "", None).query().unwrap();
        assert_eq!((newest_first.sort, newest_first.descending, newest_first.offset), (WorkflowSort::Created, true, 0));
        for (bad, field) in [
            (params("done", "", "", None), "state:"),
            (params("", "colour", "", None), "sort:"),
            (params("", "", "up", None), "dir:"),
            (params("", "", "", Some(0)), "page:"),
        ] {
            let e = bad.query().unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
    }
}
