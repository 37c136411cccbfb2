//! The media plane's records (§9.1): what the stub holds for download and
//! every media HTTP request it answered.

use std::net::SocketAddr;
use std::time::SystemTime;

/// The default upload cap, 25 MiB: the limit §9.1 sets on both sides.
pub const DEFAULT_MAX_MEDIA_SIZE: usize = 25 * 1024 * 1024;

/// One blob served at `{base}/relay/media/{id}`: a gateway upload or an
/// entry a test put there with [`crate::StubConnector::put_media`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMedia {
    /// The id (16 lowercase hex digits).
    pub id: String,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The `Content-Type` it was uploaded (or put) with, if any; downloads
    /// of an entry without one are served as `application/octet-stream`.
    pub content_type: Option<String>,
    /// The `X-Media-Filename` of the upload (or the name given to
    /// `put_media`); downloads carry it in `Content-Disposition`.
    pub filename: Option<String>,
    /// The uploader's `User-Agent` (`None` for test-put entries).
    pub user_agent: Option<String>,
    /// True for a gateway upload, false for a test-put entry.
    pub uploaded: bool,
}

impl StoredMedia {
    /// Number of bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// One HTTP request the stub answered on a media endpoint
/// (`POST /relay/media`, `GET /relay/media/<id>`, `GET /public/<name>`).
/// The bearer token itself is never recorded, only whether one came and
/// whether it verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRequest {
    /// When the connection was accepted.
    pub at: SystemTime,
    /// The client's address.
    pub peer: SocketAddr,
    /// Request method (`"POST"`, `"GET"`).
    pub method: String,
    /// Request target as sent (query string included).
    pub path: String,
    /// True when an `Authorization` header was present.
    pub authorization: bool,
    /// The bearer check against the stub's secrets: `None` when the stub
    /// has no secrets configured (nothing to verify against), else whether
    /// a bearer token verified (a missing header counts as `Some(false)`).
    /// Checked on every request, public ones included, so a test can tell a
    /// bearer sent where none was needed.
    pub verified: Option<bool>,
    /// The verified token's payload (the gateway id).
    pub gateway_id: Option<String>,
    /// `User-Agent`, if sent.
    pub user_agent: Option<String>,
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
    /// `X-Media-Filename`, if sent.
    pub filename: Option<String>,
    /// The declared `Content-Length`, if any.
    pub content_length: Option<u64>,
    /// Body bytes actually read (0 when the stub answered without reading,
    /// e.g. a 413 or a 401).
    pub body_size: usize,
    /// The HTTP status answered.
    pub status: u16,
    /// The id of the upload's stored entry, or the id a
    /// `GET /relay/media/<id>` asked for.
    pub media_id: Option<String>,
}

impl MediaRequest {
    /// True for `POST /relay/media`.
    pub fn is_upload(&self) -> bool {
        self.method == "POST"
    }

    /// True for `GET /relay/media/<id>` (a re-host download).
    pub fn is_rehost_download(&self) -> bool {
        self.method == "GET" && self.path.starts_with("/relay/media/")
    }

    /// True for `GET /public/<name>`.
    pub fn is_public_download(&self) -> bool {
        self.method == "GET" && self.path.starts_with("/public/")
    }
}
