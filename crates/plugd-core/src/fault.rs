//! A TCP proxy whose connections a test can cut, for the fault tests of backends: a backend is
//! pointed at the proxy instead of its server, the test cuts the link (every open connection is
//! closed and new ones are refused), checks the errors the host gives, restores the link and
//! checks that the backend recovers by itself. The server itself keeps running for other tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on `127.0.0.1` to one upstream address, dropped with the value.
#[derive(Debug)]
pub struct CutProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped at each cut: open connections watch it and close.
    cuts: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// A proxy to `upstream` (`127.0.0.1:5432`), listening on a free loopback port.
    pub async fn start(upstream: &str) -> std::io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let upstream = upstream.to_string();
        let (task_up, task_cuts) = (up.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !task_up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut = task_cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(CutProxy {
            addr,
            up,
            cuts,
            task,
        })
    }

    /// Where clients connect: `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Close every open connection and refuse new ones (accepted, then closed at once) until
    /// [`CutProxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Let connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_cut_closes_open_connections_and_refuses_new_ones_until_restored() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = CutProxy::start(&echo_addr.to_string()).await.unwrap();
        let roundtrip = |mut s: TcpStream| async move {
            s.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.ok()?;
            Some((s, buf))
        };
        let open = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut open, buf) = roundtrip(open).await.expect("through the proxy");
        assert_eq!(&buf, b"ping");

        proxy.cut();
        let mut buf = [0u8; 4];
        let read = open.read(&mut buf).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the open connection is closed"
        );
        let fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(roundtrip(fresh).await.is_none(), "a new one is refused");

        proxy.restore();
        let fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(&roundtrip(fresh).await.expect("restored").1, b"ping");
    }
}
