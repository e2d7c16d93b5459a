//! A small client of Cloud Hypervisor's REST API: HTTP/1.1 over its UNIX api
//! socket, one connection per request, with hyper's client on a
//! current-thread tokio runtime of its own (no HTTP is parsed here).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// An answer: the HTTP status and the body as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot connect to {path}: {error}")]
    Connect { path: String, error: std::io::Error },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Http(String),
}

/// The client of one api socket.
pub struct ApiClient {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl ApiClient {
    pub fn new(socket: &Path) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(ApiClient {
            socket: socket.to_path_buf(),
            rt,
        })
    }

    /// `METHOD /api/v1/ENDPOINT` with an optional JSON body, answered within `timeout`.
    pub fn call(
        &self,
        method: &str,
        endpoint: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, ApiError> {
        let socket = self.socket.clone();
        let uri = format!("/api/v1/{endpoint}");
        let method = hyper::Method::from_bytes(method.as_bytes())
            .map_err(|e| ApiError::Http(e.to_string()))?;
        let body = body.map(str::to_string);
        self.rt.block_on(async move {
            let work = async {
                let stream =
                    UnixStream::connect(&socket)
                        .await
                        .map_err(|error| ApiError::Connect {
                            path: socket.display().to_string(),
                            error,
                        })?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| ApiError::Http(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let mut req = Request::builder()
                    .method(method)
                    .uri(uri)
                    .header("Host", "localhost")
                    .header("Accept", "application/json");
                if body.is_some() {
                    req = req.header("Content-Type", "application/json");
                }
                let req = req
                    .body(Full::new(Bytes::from(body.unwrap_or_default())))
                    .map_err(|e| ApiError::Http(e.to_string()))?;
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| ApiError::Http(e.to_string()))?;
                let status = resp.status().as_u16();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| ApiError::Http(e.to_string()))?
                    .to_bytes();
                Ok(Answer {
                    status,
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                })
            };
            match tokio::time::timeout(timeout, work).await {
                Ok(r) => r,
                Err(_) => Err(ApiError::Timeout(timeout)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    /// A one-shot server: reads one request, answers `reply`, hands back the request.
    fn serve_once(path: &Path, reply: &'static str) -> std::thread::JoinHandle<String> {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            // Headers, then the body its Content-Length announces.
            loop {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len || n == 0 {
                        break;
                    }
                }
            }
            s.write_all(reply.as_bytes()).unwrap();
            String::from_utf8_lossy(&got).into_owned()
        })
    }

    #[test]
    fn a_put_with_a_body_and_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let server = serve_once(
            &sock,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!",
        );
        let c = ApiClient::new(&sock).unwrap();
        let a = c
            .call(
                "PUT",
                "vm.send-migration",
                Some("{\"local\":true}"),
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(
            a,
            Answer {
                status: 500,
                body: "oops!".into()
            }
        );
        assert!(!a.ok());
        let req = server.join().unwrap();
        assert!(
            req.starts_with("PUT /api/v1/vm.send-migration HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.ends_with("{\"local\":true}"), "{req}");
    }

    #[test]
    fn no_socket_and_no_answer_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let c = ApiClient::new(&sock).unwrap();
        assert!(matches!(
            c.call("GET", "vm.info", None, Duration::from_secs(1)),
            Err(ApiError::Connect { .. })
        ));
        let _l = UnixListener::bind(&sock).unwrap();
        assert!(matches!(
            c.call("GET", "vm.info", None, Duration::from_millis(100)),
            Err(ApiError::Timeout(_))
        ));
    }
}
