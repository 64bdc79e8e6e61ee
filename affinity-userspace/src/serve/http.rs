//! A minimal HTTP/1.1 responder on tokio for three GET endpoints:
//! `/metrics`, `/findings`, `/healthz`. One request per connection
//! (`Connection: close`), the request head capped at 8 KiB and 5 s, at
//! most [`MAX_CONNECTIONS`] at once: a scraper needs no more, and nothing
//! a client sends can hold the agent's memory or its loop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::serve::metrics::Shared;

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;

const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers read: the last interval's metrics and findings.
#[derive(Clone, Default)]
pub struct State {
    pub metrics: Shared,
    pub findings: Arc<Mutex<String>>,
    /// False until the first interval has been read.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

/// A response: status line, content type, body.
pub struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

/// Routes one request line ("GET /metrics HTTP/1.1").
pub fn route(request_line: &str, state: &State) -> Response {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let text = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return Response {
            status: "405 Method Not Allowed",
            content_type: text,
            body: "only GET\n".into(),
        };
    }
    match path {
        "/metrics" => Response {
            status: "200 OK",
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: state.metrics.encode(),
        },
        "/findings" => Response {
            status: "200 OK",
            content_type: "application/json",
            body: state
                .findings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        },
        "/healthz" => {
            if state.ready.load(std::sync::atomic::Ordering::Acquire) {
                Response {
                    status: "200 OK",
                    content_type: text,
                    body: "ok\n".into(),
                }
            } else {
                Response {
                    status: "503 Service Unavailable",
                    content_type: text,
                    body: "starting\n".into(),
                }
            }
        }
        _ => Response {
            status: "404 Not Found",
            content_type: text,
            body: "try /metrics, /findings or /healthz\n".into(),
        },
    }
}

/// Serves one connection.
pub async fn serve(mut sock: TcpStream, state: State) {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
                return Some(());
            }
            if buf.len() > MAX_HEAD {
                return None;
            }
        }
    })
    .await;
    if !matches!(head, Ok(Some(()))) {
        return;
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("");
    let r = route(line, &state);
    let head_only = line.starts_with("HEAD ");
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    if !head_only {
        out.push_str(&r.body);
    }
    let _ = tokio::time::timeout(READ_TIMEOUT, sock.write_all(out.as_bytes())).await;
    let _ = sock.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_refusals() {
        let s = State::default();
        assert_eq!(
            route("GET /healthz HTTP/1.1", &s).status,
            "503 Service Unavailable"
        );
        s.ready.store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(route("GET /healthz HTTP/1.1", &s).body, "ok\n");
        assert!(route("GET /metrics HTTP/1.1", &s).body.ends_with("# EOF\n"));
        *s.findings.lock().unwrap() = "{}".into();
        assert_eq!(route("GET /findings?x=1 HTTP/1.1", &s).body, "{}");
        assert_eq!(
            route("POST /metrics HTTP/1.1", &s).status,
            "405 Method Not Allowed"
        );
        assert_eq!(route("GET /nope HTTP/1.1", &s).status, "404 Not Found");
        assert_eq!(route("", &s).status, "405 Method Not Allowed");
    }
}
