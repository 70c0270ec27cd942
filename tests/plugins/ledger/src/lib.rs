//! `ledger` (test plugin for the crash drills): each route answers 200 only after the host call
//! that wrote returned `Ok`, so a 200 is an acknowledged write that must survive a crash.
//!
//! - `POST /put?k=…&v=…`: `storage.set(k, v)`.
//! - `POST /tx?id=…`: one database transaction inserting `id` into `entries` and `receipts` and
//!   moving 1 from account 1 to account 2 (migrations/0001_ledger.sql).
//! - `GET /get?k=…`: the stored value (404 when absent).
//! - `GET /totals`: the rows of both tables, the sum of the balances and account 2's balance.
//!
//! Each write also counts a metric, so that the host's status writer has rows to write.
use plugd_guest::prelude::*;
use plugd_guest::{db, json, metrics, register, storage};

#[derive(Default)]
struct Ledger;

fn param(exchange: &Exchange, name: &str) -> Result<String> {
    exchange
        .query_param(name)
        .map(|v| v.into_owned())
        .ok_or_else(|| Error::msg(format!("?{name}= is required")))
}

impl Ledger {
    fn put(&self, exchange: &Exchange) -> Result<Response> {
        let key = param(exchange, "k")?;
        let value = param(exchange, "v")?;
        storage::set_string(&key, &value)?;
        metrics::counter("ledger_puts", 1.0)?;
        Ok(Response::text(200, "stored"))
    }

    fn tx(&self, exchange: &Exchange) -> Result<Response> {
        let id: i64 = param(exchange, "id")?
            .parse()
            .map_err(|e| Error::msg(format!("?id= must be an integer: {e}")))?;
        db::transaction(&[
            db::Statement::new("INSERT INTO entries (id) VALUES ($1)", vec![id.into()]),
            db::Statement::new(
                "UPDATE accounts SET balance = balance - 1 WHERE id = 1",
                vec![],
            ),
            db::Statement::new(
                "UPDATE accounts SET balance = balance + 1 WHERE id = 2",
                vec![],
            ),
            db::Statement::new("INSERT INTO receipts (id) VALUES ($1)", vec![id.into()]),
        ])?;
        metrics::counter("ledger_transactions", 1.0)?;
        Ok(Response::text(200, "committed"))
    }

    fn get(&self, exchange: &Exchange) -> Result<Response> {
        let key = param(exchange, "k")?;
        Ok(match storage::get_string(&key)? {
            Some(value) => Response::text(200, value),
            None => Response::text(404, "no such key"),
        })
    }

    fn totals(&self) -> Result<Response> {
        let one = |sql: &str| -> Result<i64> {
            Ok(db::query(sql, &[])?
                .get(0, "n")
                .and_then(db::Value::as_i64)
                .unwrap_or_default())
        };
        Ok(Response::json(
            200,
            &json!({
                "entries": one("SELECT count(*) AS n FROM entries")?,
                "receipts": one("SELECT count(*) AS n FROM receipts")?,
                "sum": one("SELECT CAST(sum(balance) AS BIGINT) AS n FROM accounts")?,
                "moved": one("SELECT balance AS n FROM accounts WHERE id = 2")?,
            }),
        ))
    }
}

impl Plugin for Ledger {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("POST", "/put")?;
        register::route("POST", "/tx")?;
        register::route("GET", "/get")?;
        register::route("GET", "/totals")?;
        Ok(())
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match route {
            "/put" => self.put(exchange),
            "/tx" => self.tx(exchange),
            "/get" => self.get(exchange),
            "/totals" => self.totals(),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Ledger, name = "ledger");
