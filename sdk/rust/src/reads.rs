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
