//! `http_dir`: the files a websockets listener serves to plain HTTP
//! requests, as Mosquitto serves them through libwebsockets.
//!
//! The request path is percent-decoded and its `.` and `..` segments are
//! resolved within the directory (a path cannot climb above it); a path
//! ending in `/` means its `index.html`. The file found is then resolved
//! with its symbolic links and must still lie inside the directory: a
//! link pointing out of it is refused (403). Only regular files are
//! served (a FIFO or a device is refused without being opened); a
//! directory named without its final `/` is redirected to it (302).
//! Each answer closes the connection.
//!
//! This is the only part of the connection's opening that touches the
//! file system: it runs in the connection's task, reading a small file
//! from a directory meant for that.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::ws::{HttpMethod, HttpRequest};

/// Bytes of a file read (and written) at a time.
const CHUNK: usize = 16 * 1024;

/// The directory of a listener's `http_dir`, resolved at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDir {
    root: PathBuf,
}

/// The answer to one request: the response head, then the file's bytes
/// (none for HEAD and errors).
#[derive(Debug)]
pub struct HttpAnswer {
    /// Status line and headers, blank line included.
    pub head: Bytes,
    /// The file to send after the head, and its length as announced.
    pub body: Option<FileBody>,
}

/// A file being sent: never more than the length announced.
#[derive(Debug)]
pub struct FileBody {
    file: File,
    remaining: u64,
}

impl FileBody {
    /// The next bytes of the file; `None` at its end (or on a read error:
    /// the client sees a short body).
    pub fn next_chunk(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let want = usize::try_from(self.remaining).unwrap_or(CHUNK).min(CHUNK);
        let mut buf = vec![0; want];
        match self.file.read(&mut buf) {
            Ok(0) | Err(_) => {
                self.remaining = 0;
                None
            }
            Ok(n) => {
                self.remaining -= n as u64;
                buf.truncate(n);
                Some(Bytes::from(buf))
            }
        }
    }
}

impl HttpDir {
    /// The directory `dir`, resolved (symbolic links, relative paths) as
    /// Mosquitto resolves it at start.
    pub fn open(dir: &str) -> std::io::Result<Self> {
        let root = std::fs::canonicalize(dir)?;
        if !root.is_dir() {
            return Err(std::io::Error::new(ErrorKind::NotADirectory, "not a directory"));
        }
        Ok(Self { root })
    }

    /// The answer to `request`.
    pub fn answer(&self, request: &HttpRequest) -> HttpAnswer {
        let head_only = request.method == HttpMethod::Head;
        let Some(relative) = resolve(&request.path) else {
            return status(400, head_only);
        };
        let mut wanted = self.root.join(relative);
        if request.path.ends_with('/') {
            wanted.push("index.html");
        }
        let found = match std::fs::canonicalize(&wanted) {
            Ok(found) => found,
            Err(error) => return status(error_status(&error), head_only),
        };
        if !found.starts_with(&self.root) {
            tracing::debug!("http request for {} refused: outside http_dir", request.path);
            return status(403, head_only);
        }
        match std::fs::metadata(&found) {
            Ok(meta) if meta.is_dir() && !request.path.ends_with('/') => redirect(&request.path),
            Ok(meta) if meta.is_file() => self.file(&found, head_only),
            Ok(_) => status(403, head_only),
            Err(error) => status(error_status(&error), head_only),
        }
    }

    /// 200 with the file at `path` (a regular file inside the directory).
    fn file(&self, path: &Path, head_only: bool) -> HttpAnswer {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) => return status(error_status(&error), head_only),
        };
        let length = match file.metadata() {
            Ok(meta) => meta.len(),
            Err(_) => return status(500, head_only),
        };
        tracing::debug!("http serving file \"{}\".", path.display());
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
            content_type(path)
        );
        let body = (!head_only).then_some(FileBody { file, remaining: length });
        HttpAnswer { head: Bytes::from(head), body }
    }
}

/// The path of a request target, percent-decoded, as segments below the
/// directory: `.` dropped, `..` climbing at most to the directory itself,
/// as libwebsockets cleans them. `None` when it cannot be a file name
/// (bad percent-encoding, a NUL, not UTF-8).
fn resolve(path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    let text = String::from_utf8(decoded).ok()?;
    if text.contains('\0') {
        return None;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            name => segments.push(name),
        }
    }
    Some(segments.iter().collect())
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The status for a file that could not be resolved or opened, as
/// Mosquitto maps realpath(3)'s errors.
fn error_status(error: &std::io::Error) -> u16 {
    match error.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory => 404,
        ErrorKind::PermissionDenied => 403,
        ErrorKind::InvalidFilename => 414,
        _ => 500,
    }
}

/// An error answer with a one-line text body (none for HEAD).
fn status(code: u16, head_only: bool) -> HttpAnswer {
    let text = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        414 => "URI Too Long",
        _ => "Internal Server Error",
    };
    let body = format!("{code} {text}\n");
    let mut head = format!(
        "HTTP/1.1 {code} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        head.push_str(&body);
    }
    HttpAnswer { head: Bytes::from(head), body: None }
}

/// 302 to the directory's path with its final `/`, as Mosquitto answers.
fn redirect(path: &str) -> HttpAnswer {
    let head = format!("HTTP/1.1 302 Found\r\nLocation: {path}/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    HttpAnswer { head: Bytes::from(head), body: None }
}

/// The media type of a file, by its extension.
fn content_type(path: &Path) -> &'static str {
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("xml") => "application/xml",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("ttf") => "font/ttf",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A directory with `index.html`, `sub/a.txt`, a link out of it and
    /// a secret beside it.
    struct Site {
        base: PathBuf,
        dir: HttpDir,
    }

    impl Site {
        fn new(name: &str) -> Self {
            let base = std::env::temp_dir().join(format!("culex-http-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            let www = base.join("www");
            std::fs::create_dir_all(www.join("sub")).unwrap();
            std::fs::write(www.join("index.html"), "<h1>hi</h1>\n").unwrap();
            std::fs::write(www.join("sub/a.txt"), "sub\n").unwrap();
            std::fs::write(www.join("app.js"), "x").unwrap();
            std::fs::write(base.join("secret.txt"), "secret\n").unwrap();
            std::fs::create_dir_all(base.join("www2")).unwrap();
            std::fs::write(base.join("www2/b.txt"), "beside\n").unwrap();
            std::os::unix::fs::symlink(base.join("secret.txt"), www.join("link.txt")).unwrap();
            std::os::unix::fs::symlink(www.join("sub/a.txt"), www.join("inside.txt")).unwrap();
            let dir = HttpDir::open(www.to_str().unwrap()).unwrap();
            Self { base, dir }
        }

        fn get(&self, path: &str) -> (String, String) {
            self.ask(HttpMethod::Get, path)
        }

        fn ask(&self, method: HttpMethod, path: &str) -> (String, String) {
            let mut answer = self.dir.answer(&HttpRequest { method, path: path.to_owned() });
            let head = String::from_utf8(answer.head.to_vec()).unwrap();
            let mut body = Vec::new();
            if let Some(file) = answer.body.as_mut() {
                while let Some(chunk) = file.next_chunk() {
                    body.extend_from_slice(&chunk);
                }
            }
            (head, String::from_utf8(body).unwrap())
        }
    }

    impl Drop for Site {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    fn status_line(head: &str) -> &str {
        head.split("\r\n").next().unwrap()
    }

    #[test]
    fn files_are_served_with_length_and_type() {
        let site = Site::new("files");
        let (head, body) = site.get("/");
        assert_eq!(status_line(&head), "HTTP/1.1 200 OK");
        assert!(head.contains("Content-Type: text/html; charset=utf-8\r\n"), "{head}");
        assert!(head.contains("Content-Length: 12\r\n"), "{head}");
        assert_eq!(body, "<h1>hi</h1>\n");
        assert_eq!(site.get("/sub/a.txt").1, "sub\n");
        assert!(site.get("/app.js").0.contains("Content-Type: text/javascript"));
        assert_eq!(site.get("/inside.txt").1, "sub\n");
        assert_eq!(site.get("//sub//./a.txt").1, "sub\n");
        assert_eq!(site.get("/%69ndex.html").1, "<h1>hi</h1>\n");
    }

    #[test]
    fn head_gets_the_head_only() {
        let site = Site::new("head");
        let (head, body) = site.ask(HttpMethod::Head, "/index.html");
        assert!(head.ends_with("Content-Length: 12\r\nConnection: close\r\n\r\n"), "{head}");
        assert_eq!(body, "");
        let (head, _) = site.ask(HttpMethod::Head, "/missing");
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n") && head.ends_with("\r\n\r\n"), "{head}");
    }

    #[test]
    fn nothing_outside_the_directory_is_reachable() {
        let site = Site::new("escape");
        // `..` cannot climb above the directory, encoded or not.
        for path in ["/../secret.txt", "/%2e%2e/secret.txt", "/sub/..%2f..%2fsecret.txt", "/../www2/b.txt"] {
            assert_eq!(status_line(&site.get(path).0), "HTTP/1.1 404 Not Found", "{path}");
        }
        assert_eq!(site.get("/sub/../index.html").1, "<h1>hi</h1>\n");
        // A link pointing out of it.
        assert_eq!(status_line(&site.get("/link.txt").0), "HTTP/1.1 403 Forbidden");
        assert_eq!(status_line(&site.get("/bad%zz").0), "HTTP/1.1 400 Bad Request");
        assert_eq!(status_line(&site.get("/nul%00.txt").0), "HTTP/1.1 400 Bad Request");
    }

    #[test]
    fn directories_redirect_and_missing_index_is_not_found() {
        let site = Site::new("dirs");
        let (head, _) = site.get("/sub");
        assert!(head.starts_with("HTTP/1.1 302 Found\r\nLocation: /sub/\r\n"), "{head}");
        assert_eq!(status_line(&site.get("/sub/").0), "HTTP/1.1 404 Not Found");
        assert_eq!(status_line(&site.get("/index.html/").0), "HTTP/1.1 404 Not Found");
    }

    #[test]
    fn special_files_are_refused_without_being_opened() {
        let site = Site::new("fifo");
        let fifo = site.base.join("www/fifo");
        // A FIFO would block an open(2) until a writer comes.
        if std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
            assert_eq!(status_line(&site.get("/fifo").0), "HTTP/1.1 403 Forbidden");
        }
    }

    #[test]
    fn an_http_dir_must_be_a_directory() {
        let site = Site::new("open");
        assert!(HttpDir::open(site.base.join("secret.txt").to_str().unwrap()).is_err());
        assert!(HttpDir::open(site.base.join("none").to_str().unwrap()).is_err());
    }
}
