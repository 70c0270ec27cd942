//! What each registration of this instance declared it reads: the names of the values the host
//! passes with each call of it, in order.
//!
//! A registration's reads are fixed once the host accepted them: registering the same hook,
//! route pattern or middleware name again with other reads is refused, here, before the host is
//! asked. A middleware registered again after `unregister_middleware` keeps its first reads too:
//! the other instances of the plugin know it by those.

use std::cell::RefCell;
use std::rc::Rc;

use crate::{Error, ErrorKind, Field, HookType, Result};

/// The reads of one kind of registration, by name (a route's pattern, a middleware's name).
#[derive(Default)]
struct Named(Vec<(String, Rc<[Field]>)>);

impl Named {
    fn get(&self, name: &str) -> Option<&Rc<[Field]>> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }
}

#[derive(Default)]
struct Reads {
    /// By `HookType as usize`.
    hooks: [Option<Rc<[Field]>>; 7],
    routes: Named,
    middleware: Named,
}

thread_local! {
    // A component instance is single-threaded and never re-entered.
    static READS: RefCell<Reads> = RefCell::new(Reads::default());
}

/// What a registration is: its kind and name.
#[derive(Clone, Copy)]
pub(crate) enum Registration<'a> {
    Hook(HookType),
    Route(&'a str),
    Middleware(&'a str),
}

impl Registration<'_> {
    fn describe(self) -> String {
        match self {
            Registration::Hook(h) => format!("hook {h:?}"),
            Registration::Route(p) => format!("route {p}"),
            Registration::Middleware(m) => format!("middleware {m}"),
        }
    }
}

fn declared(reads: &Reads, what: Registration<'_>) -> Option<Rc<[Field]>> {
    match what {
        Registration::Hook(h) => reads.hooks[h as usize].clone(),
        Registration::Route(p) => reads.routes.get(p).cloned(),
        Registration::Middleware(m) => reads.middleware.get(m).cloned(),
    }
}

/// Registers `what` with the host through `register` unless it is already known with other
/// reads, and remembers its reads once the host accepted it.
pub(crate) fn register(
    what: Registration<'_>,
    fields: &[Field],
    register: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let known = READS.with(|r| declared(&r.borrow(), what));
    if let Some(known) = &known
        && **known != *fields
    {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!(
                "{} is already registered reading {known:?}, not {fields:?}: a registration's reads cannot change (register it under another name)",
                what.describe()
            ),
        ));
    }
    register()?;
    if known.is_none() {
        let fields: Rc<[Field]> = fields.into();
        READS.with(|r| {
            let mut r = r.borrow_mut();
            match what {
                Registration::Hook(h) => r.hooks[h as usize] = Some(fields),
                Registration::Route(p) => r.routes.0.push((p.to_owned(), fields)),
                Registration::Middleware(m) => r.middleware.0.push((m.to_owned(), fields)),
            }
        });
    }
    Ok(())
}

/// The reads declared for `what` in this instance, if it was registered here.
pub(crate) fn of(what: Registration<'_>) -> Option<Rc<[Field]>> {
    READS.with(|r| declared(&r.borrow(), what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_remembered_once_the_host_accepted_them() {
        let what = Registration::Middleware("audit");
        let refused = register(what, &[Field::Path], || Err(Error::msg("denied")));
        assert!(refused.is_err());
        assert_eq!(of(what), None);
        register(what, &[Field::Path], || Ok(())).unwrap();
        assert_eq!(of(what).as_deref(), Some(&[Field::Path][..]));
        // Again with the same reads: fine; with others: refused before the host is asked.
        register(what, &[Field::Path], || Ok(())).unwrap();
        let changed = register(what, &[Field::Method], || panic!("the host was asked"));
        assert_eq!(changed.unwrap_err().kind(), ErrorKind::Invalid);
        assert_eq!(of(what).as_deref(), Some(&[Field::Path][..]));
    }

    #[test]
    fn hooks_routes_and_middleware_are_kept_apart() {
        let reads = [Field::header("authorization")];
        register(Registration::Hook(HookType::PreRequest), &reads, || Ok(())).unwrap();
        register(Registration::Route("/hello"), &[], || Ok(())).unwrap();
        assert_eq!(
            of(Registration::Hook(HookType::PreRequest)).as_deref(),
            Some(&reads[..])
        );
        assert_eq!(of(Registration::Hook(HookType::PreResponse)), None);
        assert_eq!(of(Registration::Route("/hello")).as_deref(), Some(&[][..]));
        assert_eq!(of(Registration::Route("/other")), None);
        assert_eq!(of(Registration::Middleware("/hello")), None);
    }
}
