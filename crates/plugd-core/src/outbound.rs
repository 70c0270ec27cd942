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
//!
//! # The port
//!
//! [`Outbound`] keeps all of that policy; the bytes travel through an [`HttpClient`], a backend
//! that sends one request and reads one answer, and never follows a redirect itself: a 3xx comes
//! back to [`Outbound`], which checks the next URL against the allowlist before it asks the
//! backend again. `plugd-std` has the reqwest backend; every backend runs the conformance suite
//! `plugd_core::testing::http_client` (feature `testing`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use url::Url;

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

/// An entry of `network.allow` that is not a host with an optional scheme and port: which
/// entry, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{entry}' is not a valid entry: {reason}")]
#[non_exhaustive]
pub struct AllowRuleError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

impl std::str::FromStr for AllowRule {
    type Err = AllowRuleError;

    fn from_str(entry: &str) -> Result<AllowRule, AllowRuleError> {
        let bad = |why: &str| AllowRuleError {
            entry: entry.to_string(),
            reason: why.to_string(),
        };
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
    pub fn parse(entries: &[String]) -> Result<NetworkAllow, AllowRuleError> {
        let rules = entries
            .iter()
            .map(|e| e.parse())
            .collect::<Result<Vec<AllowRule>, AllowRuleError>>()?;
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

/// One request an [`HttpClient`] sends: already checked against the allowlist, its headers
/// valid (no `host`), its limits those of the calling plugin.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: Method,
    /// An absolute `http` or `https` URL with a host.
    pub url: Url,
    /// Request headers.
    pub headers: HeaderMap,
    /// The body (empty for none).
    pub body: Bytes,
    /// How long the exchange may take, connecting and reading the body included.
    pub timeout: Duration,
    /// The most response body bytes to read: past it the answer is [`HttpError::TooLarge`].
    pub max_body: usize,
}

impl HttpRequest {
    /// A request without headers or body, with the default timeout and body cap.
    ///
    /// ```
    /// let r = plugd_core::HttpRequest::new(http::Method::GET, "http://127.0.0.1/".parse().unwrap());
    /// assert_eq!(r.url.host_str(), Some("127.0.0.1"));
    /// ```
    pub fn new(method: Method, url: Url) -> HttpRequest {
        HttpRequest {
            method,
            url,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeout: DEFAULT_TIMEOUT,
            max_body: MAX_RESPONSE_BYTES,
        }
    }
}

/// What an [`HttpClient`] read: the status, the headers and the whole body.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpResponse {
    /// Status code (a 3xx too: the backend does not follow redirects).
    pub status: StatusCode,
    /// Response headers, in order.
    pub headers: HeaderMap,
    /// The body, at most the request's `max_body` bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// An answer with `status`, `headers` and `body`.
    pub fn new(status: StatusCode, headers: HeaderMap, body: Vec<u8>) -> HttpResponse {
        HttpResponse {
            status,
            headers,
            body,
        }
    }
}

/// Why an [`HttpClient`] has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The response body is larger than the request's `max_body`.
    #[error("the response body is larger than the cap")]
    TooLarge,
    /// The exchange took longer than the request's `timeout`.
    #[error("timed out")]
    TimedOut,
    /// Anything else (no connection, TLS, a broken response), with every cause it knows.
    #[error("{0}")]
    Failed(String),
}

/// The port of outbound HTTP: send one request, read one answer. A backend never follows a
/// redirect (a 3xx is an answer; [`Outbound`] decides whether the next URL is allowed), never
/// uses a proxy from the environment, stops reading at `max_body` and gives up at `timeout`.
#[async_trait]
pub trait HttpClient: Send + Sync + fmt::Debug + 'static {
    /// Carry out one exchange.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError>;
}

struct Inner {
    plugin: Arc<str>,
    allow: Arc<NetworkAllow>,
    client: Arc<dyn HttpClient>,
    auditor: Auditor,
}

/// One plugin's outbound HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
    timeout: Duration,
    max_body: usize,
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("plugin", &self.inner.plugin)
            .field("allow", &self.inner.allow)
            .field("client", &self.inner.client)
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// Headers a redirect to another origin must not carry (as browsers and reqwest do).
const SENSITIVE: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
    header::WWW_AUTHENTICATE,
];

/// The request that follows `response` to `request`, when it is a redirect with a usable
/// `Location`: 301, 302 and 303 become a `GET` without body (a `HEAD` stays), 307 and 308 repeat
/// the request; credentials stay behind when the origin changes; `Referer` names the previous
/// URL (without user, password or fragment), except from https to http.
fn redirected(request: &HttpRequest, response: &HttpResponse) -> Option<HttpRequest> {
    let location = response.headers.get(header::LOCATION)?.to_str().ok()?;
    let url = request.url.join(location).ok()?;
    let mut next = request.clone();
    match response.status {
        StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER => {
            next.body = Bytes::new();
            for h in [
                header::TRANSFER_ENCODING,
                header::CONTENT_ENCODING,
                header::CONTENT_TYPE,
                header::CONTENT_LENGTH,
            ] {
                next.headers.remove(h);
            }
            if next.method != Method::HEAD {
                next.method = Method::GET;
            }
        }
        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => {}
        _ => return None,
    }
    let same_origin = url.scheme() == request.url.scheme()
        && url.host_str() == request.url.host_str()
        && url.port_or_known_default() == request.url.port_or_known_default();
    if !same_origin {
        for h in &SENSITIVE {
            next.headers.remove(h);
        }
    }
    if !(url.scheme() == "http" && request.url.scheme() == "https") {
        let mut referer = request.url.clone();
        let _ = referer.set_username("");
        let _ = referer.set_password(None);
        referer.set_fragment(None);
        if let Ok(value) = HeaderValue::from_str(referer.as_str()) {
            next.headers.insert(header::REFERER, value);
        }
    }
    next.url = url;
    Some(next)
}

impl Outbound {
    /// A client for `plugin` limited to `allow`, sending through `client`.
    ///
    /// ```
    /// # #[derive(Debug)] struct Offline;
    /// # #[async_trait::async_trait]
    /// # impl plugd_core::HttpClient for Offline {
    /// #     async fn send(&self, _: plugd_core::HttpRequest) -> Result<plugd_core::HttpResponse, plugd_core::HttpError> {
    /// #         Err(plugd_core::HttpError::Failed("offline".into()))
    /// #     }
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use plugd_core::{Auditor, NetworkAllow, Outbound, OutgoingRequest};
    ///
    /// let allow = NetworkAllow::parse(&["api.example.com".into()]).unwrap();
    /// let out = Outbound::new("p", allow, Arc::new(Offline), Auditor::new("p", None, None));
    /// let e = out.fetch(OutgoingRequest::new("GET", "https://example.com/")).await.unwrap_err();
    /// assert_eq!(
    ///     e.to_string(),
    ///     "network access denied: plugin 'p' may not connect to 'example.com' (not in network.allow)"
    /// );
    /// # });
    /// ```
    pub fn new(
        plugin: &str,
        allow: NetworkAllow,
        client: Arc<dyn HttpClient>,
        auditor: Auditor,
    ) -> Outbound {
        Outbound {
            inner: Arc::new(Inner {
                plugin: Arc::from(plugin),
                allow: Arc::new(allow),
                client,
                auditor,
            }),
            timeout: DEFAULT_TIMEOUT,
            max_body: MAX_RESPONSE_BYTES,
        }
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
        self.inner.auditor.check(r, "network", FETCH)
    }

    /// The gate alone: whether this plugin may send to `url` (an `http` or `https` URL whose
    /// host `network.allow` allows). A denial is audited as `call`'s. [`Outbound::fetch`] and
    /// [`Outbound::send_once`] pass it themselves; a caller checks early with it, before it
    /// reads what it would send.
    pub fn gate(&self, call: &str, url: &str) -> Result<(), HostError> {
        let r = self.checked_url(call, url).map(|_| ());
        self.inner.auditor.check(r, "network", call)
    }

    /// Send one request to an allowed host without following a redirect (a 3xx is the answer),
    /// for a caller that follows redirects itself, each hop through this gate again: wasi:http's
    /// `outgoing-handler`. The same checks, audit and caps as [`Outbound::fetch`]: the URL must
    /// be allowed, `host` comes from the URL, the call takes at most this handle's timeout (and
    /// `timeout`, when shorter), the response body at most its cap. `call` names the call in
    /// errors and in the audit log.
    ///
    /// ```
    /// # #[derive(Debug)] struct Offline;
    /// # #[async_trait::async_trait]
    /// # impl plugd_core::HttpClient for Offline {
    /// #     async fn send(&self, _: plugd_core::HttpRequest) -> Result<plugd_core::HttpResponse, plugd_core::HttpError> {
    /// #         Err(plugd_core::HttpError::Failed("offline".into()))
    /// #     }
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use plugd_core::{Auditor, HostError, HttpError, NetworkAllow, Outbound};
    ///
    /// let allow = NetworkAllow::parse(&["api.example.com".into()]).unwrap();
    /// let out = Outbound::new("p", allow, Arc::new(Offline), Auditor::new("p", None, None));
    /// let send = |url: &str| out.send_once("wasi:http", http::Method::GET, url.to_string(), Default::default(), Default::default(), None);
    /// let e = send("https://example.com/").await.unwrap_err();
    /// assert!(matches!(e.error, HostError::Denied(_)) && e.http.is_none());
    /// let e = send("https://api.example.com/").await.unwrap_err();
    /// assert_eq!(e.http, Some(HttpError::Failed("offline".into())));
    /// assert_eq!(e.to_string(), "wasi:http of plugin 'p': GET api.example.com: offline");
    /// # });
    /// ```
    pub async fn send_once(
        &self,
        call: &str,
        method: Method,
        url: String,
        headers: HeaderMap,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<HttpResponse, SendError> {
        let r = self
            .send_unaudited(call, method, url, headers, body, timeout)
            .await;
        if let Err(e) = &r {
            // Records a denial; any other error passes as it is.
            let _ = self
                .inner
                .auditor
                .check::<()>(Err(e.error.clone()), "network", call);
        }
        r
    }

    async fn send_unaudited(
        &self,
        call: &str,
        method: Method,
        url: String,
        headers: HeaderMap,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<HttpResponse, SendError> {
        let refused = |error| SendError { error, http: None };
        let url = self.checked_url(call, &url).map_err(refused)?;
        if headers.contains_key(header::HOST) {
            return Err(refused(
                self.invalid(call, "the host header comes from the URL".into()),
            ));
        }
        let timeout = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let request = HttpRequest {
            method,
            url,
            headers,
            body,
            timeout,
            max_body: self.max_body,
        };
        let what = format!("{} {}", request.method, target(&request.url));
        let deadline = tokio::time::Instant::now() + timeout;
        self.exchange(request, deadline)
            .await
            .map_err(|e| SendError {
                error: self.failed(call, &what, &e, timeout),
                http: Some(e),
            })
    }

    /// A plugin's invalid request, worded for `call`.
    fn invalid(&self, call: &str, why: String) -> HostError {
        HostError::Invalid(format!("{call} of plugin '{}': {why}", self.inner.plugin))
    }

    /// An exchange that failed, worded for `call`.
    fn failed(&self, call: &str, what: &str, e: &HttpError, timeout: Duration) -> HostError {
        let why = match e {
            HttpError::TooLarge => format!(
                "the response body is larger than {} (the cap)",
                bytes_text(self.max_body)
            ),
            HttpError::TimedOut => {
                format!("timed out after {}", humantime::format_duration(timeout))
            }
            HttpError::Failed(why) => why.clone(),
        };
        HostError::Failed(format!(
            "{call} of plugin '{}': {what}: {why}",
            self.inner.plugin
        ))
    }

    /// The gate of every outbound call: an `http` or `https` URL with a host that
    /// `network.allow` allows.
    fn checked_url(&self, call: &str, url: &str) -> Result<Url, HostError> {
        let parsed =
            Url::parse(url).map_err(|e| self.invalid(call, format!("invalid URL '{url}': {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(self.invalid(
                call,
                format!("'{url}' is not an http or https URL with a host"),
            ));
        }
        if !self.inner.allow.allows(&parsed) {
            return Err(HostError::Denied(format!(
                "network access denied: plugin '{}' may not connect to '{}' (not in network.allow)",
                self.inner.plugin,
                target(&parsed)
            )));
        }
        Ok(parsed)
    }

    /// One request through the backend, by `deadline`, its body within the cap.
    async fn exchange(
        &self,
        mut request: HttpRequest,
        deadline: tokio::time::Instant,
    ) -> Result<HttpResponse, HttpError> {
        request.timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
        let response = tokio::time::timeout_at(deadline, self.inner.client.send(request))
            .await
            .map_err(|_| HttpError::TimedOut)??;
        if response.body.len() > self.max_body {
            return Err(HttpError::TooLarge);
        }
        Ok(response)
    }

    async fn send(&self, request: OutgoingRequest) -> Result<IncomingResponse, HostError> {
        let url = self.checked_url(FETCH, &request.url)?;
        let invalid = |why: String| self.invalid(FETCH, why);
        let method = Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| invalid(format!("invalid method '{}'", request.method)))?;
        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("invalid header name '{name}'")))?;
            if name == header::HOST {
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
        let failed = |e: HttpError| self.failed(FETCH, &what, &e, timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next = HttpRequest {
            method,
            url,
            headers,
            body: Bytes::from(request.body),
            timeout,
            max_body: self.max_body,
        };
        let mut redirects = 0;
        loop {
            let response = self
                .exchange(next.clone(), deadline)
                .await
                .map_err(failed)?;
            // Each hop is checked like the first URL: a redirect off the allowlist is not
            // followed, and its 3xx is the answer.
            if let Some(hop) = redirected(&next, &response) {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(failed(HttpError::Failed(format!(
                        "more than {MAX_REDIRECTS} redirects"
                    ))));
                }
                if self.inner.allow.allows(&hop.url) {
                    next = hop;
                    continue;
                }
            }
            return Ok(IncomingResponse {
                status: response.status.as_u16(),
                headers: response
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: response.body,
            });
        }
    }
}

/// The name of [`Outbound::fetch`] in errors and the audit log.
const FETCH: &str = "outbound.fetch";

/// Why [`Outbound::send_once`] has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
#[non_exhaustive]
pub struct SendError {
    /// The error as [`Outbound::fetch`] words it (a denial is audited).
    pub error: HostError,
    /// What the backend said, when the request got that far (`None`: refused before any
    /// connection, denied or invalid).
    pub http: Option<HttpError>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

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
            assert!(e.to_string().contains(&format!("'{entry}'")), "{e}");
            assert_eq!(e.entry, entry);
        }
    }

    /// A request as the table saw it: method, URL, body, whether it carried `authorization`.
    type Asked = (Method, String, Vec<u8>, bool);

    /// Answers from a table of URLs, recording every URL it was asked for.
    #[derive(Debug, Default)]
    struct Table {
        answers: Vec<(&'static str, u16, Option<&'static str>)>,
        asked: Mutex<Vec<Asked>>,
    }

    #[async_trait]
    impl HttpClient for Table {
        async fn send(&self, r: HttpRequest) -> Result<HttpResponse, HttpError> {
            self.asked.lock().push((
                r.method.clone(),
                r.url.to_string(),
                r.body.to_vec(),
                r.headers.contains_key(header::AUTHORIZATION),
            ));
            let (_, status, location) = self
                .answers
                .iter()
                .find(|(u, _, _)| *u == r.url.as_str())
                .ok_or_else(|| HttpError::Failed(format!("no route to {}", r.url)))?;
            let mut headers = HeaderMap::new();
            if let Some(l) = location {
                headers.insert(header::LOCATION, HeaderValue::from_static(l));
            }
            Ok(HttpResponse::new(
                StatusCode::from_u16(*status).unwrap(),
                headers,
                b"body".to_vec(),
            ))
        }
    }

    fn outbound(table: Table, allow: &[&str]) -> (Outbound, Arc<Table>) {
        let table = Arc::new(table);
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        let o = Outbound::new(
            "p",
            NetworkAllow::parse(&allow).unwrap(),
            table.clone(),
            Auditor::new("p", None, None),
        );
        (o, table)
    }

    #[tokio::test]
    async fn every_redirect_hop_is_checked_against_the_allowlist() {
        let (o, table) = outbound(
            Table {
                answers: vec![
                    ("http://a.test/start", 302, Some("/next")),
                    ("http://a.test/next", 307, Some("http://b.test/x")),
                    ("http://b.test/x", 301, Some("http://evil.test/")),
                ],
                ..Table::default()
            },
            &["a.test", "b.test"],
        );
        let mut post = OutgoingRequest::new("POST", "http://a.test/start");
        post.body = b"payload".to_vec();
        post.headers.push(("authorization".into(), "secret".into()));
        let r = o.fetch(post).await.unwrap();
        assert_eq!(r.status, 301, "the hop to evil.test is not followed");
        let asked = table.asked.lock().clone();
        assert_eq!(
            asked,
            [
                (
                    Method::POST,
                    "http://a.test/start".into(),
                    b"payload".to_vec(),
                    true
                ),
                // 302: a GET without the body; same origin, the credentials stay.
                (Method::GET, "http://a.test/next".into(), vec![], true),
                // 307 repeats the request; another origin, the credentials stay behind.
                (Method::GET, "http://b.test/x".into(), vec![], false),
            ]
        );
    }

    #[tokio::test]
    async fn send_once_passes_the_same_gate_and_leaves_redirects_to_the_caller() {
        let table = Arc::new(Table {
            answers: vec![("http://a.test/start", 302, Some("/next"))],
            ..Table::default()
        });
        let state = Arc::new(crate::PluginState::default());
        let log = Arc::new(crate::AuditLog::default());
        let o = Outbound::new(
            "p",
            NetworkAllow::parse(&["a.test".to_string()]).unwrap(),
            table.clone(),
            Auditor::new("p", Some(state.clone()), Some(log.clone())),
        );
        let send = |url: &str, headers: HeaderMap| {
            o.send_once(
                "wasi:http",
                Method::GET,
                url.to_string(),
                headers,
                Bytes::new(),
                None,
            )
        };
        let r = send("http://a.test/start", HeaderMap::new()).await.unwrap();
        assert_eq!(r.status, 302, "the 3xx is the answer");
        assert_eq!(table.asked.lock().len(), 1);
        let e = send("http://b.test/", HeaderMap::new()).await.unwrap_err();
        assert_eq!(e.http, None);
        assert_eq!(
            e.error,
            HostError::Denied(
                "network access denied: plugin 'p' may not connect to 'b.test' (not in network.allow)"
                    .into()
            )
        );
        let audit = log.entries(Some("p"));
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].capability, "network");
        assert!(
            audit[0]
                .detail
                .starts_with("wasi:http: network access denied")
        );
        assert_eq!(state.error_count(), 1);
        // The host header is the URL's; a mismatching one is invalid, not sent.
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("b.test"));
        let e = send("http://a.test/start", headers).await.unwrap_err();
        assert!(matches!(e.error, HostError::Invalid(_)), "{e:?}");
        assert_eq!(table.asked.lock().len(), 1, "nothing more was sent");
        assert!(o.gate("wasi:http", "http://A.TEST./x").is_ok());
        assert!(o.gate("wasi:http", "http://a.test.evil/").is_err());
        assert_eq!(log.entries(Some("p")).len(), 2);
    }

    #[tokio::test]
    async fn a_redirect_loop_stops_after_the_limit() {
        let (o, table) = outbound(
            Table {
                answers: vec![("http://a.test/loop", 302, Some("/loop"))],
                ..Table::default()
            },
            &["a.test"],
        );
        let e = o
            .fetch(OutgoingRequest::new("GET", "http://a.test/loop"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "outbound.fetch of plugin 'p': GET a.test: more than {MAX_REDIRECTS} redirects"
            )
        );
        assert_eq!(table.asked.lock().len(), MAX_REDIRECTS + 1);
    }
}

/// The conformance suite every [`HttpClient`] runs against itself (`cargo test` of its crate),
/// through [`Outbound`] and a local HTTP/1.1 server on a loopback port.
#[cfg(feature = "testing")]
pub mod conformance {
    use super::*;
    use crate::{AuditLog, PluginState};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Run every check against `client`.
    pub async fn http_client(client: Arc<dyn HttpClient>) {
        let addr = serve().await;
        fetches_from_an_allowed_host_with_headers_and_body(client.clone(), addr).await;
        a_host_not_allowed_is_denied_before_any_connection_and_audited(client.clone(), addr).await;
        bodies_are_capped_and_calls_time_out(client, addr).await;
    }

    /// One parsed request: method, path, headers (names in lower case), body.
    struct Asked {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Asked> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(Asked {
            method,
            path,
            headers,
            body,
        })
    }

    /// The routes of the suite's server.
    async fn answer(asked: Asked, port: u16) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let header = |name: &str| {
            asked
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let redirect = |to: String| (303, vec![("location".to_string(), to)], Vec::new());
        match (asked.method.as_str(), asked.path.as_str()) {
            ("GET", "/hello") => (200, vec![("x-test".into(), "yes".into())], b"hi".to_vec()),
            ("POST", "/echo") => {
                let mut out = format!("{}:", header("x-in")).into_bytes();
                out.extend_from_slice(&asked.body);
                (200, Vec::new(), out)
            }
            ("GET", "/big") => (200, Vec::new(), vec![b'x'; 64 * 1024]),
            ("GET", "/slow") => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                (200, Vec::new(), b"late".to_vec())
            }
            ("GET", "/redirect-in") => redirect("/hello".into()),
            ("GET", "/redirect-out") => redirect(format!("http://127.0.0.2:{port}/hello")),
            _ => (404, Vec::new(), b"no".to_vec()),
        }
    }

    /// A server on a free loopback port, for as long as the runtime runs.
    async fn serve() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Some(asked) = read_request(&mut stream).await else {
                        return;
                    };
                    let (status, headers, body) = answer(asked, addr.port()).await;
                    let mut out = format!(
                        "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\nconnection: close\r\n",
                        StatusCode::from_u16(status)
                            .ok()
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or(""),
                        body.len()
                    );
                    for (k, v) in headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let _ = stream.write_all(out.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        addr
    }

    fn outbound(
        client: Arc<dyn HttpClient>,
        allow: &[String],
    ) -> (Outbound, Arc<PluginState>, Arc<AuditLog>) {
        let state = Arc::new(PluginState::default());
        let log = Arc::new(AuditLog::default());
        let auditor = Auditor::new("p", Some(state.clone()), Some(log.clone()));
        let o = Outbound::new("p", NetworkAllow::parse(allow).unwrap(), client, auditor);
        (o, state, log)
    }

    async fn fetches_from_an_allowed_host_with_headers_and_body(
        client: Arc<dyn HttpClient>,
        addr: std::net::SocketAddr,
    ) {
        let (o, state, _) = outbound(client, &[format!("127.0.0.1:{}", addr.port())]);
        let r = o
            .fetch(OutgoingRequest::new("GET", format!("http://{addr}/hello")))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hi");
        assert!(r.headers.iter().any(|(k, v)| k == "x-test" && v == "yes"));
        let mut post = OutgoingRequest::new("post", format!("http://{addr}/echo"));
        post.headers.push(("x-in".into(), "h".into()));
        post.body = b"body".to_vec();
        let r = o.fetch(post).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&r.body), "h:body");
        let r = o
            .fetch(OutgoingRequest::new(
                "GET",
                format!("http://{addr}/missing"),
            ))
            .await
            .unwrap();
        assert_eq!(r.status, 404, "an error status is an answer");
        // Redirects: followed to an allowed URL, not followed elsewhere.
        let r = o
            .fetch(OutgoingRequest::new(
                "GET",
                format!("http://{addr}/redirect-in"),
            ))
            .await
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"hi".as_slice()));
        let r = o
            .fetch(OutgoingRequest::new(
                "GET",
                format!("http://{addr}/redirect-out"),
            ))
            .await
            .unwrap();
        assert_eq!(r.status, 303);
        assert_eq!(state.error_count(), 0);
    }

    async fn a_host_not_allowed_is_denied_before_any_connection_and_audited(
        client: Arc<dyn HttpClient>,
        addr: std::net::SocketAddr,
    ) {
        let (o, state, log) = outbound(client, &[format!("127.0.0.1:{}", addr.port())]);
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
        let mut host_header = OutgoingRequest::new("GET", format!("http://{addr}/hello"));
        host_header
            .headers
            .push(("Host".into(), "other.example".into()));
        assert!(matches!(
            o.fetch(host_header).await,
            Err(HostError::Invalid(_))
        ));
    }

    async fn bodies_are_capped_and_calls_time_out(
        client: Arc<dyn HttpClient>,
        addr: std::net::SocketAddr,
    ) {
        let (o, _, _) = outbound(client, &[format!("127.0.0.1:{}", addr.port())]);
        let small = o.with_max_response_bytes(16 * 1024);
        let e = small
            .fetch(OutgoingRequest::new("GET", format!("http://{addr}/big")))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            HostError::Failed(format!(
                "outbound.fetch of plugin 'p': GET 127.0.0.1:{}: the response body is larger than 16 KiB (the cap)",
                addr.port()
            ))
        );
        let r = o
            .fetch(OutgoingRequest::new("GET", format!("http://{addr}/big")))
            .await
            .unwrap();
        assert_eq!(r.body.len(), 64 * 1024);
        let mut slow = OutgoingRequest::new("GET", format!("http://{addr}/slow"));
        slow.timeout = Some(Duration::from_millis(200));
        let e = o.fetch(slow).await.unwrap_err();
        assert!(
            matches!(&e, HostError::Failed(m) if m.contains("timed out") || m.contains("operation timed out")),
            "{e:?}"
        );
        // The handle's own limit caps a longer request timeout.
        let mut slow = OutgoingRequest::new("GET", format!("http://{addr}/slow"));
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
