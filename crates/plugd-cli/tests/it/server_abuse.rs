//! The HTTP server under abuse: slow clients, oversized headers, the connection cap and slow
//! bodies. Each test attacks a real listener over raw TCP and checks that the server cuts the
//! attacker off and keeps answering everyone else. Timeouts are short in these configs; nothing
//! here measures speed, only what the server does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::support::{TestServer, examples_config};

/// The example config with a `server:` section.
fn config(server: &str) -> String {
    examples_config().replace("data_dir:", &format!("server:\n{server}data_dir:"))
}

fn addr(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_string()
}

/// A client with no pooled connections: none of its own sits on a slot of the cap.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Wait (up to 30s: a bound for a broken server, not a measure) until the server closes `stream`.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .is_ok()
}

/// Send `request` whole and read the answer's status line.
async fn status_of_raw(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read everything: a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_while_others_are_served() {
    let server = TestServer::start(&config("  header_read_timeout: 4s\n")).await;
    let addr = addr(&server);
    let client = fresh_client();
    let greet = format!("{}/plugins/hello/greet", server.url);
    // Warm the plugin up: the first instantiation is not what this test is about.
    assert_eq!(client.get(&greet).send().await.unwrap().status(), 200);

    // 200 connections, each sending a request head one byte every 250ms, never finishing it.
    const SLOW: usize = 200;
    let open = Arc::new(AtomicUsize::new(0));
    let mut attack = JoinSet::new();
    let mut streams = Vec::new();
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        s.write_all(b"GET /plugins/hello/greet HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("first bytes");
        streams.push(s);
    }
    for mut s in streams {
        let open = open.clone();
        open.fetch_add(1, Ordering::SeqCst);
        attack.spawn(async move {
            let mut buf = [0u8; 256];
            let closed = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    tokio::select! {
                        read = s.read(&mut buf) => match read {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        },
                        () = tokio::time::sleep(Duration::from_millis(250)) => {
                            if s.write_all(b"a").await.is_err() {
                                return;
                            }
                        }
                    }
                }
            })
            .await
            .is_ok();
            open.fetch_sub(1, Ordering::SeqCst);
            closed
        });
    }

    // Meanwhile, ordinary requests are answered, each while the attack is still in flight.
    let mut normal = JoinSet::new();
    for _ in 0..10 {
        let client = client.clone();
        let greet = greet.clone();
        let open = open.clone();
        normal.spawn(async move {
            let status = client.get(&greet).send().await.map(|r| r.status().as_u16());
            (status, open.load(Ordering::SeqCst))
        });
    }
    while let Some(answered) = normal.join_next().await {
        let (status, open_then) = answered.expect("client task");
        assert_eq!(status.expect("answered"), 200);
        assert!(
            open_then > 0,
            "answered while slow connections were still open (the attack was in flight)"
        );
    }
    // The server closes every slow connection (server.header_read_timeout).
    while let Some(closed) = attack.join_next().await {
        assert!(
            closed.expect("attack task"),
            "the server closed a connection whose headers never finished"
        );
    }
    assert_eq!(client.get(&greet).send().await.unwrap().status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_headers_get_431() {
    // Requests under 8KiB in all: the server reads each whole before it answers, so its close
    // never races unread bytes (a reset could swallow the answer).
    let server = TestServer::start(&config("  max_headers: 20\n  max_header_bytes: 4KiB\n")).await;
    let addr = addr(&server);

    let mut many = String::from("GET /plugins/hello/greet HTTP/1.1\r\nHost: x\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-Many-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    let status = status_of_raw(&addr, many.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");

    let large = format!(
        "GET /plugins/hello/greet HTTP/1.1\r\nHost: x\r\nX-Large: {}\r\n\r\n",
        "z".repeat(6 * 1024)
    );
    let status = status_of_raw(&addr, large.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");

    // Under both caps: served as usual.
    let fine = "GET /plugins/hello/greet HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let status = status_of_raw(&addr, fine.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_queues_new_connections_until_one_closes() {
    let server = TestServer::start(&config("  max_connections: 8\n  idle_timeout: 2s\n")).await;
    let addr = addr(&server);
    let greet = format!("{}/plugins/hello/greet", server.url);

    // Eight idle connections take every slot; a ninth is not served while they are held.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let queued = tokio::time::timeout(
        Duration::from_millis(500),
        fresh_client().get(&greet).send(),
    )
    .await;
    assert!(
        queued.is_err(),
        "over the cap a new connection waits (server.max_connections): {queued:?}"
    );
    // Released: the server answers again.
    drop(held);
    assert_eq!(
        fresh_client().get(&greet).send().await.unwrap().status(),
        200
    );

    // Held and never released: the server closes them once idle (server.idle_timeout), and a
    // connection queued behind them is then served.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let waiting = tokio::spawn(async move { fresh_client().get(&greet).send().await });
    for s in &mut held {
        assert!(
            closed_by_server(s).await,
            "the server closed an idle connection"
        );
    }
    let answered = waiting.await.expect("client task").expect("answered");
    assert_eq!(answered.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_upload_gets_408() {
    let server = TestServer::start(&config("  body_read_timeout: 1s\n")).await;
    let addr = addr(&server);
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    s.write_all(b"POST /plugins/hello/greet HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .expect("head");
    let (mut read, mut write) = s.into_split();
    // One byte every 200ms: 1000 bytes would take 200s.
    let trickle = tokio::spawn(async move {
        for _ in 0..1000 {
            if write.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut answer)).await;
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_read_timeout"), "{answer}");
    // A body sent at once is still read (and the route answers as ever).
    let r = server
        .client
        .post(format!("{}/plugins/hello/greet", server.url))
        .body("quick")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 408);
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 200);
    server.stop().await;
}
