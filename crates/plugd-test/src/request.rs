//! Requests a test sends and the responses it gets back.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use plugd_core::{Exchange, Response};

/// A request to send through the host's dispatcher (hooks, middleware, routes), or to hand to
/// one hook.
///
/// ```
/// use plugd_test::TestRequest;
/// let req = TestRequest::post("/plugins/notes/add")
///     .header("x-api-key", "k")
///     .json(&serde_json::json!({ "text": "hi" }));
/// assert_eq!(req.exchange().header("content-type").as_deref(), Some("application/json"));
/// ```
#[derive(Debug, Clone)]
pub struct TestRequest {
    exchange: Exchange,
}

impl TestRequest {
    /// A request with a method and a target (`/plugins/hello/greet?name=Ada`).
    ///
    /// Panics when `method` is not a valid HTTP method (a mistake in the test itself).
    pub fn new(method: &str, target: &str) -> TestRequest {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .unwrap_or_else(|_| panic!("invalid HTTP method in a test: {method:?}"));
        TestRequest {
            exchange: Exchange::new(method, target),
        }
    }

    /// `GET target`.
    pub fn get(target: &str) -> TestRequest {
        TestRequest::new("GET", target)
    }

    /// `POST target`.
    pub fn post(target: &str) -> TestRequest {
        TestRequest::new("POST", target)
    }

    /// `PUT target`.
    pub fn put(target: &str) -> TestRequest {
        TestRequest::new("PUT", target)
    }

    /// `DELETE target`.
    pub fn delete(target: &str) -> TestRequest {
        TestRequest::new("DELETE", target)
    }

    /// Add a request header. Panics on a header name or value HTTP does not allow.
    pub fn header(mut self, name: &str, value: &str) -> TestRequest {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("invalid header name in a test: {name:?}"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|_| panic!("invalid header value in a test: {value:?}"));
        self.exchange.headers.append(name, value);
        self
    }

    /// The request body.
    pub fn body(mut self, body: impl Into<Bytes>) -> TestRequest {
        self.exchange.body = body.into();
        self
    }

    /// A JSON body, with `content-type: application/json`.
    pub fn json(self, value: &serde_json::Value) -> TestRequest {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    /// A response already present, for calling a response-side hook (`post_request`,
    /// `pre_response`, `post_response`, `error`) directly with [`crate::TestHost::hook`].
    pub fn with_response(mut self, status: u16, body: impl Into<Bytes>) -> TestRequest {
        let mut response = Response::new(StatusCode::from_u16(status).unwrap_or(StatusCode::OK));
        response.body = body.into();
        self.exchange.response = Some(response);
        self
    }

    /// The error an `error` hook sees.
    pub fn with_error(mut self, error: &str) -> TestRequest {
        self.exchange.error = Some(error.to_string());
        self
    }

    /// The exchange this request becomes.
    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    pub(crate) fn into_exchange(self) -> Exchange {
        self.exchange
    }
}

impl From<&str> for TestRequest {
    /// `"GET /path"`, or just `"/path"` for a GET.
    fn from(s: &str) -> TestRequest {
        match s.split_once(' ') {
            Some((method, target)) => TestRequest::new(method, target.trim()),
            None => TestRequest::get(s),
        }
    }
}

/// The response the host produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResponse {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl From<Response> for TestResponse {
    fn from(r: Response) -> TestResponse {
        TestResponse {
            status: r.status.as_u16(),
            headers: r.headers,
            body: r.body,
        }
    }
}

impl TestResponse {
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON. Panics, showing the body, when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {}, body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// A response header (several values joined with ", ").
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// Panics, showing the body, unless the status is `status`.
    pub fn assert_status(&self, status: u16) -> &TestResponse {
        assert_eq!(
            self.status,
            status,
            "expected status {status}, got {} with body {:?}",
            self.status,
            self.text()
        );
        self
    }

    /// Panics unless the header `name` is `value`.
    pub fn assert_header(&self, name: &str, value: &str) -> &TestResponse {
        assert_eq!(
            self.header(name).as_deref(),
            Some(value),
            "header {name} of a {} response (headers: {:?})",
            self.status,
            self.headers
        );
        self
    }

    /// Panics unless the body contains `needle`.
    pub fn assert_body_contains(&self, needle: &str) -> &TestResponse {
        let text = self.text();
        assert!(
            text.contains(needle),
            "body of a {} response does not contain {needle:?}: {text:?}",
            self.status
        );
        self
    }
}
