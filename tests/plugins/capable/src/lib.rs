//! `capable` (test plugin): a well-behaved user of every gated capability. Each route answers
//! what the host said; a refused call answers 403 with the host's message, another failure 500.
//!
//! - `GET /db?text=…`: a note inserted with bound parameters, two tags in one transaction, then
//!   every note and the migrations the host recorded.
//! - `GET /db-attach`: tries `ATTACH` (the authorizer refuses it).
//! - `GET /fetch?url=…`: fetches the URL; answers its status and body.
//! - `GET /exec`: `cat` with stdin, `echo` with arguments.
//! - `GET /config?key=…`: the host config at the key.
//! - `GET /files`: writes, reads and lists files under `/data`; reports that `/etc` is not there.
use plugd_guest::prelude::*;
use plugd_guest::{ErrorKind, config, db, exec, http, json, register};

#[derive(Default)]
struct Capable;

/// A failed capability call as an answer: 403 with the host's message when refused, else 500.
fn refused(e: Error) -> Response {
    let status = if e.kind() == ErrorKind::Denied {
        403
    } else {
        500
    };
    Response::text(status, e.message())
}

impl Capable {
    fn db(&self, exchange: &Exchange) -> Result<Response> {
        let text = exchange
            .query_param("text")
            .unwrap_or_else(|| "hello".into());
        let inserted = db::execute("INSERT INTO notes (text) VALUES (?1)", &[(&*text).into()])?;
        let id = db::query("SELECT max(id) AS id FROM notes", &[])?
            .get(0, "id")
            .and_then(db::Value::as_i64)
            .unwrap_or_default();
        let tagged = db::transaction(&[
            db::Statement::new(
                "INSERT INTO tags (note_id, tag) VALUES (?1, ?2)",
                vec![id.into(), "a".into()],
            ),
            db::Statement::new(
                "INSERT INTO tags (note_id, tag) VALUES (?1, ?2)",
                vec![id.into(), "b".into()],
            ),
        ])?;
        let rows = db::query(
            "SELECT n.text, count(t.tag) AS tags FROM notes n LEFT JOIN tags t ON t.note_id = n.id GROUP BY n.id ORDER BY n.id",
            &[],
        )?;
        let notes: Vec<_> = (0..rows.len())
            .map(|i| {
                json!({
                    "text": rows.get(i, "text").and_then(db::Value::as_str),
                    "tags": rows.get(i, "tags").and_then(db::Value::as_i64),
                })
            })
            .collect();
        let migrations = db::query("SELECT name FROM _plugd_migrations ORDER BY name", &[])?;
        let migrations: Vec<_> = migrations
            .rows
            .iter()
            .filter_map(|r| r.first().and_then(db::Value::as_str).map(str::to_owned))
            .collect();
        Ok(Response::json(
            200,
            &json!({ "inserted": inserted, "tagged": tagged, "notes": notes, "migrations": migrations }),
        ))
    }

    fn fetch(&self, exchange: &Exchange) -> Result<Response> {
        let url = exchange
            .query_param("url")
            .ok_or_else(|| Error::msg("?url= is required"))?;
        let answer =
            http::fetch(&http::Request::get(url).with_timeout(std::time::Duration::from_secs(5)))?;
        Ok(Response::json(
            200,
            &json!({ "status": answer.status, "body": answer.text() }),
        ))
    }

    fn exec(&self) -> Result<Response> {
        let cat = exec::run_with("cat", &[], b"piped through cat", None)?;
        let echo = exec::run("echo", &["two", "words"])?;
        Ok(Response::json(
            200,
            &json!({ "cat": cat.stdout_text(), "echo": echo.stdout_text(), "status": echo.status }),
        ))
    }

    fn config(&self, exchange: &Exchange) -> Result<Response> {
        let key = exchange.query_param("key").unwrap_or_default();
        Ok(Response::json(200, &config::host(&key)?))
    }

    fn files(&self) -> Result<Response> {
        std::fs::create_dir_all("/data/notes")?;
        std::fs::write("/data/notes/first.txt", b"kept in /data")?;
        let read = std::fs::read_to_string("/data/notes/first.txt")?;
        let mut entries: Vec<String> = std::fs::read_dir("/data")?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        entries.sort();
        // Only /data is preopened: nothing else of the host's file system is there.
        let outside = std::fs::read_to_string("/etc/hostname").is_ok();
        Ok(Response::json(
            200,
            &json!({ "read": read, "entries": entries, "outside_visible": outside }),
        ))
    }
}

impl Plugin for Capable {
    fn init(&mut self, _config: &Config) -> Result<()> {
        for route in ["/db", "/db-attach", "/fetch", "/exec", "/config", "/files"] {
            register::route("GET", route)?;
        }
        Ok(())
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        let answer = match route {
            "/db" => self.db(exchange),
            "/db-attach" => db::execute("ATTACH DATABASE '/tmp/elsewhere.db' AS elsewhere", &[])
                .map(|_| Response::text(200, "attached")),
            "/fetch" => self.fetch(exchange),
            "/exec" => self.exec(),
            "/config" => self.config(exchange),
            "/files" => self.files(),
            other => bail!("no handler for route {other}"),
        };
        Ok(answer.unwrap_or_else(refused))
    }
}

plugd_guest::export!(Capable, name = "capable");
