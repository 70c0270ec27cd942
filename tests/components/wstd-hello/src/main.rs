//! A wasi:http proxy component, written as wstd's documentation and examples show: nothing in it
//! knows about plugd. `wasmtime serve` runs it as it is; so does plugd, under a plugin's mount.
//!
//! - `GET /hello`: a greeting, with the path and `x-forwarded-prefix` it saw.
//! - `GET /fetch?url=U[&host=H]`: fetches `U` with wstd's client (with a `host` header `H` when
//!   given) and answers with its body and `x-upstream-status` (502 with the error when the
//!   fetch fails).
//! - `GET /fanout?n=N&url=U`: fetches `U` `N` times at once and counts the answers.

use wstd::http::body::Body;
use wstd::http::{Client, Error, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    match request.uri().path() {
        "/hello" => Ok(hello(&request)),
        "/fetch" => fetch(&request).await,
        "/fanout" => fanout(&request).await,
        _ => Ok(Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("not found\n"))?),
    }
}

/// One query parameter, as written (the tests send plain values).
fn param<'a>(request: &'a Request<Body>, name: &str) -> Option<&'a str> {
    request.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

fn hello(request: &Request<Body>) -> Response<Body> {
    let prefix = request
        .headers()
        .get("x-forwarded-prefix")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = format!(
        "Hello from wstd! path={} prefix={prefix}\n",
        request.uri().path()
    );
    Response::new(Body::from(text))
}

async fn fetch(request: &Request<Body>) -> Result<Response<Body>, Error> {
    let url = param(request, "url").unwrap_or("");
    let mut upstream = Request::get(url);
    if let Some(host) = param(request, "host") {
        upstream = upstream.header("host", host);
    }
    let sent = match upstream.body(Body::empty()) {
        Ok(r) => Client::new().send(r).await,
        Err(e) => Err(e.into()),
    };
    match sent {
        Ok(response) => {
            let status = response.status();
            let body = response.into_body().contents().await?.to_vec();
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header("x-upstream-status", status.as_str())
                .body(Body::from(body))?)
        }
        Err(e) => Ok(Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from(format!("fetch failed: {e:?}\n")))?),
    }
}

async fn fanout(request: &Request<Body>) -> Result<Response<Body>, Error> {
    let url = param(request, "url").unwrap_or("").to_string();
    let n: usize = param(request, "n").and_then(|n| n.parse().ok()).unwrap_or(1);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.clone();
            wstd::runtime::spawn(async move {
                let request = Request::get(url).body(Body::empty())?;
                Client::new().send(request).await.map(|r| r.status())
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        match task.await {
            Ok(_) => ok += 1,
            Err(_) => refused += 1,
        }
    }
    Ok(Response::new(Body::from(format!("ok={ok} refused={refused}\n"))))
}
