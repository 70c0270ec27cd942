//! The exchange of the current call ([`Exchange`]), what a call decides ([`Action`]), and
//! conveniences on [`Response`] and [`Field`].
//!
//! Contract 0.2 crosses the sandbox boundary as little as it can: the values a hook, a
//! middleware or a route declared it reads ([`Field`]) come with the call, and the changes it
//! makes go back to the host with its result, as edits. [`Exchange`] hides both: a reader answers
//! from the given values when the field was declared and asks the host otherwise; a setter
//! records an edit that the SDK returns with the call.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::plugd::plugin::exchange as host;
use crate::{Edit, Error, Field, Identity, Response, Result};

/// What a `pre_request` hook or a middleware's [`on_request`](crate::Plugin::on_request)
/// decides. The other hooks return `Continue`.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Go on. The changes made through the [`Exchange`]'s setters stand.
    Continue,
    /// Answer now. Later `pre_request` hooks, middleware and the handler are skipped;
    /// `post_request`, `pre_response` and `post_response` hooks still run.
    Respond(Response),
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

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A JSON response (`content-type: application/json`), serialized straight into the body.
    ///
    /// ```ignore
    /// #[derive(Serialize)]
    /// struct Hello<'a> { message: &'a str }
    ///
    /// Response::json(200, &Hello { message: "hi" })   // no intermediate JSON value
    /// Response::json(200, &json!({ "ok": true }))     // json! works too (it builds a Value first)
    /// ```
    /// A value that cannot be serialized (a map with non-string keys) gives a 500 with the reason.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        let mut body = Vec::with_capacity(128);
        match serde_json::to_writer(&mut body, value) {
            Ok(()) => Response::bytes(status, "application/json", body),
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

impl Field {
    /// A request header (case-insensitive name).
    pub fn header(name: &str) -> Field {
        Field::Header(name.to_owned())
    }
    /// One decoded query parameter.
    pub fn query_param(name: &str) -> Field {
        Field::QueryParam(name.to_owned())
    }
    /// One parameter of the matched route pattern (`{id}` of `/users/{id}`).
    pub fn route_param(name: &str) -> Field {
        Field::RouteParam(name.to_owned())
    }
    /// A value set by an earlier hook or handler of this request.
    pub fn local(key: &str) -> Field {
        Field::Local(key.to_owned())
    }
    /// A response header (case-insensitive name), once a response exists.
    pub fn response_header(name: &str) -> Field {
        Field::ResponseHeader(name.to_owned())
    }
}

/// Which edits a call returns to the host with its result. An edit the call cannot return (a
/// response header in a `pre_request` hook, anything in a route handler) goes to the host's
/// setter at once, which answers as it does for every plugin: applied, or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// `pre_request` hooks and middleware `on_request`: request headers and locals.
    Request,
    /// `post_request` and `pre_response` hooks and middleware `on_response`: the response and
    /// locals.
    Response,
    /// Nothing is returned: route handlers, and the hooks that only observe (`startup`,
    /// `shutdown`, `post_response`) or answer (`error`).
    Direct,
}

/// A value of the exchange, as a field names it and as an edit changes it.
#[derive(Clone, Copy)]
enum Key<'a> {
    Method,
    Path,
    Query,
    Header(&'a str),
    QueryParam(&'a str),
    RouteParam(&'a str),
    Local(&'a str),
    Status,
    ResponseHeader(&'a str),
    Error,
    Subject,
}

impl Key<'_> {
    fn is(self, field: &Field) -> bool {
        match (self, field) {
            (Key::Method, Field::Method)
            | (Key::Path, Field::Path)
            | (Key::Query, Field::Query)
            | (Key::Status, Field::Status)
            | (Key::Error, Field::Error)
            | (Key::Subject, Field::Subject) => true,
            (Key::Header(a), Field::Header(b))
            | (Key::ResponseHeader(a), Field::ResponseHeader(b)) => a.eq_ignore_ascii_case(b),
            (Key::QueryParam(a), Field::QueryParam(b))
            | (Key::RouteParam(a), Field::RouteParam(b))
            | (Key::Local(a), Field::Local(b)) => a == b,
            _ => false,
        }
    }

    /// What `edit` says about this value: `Some(Some(v))` it set it, `Some(None)` it removed it,
    /// `None` it is about something else.
    fn edited(self, edit: &Edit) -> Option<Option<&str>> {
        match (self, edit) {
            (Key::Header(name), Edit::SetHeader((n, v)))
            | (Key::ResponseHeader(name), Edit::SetResponseHeader((n, v)))
                if n.eq_ignore_ascii_case(name) =>
            {
                Some(Some(v))
            }
            (Key::Header(name), Edit::RemoveHeader(n))
            | (Key::ResponseHeader(name), Edit::RemoveResponseHeader(n))
                if n.eq_ignore_ascii_case(name) =>
            {
                Some(None)
            }
            (Key::Local(key), Edit::SetLocal((k, v))) if k == key => Some(Some(v)),
            _ => None,
        }
    }
}

/// The HTTP exchange a hook, a middleware or a route handler is called for: the request, and
/// its response once one exists.
///
/// **Reading.** The values the registration declared it reads ([`Field`]: `register::hook_reading`,
/// `register::route_reading`, `register::middleware_reading`) came with the call: reading them
/// costs no call to the host. Anything else is asked of the host when read (one call each).
/// Readers of text answer a [`Cow`]: borrowed from the call's values, owned when it came from the
/// host; use it as a `&str` (`&*value`, `value.as_ref()`), or `into_owned()` for a `String`.
///
/// **Changing.** The setters record an edit; the SDK returns the call's edits with its result
/// and the host applies them in order, each with the checks of the matching host setter. A later
/// read in the same call sees the change. A refused edit (a framing header, a value past the
/// header caps) fails the call as the plugin's error; to learn the host's answer inside the
/// call, [`apply_edits`](Exchange::apply_edits). Edits a call cannot return — anything in a route
/// handler, in the `startup`, `shutdown`, `post_response` and `error` hooks, a response change
/// in a `pre_request` hook — go to the host at once, and its answer is the setter's result.
///
/// | hook or call | edits returned with the result |
/// |---|---|
/// | `pre_request`, middleware `on_request` | request headers, locals |
/// | `post_request`, `pre_response`, middleware `on_response` | status, response headers and body, locals |
/// | route handler, `startup`, `shutdown`, `post_response`, `error` | none: every setter calls the host |
#[derive(Debug)]
pub struct Exchange {
    /// The fields the registration declared, when the host passed exactly as many values.
    reads: Option<Rc<[Field]>>,
    given: Vec<Option<String>>,
    stage: Stage,
    /// The changes to return with the call's result, in order.
    pending: RefCell<Vec<Edit>>,
    /// The changes of this call the host has already applied (`apply_edits`, and those the
    /// call could not return), kept for the later reads.
    applied: RefCell<Vec<Edit>>,
}

impl Exchange {
    pub(crate) fn new(
        reads: Option<Rc<[Field]>>,
        given: Vec<Option<String>>,
        stage: Stage,
    ) -> Exchange {
        // Values the registration did not declare (a hook declared only in the manifest, or a
        // host that passed a different count) are not trusted: every read then asks the host.
        let reads = reads.filter(|r| r.len() == given.len());
        Exchange {
            reads,
            given,
            stage,
            pending: RefCell::new(Vec::new()),
            applied: RefCell::new(Vec::new()),
        }
    }

    /// The edits the host has not applied yet, to return with the call's result.
    pub(crate) fn into_edits(self) -> Vec<Edit> {
        self.pending.into_inner()
    }

    /// The given value of a declared field: `None` when the field was not declared.
    fn given(&self, key: Key<'_>) -> Option<Option<&str>> {
        let reads = self.reads.as_deref()?;
        let i = reads.iter().position(|f| key.is(f))?;
        Some(self.given[i].as_deref())
    }

    /// The latest change this call made to the value: `None` when it made none. (Applied edits
    /// are older than pending ones, but for those the call could not return, which are about
    /// other values than the pending ones.)
    fn edited(&self, key: Key<'_>) -> Option<Option<String>> {
        self.latest(|e| key.edited(e).map(|v| v.map(str::to_owned)))
    }

    /// The first answer of `find` over this call's edits, the latest first.
    fn latest<T>(&self, find: impl Fn(&Edit) -> Option<T>) -> Option<T> {
        let pending = self.pending.borrow();
        let applied = self.applied.borrow();
        pending
            .iter()
            .rev()
            .chain(applied.iter().rev())
            .find_map(find)
    }

    /// Every edit of this call, in order (as far as later reads can tell).
    fn all_edits(&self) -> Vec<Edit> {
        let mut all = self.applied.borrow().clone();
        all.extend(self.pending.borrow().iter().cloned());
        all
    }

    /// A value: as this call changed it, else as given, else as the host answers.
    fn read(&self, key: Key<'_>, ask: impl FnOnce() -> Option<String>) -> Option<Cow<'_, str>> {
        if let Some(value) = self.edited(key) {
            return value.map(Cow::Owned);
        }
        match self.given(key) {
            Some(value) => value.map(Cow::Borrowed),
            None => ask().map(Cow::Owned),
        }
    }

    /// Records `edit` to return with the call when this stage may return it; else applies it on
    /// the host now (which answers for it) and records it for the later reads.
    fn change(&self, edit: Edit, stage: Stage) -> Result<()> {
        if self.stage == stage {
            self.pending.borrow_mut().push(edit);
            return Ok(());
        }
        apply(&edit)?;
        self.applied.borrow_mut().push(edit);
        Ok(())
    }

    /// Applies the edits of this call so far on the host now, in order, and answers the first
    /// refusal (kind `Denied` or `Invalid`, with the host's message); that edit and the ones
    /// after it are dropped. Without it, the edits go with the call's result and a refusal fails
    /// the call.
    ///
    /// ```ignore
    /// exchange.set_response_header("x-trace", &trace)?;
    /// if let Err(e) = exchange.apply_edits() {
    ///     log::warn(format!("x-trace refused: {e}"));
    /// }
    /// ```
    pub fn apply_edits(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        let mut applied = self.applied.borrow_mut();
        for edit in pending {
            apply(&edit)?;
            applied.push(edit);
        }
        Ok(())
    }

    /// The request method, upper case.
    pub fn method(&self) -> Cow<'_, str> {
        self.read(Key::Method, || Some(host::method()))
            .unwrap_or_default()
    }

    /// The request path, without the query string.
    pub fn path(&self) -> Cow<'_, str> {
        self.read(Key::Path, || Some(host::path()))
            .unwrap_or_default()
    }

    /// The raw query string, without the `?`.
    pub fn query(&self) -> Cow<'_, str> {
        self.read(Key::Query, || Some(host::query()))
            .unwrap_or_default()
    }

    /// One decoded query parameter.
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.read(Key::QueryParam(name), || host::query_param(name))
    }

    /// One parameter of the matched route pattern (`/users/{id}`).
    pub fn route_param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.read(Key::RouteParam(name), || host::route_param(name))
    }

    /// A request header (case-insensitive name); several values are joined with `", "`.
    /// Headers the operator hides from this plugin (`hide_headers`) are absent.
    pub fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.read(Key::Header(name), || host::header(name))
    }

    /// Whether the request has this header (case-insensitive), with any value.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Every request header the plugin may see, with this call's changes (one host call).
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut headers = host::headers();
        overlay(&mut headers, &self.all_edits(), Key::Header(""));
        headers
    }

    /// The request body (one host call: the body is copied into the plugin).
    pub fn body(&self) -> Vec<u8> {
        host::body()
    }

    /// The request body as UTF-8 text (invalid sequences replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body()).into_owned()
    }

    /// The request body parsed as JSON.
    pub fn body_json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body())
            .map_err(|e| Error::msg(format!("invalid JSON body: {e}")))
    }

    /// Sets (replaces) a request header. Framing headers (`content-length`, `connection`, …)
    /// and hidden headers are refused, as is a change past the header caps. Returned with the
    /// call in `pre_request` hooks and middleware `on_request`; refused elsewhere.
    pub fn set_header(&self, name: &str, value: &str) -> Result<()> {
        let edit = Edit::SetHeader((name.to_owned(), value.to_owned()));
        self.change(edit, Stage::Request)
    }

    /// Removes a request header (see [`set_header`](Exchange::set_header) for where).
    pub fn remove_header(&self, name: &str) -> Result<()> {
        self.change(Edit::RemoveHeader(name.to_owned()), Stage::Request)
    }

    /// The response status, once a response exists.
    pub fn status(&self) -> Option<u16> {
        let edited = self.latest(|e| match e {
            Edit::SetStatus(s) => Some(*s),
            _ => None,
        });
        if edited.is_some() {
            return edited;
        }
        match self.given(Key::Status) {
            Some(value) => value.and_then(|s| s.parse().ok()),
            None => host::status(),
        }
    }

    /// A response header (case-insensitive name), once a response exists.
    pub fn response_header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.read(Key::ResponseHeader(name), || host::response_header(name))
    }

    /// Every response header, with this call's changes (one host call).
    pub fn response_headers(&self) -> Vec<(String, String)> {
        let mut headers = host::response_headers();
        overlay(&mut headers, &self.all_edits(), Key::ResponseHeader(""));
        headers
    }

    /// The response body, once a response exists (one host call, unless this call replaced it).
    pub fn response_body(&self) -> Option<Vec<u8>> {
        let replaced = self.latest(|e| match e {
            Edit::SetResponseBody(body) => Some(body.clone()),
            _ => None,
        });
        replaced.or_else(host::response_body)
    }

    /// Sets the response status. Returned with the call in `post_request` and `pre_response`
    /// hooks and middleware `on_response`; refused elsewhere.
    pub fn set_status(&self, status: u16) -> Result<()> {
        self.change(Edit::SetStatus(status), Stage::Response)
    }

    /// Sets (replaces) a response header; framing headers are refused (see
    /// [`set_status`](Exchange::set_status) for where).
    pub fn set_response_header(&self, name: &str, value: &str) -> Result<()> {
        let edit = Edit::SetResponseHeader((name.to_owned(), value.to_owned()));
        self.change(edit, Stage::Response)
    }

    /// Removes a response header (see [`set_status`](Exchange::set_status) for where).
    pub fn remove_response_header(&self, name: &str) -> Result<()> {
        self.change(Edit::RemoveResponseHeader(name.to_owned()), Stage::Response)
    }

    /// Replaces the response body (see [`set_status`](Exchange::set_status) for where). A `Vec`
    /// is moved, not copied: pass one for a large body.
    pub fn set_response_body(&self, body: impl Into<Vec<u8>>) -> Result<()> {
        self.change(Edit::SetResponseBody(body.into()), Stage::Response)
    }

    /// In the `error` hook: what failed.
    pub fn error(&self) -> Option<Cow<'_, str>> {
        self.read(Key::Error, host::error)
    }

    /// The identity attached by an authentication hook, if any (one host call).
    pub fn identity(&self) -> Option<Identity> {
        host::identity()
    }

    /// The subject of the identity, if any: given when declared ([`Field::Subject`]), else from
    /// the host.
    pub fn subject(&self) -> Option<Cow<'_, str>> {
        self.read(Key::Subject, || host::identity().map(|i| i.subject))
    }

    /// Attaches an identity (or removes it), at once. Allowed in `pre_request` hooks and
    /// middleware `on_request`, to a plugin granted plugd's `identity` permission: anyone else is
    /// refused (`denied`), and the attempt audited. Routes' required roles are checked against it.
    pub fn set_identity(&self, identity: Option<&Identity>) -> Result<()> {
        Ok(host::set_identity(identity)?)
    }

    /// A value set by an earlier hook or handler of this request (or earlier in this call).
    pub fn local(&self, key: &str) -> Option<Cow<'_, str>> {
        self.read(Key::Local(key), || host::local(key))
    }

    /// Sets a value for the later hooks and handlers of this request. At most 128 locals and
    /// 256 KiB in all per request: past that the value is dropped (and the refusal audited).
    pub fn set_local(&self, key: &str, value: &str) {
        if self.stage == Stage::Direct {
            // Applied at once; the host may drop it (past the caps), so later reads ask the host.
            host::set_local(key, value);
        } else {
            let edit = Edit::SetLocal((key.to_owned(), value.to_owned()));
            self.pending.borrow_mut().push(edit);
        }
    }

    /// The client's address (`ip:port`), to a plugin granted plugd's `client` permission;
    /// `None` to others, and when the server does not know it.
    pub fn peer_address(&self) -> Option<String> {
        host::peer_address()
    }

    /// A request attribute the application embedding plugd exposes, to a plugin granted
    /// `client`; `None` to others.
    pub fn attribute(&self, name: &str) -> Option<String> {
        host::attribute(name)
    }
}

/// Applies one edit through the host's setter of the same meaning.
fn apply(edit: &Edit) -> Result<()> {
    match edit {
        Edit::SetHeader((name, value)) => host::set_header(name, value)?,
        Edit::RemoveHeader(name) => host::remove_header(name)?,
        Edit::SetLocal((key, value)) => host::set_local(key, value),
        Edit::SetStatus(status) => host::set_status(*status)?,
        Edit::SetResponseHeader((name, value)) => host::set_response_header(name, value)?,
        Edit::RemoveResponseHeader(name) => host::remove_response_header(name)?,
        Edit::SetResponseBody(body) => host::set_response_body(body)?,
    }
    Ok(())
}

/// `headers` as `edits` left them (`kind`, `Key::Header` or `Key::ResponseHeader`, names the
/// headers the edits are about).
fn overlay(headers: &mut Vec<(String, String)>, edits: &[Edit], kind: Key<'_>) {
    for edit in edits {
        let (name, value) = match (kind, edit) {
            (Key::Header(_), Edit::SetHeader((n, v)))
            | (Key::ResponseHeader(_), Edit::SetResponseHeader((n, v))) => (n, Some(v)),
            (Key::Header(_), Edit::RemoveHeader(n))
            | (Key::ResponseHeader(_), Edit::RemoveResponseHeader(n)) => (n, None),
            _ => continue,
        };
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            headers.push((name.to_ascii_lowercase(), value.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(reads: &[Field], given: &[Option<&str>], stage: Stage) -> Exchange {
        let given = given.iter().map(|v| v.map(str::to_owned)).collect();
        Exchange::new(Some(reads.into()), given, stage)
    }

    #[test]
    fn declared_values_are_read_from_the_call_in_declared_order() {
        let reads = [
            Field::Method,
            Field::header("Authorization"),
            Field::local("client"),
            Field::Status,
            Field::header("x-absent"),
        ];
        let given = [
            Some("GET"),
            Some("Bearer t"),
            Some("c42"),
            Some("204"),
            None,
        ];
        let ex = exchange(&reads, &given, Stage::Request);
        assert_eq!(ex.method(), "GET");
        // Header names are case-insensitive, locals are not.
        assert_eq!(ex.header("authorization").as_deref(), Some("Bearer t"));
        assert!(matches!(
            ex.header("AUTHORIZATION"),
            Some(Cow::Borrowed("Bearer t"))
        ));
        assert_eq!(ex.local("client").as_deref(), Some("c42"));
        assert_eq!(ex.status(), Some(204));
        assert_eq!(ex.header("x-absent"), None);
        assert!(!ex.has_header("x-absent"));
    }

    #[test]
    fn later_reads_see_the_calls_own_changes_and_edits_keep_their_order() {
        let reads = [Field::header("x-id"), Field::local("client")];
        let ex = exchange(&reads, &[Some("given"), None], Stage::Request);
        ex.set_header("X-Id", "one").unwrap();
        ex.set_local("client", "c1");
        ex.set_header("x-id", "two").unwrap();
        assert_eq!(ex.header("x-id").as_deref(), Some("two"));
        assert_eq!(ex.local("client").as_deref(), Some("c1"));
        ex.remove_header("x-id").unwrap();
        assert_eq!(ex.header("x-id"), None);
        assert_eq!(
            ex.into_edits(),
            vec![
                Edit::SetHeader(("X-Id".into(), "one".into())),
                Edit::SetLocal(("client".into(), "c1".into())),
                Edit::SetHeader(("x-id".into(), "two".into())),
                Edit::RemoveHeader("x-id".into()),
            ]
        );
    }

    #[test]
    fn response_changes_are_returned_from_response_stages() {
        let reads = [Field::Status, Field::response_header("x-a")];
        let ex = exchange(&reads, &[Some("200"), Some("a")], Stage::Response);
        ex.set_status(404).unwrap();
        ex.set_response_header("x-a", "b").unwrap();
        ex.set_response_body(b"gone").unwrap();
        assert_eq!(ex.status(), Some(404));
        assert_eq!(ex.response_header("X-A").as_deref(), Some("b"));
        assert_eq!(ex.response_body().as_deref(), Some(&b"gone"[..]));
        assert_eq!(ex.into_edits().len(), 3);
    }

    #[test]
    fn given_values_of_another_count_than_declared_are_not_trusted() {
        // Two fields declared, three values passed: the values cannot be matched to names.
        let given = vec![Some("a".to_owned()), Some("b".to_owned()), None];
        let ex = Exchange::new(
            Some([Field::Path, Field::Query].into()),
            given,
            Stage::Request,
        );
        assert!(ex.reads.is_none());
        let ex = Exchange::new(None, Vec::new(), Stage::Request);
        assert!(ex.reads.is_none());
    }

    #[test]
    fn headers_overlay_applies_sets_and_removals_in_order() {
        let mut headers = vec![
            ("accept".to_owned(), "*/*".to_owned()),
            ("x-a".to_owned(), "1".to_owned()),
            ("X-A".to_owned(), "2".to_owned()),
        ];
        let edits = [
            Edit::SetHeader(("X-A".into(), "3".into())),
            Edit::RemoveHeader("ACCEPT".into()),
            Edit::SetResponseHeader(("x-r".into(), "ignored".into())),
            Edit::SetHeader(("x-b".into(), "4".into())),
        ];
        overlay(&mut headers, &edits, Key::Header(""));
        assert_eq!(
            headers,
            vec![
                ("x-a".to_owned(), "3".to_owned()),
                ("x-b".to_owned(), "4".to_owned())
            ]
        );
    }

    #[test]
    fn json_responses_serialize_straight_into_the_body() {
        #[derive(Serialize)]
        struct Hello<'a> {
            message: &'a str,
            client: Option<&'a str>,
        }
        let r = Response::json(
            200,
            &Hello {
                message: "hi",
                client: None,
            },
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.body, br#"{"message":"hi","client":null}"#);
        let bad = std::collections::BTreeMap::from([((1, 2), 3)]);
        let r = Response::json(200, &bad);
        assert_eq!(r.status, 500);
    }
}
