//! The client side of `rgap members`: one GET of `/v1/members` from a running listener,
//! over hyper on a throwaway current-thread runtime, bounded by [`REQUEST_TIMEOUT`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

/// The whole exchange (connect, request, reply) must end within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why no member list came back; `Display` is one line for the operator.
#[derive(Debug)]
pub enum ClientError {
    /// `--url` is not `http://host[:port][/prefix]`.
    BadUrl { url: String, reason: String },
    /// Nothing answered at the address.
    Unreachable { url: String, error: String },
    /// Something answered, but not with the member list.
    Refused { url: String, status: StatusCode, body: String },
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

/// GETs `<base>/v1/members[?group=ID]` and returns the JSON text of a 200 reply.
pub fn fetch_members(base: &str, group: Option<u64>) -> Result<String, ClientError> {
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
    let path = match group {
        Some(id) => format!("{prefix}/v1/members?group={id}"),
        None => format!("{prefix}/v1/members"),
    };
    let url = format!("http://{authority}{path}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Unreachable { url: url.clone(), error: e.to_string() })?;
    let exchange = get(authority, path);
    let outcome = runtime.block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, exchange).await });
    let unreachable = |error: String| ClientError::Unreachable { url: url.clone(), error };
    let (status, body) = match outcome {
        Err(_) => return Err(unreachable(format!("no reply within {REQUEST_TIMEOUT:?}"))),
        Ok(Err(error)) => return Err(unreachable(error)),
        Ok(Ok(reply)) => reply,
    };
    if status != StatusCode::OK {
        return Err(ClientError::Refused { url, status, body });
    }
    Ok(body)
}

async fn get(
    authority: hyper::http::uri::Authority,
    path: String,
) -> Result<(StatusCode, String), String> {
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
