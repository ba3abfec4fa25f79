//! The client side of `rgap members`: GETs of `/v1/members` from a running listener, a page
//! of [`PAGE`] members at a time following each reply's `next`, over one connection of hyper on
//! a throwaway current-thread runtime, each bounded by [`REQUEST_TIMEOUT`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use super::members::{MembersReply, MAX_PAGE};

/// Each exchange (connect and the first page, or one later page) must end within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Members asked for a page: the most the endpoint gives (picking a page costs a pass over
/// the group whatever its size, so fewer, larger pages are quicker in all).
const PAGE: usize = MAX_PAGE;

/// Why no member list came back; `Display` is one line for the operator.
#[derive(Debug)]
pub enum ClientError {
    /// `--url` is not `http://host[:port][/prefix]`.
    BadUrl { url: String, reason: String },
    /// Nothing answered at the address.
    Unreachable { url: String, error: String },
    /// Something answered, but not with the member list.
    Refused { url: String, status: StatusCode, body: String },
    /// A 200 whose body is not a page of members, or whose `next` goes nowhere.
    BadReply { url: String, reason: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::BadUrl { url, reason } => {
                write!(f, "--url: {url:?} {reason} (use e.g. http://127.0.0.1:9253)")
            }
            ClientError::Unreachable { url, error } => {
                write!(f, "no rgap listener answering at {url}: {error}")
            }
            ClientError::Refused { url, status, body } => {
                write!(f, "{url}: {status}: {}", body.trim())
            }
            ClientError::BadReply { url, reason } => {
                write!(f, "{url}: the reply is not a member list: {reason}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// The base URL for an endpoint listening on `listen`: an unspecified address (`0.0.0.0`,
/// `[::]`) is asked on loopback.
pub fn members_url(listen: SocketAddr) -> String {
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{target}")
}

/// GETs `<base>/v1/members[?group=ID]` page after page and returns the pages joined into one
/// reply, as `/v1/members` without `limit` would list it (without its cap).
pub fn fetch_members(base: &str, group: Option<u64>) -> Result<MembersReply, ClientError> {
    let bad = |reason: &str| ClientError::BadUrl { url: base.to_owned(), reason: reason.into() };
    let parsed: Uri = base.parse().map_err(|_| bad("is not a URL"))?;
    if parsed.scheme_str() != Some("http") {
        return Err(bad("is not an http:// URL"));
    }
    let authority = parsed.authority().ok_or_else(|| bad("has no host"))?.clone();
    if parsed.query().is_some() {
        return Err(bad("has a query; give the base URL only"));
    }
    let prefix = parsed.path().trim_end_matches('/');
    let path = |after: Option<&str>| {
        let mut path = format!("{prefix}/v1/members?limit={PAGE}");
        if let Some(id) = group {
            path += &format!("&group={id}");
        }
        if let Some(after) = after {
            // Whatever the server sent as `next`, it goes back as one query value.
            path += "&after=";
            path.extend(form_urlencoded::byte_serialize(after.as_bytes()));
        }
        path
    };
    let first_url = format!("http://{authority}{}", path(None));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Unreachable { url: first_url.clone(), error: e.to_string() })?;
    runtime.block_on(async {
        let unreachable =
            |url: &str, error: String| ClientError::Unreachable { url: url.into(), error };
        let timed_out = || format!("no reply within {REQUEST_TIMEOUT:?}");
        let mut sender = tokio::time::timeout(REQUEST_TIMEOUT, connect(&authority))
            .await
            .map_err(|_| unreachable(&first_url, timed_out()))?
            .map_err(|error| unreachable(&first_url, error))?;
        let mut whole = MembersReply { groups: Vec::new(), next: None };
        let mut after: Option<String> = None;
        loop {
            let path = path(after.as_deref());
            let url = format!("http://{authority}{path}");
            let mut exchange =
                tokio::time::timeout(REQUEST_TIMEOUT, get(&mut sender, &authority, path.clone()))
                    .await
                    .map_err(|_| unreachable(&url, timed_out()))?;
            if exchange.is_err() && after.is_some() {
                // The endpoint closes a connection after a minute: go on over a new one.
                let retry = async {
                    sender = connect(&authority).await?;
                    get(&mut sender, &authority, path).await
                };
                exchange = tokio::time::timeout(REQUEST_TIMEOUT, retry)
                    .await
                    .map_err(|_| unreachable(&url, timed_out()))?;
            }
            let (status, body) = exchange.map_err(|error| unreachable(&url, error))?;
            if status != StatusCode::OK {
                return Err(ClientError::Refused { url, status, body });
            }
            let bad_reply = |reason: String| ClientError::BadReply { url: url.clone(), reason };
            let page = MembersReply::from_json(&body).map_err(|e| bad_reply(e.to_string()))?;
            let next = page.next.clone();
            join(&mut whole, page);
            match next {
                None => return Ok(whole),
                // A cursor that does not move would ask for the same page forever.
                Some(next) if after.as_ref() == Some(&next) => {
                    return Err(bad_reply(format!("next {next:?} is where this page started")));
                }
                Some(next) => after = Some(next),
            }
        }
    })
}

/// Appends `page` to `whole`: a group the last page ended in continues.
fn join(whole: &mut MembersReply, page: MembersReply) {
    for group in page.groups {
        match whole.groups.last_mut() {
            Some(last) if last.id == group.id => last.members.extend(group.members),
            _ => whole.groups.push(group),
        }
    }
}

async fn connect(
    authority: &hyper::http::uri::Authority,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    authority: &hyper::http::uri::Authority,
    path: String,
) -> Result<(StatusCode, String), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let request = Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
