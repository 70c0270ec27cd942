//! HTTP(S) downloads for catalogs (feature `http`): reqwest's blocking client over rustls.
//!
//! Plain `http://` is taken only where [`plain_http_allowed`](crate::plain_http_allowed) says so (loopback, or anywhere
//! when the operator passes `--allow-http`), and a redirect never leaves https for http
//! ([`check_redirect`]).

use std::io::Read;
use std::time::Duration;

use url::Url;

use crate::Error;
use crate::plain_http::plain_http_allowed;

/// How many redirects are followed (reqwest's default).
const MAX_REDIRECTS: usize = 10;

/// A blocking HTTP client with rustls and plugd's user agent; a 30 s connect timeout and no
/// overall timeout (large downloads report progress instead). Redirects follow
/// [`check_redirect`] with plain http refused but on loopback.
pub fn client() -> Result<reqwest::blocking::Client, Error> {
    client_allowing_http(false)
}

/// [`client()`], whose redirects may also go to plain http on any host when `allow_http`
/// (never from https to http).
pub fn client_allowing_http(allow_http: bool) -> Result<reqwest::blocking::Client, Error> {
    builder(allow_http)
        .build()
        .map_err(|e| Error::Http(format!("cannot build the HTTP client: {e}")))
}

fn builder(allow_http: bool) -> reqwest::blocking::ClientBuilder {
    reqwest::blocking::Client::builder()
        .user_agent(concat!("plugd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(None)
        .redirect(reqwest::redirect::Policy::custom(
            move |attempt| match check_redirect(attempt.previous(), attempt.url(), allow_http) {
                Ok(()) => attempt.follow(),
                Err(refusal) => attempt.error(refusal),
            },
        ))
}

/// Whether a redirect to `next`, after the URLs `previous` (the first is the one asked for),
/// may be followed; else why not. Once a request has been on https it never goes to plain
/// http (a downgrade a network attacker could then control), whatever `allow_http` says;
/// from plain http it goes on to plain http only where [`plain_http_allowed`].
///
/// [`plain_http_allowed`]: crate::plain_http_allowed
///
/// ```
/// use plugd_pkg::fetch::check_redirect;
/// let https: url::Url = "https://plugins.example/c/index.json".parse().unwrap();
/// let http: url::Url = "http://mirror.example/c/index.json".parse().unwrap();
/// let err = check_redirect(&[https.clone()], &http, true).unwrap_err();
/// assert!(err.to_string().contains("downgrade"), "{err}");
/// assert!(check_redirect(&[http.clone()], &https, false).is_ok());
/// assert!(check_redirect(&[http.clone()], &http, true).is_ok());
/// ```
pub fn check_redirect(
    previous: &[Url],
    next: &Url,
    allow_http: bool,
) -> Result<(), RedirectRefused> {
    let from = previous
        .last()
        .map_or_else(|| "the requested URL".to_string(), Url::to_string);
    let refused = |why| RedirectRefused {
        from: from.clone(),
        to: next.to_string(),
        why,
    };
    if previous.len() >= MAX_REDIRECTS {
        return Err(refused(RedirectRule::TooMany));
    }
    match next.scheme() {
        "https" => Ok(()),
        "http" => {
            if let Some(secure) = previous.iter().find(|u| u.scheme() == "https") {
                Err(refused(RedirectRule::Downgrade {
                    secure: secure.to_string(),
                }))
            } else if plain_http_allowed(next, allow_http) {
                Ok(())
            } else {
                Err(refused(RedirectRule::PlainHttp))
            }
        }
        other => Err(refused(RedirectRule::Scheme(other.to_string()))),
    }
}

/// A redirect [`check_redirect`] refused: from where, to where, and which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct RedirectRefused {
    /// The URL redirected from.
    pub from: String,
    /// The URL redirected to.
    pub to: String,
    /// The rule it broke.
    pub why: RedirectRule,
}

/// The rules a redirect can break.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedirectRule {
    /// More than [`MAX_REDIRECTS`] hops.
    TooMany,
    /// From https (the URL given) down to plain http.
    Downgrade {
        /// The https URL of the chain.
        secure: String,
    },
    /// Plain http to a host that is not loopback, without `--allow-http`.
    PlainHttp,
    /// A scheme other than http and https.
    Scheme(String),
}

impl RedirectRefused {
    fn describe(&self) -> String {
        let (from, to) = (&self.from, &self.to);
        match &self.why {
            RedirectRule::TooMany => {
                format!("more than {MAX_REDIRECTS} redirects (the last from {from} to {to})")
            }
            RedirectRule::Downgrade { secure } => format!(
                "refusing the redirect from {from} to {to}: it goes from https ({secure}) to plain http, a downgrade anyone on the network path could exploit; fix the server's redirect or use an https URL"
            ),
            RedirectRule::PlainHttp => format!(
                "refusing the redirect from {from} to {to}: plain http to a host that is not loopback; use https, or pass --allow-http to accept plain http"
            ),
            RedirectRule::Scheme(other) => {
                format!("refusing the redirect from {from} to {to}: unsupported scheme '{other}'")
            }
        }
    }
}

/// GET `url` into memory, refusing more than `max_size` bytes. Reports progress (every 25 %)
/// for downloads over 1 MiB.
///
/// `url` must be https, or plain http where [`plain_http_allowed`](crate::plain_http_allowed)
/// (`allow_http`: the operator's `--allow-http`); redirects follow [`check_redirect`].
pub fn download(
    url: &str,
    max_size: u64,
    allow_http: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<u8>, Error> {
    download_with(
        &client_allowing_http(allow_http)?,
        url,
        max_size,
        allow_http,
        progress,
    )
}

fn download_with(
    client: &reqwest::blocking::Client,
    url: &str,
    max_size: u64,
    allow_http: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<u8>, Error> {
    let parsed = Url::parse(url).map_err(|e| Error::Http(format!("{url}: not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if plain_http_allowed(&parsed, allow_http) => {}
        "http" => {
            return Err(Error::Http(format!(
                "{url}: plain http to a host that is not loopback is refused; use https, or pass --allow-http to accept it"
            )));
        }
        other => {
            return Err(Error::Http(format!(
                "{url}: unsupported scheme '{other}' (http or https)"
            )));
        }
    }
    let response = client
        .get(parsed)
        .send()
        .map_err(|e| Error::Http(format!("GET {url}: {}", error_chain(&e))))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::Http(format!(
            "GET {url}: the server answered {status}"
        )));
    }
    let total = response.content_length();
    if let Some(total) = total
        && total > max_size
    {
        return Err(Error::Http(format!(
            "GET {url}: {total} bytes, more than the limit of {max_size}"
        )));
    }
    let noisy = total.is_some_and(|t| t > 1 << 20);
    if noisy {
        progress(&format!(
            "downloading {url} ({})",
            human(total.unwrap_or(0))
        ));
    }
    let mut body = Vec::new();
    let mut reader = response.take(max_size + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut next_mark = 25;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::Http(format!("GET {url}: {e}")))?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
        if body.len() as u64 > max_size {
            return Err(Error::Http(format!(
                "GET {url}: more than the limit of {max_size} bytes"
            )));
        }
        if let Some(total) = total.filter(|_| noisy) {
            let percent = (body.len() as u64 * 100 / total.max(1)) as u32;
            while percent >= next_mark && next_mark <= 100 {
                progress(&format!("  {next_mark}% of {}", human(total)));
                next_mark += 25;
            }
        }
    }
    Ok(body)
}

/// An error with its causes (reqwest's own message is terse: "error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `123 B`, `4.5 KiB`, `6.7 MiB`.
pub fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::Arc;

    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn the_redirect_rule() {
        let https = url("https://plugins.example/c/index.json");
        let http_remote = url("http://mirror.example/c/index.json");
        let http_loopback = url("http://127.0.0.1:8000/c/index.json");
        // https to https, and up from http to https: followed.
        assert!(check_redirect(std::slice::from_ref(&https), &https, false).is_ok());
        assert!(check_redirect(std::slice::from_ref(&http_loopback), &https, false).is_ok());
        // Down from https: refused, --allow-http or not, loopback or not, however far back.
        for allow_http in [false, true] {
            for to in [&http_remote, &http_loopback] {
                let err = check_redirect(std::slice::from_ref(&https), to, allow_http)
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains("from https (https://plugins.example/c/index.json) to plain http"),
                    "{err}"
                );
            }
            let chain = [http_loopback.clone(), https.clone()];
            assert!(check_redirect(&chain, &http_loopback, allow_http).is_err());
        }
        // From a loopback http catalog to plain http elsewhere: only with --allow-http.
        let err = check_redirect(std::slice::from_ref(&http_loopback), &http_remote, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not loopback") && err.contains("--allow-http"),
            "{err}"
        );
        assert!(check_redirect(std::slice::from_ref(&http_loopback), &http_remote, true).is_ok());
        assert!(
            check_redirect(std::slice::from_ref(&http_loopback), &http_loopback, false).is_ok()
        );
        // Other schemes, and too many hops.
        assert!(
            check_redirect(
                std::slice::from_ref(&https),
                &url("file:///etc/passwd"),
                true
            )
            .is_err()
        );
        let long = vec![https.clone(); MAX_REDIRECTS];
        assert!(
            check_redirect(&long, &https, false)
                .unwrap_err()
                .to_string()
                .contains("more than 10 redirects")
        );
    }

    /// Answer one connection: read the request head, write `response`.
    fn answer<S: std::io::Read + Write>(stream: S, response: &str) {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line == "\r\n" {
                break;
            }
            line.clear();
        }
        let mut stream = reader.into_inner();
        let _ = stream.write_all(response.as_bytes());
        let _ = stream.flush();
    }

    fn redirect_to(location: &str) -> String {
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

    /// A plain HTTP server on loopback answering every request with `response`; returns its
    /// base URL and a counter of the requests it served.
    fn http_server(response: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                answer(stream, &response);
            }
        });
        (format!("http://{addr}"), served)
    }

    /// An HTTPS server on loopback (the test-only certificate of `testdata/tls`) answering
    /// the path `/secure` with `OK` and every other path with `other`; returns its base URL
    /// (`https://localhost:PORT`).
    fn https_server(other: String) -> String {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(include_bytes!("../testdata/tls/localhost.pem"))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            PrivateKeyDer::from_pem_slice(include_bytes!("../testdata/tls/localhost.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                // Read the request line to pick the answer.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match std::io::Read::read(&mut tls, &mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let response = if head.starts_with(b"GET /secure ") {
                    OK.to_string()
                } else {
                    other.clone()
                };
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        format!("https://localhost:{port}")
    }

    /// The client of [`download`], trusting only the test CA.
    fn test_client(allow_http: bool) -> reqwest::blocking::Client {
        let ca = reqwest::Certificate::from_pem(include_bytes!("../testdata/tls/ca.pem")).unwrap();
        builder(allow_http).tls_certs_only([ca]).build().unwrap()
    }

    #[test]
    fn a_redirect_from_https_to_http_is_refused_before_the_http_request() {
        let (http, served) = http_server(OK.to_string());
        let https = https_server(redirect_to(&format!("{http}/index.json")));
        let mut quiet = |_: &str| {};
        // The TLS set-up works: a redirect within https is followed.
        let moved = https_server(redirect_to(&format!("{https}/secure")));
        for allow_http in [false, true] {
            let client = test_client(allow_http);
            let body = download_with(
                &client,
                &format!("{moved}/index.json"),
                1024,
                allow_http,
                &mut quiet,
            )
            .unwrap();
            assert_eq!(body, b"ok");
            // The downgrade is refused, --allow-http or not.
            let err = download_with(
                &client,
                &format!("{https}/index.json"),
                1024,
                allow_http,
                &mut quiet,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(&format!(
                    "refusing the redirect from {https}/index.json to {http}/index.json"
                )) && err.contains("to plain http, a downgrade"),
                "{err}"
            );
        }
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn plain_http_is_loopback_only_unless_allowed() {
        let mut quiet = |_: &str| {};
        let (http, _) = http_server(OK.to_string());
        assert_eq!(
            download(&format!("{http}/x"), 1024, false, &mut quiet).unwrap(),
            b"ok"
        );
        // Refused before any connection (192.0.2.1 is TEST-NET-1: nothing answers there).
        let err = download("http://192.0.2.1/index.json", 1024, false, &mut quiet)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plain http to a host that is not loopback is refused")
                && err.contains("--allow-http"),
            "{err}"
        );
        // A loopback http server redirecting to plain http elsewhere.
        let (bounce, _) = http_server(redirect_to("http://192.0.2.1/index.json"));
        let err = download(&format!("{bounce}/index.json"), 1024, false, &mut quiet)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plain http to a host that is not loopback"),
            "{err}"
        );
        let err = download("ftp://127.0.0.1/x", 1024, true, &mut quiet)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported scheme 'ftp'"), "{err}");
    }
}
