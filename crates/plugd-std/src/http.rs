//! Outbound HTTP with reqwest: the [`HttpClient`] of `plugd serve`.

use async_trait::async_trait;
use plugd_core::{HttpClient, HttpError, HttpRequest, HttpResponse};

/// Outbound HTTP(S) through one reqwest client (a connection pool shared by every plugin). TLS
/// is rustls with the platform's roots; proxies from the environment are not used; redirects are
/// never followed here (the host checks each hop against the plugin's `network.allow`).
///
/// ```
/// use std::sync::Arc;
/// let host = plugd_core::Host::builder()
///     .http(Arc::new(plugd_std::ReqwestClient::new().unwrap()))
/// #   .data_dir(std::env::temp_dir().join(format!("plugd-std-doc-{}", std::process::id())))
///     .build()
///     .unwrap();
/// # drop(host);
/// ```
#[derive(Debug, Clone)]
pub struct ReqwestClient {
    client: reqwest::Client,
}

/// Why [`ReqwestClient::new`] failed (the TLS setup, say), with every cause.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up outbound HTTP: {0}")]
pub struct ClientError(String);

impl ReqwestClient {
    /// A client without proxies or redirects.
    pub fn new() -> Result<ReqwestClient, ClientError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(plugd_core::outbound_limits::DEFAULT_TIMEOUT)
            .build()
            .map_err(|e| ClientError(chain(&e)))?;
        Ok(ReqwestClient { client })
    }
}

#[async_trait]
impl HttpClient for ReqwestClient {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let max = request.max_body;
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                HttpError::TimedOut
            } else {
                HttpError::Failed(chain(&e))
            }
        };
        let mut response = self
            .client
            .request(request.method, request.url)
            .headers(request.headers)
            .body(request.body)
            .timeout(request.timeout)
            .send()
            .await
            .map_err(failed)?;
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(HttpError::TooLarge);
        }
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > max {
                return Err(HttpError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse::new(status, headers, body))
    }
}

/// An error and its sources, joined: reqwest's own message rarely says why.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[tokio::test]
    async fn the_reqwest_client_conforms() {
        plugd_core::testing::http_client(Arc::new(super::ReqwestClient::new().unwrap())).await;
    }
}
