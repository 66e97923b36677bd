//! The daemon's client: one HTTP/1.1 request over the Unix socket, the answer parsed, the
//! error statuses mapped to hopsdrctl's failures (and so to its exit codes).

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::api::{ErrorBody, Route};

use super::args::ExitCode;

/// A failure of a command, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach hopsdrd at {socket}: {cause} (is hopsdr.service running?)")]
    Unreachable { socket: String, cause: String },
    #[error("{0}")]
    Config(String),
    #[error("permission denied: {0}")]
    Denied(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Failed(String),
}

impl CtlError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CtlError::Unreachable { .. } => ExitCode::Unreachable,
            CtlError::Config(_) => ExitCode::Usage,
            CtlError::Denied(_) => ExitCode::PermissionDenied,
            CtlError::Busy(_) => ExitCode::Busy,
            CtlError::Failed(_) => ExitCode::Failed,
        }
    }
}

pub(super) struct Client {
    pub(super) socket: PathBuf,
}

impl Client {
    /// Calls `route` with its path parameters `params` and `body`.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        route: &Route,
        params: &[&str],
        body: Option<&str>,
    ) -> Result<T, CtlError> {
        self.call_query(route, params, None, body).await
    }

    /// As [`Client::call`], with a query string.
    pub(super) async fn call_query<T: DeserializeOwned>(
        &self,
        route: &Route,
        params: &[&str],
        query: Option<&str>,
        body: Option<&str>,
    ) -> Result<T, CtlError> {
        let method = Method::from_bytes(route.method.as_bytes())
            .map_err(|e| CtlError::Failed(format!("bad method in the route table: {e}")))?;
        let path = match query {
            Some(q) => format!("{}?{q}", route.url(params)),
            None => route.url(params),
        };
        let unreachable = |cause: String| CtlError::Unreachable {
            socket: self.socket.display().to_string(),
            cause,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    CtlError::Denied(format!(
                        "cannot connect to {}: {e} (root or the group of the socket, daemon.socket_group, is needed)",
                        self.socket.display()
                    ))
                } else {
                    unreachable(e.to_string())
                }
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path.as_str())
            .header("host", "hopsdrd")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .map_err(|e| CtlError::Failed(format!("failed to build request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                CtlError::Failed(format!("failed to parse the daemon's answer: {e}"))
            });
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        Err(match status {
            StatusCode::FORBIDDEN => CtlError::Denied(message),
            StatusCode::CONFLICT => CtlError::Busy(message),
            _ => CtlError::Failed(message),
        })
    }
}
