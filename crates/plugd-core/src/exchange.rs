//! One HTTP exchange as hooks, middleware and handlers see it, independent of any server.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use plugd_manifest::HookType;

use crate::error::HostError;

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
}

impl Response {
    /// A response with a status and no body.
    pub fn new(status: StatusCode) -> Self {
        Response {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
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
    /// The identity an authentication hook attached.
    pub identity: Option<Identity>,
    /// Values passed between the hooks and handlers of one request.
    pub locals: HashMap<String, String>,
    /// In the error hook: what failed.
    pub error: Option<String>,
    /// Where the current call happens.
    pub stage: Stage,
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
        }
    }
}

fn header_name(name: &str) -> Result<HeaderName, HostError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| HostError::Invalid(format!("invalid header name: {name:?}")))
}

fn header_value(value: &str) -> Result<HeaderValue, HostError> {
    HeaderValue::from_str(value)
        .map_err(|_| HostError::Invalid(format!("invalid header value: {value:?}")))
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

    /// Set (replace) a request header; allowed in pre-request hooks and middleware on-request.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.check_request_change()?;
        self.headers
            .insert(header_name(name)?, header_value(value)?);
        Ok(())
    }

    /// Remove a request header.
    pub fn remove_header(&mut self, name: &str) -> Result<(), HostError> {
        self.check_request_change()?;
        self.headers.remove(header_name(name)?);
        Ok(())
    }

    /// Attach or clear the identity.
    pub fn set_identity(&mut self, identity: Option<Identity>) -> Result<(), HostError> {
        self.check_request_change()?;
        self.identity = identity;
        Ok(())
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

    /// Change the response status.
    pub fn set_status(&mut self, status: u16) -> Result<(), HostError> {
        let status = StatusCode::from_u16(status)
            .map_err(|_| HostError::Invalid(format!("invalid status code: {status}")))?;
        self.response_mut()?.status = status;
        Ok(())
    }

    /// Set (replace) a response header.
    pub fn set_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        let (name, value) = (header_name(name)?, header_value(value)?);
        self.response_mut()?.headers.insert(name, value);
        Ok(())
    }

    /// Remove a response header.
    pub fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        let name = header_name(name)?;
        self.response_mut()?.headers.remove(name);
        Ok(())
    }

    /// Replace the response body.
    pub fn set_response_body(&mut self, body: Vec<u8>) -> Result<(), HostError> {
        self.response_mut()?.body = Bytes::from(body);
        Ok(())
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

    #[test]
    fn error_response_has_kind_and_message() {
        let r = Response::error(StatusCode::SERVICE_UNAVAILABLE, "plugin 'x' is not running");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "service_unavailable");
        assert_eq!(v["message"], "plugin 'x' is not running");
    }
}
