//! What each path answers, independent of sockets: `/metrics`, `/health`, `/ready`,
//! `/v1/members[?group=ID][&limit=N][&after=CURSOR]`; any other path 404, any method but GET
//! (and HEAD) 405.

use std::time::SystemTime;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode, Uri};

use super::members;
use super::metrics::{self, Metrics};
use super::query::MembersQuery;
use super::Observed;

/// The answer to one request.
pub type Reply = Response<Full<Bytes>>;

/// The endpoint's handlers over the listener's state.
pub struct Routes {
    observed: Observed,
    metrics: Metrics,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, line: String) -> Reply {
    reply(status, TEXT, line + "\n")
}

impl Routes {
    pub fn new(observed: Observed, metrics: Metrics) -> Routes {
        Routes { observed, metrics }
    }

    /// Answers `method` on `uri`.
    pub fn respond(&self, method: &Method, uri: &Uri) -> Reply {
        let known = matches!(uri.path(), "/metrics" | "/health" | "/ready" | "/v1/members");
        if !known {
            return text(StatusCode::NOT_FOUND, format!("no such path: {}", uri.path()));
        }
        // hyper sends no body in answer to HEAD.
        if method != Method::GET && method != Method::HEAD {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed: use GET"),
            );
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match uri.path() {
            "/metrics" => self.metrics(),
            "/health" => self.health(),
            "/ready" => self.ready(),
            _ => self.members(uri.query()),
        }
    }

    fn metrics(&self) -> Reply {
        match self.metrics.encode() {
            Ok(body) => reply(StatusCode::OK, metrics::CONTENT_TYPE, body),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics".into()),
        }
    }

    /// 200 `ok` while every output has a running instance; else 503 naming those that do not.
    fn health(&self) -> Reply {
        let down: Vec<String> = self
            .observed
            .outputs
            .statuses()
            .into_iter()
            .filter(|output| !output.is_up())
            .map(|output| output.name.clone())
            .collect();
        match down.as_slice() {
            [] => text(StatusCode::OK, "ok".into()),
            [one] => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("output {one} is down (it panicked and waits to be re-created)"),
            ),
            many => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "outputs {} are down (they panicked and wait to be re-created)",
                    many.join(", ")
                ),
            ),
        }
    }

    /// 200 once every group is past its readiness delay; else 503 naming the first that is
    /// not. The endpoint starts serving only once every source is bound and every output
    /// started, so those need no check here.
    fn ready(&self) -> Reply {
        let view = self.observed.view.load();
        let mut waiting: Vec<u64> =
            view.groups.iter().filter(|group| !group.ready).map(|group| group.id).collect();
        waiting.sort_unstable();
        match waiting.as_slice() {
            [] => text(StatusCode::OK, "ready".into()),
            [one] => text(StatusCode::SERVICE_UNAVAILABLE, format!("group {one} not ready")),
            [first, rest @ ..] => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("group {first} not ready (and {} more)", rest.len()),
            ),
        }
    }

    fn members(&self, query: Option<&str>) -> Reply {
        let query = match MembersQuery::parse(query) {
            Ok(query) => query,
            Err(message) => return text(StatusCode::BAD_REQUEST, message),
        };
        let view = self.observed.view.load();
        if let Some(id) = query.group {
            if !view.groups.iter().any(|group| group.id == id) {
                return text(StatusCode::NOT_FOUND, format!("no group {id} in this listener"));
            }
        }
        match members::reply(&view, &query, SystemTime::now()) {
            Ok(body) => reply(StatusCode::OK, JSON, body.to_json()),
            Err(too_many) => text(StatusCode::BAD_REQUEST, too_many.to_string()),
        }
    }
}
