//! The `network` capability: outbound HTTP(S) to the hosts of the plugin entry's
//! `network.allow`, and nowhere else.
//!
//! # `network.allow` entries
//!
//! | entry | allows |
//! |---|---|
//! | `api.example.com` | that host, over http or https, on any port |
//! | `*.example.com` | any subdomain of `example.com` (one label or more), not `example.com` itself |
//! | `127.0.0.1:8080` | that host on that port only |
//! | `https://api.example.com` | that host over https only, on any port |
//! | `https://api.example.com:8443` | that host over https on port 8443 only |
//! | `[::1]:8080` | an IPv6 address, in brackets |
//!
//! Host names are compared after the same normalisation URLs get (lower case, IDNA, IPv4 in
//! dotted decimal, no trailing dot), so `http://0x7f.1/` is `127.0.0.1`. When an entry gives a
//! port, the URL's port (or its scheme's default, 80 or 443) must equal it. A path, a query, a
//! user name or a `*` anywhere but the first label is an error in the entry.
//!
//! A URL no entry allows is refused before any connection is made, with
//! `network access denied: plugin 'NAME' may not connect to 'HOST[:PORT]' (not in network.allow)`
//! ([`HostError::Denied`], counted against the plugin and audited). Redirects are followed (up to
//! [`MAX_REDIRECTS`]) only when the new URL is allowed too; otherwise the 3xx response itself is
//! the answer. Proxies from the environment are not used. Each call has a timeout (the request's
//! own, capped by [`DEFAULT_TIMEOUT`] or the handle's shorter one), and the response body is
//! capped at [`MAX_RESPONSE_BYTES`]. The allowlist is checked against the host name, not the
//! addresses it resolves to: allow only names whose DNS you trust.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::audit::{Auditor, bytes_text};
use crate::error::HostError;

/// The longest a call may take, and the default when the request gives no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest response body accepted (10 MiB).
pub const MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;
/// Redirects followed (each to an allowed URL) before the call fails.
pub const MAX_REDIRECTS: usize = 5;

/// A request a plugin sends (the WIT `outgoing-request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// An absolute `http` or `https` URL.
    pub url: String,
    /// Request headers (`host` is taken from the URL and may not be set).
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
    /// The plugin's own timeout, capped by the host's.
    pub timeout: Option<Duration>,
}

impl OutgoingRequest {
    /// A request without headers or body.
    pub fn new(method: &str, url: impl Into<String>) -> OutgoingRequest {
        OutgoingRequest {
            method: method.to_string(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }
}

/// The answer (the WIT `incoming-response`). A 4xx or 5xx status is an answer, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingResponse {
    /// Status code.
    pub status: u16,
    /// Response headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body, at most [`MAX_RESPONSE_BYTES`].
    pub body: Vec<u8>,
}

/// A host pattern of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this host.
    Exact(String),
    /// A subdomain of this domain.
    Subdomains(String),
}

/// One entry of `network.allow`, parsed.
///
/// ```
/// use plugd_core::AllowRule;
/// let rule: AllowRule = "*.example.com".parse().unwrap();
/// assert!(rule.allows(&"https://api.example.com/v1".parse().unwrap()));
/// assert!(!rule.allows(&"https://example.com/".parse().unwrap()));
/// assert!("api.example.com/v1".parse::<AllowRule>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    scheme: Option<String>,
    host: HostPattern,
    port: Option<u16>,
}

impl std::str::FromStr for AllowRule {
    type Err = String;

    fn from_str(entry: &str) -> Result<AllowRule, String> {
        let bad = |why: &str| format!("'{entry}' is not a valid entry: {why}");
        let text = entry.trim();
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        let (scheme, rest) = match text.split_once("://") {
            Some((s, rest)) => {
                let s = s.to_ascii_lowercase();
                if s != "http" && s != "https" {
                    return Err(bad("the scheme must be http or https"));
                }
                (Some(s), rest)
            }
            None => (None, text),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(bad(
                "write a host with an optional port and scheme, without a path, query or user (e.g. 'api.example.com', '*.example.com', '127.0.0.1:8080', 'https://api.example.com')",
            ));
        }
        let (wildcard, rest) = match rest.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.contains('*') {
            return Err(bad(
                "'*' may only stand for the first label ('*.example.com')",
            ));
        }
        let (host, port) = split_port(rest).map_err(|why| bad(&why))?;
        let parsed = url::Host::parse(host).map_err(|e| bad(&format!("host '{host}': {e}")))?;
        if wildcard && !matches!(parsed, url::Host::Domain(_)) {
            return Err(bad("'*.' goes before a domain name, not an address"));
        }
        let host = normalize(&parsed.to_string());
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        Ok(AllowRule {
            scheme,
            host: if wildcard {
                HostPattern::Subdomains(host)
            } else {
                HostPattern::Exact(host)
            },
            port,
        })
    }
}

/// `host[:port]`, `[v6]` or `[v6]:port`.
fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("'{p}' is not a port number"))
    };
    if text.starts_with('[') {
        let end = text
            .find(']')
            .ok_or_else(|| "an IPv6 address needs its closing ']'".to_string())?;
        let (host, rest) = text.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(p) => Ok((host, Some(port(p)?))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(format!("unexpected '{rest}' after the address")),
        };
    }
    match text.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => Ok((host, Some(port(p)?))),
        Some(_) => Err("write IPv6 addresses in brackets: '[::1]:8080'".into()),
        None => Ok((text, None)),
    }
}

fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl AllowRule {
    /// Whether this entry allows `url`.
    pub fn allows(&self, url: &Url) -> bool {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return false;
        }
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = normalize(host);
        let host_ok = match &self.host {
            HostPattern::Exact(h) => host == *h,
            HostPattern::Subdomains(d) => {
                host.len() > d.len() + 1
                    && host.ends_with(d.as_str())
                    && host.as_bytes()[host.len() - d.len() - 1] == b'.'
            }
        };
        host_ok
            && self
                .port
                .is_none_or(|p| url.port_or_known_default() == Some(p))
    }
}

/// A plugin's `network.allow`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkAllow {
    rules: Vec<AllowRule>,
}

impl NetworkAllow {
    /// Parse every entry; the first bad one is the error.
    pub fn parse(entries: &[String]) -> Result<NetworkAllow, String> {
        let rules = entries
            .iter()
            .map(|e| e.parse())
            .collect::<Result<Vec<AllowRule>, String>>()?;
        Ok(NetworkAllow { rules })
    }

    /// Whether some entry allows `url`.
    pub fn allows(&self, url: &Url) -> bool {
        self.rules.iter().any(|r| r.allows(url))
    }

    /// Whether there are no entries (nothing is allowed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// `HOST[:PORT]` of a URL as the denial names it (the port when the URL gives one).
fn target(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

struct Inner {
    plugin: Arc<str>,
    allow: Arc<NetworkAllow>,
    client: reqwest::Client,
    auditor: Auditor,
}

/// One plugin's outbound HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
    timeout: Duration,
    max_body: usize,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("plugin", &self.inner.plugin)
            .field("allow", &self.inner.allow)
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl Outbound {
    /// A client for `plugin` limited to `allow`. TLS is rustls with the platform's roots.
    pub fn new(plugin: &str, allow: NetworkAllow, auditor: Auditor) -> Result<Outbound, String> {
        let fail = |e: &dyn std::fmt::Display| {
            format!("cannot set up outbound HTTP for plugin '{plugin}': {e}")
        };
        let allow = Arc::new(allow);
        let redirects = {
            let allow = allow.clone();
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                } else if allow.allows(attempt.url()) {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            })
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirects)
            .timeout(DEFAULT_TIMEOUT)
            .build()
            .map_err(|e| fail(&e))?;
        Ok(Outbound {
            inner: Arc::new(Inner {
                plugin: Arc::from(plugin),
                allow,
                client,
                auditor,
            }),
            timeout: DEFAULT_TIMEOUT,
            max_body: MAX_RESPONSE_BYTES,
        })
    }

    /// The same client with calls limited to `timeout` (never longer than this handle's).
    pub fn with_timeout(&self, timeout: Duration) -> Outbound {
        Outbound {
            timeout: timeout.min(self.timeout),
            ..self.clone()
        }
    }

    /// The same client with response bodies limited to `bytes` (never more than this handle's).
    pub fn with_max_response_bytes(&self, bytes: usize) -> Outbound {
        Outbound {
            max_body: bytes.min(self.max_body),
            ..self.clone()
        }
    }

    /// The allowlist.
    pub fn allow(&self) -> &NetworkAllow {
        &self.inner.allow
    }

    /// Send a request to an allowed host and read the whole answer.
    pub async fn fetch(&self, request: OutgoingRequest) -> Result<IncomingResponse, HostError> {
        let r = self.send(request).await;
        self.inner.auditor.check(r, "network", "outbound.fetch")
    }

    async fn send(&self, request: OutgoingRequest) -> Result<IncomingResponse, HostError> {
        let plugin = &self.inner.plugin;
        let invalid =
            |why: String| HostError::Invalid(format!("outbound.fetch of plugin '{plugin}': {why}"));
        let url = Url::parse(&request.url)
            .map_err(|e| invalid(format!("invalid URL '{}': {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(format!(
                "'{}' is not an http or https URL with a host",
                request.url
            )));
        }
        if !self.inner.allow.allows(&url) {
            return Err(HostError::Denied(format!(
                "network access denied: plugin '{plugin}' may not connect to '{}' (not in network.allow)",
                target(&url)
            )));
        }
        let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| invalid(format!("invalid method '{}'", request.method)))?;
        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("invalid header name '{name}'")))?;
            if name == reqwest::header::HOST {
                return Err(invalid("the host header comes from the URL".into()));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("invalid value for header '{name}'")))?;
            headers.append(name, value);
        }
        let timeout = request
            .timeout
            .map_or(self.timeout, |t| t.min(self.timeout));
        let what = format!("{method} {}", target(&url));
        let failed = |why: String| {
            HostError::Failed(format!(
                "outbound.fetch of plugin '{plugin}': {what}: {why}"
            ))
        };
        let max = self.max_body;
        let exchange = async {
            let mut response = self
                .inner
                .client
                .request(method.clone(), url.clone())
                .headers(headers)
                .body(request.body)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| failed(chain(&e)))?;
            let too_large = || {
                failed(format!(
                    "the response body is larger than {} (the cap)",
                    bytes_text(max)
                ))
            };
            if response.content_length().is_some_and(|n| n > max as u64) {
                return Err(too_large());
            }
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| failed(chain(&e)))? {
                if body.len() + chunk.len() > max {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(IncomingResponse {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| {
            failed(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            ))
        })?
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
    use super::*;
    use crate::{AuditLog, PluginState};
    use axum::Router;
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get;

    fn allows(entry: &str, url: &str) -> bool {
        let rule: AllowRule = entry.parse().unwrap_or_else(|e| panic!("{entry}: {e}"));
        rule.allows(&Url::parse(url).unwrap())
    }

    #[test]
    fn allowlist_entries_match_as_documented() {
        let cases = [
            ("api.example.com", "https://api.example.com/v1", true),
            ("api.example.com", "http://API.Example.com:8080/", true),
            ("api.example.com", "https://api.example.com./x", true),
            ("api.example.com", "https://example.com/", false),
            (
                "api.example.com",
                "https://api.example.com.evil.net/",
                false,
            ),
            ("api.example.com", "https://evilapi.example.com/", false),
            ("api.example.com", "ftp://api.example.com/", false),
            ("*.example.com", "https://a.example.com/", true),
            ("*.example.com", "https://a.b.example.com/", true),
            ("*.example.com", "https://example.com/", false),
            ("*.example.com", "https://badexample.com/", false),
            ("127.0.0.1:8080", "http://127.0.0.1:8080/x", true),
            ("127.0.0.1:8080", "http://127.0.0.1:8081/x", false),
            ("127.0.0.1:8080", "http://127.0.0.1/x", false),
            ("127.0.0.1", "http://0x7f.0.0.1:9/", true),
            ("127.0.0.1:80", "http://127.0.0.1/", true),
            (
                "https://api.example.com",
                "https://api.example.com:8443/",
                true,
            ),
            ("https://api.example.com", "http://api.example.com/", false),
            (
                "https://api.example.com:443/",
                "https://api.example.com/",
                true,
            ),
            ("[::1]:8080", "http://[::1]:8080/", true),
            ("[::1]:8080", "http://[::1]:9090/", false),
            ("bücher.example", "https://xn--bcher-kva.example/", true),
        ];
        for (entry, url, expected) in cases {
            assert_eq!(allows(entry, url), expected, "{entry} vs {url}");
        }
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry_named() {
        for entry in [
            "",
            "api.example.com/v1",
            "user@api.example.com",
            "ftp://api.example.com",
            "api.*.example.com",
            "*",
            "*.127.0.0.1",
            "api.example.com:http",
            "::1",
            "[::1",
        ] {
            let e = entry
                .parse::<AllowRule>()
                .expect_err(&format!("{entry:?} must be refused"));
            assert!(e.contains(&format!("'{entry}'")), "{e}");
        }
    }

    struct Served {
        addr: std::net::SocketAddr,
        _task: tokio::task::JoinHandle<()>,
    }

    async fn serve() -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hello", get(|| async { ([("x-test", "yes")], "hi") }))
            .route(
                "/echo",
                axum::routing::post(|headers: axum::http::HeaderMap, body: String| async move {
                    let h = headers
                        .get("x-in")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    format!("{h}:{body}")
                }),
            )
            .route("/big", get(|| async { vec![b'x'; 64 * 1024] }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route(
                "/missing",
                get(|| async { (axum::http::StatusCode::NOT_FOUND, "no").into_response() }),
            )
            .route("/redirect-in", get(|| async { Redirect::to("/hello") }))
            .route(
                "/redirect-out",
                get(move || async move {
                    Redirect::to(&format!("http://127.0.0.2:{}/hello", addr.port()))
                }),
            );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Served { addr, _task: task }
    }

    fn outbound(allow: &[String]) -> (Outbound, Arc<PluginState>, Arc<AuditLog>) {
        let state = Arc::new(PluginState::default());
        let log = Arc::new(AuditLog::default());
        let auditor = Auditor::new("p", Some(state.clone()), Some(log.clone()));
        let o = Outbound::new("p", NetworkAllow::parse(allow).unwrap(), auditor).unwrap();
        (o, state, log)
    }

    #[tokio::test]
    async fn fetches_from_an_allowed_host_with_headers_and_body() {
        let s = serve().await;
        let (o, state, _) = outbound(&[format!("127.0.0.1:{}", s.addr.port())]);
        let r = o
            .fetch(OutgoingRequest::new(
                "GET",
                format!("http://{}/hello", s.addr),
            ))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hi");
        assert!(r.headers.iter().any(|(k, v)| k == "x-test" && v == "yes"));
        let mut post = OutgoingRequest::new("post", format!("http://{}/echo", s.addr));
        post.headers.push(("x-in".into(), "h".into()));
        post.body = b"body".to_vec();
        let r = o.fetch(post).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&r.body), "h:body");
        let r = o
            .fetch(OutgoingRequest::new(
                "GET",
                format!("http://{}/missing", s.addr),
            ))
            .await
            .unwrap();
        assert_eq!(r.status, 404, "an error status is an answer");
        // Redirects: followed to an allowed URL, not followed elsewhere.
        let r = o
            .fetch(OutgoingRequest::new(
                "GET",
                format!("http://{}/redirect-in", s.addr),
            ))
            .await
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"hi".as_slice()));
        let r = o
            .fetch(OutgoingRequest::new(
                "GET",
                format!("http://{}/redirect-out", s.addr),
            ))
            .await
            .unwrap();
        assert_eq!(r.status, 303);
        assert_eq!(state.error_count(), 0);
    }

    #[tokio::test]
    async fn a_host_not_allowed_is_denied_before_any_connection_and_audited() {
        let s = serve().await;
        let (o, state, log) = outbound(&[format!("127.0.0.1:{}", s.addr.port())]);
        // A listener no entry allows: the denied call must not even connect to it.
        let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        trap.set_nonblocking(true).unwrap();
        let port = trap.local_addr().unwrap().port();
        let e = o
            .fetch(OutgoingRequest::new(
                "GET",
                format!("http://127.0.0.1:{port}/x"),
            ))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            HostError::Denied(format!(
                "network access denied: plugin 'p' may not connect to '127.0.0.1:{port}' (not in network.allow)"
            ))
        );
        assert!(
            matches!(trap.accept(), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "no connection was made"
        );
        let e = o
            .fetch(OutgoingRequest::new("GET", "https://example.com/"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "network access denied: plugin 'p' may not connect to 'example.com' (not in network.allow)"
        );
        assert_eq!(state.error_count(), 2);
        let audit = log.entries(Some("p"));
        assert_eq!(audit.len(), 2);
        assert_eq!(audit[1].capability, "network");
        assert_eq!(
            audit[1].detail,
            "outbound.fetch: network access denied: plugin 'p' may not connect to 'example.com' (not in network.allow)"
        );
        // Invalid requests are not denials.
        for (method, url) in [
            ("GET", "not a url"),
            ("GET", "file:///etc/passwd"),
            ("BAD METHOD", "http://127.0.0.1/"),
        ] {
            let e = o
                .fetch(OutgoingRequest::new(method, url))
                .await
                .unwrap_err();
            assert!(
                matches!(e, HostError::Invalid(_) | HostError::Denied(_)),
                "{e:?}"
            );
        }
        let mut host_header = OutgoingRequest::new("GET", format!("http://{}/hello", s.addr));
        host_header
            .headers
            .push(("Host".into(), "other.example".into()));
        assert!(matches!(
            o.fetch(host_header).await,
            Err(HostError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn bodies_are_capped_and_calls_time_out() {
        let s = serve().await;
        let (o, _, _) = outbound(&[format!("127.0.0.1:{}", s.addr.port())]);
        let small = o.with_max_response_bytes(16 * 1024);
        let e = small
            .fetch(OutgoingRequest::new(
                "GET",
                format!("http://{}/big", s.addr),
            ))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            HostError::Failed(format!(
                "outbound.fetch of plugin 'p': GET 127.0.0.1:{}: the response body is larger than 16 KiB (the cap)",
                s.addr.port()
            ))
        );
        let r = o
            .fetch(OutgoingRequest::new(
                "GET",
                format!("http://{}/big", s.addr),
            ))
            .await
            .unwrap();
        assert_eq!(r.body.len(), 64 * 1024);
        let mut slow = OutgoingRequest::new("GET", format!("http://{}/slow", s.addr));
        slow.timeout = Some(Duration::from_millis(200));
        let e = o.fetch(slow).await.unwrap_err();
        assert!(
            matches!(&e, HostError::Failed(m) if m.contains("timed out") || m.contains("operation timed out")),
            "{e:?}"
        );
        // The handle's own limit caps a longer request timeout.
        let mut slow = OutgoingRequest::new("GET", format!("http://{}/slow", s.addr));
        slow.timeout = Some(Duration::from_secs(3600));
        let e = o
            .with_timeout(Duration::from_millis(200))
            .fetch(slow)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HostError::Failed(m) if m.contains("timed out")),
            "{e:?}"
        );
    }
}
