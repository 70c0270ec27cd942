//! Contract 0.2's `field`s: what a hook, a middleware or a route declared it reads when it
//! registered, and the values passed with each of its calls (`given`).
//!
//! Fields are checked once, at registration (header names parsed, names capped), and kept per
//! plugin; a call computes only the values its registration declared, reading the exchange
//! through the same accessors as the `exchange` interface (hidden headers are out of the
//! exchange for the length of the call, so they are `none`).

use std::collections::HashMap;

use http::HeaderName;
use plugd_core::{Exchange, HookType, HostError};

use crate::bindings::v0_2::types::Field;

/// The most fields one registration may declare.
pub(crate) const MAX_READS: usize = 64;
/// The longest name a field may carry (a query or route parameter, a local).
const MAX_NAME_BYTES: usize = 1024;

/// One declared field, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Read {
    Method,
    Path,
    Query,
    Header(HeaderName),
    QueryParam(Box<str>),
    RouteParam(Box<str>),
    Local(Box<str>),
    Status,
    ResponseHeader(HeaderName),
    Error,
    Subject,
}

/// What one registration reads, in the order declared.
pub(crate) type Fields = Box<[Read]>;

fn header(name: String) -> Result<HeaderName, HostError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        HostError::Invalid(format!(
            "reads: invalid header name {:?}",
            plugd_core::clean_text(&name, 80)
        ))
    })
}

fn name(kind: &str, name: String) -> Result<Box<str>, HostError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(HostError::Invalid(format!(
            "reads: a {kind} name of {} bytes is over the {MAX_NAME_BYTES}-byte limit",
            name.len()
        )));
    }
    Ok(name.into_boxed_str())
}

/// Check the fields a registration declares.
pub(crate) fn parse(fields: Vec<Field>) -> Result<Fields, HostError> {
    if fields.len() > MAX_READS {
        return Err(HostError::Invalid(format!(
            "reads: {} fields declared, over the limit of {MAX_READS}",
            fields.len()
        )));
    }
    fields
        .into_iter()
        .map(|f| {
            Ok(match f {
                Field::Method => Read::Method,
                Field::Path => Read::Path,
                Field::Query => Read::Query,
                Field::Header(n) => Read::Header(header(n)?),
                Field::QueryParam(n) => Read::QueryParam(name("query-param", n)?),
                Field::RouteParam(n) => Read::RouteParam(name("route-param", n)?),
                Field::Local(n) => Read::Local(name("local", n)?),
                Field::Status => Read::Status,
                Field::ResponseHeader(n) => Read::ResponseHeader(header(n)?),
                Field::Error => Read::Error,
                Field::Subject => Read::Subject,
            })
        })
        .collect()
}

impl Read {
    fn value(&self, ex: &Exchange) -> Option<String> {
        match self {
            Read::Method => Some(ex.method.as_str().to_owned()),
            Read::Path => Some(ex.path.clone()),
            Read::Query => Some(ex.query.clone()),
            Read::Header(n) => ex.header(n.as_str()),
            Read::QueryParam(n) => ex.query_param(n),
            Read::RouteParam(n) => ex.route_param(n),
            Read::Local(k) => ex.local(k).map(str::to_owned),
            Read::Status => ex.status().map(|s| s.to_string()),
            Read::ResponseHeader(n) => ex.response_header(n.as_str()),
            Read::Error => ex.error.clone(),
            Read::Subject => ex.identity().map(|i| i.subject.clone()),
        }
    }
}

/// The values of `fields` in `ex`, in order; all `none` without an exchange (startup and
/// shutdown hooks). No allocation when nothing was declared.
pub(crate) fn given(fields: &[Read], ex: Option<&Exchange>) -> Vec<Option<String>> {
    match ex {
        Some(ex) => fields.iter().map(|f| f.value(ex)).collect(),
        None => vec![None; fields.len()],
    }
}

/// Every registration's fields of one plugin: by hook type, middleware name and route pattern.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Reads {
    hooks: Vec<(HookType, Fields)>,
    middleware: HashMap<Box<str>, Fields>,
    routes: HashMap<Box<str>, Fields>,
}

/// A registration that declared other fields than an earlier one of the same thing.
fn conflict(what: &str) -> HostError {
    HostError::Invalid(format!("{what} is already registered with other reads"))
}

impl Reads {
    pub(crate) fn hook(&self, hook: HookType) -> &[Read] {
        self.hooks
            .iter()
            .find(|(h, _)| *h == hook)
            .map_or(&[], |(_, f)| f)
    }

    pub(crate) fn middleware(&self, name: &str) -> &[Read] {
        self.middleware.get(name).map_or(&[], |f| f)
    }

    pub(crate) fn route(&self, pattern: &str) -> &[Read] {
        self.routes.get(pattern).map_or(&[], |f| f)
    }

    /// A hook registered again must declare the same fields.
    pub(crate) fn add_hook(&mut self, hook: HookType, fields: Fields) -> Result<(), HostError> {
        match self.hooks.iter().find(|(h, _)| *h == hook) {
            Some((_, f)) if *f == fields => Ok(()),
            Some(_) => Err(conflict(&format!("hook {}", hook.as_str()))),
            None => {
                self.hooks.push((hook, fields));
                Ok(())
            }
        }
    }

    /// One pattern's fields, whatever the method: a pattern registered for two methods must
    /// declare the same fields.
    pub(crate) fn add_route(&mut self, pattern: &str, fields: Fields) -> Result<(), HostError> {
        match self.routes.get(pattern) {
            Some(f) if *f == fields => Ok(()),
            Some(_) => Err(conflict(&format!("route {pattern}"))),
            None => {
                self.routes.insert(pattern.into(), fields);
                Ok(())
            }
        }
    }

    pub(crate) fn set_middleware(&mut self, name: &str, fields: Fields) {
        self.middleware.insert(name.into(), fields);
    }

    pub(crate) fn remove_middleware(&mut self, name: &str) {
        self.middleware.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked_at_registration() {
        let e = parse(vec![Field::Header("bad header".into())]).unwrap_err();
        assert!(matches!(e, HostError::Invalid(_)), "{e}");
        let e = parse(vec![Field::Method; MAX_READS + 1]).unwrap_err();
        assert!(e.to_string().contains("over the limit of 64"), "{e}");
        let e = parse(vec![Field::Local("k".repeat(MAX_NAME_BYTES + 1))]).unwrap_err();
        assert!(e.to_string().contains("1024-byte limit"), "{e}");
        let ok = parse(vec![Field::Header("X-In".into()), Field::Status]).unwrap();
        assert_eq!(ok[0], Read::Header(HeaderName::from_static("x-in")));
    }

    #[test]
    fn given_follows_the_declared_order() {
        let mut ex = Exchange::new(http::Method::POST, "/plugins/p/x?a=1");
        ex.headers.insert("x-in", "v".parse().unwrap());
        ex.locals.insert("k".into(), "l".into());
        let fields = parse(vec![
            Field::Local("k".into()),
            Field::Header("x-in".into()),
            Field::Method,
            Field::QueryParam("a".into()),
            Field::Status,
            Field::Subject,
        ])
        .unwrap();
        let got = given(&fields, Some(&ex));
        let want = [Some("l"), Some("v"), Some("POST"), Some("1"), None, None];
        assert_eq!(got, want.map(|v| v.map(str::to_owned)));
        assert_eq!(given(&fields, None), vec![None; 6]);
        assert!(given(&[], Some(&ex)).capacity() == 0);
    }

    #[test]
    fn a_registration_again_must_read_the_same() {
        let mut reads = Reads::default();
        let one = || parse(vec![Field::Method]).unwrap();
        reads.add_hook(HookType::PreRequest, one()).unwrap();
        reads.add_hook(HookType::PreRequest, one()).unwrap();
        assert!(
            reads
                .add_hook(HookType::PreRequest, Fields::default())
                .is_err()
        );
        reads.add_route("/x", one()).unwrap();
        assert!(reads.add_route("/x", Fields::default()).is_err());
        assert_eq!(reads.route("/x"), &[Read::Method]);
        assert!(reads.route("/y").is_empty());
        reads.set_middleware("m", one());
        assert_eq!(reads.middleware("m").len(), 1);
        reads.remove_middleware("m");
        assert!(reads.middleware("m").is_empty());
    }
}
