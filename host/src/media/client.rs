//! [`MediaClient`]: the two HTTP clients and the fetch, upload and delete
//! operations, each request checked against the rules in `guard` first.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_DISPOSITION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, ClientBuilder, Response, Url};
use tokio::io::AsyncReadExt;

use super::files::{self, PartialFile};
use super::guard::{self, GuardedResolver};
use super::types::{FetchRequest, MediaOutcome, MediaSettings, Origin, UploadRequest};

/// The most reply text an upload reports.
pub(crate) const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Headers the HTTP layer owns: the request's framing and connection
/// handling. A component-supplied value could desynchronise the body
/// (`Content-Length` against the real length) or the connection, so these
/// are dropped rather than sent.
const HOST_OWNED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Downloads and uploads media for the component, enforcing the host's
/// rules: `http`/`https` only; credentials and uploads to the connector
/// origin only; no loopback, private or reserved address for any other
/// origin (unless [`MediaSettings::allow_private`]); no proxy, no redirect
/// followed, no decompression. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct MediaClient {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    connector: Origin,
    allow_private: bool,
    /// For the connector origin, which the operator configured: the plain
    /// system resolver, private addresses allowed.
    trusted: Client,
    /// For every other origin: the guarded resolver unless `allow_private`.
    foreign: Client,
}

impl fmt::Debug for MediaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaClient")
            .field("dir", &self.inner.dir)
            .field("connector", &self.inner.connector)
            .field("allow_private", &self.inner.allow_private)
            .finish_non_exhaustive()
    }
}

impl MediaClient {
    /// Builds the clients and creates the media directory (mode 0700 on
    /// unix) if it is missing. Errors: a connector origin that is not
    /// `http`/`https`, a directory that cannot be created or is not UTF-8
    /// (its files' paths are reported as strings), an unusable `ca_file`,
    /// an invalid user agent.
    pub fn new(settings: MediaSettings) -> Result<MediaClient, String> {
        let MediaSettings {
            dir,
            connector_origin,
            allow_private,
            ca_file,
            user_agent,
        } = settings;
        if !matches!(connector_origin.scheme.as_str(), "http" | "https") {
            return Err(format!(
                "connector origin: scheme {:?} is not http or https",
                connector_origin.scheme
            ));
        }
        // Absolute, so the paths handed out stay valid whatever the
        // process's working directory does later.
        let dir =
            std::path::absolute(&dir).map_err(|e| format!("media dir {}: {e}", dir.display()))?;
        let shown = dir.display();
        if dir.to_str().is_none() {
            return Err(format!("media dir {shown}: not valid UTF-8"));
        }
        files::create_private_dir(&dir)
            .map_err(|e| format!("cannot create media dir {shown}: {e}"))?;
        if !dir.is_dir() {
            return Err(format!("media dir {shown} is not a directory"));
        }

        // `use_preconfigured_tls` takes `impl Any` and fails the build at
        // run time for any type but `rustls::ClientConfig` by value: the
        // annotation makes a wrong type a compile error instead.
        let tls: rustls::ClientConfig = (*crate::tls::client_config(ca_file.as_deref())?).clone();
        let base = || {
            Client::builder()
                .use_preconfigured_tls(tls.clone())
                // An HTTP(S)_PROXY variable must never route the bearer
                // through a proxy.
                .no_proxy()
                // Every hop is a new request the component makes, checked
                // again; a followed redirect would skip the checks.
                .redirect(reqwest::redirect::Policy::none())
                .referer(false)
                .http1_only()
                .user_agent(user_agent.as_str())
        };
        let trusted = build(base())?;
        let foreign = if allow_private {
            build(base())?
        } else {
            build(base().dns_resolver(Arc::new(GuardedResolver)))?
        };
        Ok(MediaClient {
            inner: Arc::new(Inner {
                dir,
                connector: connector_origin,
                allow_private,
                trusted,
                foreign,
            }),
        })
    }

    /// The media directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Downloads `req.url`. On a 2xx the body is streamed to a new file in
    /// [`dir`](Self::dir) (mode 0600 on unix) named by
    /// [`extension_for`](super::extension_for); a body over `max_bytes`
    /// (declared or streamed), or any error, leaves no file. Any other
    /// status is reported with the wanted headers and no file (a 3xx is not
    /// followed: its `location` is the component's to judge).
    pub async fn fetch(&self, req: FetchRequest) -> MediaOutcome {
        let (client, url, origin) = match self.admit(&req.url, &req.headers) {
            Ok(admitted) => admitted,
            Err(error) => return MediaOutcome::failed(error),
        };
        let headers = match header_map(&req.headers) {
            Ok(headers) => headers,
            Err(error) => return MediaOutcome::failed(error),
        };
        tracing::debug!(method = "GET", %origin, path = url.path(), "media request");
        let sent = client
            .get(url)
            .headers(headers)
            .timeout(req.timeout)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return MediaOutcome::failed(describe(e, req.timeout)),
        };
        let mut outcome = MediaOutcome {
            status: response.status().as_u16(),
            headers: wanted(response.headers(), &req.want_headers),
            ..MediaOutcome::default()
        };
        if !response.status().is_success() {
            return outcome;
        }
        if let Some(declared) = response.content_length()
            && declared > req.max_bytes
        {
            outcome.error = Some(too_large(req.max_bytes));
            return outcome;
        }
        let ext = super::extension_for(
            req.name_hint.as_deref(),
            header_text(response.headers(), &CONTENT_DISPOSITION).as_deref(),
            header_text(response.headers(), &CONTENT_TYPE).as_deref(),
        );
        match self.save(&mut response, &ext, &req).await {
            Ok((path, size)) => {
                outcome.size = size;
                outcome.path = Some(path.to_string_lossy().into_owned());
            }
            Err(error) => outcome.error = Some(error),
        }
        outcome
    }

    /// Streams the body into a new file; the file is deleted on any error
    /// (the [`PartialFile`] drops unkept).
    async fn save(
        &self,
        response: &mut Response,
        ext: &str,
        req: &FetchRequest,
    ) -> Result<(PathBuf, u64), String> {
        let mut file = PartialFile::create(&self.inner.dir, ext)
            .await
            .map_err(|e| format!("cannot create media file: {e}"))?;
        let mut size: u64 = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| describe(e, req.timeout))?
        {
            size = size.saturating_add(chunk.len() as u64);
            if size > req.max_bytes {
                return Err(too_large(req.max_bytes));
            }
            file.write(&chunk)
                .await
                .map_err(|e| format!("cannot write media file: {e}"))?;
        }
        let path = file
            .keep()
            .await
            .map_err(|e| format!("cannot write media file: {e}"))?;
        Ok((path, size))
    }

    /// Posts the file at `req.path` as the raw body to the connector
    /// origin (any other origin is refused). A missing, non-regular, empty
    /// or too large file is refused before any connection. Reports the
    /// status and up to 64 KiB of the reply as text, whatever the status.
    pub async fn upload(&self, req: UploadRequest) -> MediaOutcome {
        let (url, origin) = match guard::parse_url(&req.url) {
            Ok(parsed) => parsed,
            Err(error) => return MediaOutcome::failed(error),
        };
        if origin != self.inner.connector {
            return MediaOutcome::failed(format!(
                "refused: uploads go to the connector origin only, not {origin}"
            ));
        }
        let body = match read_upload(&req.path, req.max_bytes).await {
            Ok(body) => body,
            Err(error) => return MediaOutcome::failed(error),
        };
        let headers = match header_map(&req.headers) {
            Ok(headers) => headers,
            Err(error) => return MediaOutcome::failed(error),
        };
        let size = body.len() as u64;
        tracing::debug!(method = "POST", %origin, path = url.path(), "media request");
        let sent = self
            .inner
            .trusted
            .post(url)
            .headers(headers)
            .timeout(req.timeout)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return MediaOutcome::failed(describe(e, req.timeout)),
        };
        let mut outcome = MediaOutcome {
            status: response.status().as_u16(),
            size,
            ..MediaOutcome::default()
        };
        let (reply, error) = read_reply(&mut response, req.timeout).await;
        outcome.body = Some(reply);
        outcome.error = error;
        outcome
    }

    /// Removes this module's files in [`dir`](Self::dir) older than `age`
    /// (by modification time); how many. Run at spawn with the retention,
    /// it clears what an earlier process left behind.
    pub fn sweep_older_than(&self, age: Duration) -> usize {
        files::sweep_older_than(&self.inner.dir, age)
    }

    /// Removes the given files if they are ours: directly in
    /// [`dir`](Self::dir) and named the way this module names downloads.
    /// Anything else is ignored. How many were removed.
    pub fn delete(&self, paths: &[String]) -> usize {
        paths
            .iter()
            .filter(|path| files::remove_ours(&self.inner.dir, Path::new(path.as_str())))
            .count()
    }

    /// The client and parsed URL for a request the rules admit: a valid
    /// `http`/`https` URL; credentials only to the connector origin; for
    /// any other origin, no refused IP literal (names are checked by the
    /// foreign client's resolver).
    fn admit(
        &self,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<(&Client, Url, Origin), String> {
        let (url, origin) = guard::parse_url(url)?;
        guard::check_credentials(headers, &origin, &self.inner.connector)?;
        if origin == self.inner.connector {
            return Ok((&self.inner.trusted, url, origin));
        }
        if !self.inner.allow_private {
            guard::check_literal(&url)?;
        }
        Ok((&self.inner.foreign, url, origin))
    }
}

fn build(builder: ClientBuilder) -> Result<Client, String> {
    builder
        .build()
        .map_err(|e| format!("media client: {}", describe_chain(&e.without_url())))
}

/// The request headers as a map: names validated, host-owned headers
/// dropped, credential values marked sensitive. Errors name the header,
/// never the value.
fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (index, (name, value)) in headers.iter().enumerate() {
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("invalid header name (header {index})"))?;
        if HOST_OWNED.contains(&name.as_str()) {
            tracing::debug!(
                header = name.as_str(),
                "media request: host-owned header dropped"
            );
            continue;
        }
        let mut value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        if guard::is_credential(name.as_str()) {
            value.set_sensitive(true);
        }
        map.append(name, value);
    }
    Ok(map)
}

/// The wanted response headers that are present, names lower-case, in the
/// order asked, each name once.
fn wanted(headers: &HeaderMap, want: &[String]) -> Vec<(String, String)> {
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for name in want {
        let name = name.trim().to_ascii_lowercase();
        if names.contains(&name) {
            continue;
        }
        for value in headers.get_all(name.as_str()) {
            out.push((
                name.clone(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
        names.push(name);
    }
    out
}

fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn too_large(max_bytes: u64) -> String {
    format!("too large: over {max_bytes} bytes")
}

/// A failed exchange in words, without the URL (its query may hold a
/// token): the error and its causes.
fn describe(error: reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out after {} ms", timeout.as_millis());
    }
    describe_chain(&error.without_url())
}

fn describe_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// The upload's body, refused before any connection when the file is
/// missing, not a regular file, empty, or over `max_bytes`. Read with a
/// cap, so a file growing after the size check cannot pass it.
async fn read_upload(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let meta = match tokio::fs::metadata(path).await {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err("file not found".to_owned()),
        Err(e) => return Err(format!("cannot read file: {e}")),
    };
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    let too_big = |len: u64| format!("file too large: {len} bytes over the {max_bytes} byte cap");
    if meta.len() == 0 {
        return Err("empty file".to_owned());
    }
    if meta.len() > max_bytes {
        return Err(too_big(meta.len()));
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot read file: {e}"))?;
    let mut body = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut body)
        .await
        .map_err(|e| format!("cannot read file: {e}"))?;
    let len = body.len() as u64;
    if len > max_bytes {
        return Err(too_big(len));
    }
    if len == 0 {
        return Err("empty file".to_owned());
    }
    Ok(body)
}

/// Up to [`MAX_REPLY_BYTES`] of the reply as text; the rest is not read.
/// A failure while reading keeps what arrived and says why.
async fn read_reply(response: &mut Response, timeout: Duration) -> (String, Option<String>) {
    let mut bytes = Vec::new();
    let mut error = None;
    while bytes.len() < MAX_REPLY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                error = Some(describe(e, timeout));
                break;
            }
        }
    }
    bytes.truncate(MAX_REPLY_BYTES);
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    // Lossy decoding can grow the text (a stray byte becomes a 3-byte
    // U+FFFD): cut again, at a character boundary.
    if text.len() > MAX_REPLY_BYTES {
        let mut end = MAX_REPLY_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    (text, error)
}
