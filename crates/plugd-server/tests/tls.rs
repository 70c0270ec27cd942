//! `server.tls`: a listener serving HTTPS to a real TLS client, picking up a renewed certificate
//! without a restart, and refusing to start with a broken key.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugd_manifest::{ServerConfig, TlsConfig};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// A self-signed certificate for `localhost` written to `dir`; its DER.
fn write_pair(files: &TlsConfig) -> CertificateDer<'static> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    // Written beside and renamed over, as certificate renewal tools do.
    let replace = |path: &Path, text: String| {
        let next = path.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, path).unwrap();
    };
    replace(&files.cert, cert.cert.pem());
    replace(&files.key, cert.signing_key.serialize_pem());
    cert.cert.der().clone()
}

struct Server {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn serve(files: &TlsConfig) -> std::io::Result<Server> {
    serve_with(ServerConfig {
        tls: Some(files.clone()),
        ..ServerConfig::default()
    })
    .await
}

async fn serve_with(server: ServerConfig) -> std::io::Result<Server> {
    let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = plugd_server::serve_router(listener, app, &server, async {
        let _ = stopped.await;
    });
    Ok(Server {
        addr,
        stop: Some(stop),
        served: tokio::spawn(serving),
    })
}

/// One HTTPS request over a new connection, trusting `roots` only: the certificate the server
/// presented, the ALPN protocol it chose and the response text.
async fn get(
    addr: std::net::SocketAddr,
    roots: &[CertificateDer<'static>],
) -> (CertificateDer<'static>, Option<Vec<u8>>, String) {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let (_, session) = tls.get_ref();
    let presented = session.peer_certificates().unwrap()[0].clone();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    // A peer closing without close_notify is fine here: the whole response is in.
    let _ = tls.read_to_end(&mut response).await;
    (
        presented,
        alpn,
        String::from_utf8_lossy(&response).into_owned(),
    )
}

fn files(dir: &Path) -> TlsConfig {
    TlsConfig {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

#[tokio::test]
async fn https_is_served_and_a_renewed_certificate_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path());
    let first = write_pair(&files);
    let mut server = serve(&files).await.unwrap();

    let (presented, alpn, response) = get(server.addr, std::slice::from_ref(&first)).await;
    assert_eq!(presented, first);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "HTTP/1.1 by ALPN");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello"), "{response}");

    // Renewed in place: a new connection gets the new certificate once the server has looked
    // at the files again (at most plugd_server's check interval after the change).
    let second = write_pair(&files);
    let roots = [first.clone(), second.clone()];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (presented, _, response) = get(server.addr, &roots).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        if presented == second {
            break;
        }
        assert_eq!(presented, first, "either the old or the new certificate");
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not picked up within 20s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A broken renewal keeps the last good certificate.
    std::fs::write(&files.key, "garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (presented, _, response) = get(server.addr, &roots).await;
    assert_eq!(presented, second, "the last good pair is kept");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let _ = server.stop.take().unwrap().send(());
    server.served.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_broken_key_stops_the_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path());
    write_pair(&files);
    std::fs::write(
        &files.key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let server = serve(&files).await.unwrap();
    let e = server.served.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let text = e.to_string();
    assert!(
        text.contains("server.tls.key") && text.contains(&files.key.display().to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn a_plain_http_client_gets_no_response() {
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path());
    write_pair(&files);
    let server = serve(&files).await.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response).await;
    assert!(
        !String::from_utf8_lossy(&response).contains("hello"),
        "plain HTTP is not served on a TLS listener"
    );
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_after_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path());
    let first = write_pair(&files);
    let server = serve_with(ServerConfig {
        tls: Some(files.clone()),
        header_read_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    // Connected, never says hello.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Others are served meanwhile.
    let (_, _, response) = get(server.addr, std::slice::from_ref(&first)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(30), stalled.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the server did not close a connection that never sent its TLS hello: {closed:?}"
    );
}
