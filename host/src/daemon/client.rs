//! A client's side of the socket: one connection, checked to be this
//! user's daemon before anything is sent (the CLI's use of it is
//! the CLI's `remote` module).

use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::path::Path;

/// One connection to the daemon, reused for every request of a command.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
}

/// A failed exchange with the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon's connection failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the daemon answered something that is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The socket or the process behind it is not this user's: nothing was sent.
    #[error("refusing the daemon's socket: {0}")]
    Untrusted(String),
}

impl Client {
    /// Connect, and make sure this user serves the socket before anything
    /// is sent: the socket file is this user's, and so is the process that
    /// accepted the connection (`SO_PEERCRED`), so another user who bound
    /// the path first never sees a request (job specs carry tokens).
    pub async fn connect(socket: &Path) -> Result<Client, ClientError> {
        if !crate::sys::fsperm::check_own_socket(socket).map_err(ClientError::Untrusted)? {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no socket at `{}`", socket.display()),
            )));
        }
        let stream = tokio::net::UnixStream::connect(socket).await?;
        // SAFETY: plain syscall.
        let uid = unsafe { libc::geteuid() };
        let peer = stream.peer_cred()?;
        if peer.uid() != uid {
            return Err(ClientError::Untrusted(format!(
                "`{}` is served by uid {} (pid {}), not by this user ({uid})",
                socket.display(),
                peer.uid(),
                peer.pid()
                    .map_or_else(|| "unknown".into(), |p| p.to_string())
            )));
        }
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("daemon connection ended: {e}");
            }
        });
        Ok(Client { sender })
    }

    /// One request; the status and the JSON answer.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value), ClientError> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.call_raw(method, path, bytes).await
    }

    /// [`Client::call`] with a body that is JSON text already.
    pub async fn call_raw(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, serde_json::Value), ClientError> {
        let bytes = Bytes::from(body);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "hpc-host")
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .expect("a valid request");
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&body)?))
    }

    pub async fn health(&mut self) -> Result<serde_json::Value, ClientError> {
        Ok(self.call(Method::GET, "/v1/health", None).await?.1)
    }
}
