//! A plugin's static files: `<plugin dir>/assets/` served under `/plugins/<name>/static/`.
//! No request path can leave the folder: `..`, `.`, empty and backslashed segments are refused,
//! and the resolved file (symlinks followed) must still lie inside the folder.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};

use crate::exchange::Response;

/// The content type for a file name, by extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "pdf" => "application/pdf",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

/// The file under `root` that `rest` (the path after `/static/`) names, if it is a safe name of
/// an existing regular file inside `root`.
pub(crate) fn resolve(root: &Path, rest: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    let rest = if rest.is_empty() || rest.ends_with('/') {
        format!("{rest}index.html")
    } else {
        rest.to_string()
    };
    for segment in rest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." || segment.contains('\\') {
            return None;
        }
        path.push(segment);
    }
    let real = path.canonicalize().ok()?;
    (real.starts_with(root) && real.is_file()).then_some(real)
}

/// Serve one static file (GET or HEAD), or `None` when the path names none.
pub(crate) async fn serve(root: &Path, rest: &str, method: &Method) -> Option<Response> {
    if method != Method::GET && method != Method::HEAD {
        return Some(Response::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "static files answer GET and HEAD only",
        ));
    }
    let file = resolve(root, rest)?;
    let body = tokio::fs::read(&file).await.ok()?;
    let mut r = Response::new(StatusCode::OK);
    r.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&file)),
    );
    r.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if method == Method::GET {
        r.body = Bytes::from(body);
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("assets");
        std::fs::create_dir_all(root.join("css")).unwrap();
        std::fs::write(root.join("css/site.css"), "body{}").unwrap();
        std::fs::write(root.join("index.html"), "<p>hi</p>").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
        let root = root.canonicalize().unwrap();
        assert!(resolve(&root, "css/site.css").is_some());
        assert_eq!(resolve(&root, "").unwrap(), root.join("index.html"));
        for bad in [
            "../secret.txt",
            "css/../../secret.txt",
            "./index.html",
            "css//site.css",
            "..\\secret.txt",
            "css",
        ] {
            assert!(resolve(&root, bad).is_none(), "{bad}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.txt"))
                .unwrap();
            assert!(
                resolve(&root, "link.txt").is_none(),
                "a symlink out of the folder"
            );
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type(Path::new("a.CSS")), "text/css; charset=utf-8");
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
        assert_eq!(content_type(Path::new("a")), "application/octet-stream");
    }
}
