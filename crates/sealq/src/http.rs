//! A very small HTTP/1.1 server for the operational endpoints (`/metrics`,
//! `/livez`, `/readyz`): GET and HEAD only, one request per connection, no
//! framework.
//!
//! Probes and scrapers send one short request and read one short answer, so
//! this is all they need, and it keeps `sealq` free of an HTTP stack. It is
//! still written for an open port: a request head is read within
//! [`READ_TIMEOUT`] and [`MAX_HEAD`] bytes or refused, at most
//! [`MAX_CONNECTIONS`] connections are served at once (more wait in the
//! kernel's backlog), and nothing a client sends is echoed back.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use sealq::http::{Endpoint, Response, serve};
//!
//! struct Hello;
//! impl Endpoint for Hello {
//!     fn respond<'a>(&'a self, path: &'a str) -> sealq::http::Responding<'a> {
//!         Box::pin(async move {
//!             (path == "/hello").then(|| Response::text(200, "hello\n"))
//!         })
//!     }
//! }
//! let server = serve("127.0.0.1:0".parse().unwrap(), vec![Arc::new(Hello)]).await?;
//! println!("serving on {}", server.local_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A `text/plain` answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }

    /// An `application/json` answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut body = serde_json::to_vec(value).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }
}

/// What [`Endpoint::respond`] returns: the answer, or `None` when the path
/// is not this endpoint's.
pub type Responding<'a> = Pin<Box<dyn Future<Output = Option<Response>> + Send + 'a>>;

/// Something served at one or more paths.
pub trait Endpoint: Send + Sync + 'static {
    /// The answer to a GET of `path` (the query string removed), or `None`
    /// when `path` is not one of this endpoint's.
    fn respond<'a>(&'a self, path: &'a str) -> Responding<'a>;
}

/// A running server; [`Server::shutdown`] stops it (dropping it does not).
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    stop: CancellationToken,
    join: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The address it listens on (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting connections and wait for the accept loop to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.join.await;
    }
}

/// Bind `addr` and answer requests with the first of `endpoints` that knows
/// the path (404 when none does), in a background task.
pub async fn serve(addr: SocketAddr, endpoints: Vec<Arc<dyn Endpoint>>) -> io::Result<Server> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let endpoints: Arc<[Arc<dyn Endpoint>]> = endpoints.into();
    let join = tokio::spawn(accept_loop(listener, endpoints, stop.clone()));
    Ok(Server {
        local_addr,
        stop,
        join,
    })
}

async fn accept_loop(
    listener: TcpListener,
    endpoints: Arc<[Arc<dyn Endpoint>]>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let endpoints = endpoints.clone();
                tokio::spawn(async move {
                    let _ = handle(stream, &endpoints).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little
                // rather than spin.
                tracing::warn!(error = %e, "sealq http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a request head asked for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// A GET (or, `head_only`, a HEAD) of a path.
    Get { path: String, head_only: bool },
    /// Another method.
    OtherMethod,
    /// Not an HTTP/1.x request line.
    Malformed,
}

/// Parse the request line of `head` (the bytes up to the blank line).
fn parse_request(head: &[u8]) -> Request {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::Malformed;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::Malformed;
    }
    let path = target.split(['?', '#']).next().unwrap_or("/").to_owned();
    match method {
        "GET" => Request::Get {
            path,
            head_only: false,
        },
        "HEAD" => Request::Get {
            path,
            head_only: true,
        },
        _ => Request::OtherMethod,
    }
}

/// Read the request head (up to the blank line), at most [`MAX_HEAD`]
/// bytes; `None` when the client sent too much or closed first.
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end + 2);
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

async fn handle(mut stream: TcpStream, endpoints: &[Arc<dyn Endpoint>]) -> io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return write(&mut stream, &Response::text(400, "bad request\n"), false).await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return write(&mut stream, &Response::text(408, "timeout\n"), false).await,
    };
    let (response, head_only) = match parse_request(&head) {
        Request::Get { path, head_only } => {
            let mut found = None;
            for e in endpoints {
                if let Some(r) = e.respond(&path).await {
                    found = Some(r);
                    break;
                }
            }
            (
                found.unwrap_or_else(|| Response::text(404, "not found\n")),
                head_only,
            )
        }
        Request::OtherMethod => (Response::text(405, "only GET and HEAD\n"), false),
        Request::Malformed => (Response::text(400, "bad request\n"), false),
    };
    write(&mut stream, &response, head_only).await
}

async fn write(stream: &mut TcpStream, r: &Response, head_only: bool) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(&r.body).await?;
    }
    stream.shutdown().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed_strictly() {
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n"),
            Request::Get {
                path: "/metrics".into(),
                head_only: false
            }
        );
        assert_eq!(
            parse_request(b"HEAD /livez HTTP/1.0\r\n"),
            Request::Get {
                path: "/livez".into(),
                head_only: true
            }
        );
        assert_eq!(
            parse_request(b"POST /readyz HTTP/1.1\r\n"),
            Request::OtherMethod
        );
        for bad in [
            &b"GET /x\r\n"[..],
            b"GET  /x HTTP/1.1\r\n",
            b"GET x HTTP/1.1\r\n",
            b"GET /x SPDY/3\r\n",
            b"\xff\xfe /x HTTP/1.1\r\n",
        ] {
            assert_eq!(parse_request(bad), Request::Malformed, "{bad:?}");
        }
    }

    struct Fixed;
    impl Endpoint for Fixed {
        fn respond<'a>(&'a self, path: &'a str) -> Responding<'a> {
            Box::pin(async move { (path == "/a").then(|| Response::text(200, "a\n")) })
        }
    }

    async fn get(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_known_paths_and_refuses_the_rest() {
        let server = serve("127.0.0.1:0".parse().unwrap(), vec![Arc::new(Fixed)])
            .await
            .unwrap();
        let addr = server.local_addr();
        let ok = get(addr, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\na\n"), "{ok}");
        let head = get(addr, b"HEAD /a HTTP/1.1\r\n\r\n").await;
        assert!(head.contains("Content-Length: 2\r\n") && head.ends_with("\r\n\r\n"));
        let missing = get(addr, b"GET /b HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = get(addr, b"POST /a HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        // One byte over the limit, all of it read before the refusal.
        let huge = vec![b'a'; MAX_HEAD + 1];
        let too_long = get(addr, &huge).await;
        assert!(too_long.starts_with("HTTP/1.1 400 "), "{too_long}");
        server.shutdown().await;
        assert!(TcpStream::connect(addr).await.is_err(), "stopped listening");
    }
}
