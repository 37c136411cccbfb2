//! The media plane (§9.1) on the stub's listener: gateway uploads at
//! `POST /relay/media`, re-host downloads at `GET /relay/media/<id>`
//! (bearer required when secrets are set), test-registered public files
//! and redirects at `GET /public/<name>`, and the test-facing API.

use std::hash::{BuildHasher as _, Hasher as _};

use tokio::io::AsyncWriteExt as _;

use super::plain_http::{self as http, Head, HeadError, Response};
use super::*;
use crate::model::{MediaRequest, StoredMedia};

/// How long an upload's body may take to arrive: the 30 s HTTP timeout
/// §9.1 gives the gateway's side.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// §9.1: `X-Media-Filename` is at most 255 characters.
const MAX_FILENAME_CHARS: usize = 255;

/// A test-registered answer for `GET /public/<name>`.
#[derive(Debug, Clone)]
enum PublicEntry {
    File {
        bytes: Vec<u8>,
        content_type: String,
    },
    Redirect {
        status: u16,
        location: String,
    },
}

/// The stub's media holdings and failure scripts.
#[derive(Debug, Default)]
pub(super) struct MediaStore {
    stored: Vec<StoredMedia>,
    public: BTreeMap<String, PublicEntry>,
    fail_downloads: VecDeque<u16>,
    fail_uploads: VecDeque<u16>,
}

impl MediaStore {
    /// A fresh id: 16 lowercase hex digits, unused so far.
    fn fresh_id(&self) -> String {
        // std's RandomState is seeded per process and varies per instance,
        // which is all the unpredictability a test stub needs. A 64-bit
        // collision is astronomically unlikely; the loop only guards it.
        loop {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_usize(self.stored.len());
            let id = format!("{:016x}", hasher.finish());
            if !self.stored.iter().any(|m| m.id == id) {
                return id;
            }
        }
    }

    fn store(&mut self, mut media: StoredMedia) -> String {
        let id = self.fresh_id();
        media.id.clone_from(&id);
        self.stored.push(media);
        id
    }

    fn get(&self, id: &str) -> Option<&StoredMedia> {
        self.stored.iter().find(|m| m.id == id)
    }
}

/// The outcome of checking a request's bearer against the stub's secrets.
struct BearerCheck {
    /// `None` when no secrets are configured.
    verified: Option<bool>,
    gateway_id: Option<String>,
}

impl BearerCheck {
    /// Same rule as the upgrade: with no secrets configured anything goes.
    fn allowed(&self) -> bool {
        self.verified != Some(false)
    }
}

fn check_bearer(inner: &Inner, header: Option<&str>) -> BearerCheck {
    if inner.config.secrets.is_empty() {
        return BearerCheck {
            verified: None,
            gateway_id: None,
        };
    }
    let now = inner.config.clock.now();
    let verdict = header
        .and_then(auth::bearer_token)
        .ok_or(auth::AuthError::Missing)
        .and_then(|token| auth::verify_token(token, &inner.config.secrets, now));
    match verdict {
        Ok(gateway_id) => BearerCheck {
            verified: Some(true),
            gateway_id: Some(gateway_id),
        },
        Err(error) => {
            tracing::info!(%error, "refusing media request bearer");
            BearerCheck {
                verified: Some(false),
                gateway_id: None,
            }
        }
    }
}

/// Serves one media request on `tcp` (routed here by its request line),
/// records it, answers and closes.
pub(super) async fn serve(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    accepted_at: SystemTime,
    (method, target): (String, String),
    deadline: Instant,
) {
    let mut record = MediaRequest {
        at: accepted_at,
        peer,
        method,
        path: target,
        authorization: false,
        verified: None,
        gateway_id: None,
        user_agent: None,
        content_type: None,
        filename: None,
        content_length: None,
        body_size: 0,
        status: 0,
        media_id: None,
    };
    let handled = tokio::select! {
        response = handle(&shared, &mut tcp, &mut record, deadline) => response,
        () = until_shutdown(shared.shutdown.clone()) => return,
    };
    record.status = handled.status;
    // Recorded before answering, so a test that has read the answer
    // always finds the record.
    shared.update(|inner| inner.state.media_requests.push(record));
    tokio::select! {
        result = http::respond(&mut tcp, &handled) => {
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "media response not delivered");
            }
        }
        () = until_shutdown(shared.shutdown.clone()) => {}
    }
}

/// Reads the head and dispatches; fills `record` as facts become known.
async fn handle(
    shared: &Arc<Shared>,
    tcp: &mut TcpStream,
    record: &mut MediaRequest,
    deadline: Instant,
) -> Response {
    let (head, early) = match http::read_head(tcp, deadline).await {
        Ok(read) => read,
        Err(HeadError::TooLarge) => {
            return Response::error(431, "request head is over 16 KiB");
        }
        Err(HeadError::Malformed(why)) => return Response::error(400, why),
        Err(HeadError::TimedOut) => return Response::error(408, "request head timed out"),
        Err(HeadError::Closed) => return Response::error(400, "connection closed mid-head"),
    };
    let owned = |name: &str| head.header(name).map(str::to_owned);
    record.method.clone_from(&head.method);
    record.path.clone_from(&head.target);
    record.authorization = head.header("authorization").is_some();
    record.user_agent = owned("user-agent");
    record.content_type = owned("content-type");
    record.filename = owned("x-media-filename");
    record.content_length = head.content_length().ok().flatten();
    let bearer = check_bearer(&shared.lock(), head.header("authorization"));
    record.verified = bearer.verified;
    record.gateway_id.clone_from(&bearer.gateway_id);

    let path = http::path_of(&head.target).to_owned();
    match head.method.as_str() {
        "POST" if path == "/relay/media" => {
            upload(shared, tcp, record, &head, early, &bearer).await
        }
        "GET" => {
            if let Some(id) = path.strip_prefix("/relay/media/") {
                record.media_id = Some(id.to_owned());
                download(shared, id, &bearer)
            } else if let Some(name) = path.strip_prefix("/public/") {
                public(shared, name)
            } else {
                Response::error(404, "no such media endpoint")
            }
        }
        // The peeked line and the parsed one are the same bytes, so only a
        // line this parser reads differently ends up here.
        _ => Response::error(404, "no such media endpoint"),
    }
}

async fn upload(
    shared: &Arc<Shared>,
    tcp: &mut TcpStream,
    record: &mut MediaRequest,
    head: &Head,
    early: Vec<u8>,
    bearer: &BearerCheck,
) -> Response {
    if head.header("transfer-encoding").is_some() {
        return Response::error(411, "send the body with a Content-Length, not chunked");
    }
    let declared = match head.content_length() {
        Ok(Some(n)) => n,
        Ok(None) => return Response::error(411, "Content-Length is required"),
        Err(why) => return Response::error(400, why),
    };
    if !bearer.allowed() {
        return Response::error(401, "missing or invalid bearer token")
            .header("WWW-Authenticate", "Bearer");
    }
    let max = shared.lock().config.max_media_size;
    // Compared as u64: a declared length beyond usize is over any cap.
    let Some(len) = usize::try_from(declared).ok().filter(|n| *n <= max) else {
        return Response::error(413, &format!("media is over the {max}-byte cap"));
    };
    if len == 0 {
        return Response::error(400, "empty media body");
    }
    if record
        .filename
        .as_ref()
        .is_some_and(|f| f.chars().count() > MAX_FILENAME_CHARS)
    {
        return Response::error(400, "X-Media-Filename is over 255 characters");
    }
    if let Some(status) = shared.update(|inner| inner.media.fail_uploads.pop_front()) {
        return Response::error(status, "upload failure scripted by the test");
    }
    // curl and others hold large bodies back for up to a second waiting for
    // this; answering at once keeps uploads fast. A failed write surfaces as
    // a body read error just below.
    if head
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        let _ = tcp.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    }
    let body_deadline = Instant::now() + BODY_TIMEOUT;
    let bytes = match http::read_body(tcp, early, len, body_deadline).await {
        Ok(bytes) => bytes,
        Err((got, error)) => {
            record.body_size = got;
            return match error {
                HeadError::TimedOut => Response::error(408, "body timed out"),
                _ => Response::error(400, "body ended before Content-Length"),
            };
        }
    };
    record.body_size = bytes.len();
    let size = bytes.len();
    let id = shared.update(|inner| {
        inner.media.store(StoredMedia {
            id: String::new(),
            bytes,
            content_type: record.content_type.clone(),
            filename: record.filename.clone(),
            user_agent: record.user_agent.clone(),
            uploaded: true,
        })
    });
    record.media_id = Some(id.clone());
    let body = json!({ "id": id, "size": size }).to_string();
    Response::with_body(200, "application/json", body.into_bytes())
}

fn download(shared: &Arc<Shared>, id: &str, bearer: &BearerCheck) -> Response {
    if !bearer.allowed() {
        return Response::error(401, "missing or invalid bearer token")
            .header("WWW-Authenticate", "Bearer");
    }
    let found = shared.update(|inner| {
        if let Some(status) = inner.media.fail_downloads.pop_front() {
            return Err(status);
        }
        Ok(inner.media.get(id).cloned())
    });
    match found {
        Err(status) => Response::error(status, "download failure scripted by the test"),
        Ok(None) => Response::error(404, "no such media"),
        Ok(Some(media)) => {
            let content_type = media
                .content_type
                .as_deref()
                .unwrap_or("application/octet-stream");
            let response = Response::with_body(200, content_type, media.bytes);
            match &media.filename {
                Some(name) => {
                    response.header("Content-Disposition", &http::content_disposition(name))
                }
                None => response,
            }
        }
    }
}

fn public(shared: &Arc<Shared>, name: &str) -> Response {
    let found = shared.update(|inner| {
        if let Some(status) = inner.media.fail_downloads.pop_front() {
            return Err(status);
        }
        Ok(inner.media.public.get(name).cloned())
    });
    match found {
        Err(status) => Response::error(status, "download failure scripted by the test"),
        Ok(None) => Response::error(404, "no such public file"),
        Ok(Some(PublicEntry::File {
            bytes,
            content_type,
        })) => Response::with_body(200, &content_type, bytes),
        Ok(Some(PublicEntry::Redirect { status, location })) => {
            Response::with_body(status, "text/plain", Vec::new()).header("Location", &location)
        }
    }
}

fn failure_status(status: u16) -> Result<u16, StubError> {
    if (400..=599).contains(&status) {
        Ok(status)
    } else {
        Err(StubError::Invalid(format!(
            "failure status {status} must be 400..=599"
        )))
    }
}

impl StubConnector {
    /// Every media HTTP request answered so far (uploads, re-host and
    /// public downloads), in order.
    pub fn media_requests(&self) -> Vec<MediaRequest> {
        self.with_state(|s| s.media_requests.clone())
    }

    /// Everything served at `{base}/relay/media/{id}`: gateway uploads and
    /// [`StubConnector::put_media`] entries, oldest first.
    pub fn stored_media(&self) -> Vec<StoredMedia> {
        self.shared.lock().media.stored.clone()
    }

    /// One stored entry by id.
    pub fn media(&self, id: &str) -> Option<StoredMedia> {
        self.shared.lock().media.get(id).cloned()
    }

    /// The re-host URL of `id`: `{base}/relay/media/{id}`.
    pub fn media_url(&self, id: &str) -> String {
        format!("{}/relay/media/{id}", self.base_url())
    }

    /// Re-hosts `bytes` as a connector does with platform media and returns
    /// the URL to put in an event's `media_urls`, `{base}/relay/media/{id}`.
    /// Downloads need the bearer (when secrets are set) and carry
    /// `Content-Type` and, with a filename, `Content-Disposition`.
    pub fn put_media(
        &self,
        bytes: impl Into<Vec<u8>>,
        content_type: &str,
        filename: Option<&str>,
    ) -> String {
        let media = StoredMedia {
            id: String::new(),
            bytes: bytes.into(),
            content_type: Some(content_type.to_owned()),
            filename: filename.map(str::to_owned),
            user_agent: None,
            uploaded: false,
        };
        let id = self.shared.update(|inner| inner.media.store(media));
        self.media_url(&id)
    }

    /// Serves `bytes` without auth at `{base}/public/{name}` (replacing any
    /// entry of that name) and returns that URL: a stand-in for a public CDN
    /// URL. `name` is matched verbatim against the rest of the request path
    /// (query excluded), so keep it URL-safe; it may contain `/`.
    pub fn put_public(&self, name: &str, bytes: impl Into<Vec<u8>>, content_type: &str) -> String {
        let entry = PublicEntry::File {
            bytes: bytes.into(),
            content_type: content_type.to_owned(),
        };
        self.put_public_entry(name, entry)
    }

    /// Answers `GET /public/{name}` with `status` (e.g. 302) and this
    /// `Location`, and returns `{base}/public/{name}`. The status is sent
    /// as given; `location` may be absolute or relative.
    pub fn put_redirect(&self, name: &str, status: u16, location: &str) -> String {
        let entry = PublicEntry::Redirect {
            status,
            location: location.to_owned(),
        };
        self.put_public_entry(name, entry)
    }

    fn put_public_entry(&self, name: &str, entry: PublicEntry) -> String {
        self.shared.update(|inner| {
            inner.media.public.insert(name.to_owned(), entry);
        });
        format!("{}/public/{name}", self.base_url())
    }

    /// Answers each of the next `n` media downloads (re-host downloads
    /// that pass the bearer check, and public downloads alike) with
    /// `status` (400..=599) instead of serving them.
    pub fn fail_next_media(&self, n: usize, status: u16) -> Result<(), StubError> {
        let status = failure_status(status)?;
        self.shared.update(|inner| {
            inner
                .media
                .fail_downloads
                .extend(std::iter::repeat_n(status, n));
        });
        Ok(())
    }

    /// Answers each of the next `n` well-formed, authorized uploads within
    /// the cap with `status` (400..=599) without storing them.
    pub fn fail_next_uploads(&self, n: usize, status: u16) -> Result<(), StubError> {
        let status = failure_status(status)?;
        self.shared.update(|inner| {
            inner
                .media
                .fail_uploads
                .extend(std::iter::repeat_n(status, n));
        });
        Ok(())
    }

    /// Sets the upload cap in bytes for later uploads.
    pub fn set_max_media_size(&self, max: usize) {
        self.shared
            .update(|inner| inner.config.max_media_size = max);
    }

    /// Waits for a media request (answered at any time, earlier ones
    /// included) satisfying `pred`, and returns the first such request.
    pub async fn wait_for_media_request(
        &self,
        mut pred: impl FnMut(&MediaRequest) -> bool,
        timeout: Duration,
    ) -> Result<MediaRequest, StubError> {
        self.wait_named(
            "a matching media request",
            |s| s.media_requests.iter().find(|r| pred(r)).cloned(),
            timeout,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_16_lowercase_hex_and_distinct() {
        let mut store = MediaStore::default();
        let ids: Vec<String> = (0..50)
            .map(|_| {
                store.store(StoredMedia {
                    id: String::new(),
                    bytes: vec![1],
                    content_type: None,
                    filename: None,
                    user_agent: None,
                    uploaded: false,
                })
            })
            .collect();
        for id in &ids {
            assert_eq!(id.len(), 16);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn failure_statuses_are_validated() {
        assert_eq!(failure_status(503), Ok(503));
        assert!(failure_status(200).is_err());
        assert!(failure_status(302).is_err());
        assert!(failure_status(600).is_err());
    }
}
