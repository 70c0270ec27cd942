//! Where plain `http://` may be used: only on loopback, unless the operator says otherwise. Used
//! by catalogs and by the fetcher (and its redirect rule) alike.

/// Whether `url` names a loopback host: `localhost`, `127.0.0.0/8`, `::1` (or `::ffff:127.x`).
///
/// ```
/// use plugd_pkg::is_loopback;
/// assert!(is_loopback(&"http://127.0.0.1:8080/c/".parse().unwrap()));
/// assert!(is_loopback(&"http://LocalHost/c/".parse().unwrap()));
/// assert!(is_loopback(&"http://[::1]/c/".parse().unwrap()));
/// assert!(!is_loopback(&"http://plugins.example/c/".parse().unwrap()));
/// assert!(!is_loopback(&"http://localhost.plugins.example/c/".parse().unwrap()));
/// assert!(!is_loopback(&"http://127.0.0.1.plugins.example/c/".parse().unwrap()));
/// ```
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

/// Whether plain `http://` may be used for `url`: on a loopback host (no one on the network
/// sees or changes that traffic), or anywhere when `allow_http` (`--allow-http`).
pub fn plain_http_allowed(url: &url::Url, allow_http: bool) -> bool {
    allow_http || is_loopback(url)
}
