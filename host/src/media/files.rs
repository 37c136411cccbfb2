//! The media directory's files: their names (random, with a sanitised
//! extension), writing a download so that a failure never leaves a partial
//! file, and recognising our own files for `delete`.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

/// Hex digits in the random part of a file name (96 bits).
const NAME_HEX: usize = 24;
/// The longest extension kept.
const MAX_EXT: usize = 10;
/// The extension when nothing names a better one.
const FALLBACK_EXT: &str = "bin";

/// MIME type (lower-case, no parameters) to extension, for a response that
/// names no file.
const MIME_EXT: &[(&str, &str)] = &[
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("image/jpg", "jpg"),
    ("image/pjpeg", "jpg"),
    ("image/gif", "gif"),
    ("image/webp", "webp"),
    ("image/bmp", "bmp"),
    ("image/heic", "heic"),
    ("image/avif", "avif"),
    ("image/svg+xml", "svg"),
    ("video/mp4", "mp4"),
    ("video/webm", "webm"),
    ("video/quicktime", "mov"),
    ("video/ogg", "ogv"),
    ("video/x-matroska", "mkv"),
    ("audio/mpeg", "mp3"),
    ("audio/mp3", "mp3"),
    ("audio/ogg", "ogg"),
    ("application/ogg", "ogg"),
    ("audio/opus", "opus"),
    ("audio/wav", "wav"),
    ("audio/wave", "wav"),
    ("audio/x-wav", "wav"),
    ("audio/vnd.wave", "wav"),
    ("audio/mp4", "m4a"),
    ("audio/m4a", "m4a"),
    ("audio/x-m4a", "m4a"),
    ("audio/aac", "aac"),
    ("audio/flac", "flac"),
    ("audio/webm", "weba"),
    ("application/pdf", "pdf"),
    ("text/plain", "txt"),
    ("text/csv", "csv"),
    ("text/html", "html"),
    ("application/json", "json"),
    ("application/zip", "zip"),
    ("application/gzip", "gz"),
    ("application/x-tar", "tar"),
];

/// The extension of a downloaded file: that of the hint's last path
/// segment, else of the `Content-Disposition` file name (`filename*`
/// before `filename`), else the MIME type's from a small table, else
/// `bin`. A candidate that is not 1 to 10 ASCII letters or digits (after
/// lower-casing) counts as absent, so the result always matches
/// `[a-z0-9]{1,10}` and can never carry a path separator or a dot.
pub fn extension_for(
    name_hint: Option<&str>,
    content_disposition: Option<&str>,
    content_type: Option<&str>,
) -> String {
    name_hint
        .and_then(|hint| {
            // A hint may be a URL path: its query or fragment is no part of
            // the name.
            let path = hint.split(['?', '#']).next().unwrap_or(hint);
            extension_of_name(path)
        })
        .or_else(|| {
            disposition_names(content_disposition?)
                .iter()
                .find_map(|name| extension_of_name(name))
        })
        .or_else(|| extension_of_mime(content_type?))
        .unwrap_or_else(|| FALLBACK_EXT.to_owned())
}

/// The sanitised extension of the last path segment of `name`; `None` for
/// no dot, a leading-dot-only name (`.profile`), or an unusable extension.
fn extension_of_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next()?;
    let (stem, ext) = last.rsplit_once('.')?;
    if stem.is_empty() {
        return None;
    }
    sanitised(ext)
}

fn extension_of_mime(content_type: &str) -> Option<String> {
    let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
    MIME_EXT
        .iter()
        .find(|(mime, _)| *mime == essence)
        .map(|(_, ext)| (*ext).to_owned())
}

fn sanitised(ext: &str) -> Option<String> {
    let ext = ext.trim().to_ascii_lowercase();
    let fits = (1..=MAX_EXT).contains(&ext.len())
        && ext
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    fits.then_some(ext)
}

/// The file names a `Content-Disposition` value gives, best first:
/// `filename*` (RFC 8187, `charset'lang'percent-encoded`), then `filename`
/// (a token or a quoted string).
fn disposition_names(value: &str) -> Vec<String> {
    let mut extended = Vec::new();
    let mut plain = Vec::new();
    // The disposition type comes first; parameters follow, split at `;`
    // outside quotes (a quoted file name may contain one).
    for param in split_params(value).into_iter().skip(1) {
        let Some((name, raw)) = param.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let raw = raw.trim();
        if name == "filename*" {
            // charset'language'value; the charset does not matter for an
            // extension, which must be ASCII anyway.
            let encoded = raw.splitn(3, '\'').nth(2).unwrap_or(raw);
            extended.push(percent_decode(unquoted(encoded).as_str()));
        } else if name == "filename" {
            plain.push(unquoted(raw));
        }
    }
    extended.extend(plain);
    extended
}

fn split_params(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for ch in value.chars() {
        if escaped {
            escaped = false;
        } else if quoted && ch == '\\' {
            escaped = true;
        } else if ch == '"' {
            quoted = !quoted;
        } else if ch == ';' && !quoted {
            parts.push(std::mem::take(&mut current));
            continue;
        }
        current.push(ch);
    }
    parts.push(current);
    parts
}

/// A quoted string's content with its backslash escapes resolved; a token
/// as it is.
fn unquoted(raw: &str) -> String {
    let Some(inner) = raw.strip_prefix('"') else {
        return raw.to_owned();
    };
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for ch in inner.chars() {
        if !escaped && ch == '\\' {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(ch);
    }
    out
}

fn percent_decode(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2))
            && let (Some(hi), Some(lo)) = (hex(hi), hex(lo))
        {
            // Two hex digits make one byte: hi * 16 + lo < 256.
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A new random file name: 24 lower-case hex digits, a dot, `ext`.
fn random_name(ext: &str) -> io::Result<String> {
    let mut bytes = [0u8; NAME_HEX / 2];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    let mut name = String::with_capacity(NAME_HEX + 1 + ext.len());
    for byte in bytes {
        name.push_str(&format!("{byte:02x}"));
    }
    name.push('.');
    name.push_str(ext);
    Ok(name)
}

/// Whether `name` is one [`random_name`] could have made.
fn is_our_name(name: &str) -> bool {
    let Some((stem, ext)) = name.split_once('.') else {
        return false;
    };
    stem.len() == NAME_HEX
        && stem
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && sanitised(ext).as_deref() == Some(ext)
}

/// Removes `path` if it is one of our files directly in `dir`; whether it
/// removed one. Anything else (another directory, a foreign name, a
/// directory or a missing file) is left alone.
pub(crate) fn remove_ours(dir: &Path, path: &Path) -> bool {
    if path.parent() != Some(dir) {
        return false;
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if !is_our_name(name) {
        return false;
    }
    // symlink_metadata: a link planted under our name is removed as a link,
    // never followed.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_dir() => std::fs::remove_file(path).is_ok(),
        _ => false,
    }
}

/// Removes our files in `dir` last modified more than `age` ago; how many.
/// Files of an earlier process (or of an instance lost to a trap) have no
/// owner left: past the retention nobody may still read them.
pub(crate) fn sweep_older_than(dir: &Path, age: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|at| now.duration_since(at).ok())
                .is_some_and(|elapsed| elapsed > age)
        })
        .filter(|entry| remove_ours(dir, &entry.path()))
        .count()
}

/// Creates `dir` (and its parents) if missing, mode 0700 on unix: downloads
/// may be private messages' attachments.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// A download being written. Dropped before [`PartialFile::keep`] (an
/// error, the size cap, the caller dropping the future) it deletes the
/// file, so no partial download is ever left behind.
pub(crate) struct PartialFile {
    path: PathBuf,
    file: tokio::fs::File,
    kept: bool,
}

impl PartialFile {
    /// A new file `<dir>/<random>.<ext>`, created exclusively (never an
    /// existing file, never through a symlink), mode 0600 on unix.
    pub(crate) async fn create(dir: &Path, ext: &str) -> io::Result<PartialFile> {
        // 96 random bits make a collision unlikely; retry a few anyway
        // rather than fail on one.
        let mut last = None;
        for _ in 0..4 {
            let path = dir.join(random_name(ext)?);
            let mut options = tokio::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            options.mode(0o600);
            match options.open(&path).await {
                Ok(file) => {
                    return Ok(PartialFile {
                        path,
                        file,
                        kept: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free file name")))
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes).await
    }

    /// Flushes and keeps the file; its path.
    pub(crate) async fn keep(mut self) -> io::Result<PathBuf> {
        // tokio writes in the background: flush waits for the last write,
        // so the reported size is on disk.
        self.file.flush().await?;
        self.kept = true;
        Ok(self.path.clone())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
