//! One HTTP exchange as hooks, middleware and handlers see it, independent of any server.
//!
//! The host owns HTTP framing: the headers of [`FRAMING_HEADERS`] (and every `proxy-*` header)
//! are refused from plugins' setters and dropped from the responses they produce, and a header map
//! a plugin writes is capped ([`MAX_HEADERS`], [`MAX_HEADER_VALUE_BYTES`], [`MAX_HEADER_BYTES`]).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use plugd_manifest::{HookType, Permission};

use crate::access::RequestAccess;
use crate::error::HostError;

/// Headers that frame the message or hold only for one connection (RFC 9110 §7.6.1, RFC 9112
/// §6–7): the host sets them, never a plugin. A plugin's response carrying one loses it; a setter
/// naming one is refused (`invalid`). Every `proxy-*` header is treated the same way.
pub const FRAMING_HEADERS: [&str; 8] = [
    "connection",
    "content-length",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// The most headers a plugin may leave in a request or a response it writes.
pub const MAX_HEADERS: usize = 256;
/// The longest header value a plugin may set (8 KiB).
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;
/// The most bytes of names and values a plugin may leave in one header map (64 KiB).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Whether `name` (lower-case) is the host's to set: framing, hop-by-hop or `proxy-*`.
///
/// ```
/// assert!(plugd_core::is_framing_header("content-length"));
/// assert!(plugd_core::is_framing_header("proxy-authorization"));
/// assert!(!plugd_core::is_framing_header("content-type"));
/// ```
pub fn is_framing_header(name: &str) -> bool {
    FRAMING_HEADERS.contains(&name) || name.starts_with("proxy-")
}

/// A change the host refused because of who asked (a plugin's authority, framing, a cap): kept
/// on the exchange until the host audits it against the calling plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The rule: `identity`, `hide_headers`, `framing`, `headers`.
    pub rule: &'static str,
    /// What was tried.
    pub detail: String,
}

/// Who is making the request, as an authentication hook established it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The subject (user id, client id).
    pub subject: String,
    /// Roles held.
    pub roles: Vec<String>,
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Whether this is the answer of the service an embedding application put behind plugd,
    /// whose body the host holds outside (see [`Response::from_inner`]).
    inner: bool,
}

impl Response {
    /// A response with a status and no body.
    pub fn new(status: StatusCode) -> Self {
        Response {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            inner: false,
        }
    }

    /// The answer of the inner service of an embedding (plugd's tower layer): its status and
    /// headers, with `body` when a plugin asked to read it, or empty while the body itself
    /// streams outside the exchange. Plugins' response hooks change it in place; one that
    /// answers anew replaces it, and then [`Response::is_inner`] is false.
    ///
    /// ```
    /// use plugd_core::Response;
    /// let r = Response::from_inner(http::StatusCode::OK, http::HeaderMap::new(), bytes::Bytes::new());
    /// assert!(r.is_inner());
    /// assert!(!Response::new(http::StatusCode::OK).is_inner());
    /// ```
    pub fn from_inner(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        Response {
            status,
            headers,
            body,
            inner: true,
        }
    }

    /// Whether this is still the inner service's answer (see [`Response::from_inner`]).
    pub fn is_inner(&self) -> bool {
        self.inner
    }

    /// A JSON response.
    ///
    /// ```
    /// use plugd_core::Response;
    /// let r = Response::json(http::StatusCode::NOT_FOUND, &serde_json::json!({"error": "not found"}));
    /// assert_eq!(r.headers["content-type"], "application/json");
    /// assert_eq!(&r.body[..], br#"{"error":"not found"}"#);
    /// ```
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        let mut r = Response::new(status);
        r.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.body = Bytes::from(value.to_string());
        r
    }

    /// A response a plugin gave as parts (a wasm guest's route or early answer), checked before
    /// anything is allocated for it: a valid status, valid header names and values, and the
    /// header caps. The error says what is wrong, for the plugin's error.
    ///
    /// ```
    /// use plugd_core::Response;
    /// let r = Response::from_parts(201, vec![("x-a".into(), "1".into())], b"ok".to_vec()).unwrap();
    /// assert_eq!((r.status.as_u16(), &r.body[..]), (201, &b"ok"[..]));
    /// assert_eq!(r.headers["x-a"], "1");
    /// let many = (0..30_000).map(|i| (format!("x-{i}"), "v".to_string())).collect();
    /// let e = Response::from_parts(200, many, Vec::new()).unwrap_err();
    /// assert_eq!(e.to_string(), "the response has 30000 headers, over the cap of 256");
    /// ```
    pub fn from_parts(
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Response, InvalidResponse> {
        let status = final_status(status)?;
        if headers.len() > MAX_HEADERS {
            return Err(InvalidResponse::TooManyHeaders(headers.len()));
        }
        let mut map = HeaderMap::with_capacity(headers.len());
        let mut bytes = 0;
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| InvalidResponse::HeaderName(k.clone()))?;
            let value =
                HeaderValue::from_str(&v).map_err(|_| InvalidResponse::HeaderValue(k.clone()))?;
            if value.len() > MAX_HEADER_VALUE_BYTES {
                return Err(InvalidResponse::HeaderValueTooLong {
                    name: name.to_string(),
                    bytes: value.len(),
                });
            }
            bytes += name.as_str().len() + value.len();
            if bytes > MAX_HEADER_BYTES {
                return Err(InvalidResponse::HeadersTooLarge);
            }
            map.append(name, value);
        }
        Ok(Response {
            status,
            headers: map,
            body: Bytes::from(body),
            inner: false,
        })
    }

    /// Take the host's framing headers out (see [`is_framing_header`]); returns their names.
    pub fn drop_framing_headers(&mut self) -> Vec<HeaderName> {
        let names: Vec<HeaderName> = self
            .headers
            .keys()
            .filter(|k| is_framing_header(k.as_str()))
            .cloned()
            .collect();
        for name in &names {
            self.headers.remove(name);
        }
        names
    }

    /// Whether the headers stay within [`MAX_HEADERS`] and [`MAX_HEADER_BYTES`] (a response a
    /// native plugin built itself).
    pub(crate) fn check_caps(&self) -> Result<(), String> {
        if self.headers.len() > MAX_HEADERS {
            return Err(format!(
                "the response has {} headers, over the cap of {MAX_HEADERS}",
                self.headers.len()
            ));
        }
        let bytes = header_bytes(&self.headers);
        if bytes > MAX_HEADER_BYTES {
            return Err(format!(
                "the response has {bytes} bytes of headers, over the cap of {MAX_HEADER_BYTES}"
            ));
        }
        Ok(())
    }

    /// The JSON error body plugd answers with: `{"error": kind, "message": message}`.
    pub fn error(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace(' ', "_");
        Response::json(
            status,
            &serde_json::json!({ "error": kind, "message": message.into() }),
        )
    }
}

/// Where in the request path a plugin is being called; decides what it may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A hook of this type.
    Hook(HookType),
    /// A route handler.
    Handler,
    /// A middleware before the handler.
    MiddlewareRequest,
    /// A middleware after the handler.
    MiddlewareResponse,
}

impl Stage {
    fn may_change_request(self) -> bool {
        matches!(
            self,
            Stage::Hook(HookType::PreRequest) | Stage::MiddlewareRequest
        )
    }

    fn may_change_response(self) -> bool {
        matches!(
            self,
            Stage::Hook(HookType::PostRequest | HookType::PreResponse | HookType::Error)
                | Stage::MiddlewareResponse
        )
    }

    fn name(self) -> &'static str {
        match self {
            Stage::Hook(h) => h.as_str(),
            Stage::Handler => "a route handler",
            Stage::MiddlewareRequest => "middleware on-request",
            Stage::MiddlewareResponse => "middleware on-response",
        }
    }
}

/// The request, the response once there is one, and what hooks attached to it.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Request method.
    pub method: Method,
    /// Request path, without the query.
    pub path: String,
    /// Raw query string, without `?`.
    pub query: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// The response, once a handler or an early answer produced one.
    pub response: Option<Response>,
    /// Parameters of the matched route pattern.
    pub route_params: Vec<(String, String)>,
    /// The identity an authentication hook attached (only a plugin granted `identity` can).
    pub(crate) identity: Option<Identity>,
    /// Values passed between the hooks and handlers of one request.
    pub locals: HashMap<String, String>,
    /// In the error hook: what failed.
    pub error: Option<String>,
    /// Where the current call happens.
    pub stage: Stage,
    /// The client's address, when the server knows it (read with [`Exchange::peer_addr`]).
    pub(crate) peer: Option<std::net::SocketAddr>,
    /// Request attributes an embedding application exposes to plugins granted `client` (an
    /// authenticated user, a tenant): read with [`Exchange::attribute`].
    pub(crate) attributes: Vec<(String, String)>,
    /// The request's extensions as the layers in front of plugd set them (`ConnectInfo`, an
    /// application's authenticated user type). Native plugins are compiled in and trusted
    /// with them; wasm plugins see the [`attributes`](Exchange::attribute) instead.
    pub extensions: http::Extensions,
    /// The authority of the plugin being called (set by the host around each call); `None`
    /// outside a plugin call.
    pub(crate) access: Option<Arc<RequestAccess>>,
    /// Changes refused during the current call, for the host to audit.
    pub(crate) refusals: Vec<Refusal>,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            method: Method::GET,
            path: String::new(),
            query: String::new(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            response: None,
            route_params: Vec::new(),
            identity: None,
            locals: HashMap::new(),
            error: None,
            stage: Stage::Handler,
            peer: None,
            attributes: Vec::new(),
            extensions: http::Extensions::new(),
            access: None,
            refusals: Vec::new(),
        }
    }
}

/// The request (and response) headers a plugin may not see, taken out for the length of one of
/// its calls.
#[derive(Debug, Default)]
#[must_use = "hidden headers must be put back with Exchange::end_call"]
pub(crate) struct Hidden {
    request: Vec<(HeaderName, HeaderValue)>,
    response: Vec<(HeaderName, HeaderValue)>,
}

/// The most request locals a plugin may leave (`set-local`).
pub const MAX_LOCALS: usize = 128;
/// The most bytes of keys and values the request locals may hold (256 KiB).
pub const MAX_LOCALS_BYTES: usize = 256 * 1024;

/// Whether `headers` with `name` set to `value` stays within the caps. A change that does not
/// grow the map is always allowed, so a client that sent big headers cannot keep a plugin from
/// replacing one.
fn within_caps(headers: &HeaderMap, name: &HeaderName, value: &HeaderValue) -> Result<(), String> {
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return Err(format!(
            "the value of header {name} is {} bytes, over the cap of {MAX_HEADER_VALUE_BYTES}",
            value.len()
        ));
    }
    let replaced: usize = headers
        .get_all(name)
        .iter()
        .map(|v| name.as_str().len() + v.len())
        .sum();
    let count = headers.len() - headers.get_all(name).iter().count() + 1;
    if count > MAX_HEADERS && count > headers.len() {
        return Err(format!(
            "{count} headers would be over the cap of {MAX_HEADERS}"
        ));
    }
    let before = header_bytes(headers);
    let bytes = before - replaced + name.as_str().len() + value.len();
    if bytes > MAX_HEADER_BYTES && bytes > before {
        return Err(format!(
            "{bytes} bytes of headers would be over the cap of {MAX_HEADER_BYTES}"
        ));
    }
    Ok(())
}

/// Whether a request's headers, as a client sent them, are within the caps a plugin must keep.
pub(crate) fn request_headers_within_caps(headers: &HeaderMap) -> bool {
    headers.len() <= MAX_HEADERS && header_bytes(headers) <= MAX_HEADER_BYTES
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum()
}

fn header_name(name: &str) -> Result<HeaderName, HostError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| HostError::Invalid(format!("invalid header name: {name:?}")))
}

fn header_value(value: &str) -> Result<HeaderValue, HostError> {
    HeaderValue::from_str(value).map_err(|_| {
        let shown: String = value.chars().take(64).collect();
        HostError::Invalid(format!(
            "invalid header value (control characters such as CR or LF are not allowed): {shown:?}"
        ))
    })
}

/// All values of one header joined with ", ".
fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    let mut out = first.to_string();
    for v in values {
        out.push_str(", ");
        out.push_str(v);
    }
    Some(out)
}

fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

impl Exchange {
    /// A request with a method and a target (`/path?query`).
    ///
    /// ```
    /// use plugd_core::Exchange;
    /// let ex = Exchange::new(http::Method::GET, "/plugins/hello/greet?name=Ada");
    /// assert_eq!(ex.path, "/plugins/hello/greet");
    /// assert_eq!(ex.query_param("name").as_deref(), Some("Ada"));
    /// ```
    pub fn new(method: Method, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.to_string(), String::new()),
        };
        Exchange {
            method,
            path,
            query,
            ..Exchange::default()
        }
    }

    /// A request header, several values joined with ", ".
    pub fn header(&self, name: &str) -> Option<String> {
        joined(&self.headers, name)
    }

    /// Request headers as pairs.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        pairs(&self.headers)
    }

    /// One decoded query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// One route parameter.
    pub fn route_param(&self, name: &str) -> Option<String> {
        self.route_params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn check_request_change(&self) -> Result<(), HostError> {
        if self.stage.may_change_request() {
            Ok(())
        } else {
            Err(HostError::Denied(format!(
                "the request cannot be changed in {}",
                self.stage.name()
            )))
        }
    }

    fn response_mut(&mut self) -> Result<&mut Response, HostError> {
        if !self.stage.may_change_response() {
            return Err(HostError::Denied(format!(
                "the response cannot be changed in {}",
                self.stage.name()
            )));
        }
        self.response
            .as_mut()
            .ok_or_else(|| HostError::Invalid("there is no response yet".into()))
    }

    /// Record a refused change for the host to audit, and return the error for the plugin.
    fn refuse(&mut self, rule: &'static str, error: HostError) -> HostError {
        self.refusals.push(Refusal {
            rule,
            detail: error.to_string(),
        });
        error
    }

    /// The calling plugin's name, for messages ("" outside a plugin call).
    fn caller(&self) -> &str {
        self.access.as_deref().map_or("", RequestAccess::plugin)
    }

    /// A header name a plugin may set, in the request or the response: not one of the host's
    /// framing headers, not one the operator hides from it. Checked (and audited) before whether
    /// the stage allows a change at all.
    fn settable(&mut self, name: &str) -> Result<HeaderName, HostError> {
        let name = header_name(name)?;
        if is_framing_header(name.as_str()) {
            let e = HostError::Invalid(format!(
                "header {name} frames the HTTP message; only the host sets it"
            ));
            return Err(self.refuse("framing", e));
        }
        if self
            .access
            .as_ref()
            .is_some_and(|a| a.hidden().contains(&name))
        {
            let e = HostError::Denied(format!(
                "header {name} is hidden from plugin '{}' (hide_headers)",
                self.caller()
            ));
            return Err(self.refuse("hide_headers", e));
        }
        Ok(name)
    }

    /// Set (replace) a request header; allowed in pre-request hooks and middleware on-request.
    /// Framing headers (`content-length`, `transfer-encoding`, …) are refused, as are headers
    /// hidden from the plugin and changes past the header caps.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        let name = self.settable(name)?;
        let value = self.settable_value(value)?;
        self.check_request_change()?;
        if let Err(why) = within_caps(&self.headers, &name, &value) {
            let e = HostError::Invalid(format!("request header {name}: {why}"));
            return Err(self.refuse("headers", e));
        }
        self.headers.insert(name, value);
        Ok(())
    }

    /// Remove a request header.
    pub fn remove_header(&mut self, name: &str) -> Result<(), HostError> {
        let name = self.settable(name)?;
        self.check_request_change()?;
        self.headers.remove(name);
        Ok(())
    }

    /// A header value a plugin may set (CR, LF and other control characters refused, audited).
    fn settable_value(&mut self, value: &str) -> Result<HeaderValue, HostError> {
        header_value(value).map_err(|e| self.refuse("headers", e))
    }

    /// A value passed between the hooks and handlers of this request.
    pub fn local(&self, key: &str) -> Option<&str> {
        self.locals.get(key).map(String::as_str)
    }

    /// Set a request local: at most [`MAX_LOCALS`] of them and [`MAX_LOCALS_BYTES`] of keys and
    /// values in all, so that what a plugin leaves for the request's other calls is bounded
    /// (past that: `invalid`, audited).
    pub fn set_local(&mut self, key: &str, value: &str) -> Result<(), HostError> {
        let old = self.locals.get(key).map(|v| key.len() + v.len());
        let count = self.locals.len() + usize::from(old.is_none());
        let held: usize = self.locals.iter().map(|(k, v)| k.len() + v.len()).sum();
        let bytes = held - old.unwrap_or(0) + key.len() + value.len();
        if count > MAX_LOCALS || bytes > MAX_LOCALS_BYTES {
            let e = HostError::Invalid(format!(
                "request locals: {count} locals of {bytes} bytes would be over the cap of {MAX_LOCALS} and {MAX_LOCALS_BYTES} bytes"
            ));
            return Err(self.refuse("locals", e));
        }
        self.locals.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Whether the caller may read the client's address and the attributes: the host outside
    /// a plugin call, or a plugin granted `client`.
    fn client_visible(&self) -> bool {
        self.access.as_ref().is_none_or(|a| a.sees_client())
    }

    /// The client's address, to the host and to plugins granted `client` (`None` to others, and
    /// when the server does not know it).
    ///
    /// ```
    /// let ex = plugd_core::Exchange::new(http::Method::GET, "/")
    ///     .with_peer("192.0.2.7:51000".parse().unwrap());
    /// assert_eq!(ex.peer_addr().unwrap().ip().to_string(), "192.0.2.7");
    /// ```
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.client_visible().then_some(self.peer).flatten()
    }

    /// The request as it came from the client at `peer`.
    #[must_use]
    pub fn with_peer(mut self, peer: std::net::SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Set the client's address (the server that accepted the connection).
    pub fn set_peer(&mut self, peer: Option<std::net::SocketAddr>) {
        self.peer = peer;
    }

    /// A request attribute the embedding application exposed, to the host and to plugins
    /// granted `client`.
    ///
    /// ```
    /// let mut ex = plugd_core::Exchange::new(http::Method::GET, "/");
    /// ex.set_attribute("user", "ada");
    /// assert_eq!(ex.attribute("user"), Some("ada"));
    /// ```
    pub fn attribute(&self, name: &str) -> Option<&str> {
        if !self.client_visible() {
            return None;
        }
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every request attribute (empty to a plugin not granted `client`).
    pub fn attributes(&self) -> &[(String, String)] {
        if self.client_visible() {
            &self.attributes
        } else {
            &[]
        }
    }

    /// Expose an attribute of the request to plugins granted `client` (the embedding
    /// application, through the layer's attribute functions). Replaces one of the same name.
    pub fn set_attribute(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attributes.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.attributes.push((name, value)),
        }
    }

    /// The identity an authentication hook attached.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Attach or clear the identity: only a plugin granted `identity` may (in a pre-request hook
    /// or a middleware's on-request), so `required_roles` believes no one else.
    pub fn set_identity(&mut self, identity: Option<Identity>) -> Result<(), HostError> {
        if !self.access.as_ref().is_some_and(|a| a.may_set_identity()) {
            let e = HostError::permission_denied(self.caller(), Permission::Identity);
            return Err(self.refuse("identity", e));
        }
        self.check_request_change()?;
        self.identity = identity;
        Ok(())
    }

    /// The request as a trusted caller made it, with an identity already established (an
    /// embedding application's authentication, a test).
    #[must_use]
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Lend the exchange to a plugin for one call: its authority applies to the setters, and the
    /// headers hidden from it are taken out (put them back with [`Exchange::end_call`]).
    pub(crate) fn begin_call(&mut self, access: &Arc<RequestAccess>) -> Hidden {
        let mut hidden = Hidden::default();
        for name in access.hidden() {
            take(&mut self.headers, name, &mut hidden.request);
            if let Some(r) = &mut self.response {
                take(&mut r.headers, name, &mut hidden.response);
            }
        }
        self.access = Some(access.clone());
        hidden
    }

    /// End a plugin's call: put the hidden headers back and return what it was refused.
    pub(crate) fn end_call(&mut self, hidden: Hidden) -> Vec<Refusal> {
        for (name, value) in hidden.request {
            self.headers.append(name, value);
        }
        if let Some(r) = &mut self.response {
            for (name, value) in hidden.response {
                r.headers.append(name, value);
            }
        }
        self.access = None;
        std::mem::take(&mut self.refusals)
    }

    /// Apply a change a plugin returned with its call's result rather than made through a
    /// setter (contract 0.2's edits): `change` is one of the setters, and its refusal is audited
    /// whatever the reason -- a change the stage does not allow too, which a setter called
    /// directly only answers.
    ///
    /// ```
    /// use plugd_core::{Exchange, HookType, Stage};
    /// let mut ex = Exchange::new(http::Method::GET, "/");
    /// ex.stage = Stage::Hook(HookType::PostResponse);
    /// let e = ex.apply_edit(|ex| ex.set_header("x-late", "1")).unwrap_err();
    /// assert_eq!(e.to_string(), "the request cannot be changed in post_response");
    /// ```
    pub fn apply_edit(
        &mut self,
        change: impl FnOnce(&mut Exchange) -> Result<(), HostError>,
    ) -> Result<(), HostError> {
        let recorded = self.refusals.len();
        let r = change(self);
        if let Err(e) = &r
            && self.refusals.len() == recorded
        {
            self.refusals.push(Refusal {
                rule: "edit",
                detail: e.to_string(),
            });
        }
        r
    }

    /// The response status, once there is a response.
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status.as_u16())
    }

    /// A response header.
    pub fn response_header(&self, name: &str) -> Option<String> {
        joined(&self.response.as_ref()?.headers, name)
    }

    /// Response headers as pairs.
    pub fn response_header_pairs(&self) -> Vec<(String, String)> {
        self.response
            .as_ref()
            .map(|r| pairs(&r.headers))
            .unwrap_or_default()
    }

    /// Change the response status: a final status, 200 to 599 (an informational 1xx would
    /// switch the connection's protocol or end it: that is the host's).
    pub fn set_status(&mut self, status: u16) -> Result<(), HostError> {
        let code = final_status(status)
            .map_err(|e| self.refuse("framing", HostError::Invalid(e.to_string())))?;
        self.response_mut()?.status = code;
        Ok(())
    }

    /// Set (replace) a response header. Framing headers are refused (`invalid`): the host
    /// frames the response from its body.
    pub fn set_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        let name = self.settable(name)?;
        let value = self.settable_value(value)?;
        let caps = within_caps(&self.response_mut()?.headers, &name, &value);
        if let Err(why) = caps {
            let e = HostError::Invalid(format!("response header {name}: {why}"));
            return Err(self.refuse("headers", e));
        }
        self.response_mut()?.headers.insert(name, value);
        Ok(())
    }

    /// Remove a response header.
    pub fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        let name = self.settable(name)?;
        self.response_mut()?.headers.remove(name);
        Ok(())
    }

    /// Replace the response body.
    pub fn set_response_body(&mut self, body: Vec<u8>) -> Result<(), HostError> {
        self.response_mut()?.body = Bytes::from(body);
        Ok(())
    }
}

/// Move every value of `name` out of `headers` into `into`.
fn take(headers: &mut HeaderMap, name: &HeaderName, into: &mut Vec<(HeaderName, HeaderValue)>) {
    if let http::header::Entry::Occupied(e) = headers.entry(name) {
        let (name, values) = e.remove_entry_mult();
        into.extend(values.map(|v| (name.clone(), v)));
    }
}

/// A final status (200–599) from a plugin, or why not.
/// A response a plugin built that the host will not send: what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidResponse {
    /// Not a final status.
    #[error("invalid status code {0}: a plugin answers a final status, 200 to 599")]
    Status(u16),
    /// More headers than [`MAX_HEADERS`].
    #[error("the response has {0} headers, over the cap of {MAX_HEADERS}")]
    TooManyHeaders(usize),
    /// A header name that is not a token.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// A header value with bytes a header may not hold.
    #[error("invalid value for header {0}")]
    HeaderValue(String),
    /// A header value over [`MAX_HEADER_VALUE_BYTES`].
    #[error(
        "the value of header {name} is {bytes} bytes, over the cap of {MAX_HEADER_VALUE_BYTES}"
    )]
    HeaderValueTooLong {
        /// The header.
        name: String,
        /// Its value's length.
        bytes: usize,
    },
    /// Headers over [`MAX_HEADER_BYTES`] together.
    #[error("the response's headers are over the cap of {MAX_HEADER_BYTES} bytes")]
    HeadersTooLarge,
}

fn final_status(status: u16) -> Result<StatusCode, InvalidResponse> {
    match StatusCode::from_u16(status) {
        Ok(code) if (200..600).contains(&status) => Ok(code),
        _ => Err(InvalidResponse::Status(status)),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let ex = Exchange::new(Method::GET, "/x?name=Ada%20L&b=1+2&flag&bad=%zz&end=%4");
        assert_eq!(ex.query_param("name").as_deref(), Some("Ada L"));
        assert_eq!(ex.query_param("b").as_deref(), Some("1 2"));
        assert_eq!(ex.query_param("flag").as_deref(), Some(""));
        assert_eq!(ex.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(ex.query_param("end").as_deref(), Some("%4"));
        assert_eq!(ex.query_param("missing"), None);
    }

    #[test]
    fn request_changes_only_in_pre_request() {
        let mut ex = Exchange::new(Method::GET, "/");
        ex.stage = Stage::Hook(HookType::PreRequest);
        ex.set_header("x-a", "1").unwrap();
        assert_eq!(ex.header("x-a").as_deref(), Some("1"));
        ex.stage = Stage::Hook(HookType::PostResponse);
        assert!(matches!(
            ex.set_header("x-a", "2"),
            Err(HostError::Denied(_))
        ));
        assert!(matches!(ex.set_status(500), Err(HostError::Denied(_))));
    }

    #[test]
    fn response_changes_in_pre_response() {
        let mut ex = Exchange::new(Method::GET, "/");
        ex.stage = Stage::Hook(HookType::PreResponse);
        assert!(matches!(ex.set_status(201), Err(HostError::Invalid(_))));
        ex.response = Some(Response::new(StatusCode::OK));
        ex.set_status(201).unwrap();
        ex.set_response_header("x-b", "y").unwrap();
        ex.set_response_body(b"hi".to_vec()).unwrap();
        assert_eq!(ex.status(), Some(201));
        assert_eq!(ex.response_header("x-b").as_deref(), Some("y"));
        assert!(matches!(
            ex.set_response_header("bad name", "v"),
            Err(HostError::Invalid(_))
        ));
    }

    fn lent(ex: &mut Exchange, access: RequestAccess) -> Hidden {
        ex.begin_call(&Arc::new(access))
    }

    #[test]
    fn framing_headers_are_refused_and_recorded() {
        let mut ex = Exchange::new(Method::GET, "/");
        ex.stage = Stage::Hook(HookType::PreRequest);
        let hidden = lent(&mut ex, RequestAccess::new("p", &Default::default(), None));
        for name in [
            "content-length",
            "Transfer-Encoding",
            "connection",
            "proxy-authorization",
        ] {
            assert!(
                matches!(ex.set_header(name, "1"), Err(HostError::Invalid(_))),
                "{name}"
            );
        }
        ex.stage = Stage::Hook(HookType::PreResponse);
        ex.response = Some(Response::new(StatusCode::OK));
        let e = ex.set_response_header("content-length", "2").unwrap_err();
        assert_eq!(
            e.to_string(),
            "header content-length frames the HTTP message; only the host sets it"
        );
        assert!(ex.remove_response_header("transfer-encoding").is_err());
        ex.set_response_header("x-fine", "yes").unwrap();
        let refusals = ex.end_call(hidden);
        assert_eq!(refusals.len(), 6);
        assert!(refusals.iter().all(|r| r.rule == "framing"));
    }

    #[test]
    fn header_caps_hold_for_count_value_and_total() {
        let mut ex = Exchange::new(Method::GET, "/");
        ex.stage = Stage::Hook(HookType::PreRequest);
        for i in 0..MAX_HEADERS {
            ex.set_header(&format!("x-{i}"), "v").unwrap();
        }
        assert!(ex.set_header("x-one-more", "v").is_err());
        // Replacing an existing header keeps the count.
        ex.set_header("x-0", "w").unwrap();
        let long = "a".repeat(MAX_HEADER_VALUE_BYTES + 1);
        assert!(ex.set_header("x-1", &long).is_err());
        let mut ex = Exchange::new(Method::GET, "/");
        ex.stage = Stage::Hook(HookType::PreRequest);
        let big = "b".repeat(MAX_HEADER_VALUE_BYTES);
        let fit = MAX_HEADER_BYTES / (MAX_HEADER_VALUE_BYTES + 4);
        for i in 0..fit {
            ex.set_header(&format!("x-{i}"), &big).unwrap();
        }
        let e = ex.set_header("x-last", &big).unwrap_err().to_string();
        assert!(e.contains("bytes of headers would be over the cap"), "{e}");
        assert_eq!(ex.refusals.len(), 1);
    }

    #[test]
    fn identity_needs_the_grant_and_hidden_headers_are_out_of_sight() {
        let mut entry = plugd_manifest::PluginEntry::new("p", "p");
        entry.hide_headers = vec!["cookie".into()];
        let mut ex = Exchange::new(Method::GET, "/");
        ex.headers.insert("cookie", HeaderValue::from_static("s=1"));
        ex.stage = Stage::Hook(HookType::PreRequest);
        let who = Identity {
            subject: "root".into(),
            roles: vec!["admin".into()],
        };
        let hidden = lent(
            &mut ex,
            RequestAccess::new("p", &Default::default(), Some(&entry)),
        );
        assert_eq!(ex.header("cookie"), None);
        assert!(ex.header_pairs().iter().all(|(k, _)| k != "cookie"));
        assert!(matches!(
            ex.set_header("cookie", "s=2"),
            Err(HostError::Denied(_))
        ));
        let e = ex.set_identity(Some(who.clone())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "permission denied: plugin 'p' attempted identity access without permission"
        );
        let refusals = ex.end_call(hidden);
        assert_eq!(
            refusals.iter().map(|r| r.rule).collect::<Vec<_>>(),
            ["hide_headers", "identity"]
        );
        assert_eq!(ex.header("cookie").as_deref(), Some("s=1"), "put back");
        assert_eq!(ex.identity(), None);

        let granted = [plugd_manifest::Permission::Identity].into();
        let hidden = lent(&mut ex, RequestAccess::new("auth", &granted, None));
        ex.set_identity(Some(who.clone())).unwrap();
        assert!(ex.end_call(hidden).is_empty());
        assert_eq!(ex.identity(), Some(&who));
        // Outside any plugin call nobody may set it.
        assert!(ex.set_identity(None).is_err());
    }

    #[test]
    fn a_client_cannot_fill_the_headers_so_that_a_plugin_cannot_replace_one() {
        let mut ex = Exchange::new(Method::GET, "/");
        for i in 0..8 {
            ex.headers.insert(
                HeaderName::from_bytes(format!("x-pad-{i}").as_bytes()).unwrap(),
                HeaderValue::from_str(&"p".repeat(8000)).unwrap(),
            );
        }
        ex.headers.insert(
            "x-user",
            HeaderValue::from_static("admin-claimed-by-client"),
        );
        ex.stage = Stage::Hook(HookType::PreRequest);
        // Over 64 KiB in all, but the replacement does not grow the map: allowed.
        ex.set_header("x-user", "guest").unwrap();
        assert_eq!(ex.header("x-user").as_deref(), Some("guest"));
        // Growing it is refused; shrinking it is not.
        assert!(ex.set_header("x-more", &"m".repeat(8000)).is_err());
        ex.remove_header("x-pad-0").unwrap();
    }

    #[test]
    fn a_hidden_cookie_hides_the_response_cookie_too() {
        let mut entry = plugd_manifest::PluginEntry::new("log", "log");
        entry.hide_headers = vec!["cookie".into()];
        let mut ex = Exchange::new(Method::GET, "/");
        let mut r = Response::new(StatusCode::OK);
        r.headers
            .insert("set-cookie", HeaderValue::from_static("s=new"));
        ex.response = Some(r);
        ex.stage = Stage::Hook(HookType::PreResponse);
        let hidden = lent(
            &mut ex,
            RequestAccess::new("log", &Default::default(), Some(&entry)),
        );
        assert_eq!(ex.response_header("set-cookie"), None);
        assert!(ex.set_response_header("set-cookie", "s=evil").is_err());
        let _ = ex.end_call(hidden);
        assert_eq!(ex.response_header("set-cookie").as_deref(), Some("s=new"));
    }

    #[test]
    fn informational_statuses_and_control_characters_are_refused_and_recorded() {
        let mut ex = Exchange::new(Method::GET, "/");
        ex.response = Some(Response::new(StatusCode::OK));
        ex.stage = Stage::Hook(HookType::PreResponse);
        let hidden = lent(&mut ex, RequestAccess::new("p", &Default::default(), None));
        for status in [100, 101, 199, 600] {
            assert!(ex.set_status(status).is_err(), "{status}");
        }
        assert!(
            ex.set_response_header("x-a", "a\r\nset-cookie: x=1")
                .is_err()
        );
        ex.set_status(418).unwrap();
        let refusals = ex.end_call(hidden);
        assert_eq!(refusals.len(), 5);
        assert!(Response::from_parts(101, Vec::new(), Vec::new()).is_err());
    }

    #[test]
    fn request_locals_are_capped() {
        let mut ex = Exchange::new(Method::GET, "/");
        for i in 0..MAX_LOCALS {
            ex.set_local(&format!("k{i}"), "v").unwrap();
        }
        assert!(ex.set_local("one-more", "v").is_err());
        ex.set_local("k0", "replaced").unwrap();
        assert_eq!(ex.local("k0"), Some("replaced"));
        let mut ex = Exchange::new(Method::GET, "/");
        let big = "b".repeat(MAX_LOCALS_BYTES / 2);
        ex.set_local("a", &big).unwrap();
        assert!(ex.set_local("b", &big).is_err());
        assert_eq!(ex.refusals.len(), 1);
    }

    #[test]
    fn a_plugins_response_is_checked_before_it_is_built() {
        assert_eq!(
            Response::from_parts(99, Vec::new(), Vec::new())
                .unwrap_err()
                .to_string(),
            "invalid status code 99: a plugin answers a final status, 200 to 599"
        );
        let e = Response::from_parts(200, vec![("bad name".into(), "v".into())], Vec::new())
            .unwrap_err();
        assert_eq!(e.to_string(), "invalid header name \"bad name\"");
        let mut r = Response::from_parts(
            200,
            vec![
                ("content-length".into(), "2".into()),
                ("x-a".into(), "1".into()),
                ("proxy-x".into(), "y".into()),
            ],
            b"hello".to_vec(),
        )
        .unwrap();
        let dropped = r.drop_framing_headers();
        assert_eq!(dropped.len(), 2);
        assert_eq!(r.headers.len(), 1);
    }

    #[test]
    fn error_response_has_kind_and_message() {
        let r = Response::error(StatusCode::SERVICE_UNAVAILABLE, "plugin 'x' is not running");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "service_unavailable");
        assert_eq!(v["message"], "plugin 'x' is not running");
    }
}
