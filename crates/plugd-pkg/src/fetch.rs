//! HTTP(S) downloads for catalogs (feature `http`): reqwest's blocking client over rustls.

use std::io::Read;
use std::time::Duration;

use crate::Error;

/// A blocking HTTP client with rustls and plugd's user agent; a 30 s connect timeout and no
/// overall timeout (large downloads report progress instead).
pub fn client() -> Result<reqwest::blocking::Client, Error> {
    reqwest::blocking::Client::builder()
        .user_agent(concat!("plugd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(None)
        .build()
        .map_err(|e| Error::Http(format!("cannot build the HTTP client: {e}")))
}

/// GET `url` into memory, refusing more than `max_size` bytes. Reports progress (every 25 %)
/// for downloads over 1 MiB.
pub fn download(
    url: &str,
    max_size: u64,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<u8>, Error> {
    let response = client()?
        .get(url)
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
