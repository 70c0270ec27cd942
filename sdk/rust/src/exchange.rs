//! Conveniences on the contract's HTTP types ([`Response`], [`Action`], [`Exchange`]).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Action, Error, Exchange, Response, Result};

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A JSON response (`content-type: application/json`).
    ///
    /// ```ignore
    /// Response::json(200, &json!({ "ok": true }))
    /// Response::json(201, &user)          // any `Serialize`
    /// ```
    /// A value that cannot be serialized (a map with non-string keys) gives a 500 with the reason.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::bytes(status, "application/json", body),
            Err(e) => Response::bytes(
                500,
                "application/json",
                serde_json::json!({ "error": "internal", "message": format!("response not serializable: {e}") })
                    .to_string()
                    .into_bytes(),
            ),
        }
    }

    /// A plain-text response (`content-type: text/plain; charset=utf-8`).
    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response::bytes(
            status,
            "text/plain; charset=utf-8",
            text.into().into_bytes(),
        )
    }

    /// A response with this body and content type.
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
            body: body.into(),
        }
    }

    /// Adds a header (builder style): `Response::text(200, "ok").with_header("cache-control", "no-store")`.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body (builder style).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl From<Response> for Action {
    /// `Action::Respond(response)`.
    fn from(response: Response) -> Action {
        Action::Respond(response)
    }
}

impl Action {
    /// `Action::Respond(response)`.
    pub fn respond(response: Response) -> Action {
        Action::Respond(response)
    }
}

impl Exchange {
    /// The request body as UTF-8 text (invalid sequences replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body()).into_owned()
    }

    /// The request body parsed as JSON.
    pub fn body_json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body())
            .map_err(|e| Error::msg(format!("invalid JSON body: {e}")))
    }

    /// Whether the request has this header (case-insensitive), with any value.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}
