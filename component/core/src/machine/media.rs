//! The media plane (spec §9.1, §4.3, §2.7 `send_media`): inbound media
//! localised to files before the event is delivered, outbound files
//! uploaded to the connector before the `send_media` frame, and the files'
//! lifetime. The machine only decides: each HTTP request is an
//! [`Output::FetchMedia`] or [`Output::UploadMedia`] the host performs (with
//! its own address checks) and answers with [`Input::MediaDone`]; file
//! bytes never pass through here.
//!
//! Nothing is lost: an event waiting for its downloads already holds its
//! delivery slot (it counts against `max_undelivered`); a failed download
//! never drops the message (§4.3: a re-host entry is dropped with its MIME
//! type, a public URL is kept as a URL, and `media_errors` says why).

use super::*;
use crate::event::MediaError;
use crate::media::{self as rules, HttpUrl};

/// Grace past a media request's own timeout before the machine gives up on
/// the host's report.
const REPORT_GRACE_MS: u64 = 5_000;
/// The `media_kind` values of `send_media` (§2.7).
pub const MEDIA_KINDS: [&str; 5] = ["image", "voice", "audio", "video", "document"];
/// The error of `send-media` when the chat's connector lacks the op: the
/// gateway falls back to its text behaviour (§9.1).
pub const MEDIA_OP_UNAVAILABLE: &str = "relay send_media op unavailable";
/// The error of `send-media` with a local file on a host without a media
/// client.
pub const MEDIA_UNAVAILABLE: &str = "relay media unavailable: the host has no media client";

/// The host's media settings (part of [`Config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// The host performs media requests. Without a client re-host URLs are
    /// dropped, public URLs kept, and local files refused (§4.3, §9.1).
    pub client: bool,
    /// Per-file cap, both directions.
    pub max_bytes: u64,
    /// Timeout of one request.
    pub timeout_ms: u64,
    /// How long a file is kept after its delivery was accepted.
    pub retention_ms: u64,
    /// Files kept at once; past it new downloads are refused.
    pub max_files: usize,
    /// Bytes kept at once; past it new downloads are refused.
    pub max_total_bytes: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            client: false,
            max_bytes: rules::MEDIA_MAX_BYTES,
            timeout_ms: rules::MEDIA_TIMEOUT_MS,
            retention_ms: rules::MEDIA_RETENTION_MS,
            max_files: rules::MEDIA_MAX_FILES,
            max_total_bytes: rules::MEDIA_MAX_TOTAL_BYTES,
        }
    }
}

/// One HTTP request the host performs for the machine. The host follows
/// no redirect itself and enforces its own address checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRequest {
    /// Absolute `http(s)` URL.
    pub url: String,
    /// Request headers (the bearer only for the connector's own media
    /// URLs); redacted in `Debug`.
    pub headers: Headers,
    /// Size cap of the body (download) or file (upload).
    pub max_bytes: u64,
    /// Timeout of the whole request.
    pub timeout_ms: u64,
    /// Response headers to report (lower-case names).
    pub want_headers: Vec<String>,
    /// A file name whose extension the downloaded file should take.
    pub name_hint: Option<String>,
}

/// How a media request went, as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaOutcome {
    /// HTTP status, 0 when no response arrived.
    pub status: u16,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// The response headers asked for that were present.
    pub headers: Vec<(String, String)>,
    /// Bytes written (download) or sent (upload).
    pub size: u64,
    /// The file the host wrote (download, 2xx only).
    pub path: Option<String>,
    /// The reply body (upload; at most 64 KiB).
    pub body: Option<String>,
}

impl MediaOutcome {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The `send-media` lane (§2.7 `send_media`, §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSend {
    /// Target chat.
    pub chat_id: String,
    /// `image`, `voice`, `audio`, `video` or `document`.
    pub kind: String,
    /// A local file (uploaded first) or a public `http(s)` URL.
    pub source: String,
    /// Caption (`content`).
    pub caption: String,
    /// Message replied to.
    pub reply_to: Option<String>,
    /// File name shown by the platform.
    pub filename: Option<String>,
    /// Metadata JSON object.
    pub metadata: String,
}

#[derive(Debug)]
enum Job {
    Fetch { delivery: u64, slot: usize },
    Upload { request: u64, send: Box<MediaSend> },
}

#[derive(Debug)]
enum SlotState {
    Pending,
    Local(String),
    Failed(String),
}

#[derive(Debug)]
struct Slot {
    original: String,
    url: String,
    mime: String,
    /// Not an `http(s)` URL, or a connector re-host: dropped on failure.
    drop_on_failure: bool,
    hops: u8,
    state: SlotState,
}

#[derive(Debug)]
struct Localizing {
    buffer_id: Option<String>,
    event: Box<MessageEvent>,
    slots: Vec<Slot>,
    pending: usize,
}

#[derive(Debug)]
struct File {
    size: u64,
}

/// What the media plane owns.
#[derive(Debug, Default)]
pub(super) struct Media {
    next_job: u64,
    /// Jobs awaiting the host's report, with their report deadline.
    jobs: FxHashMap<u64, (Job, u64)>,
    deadlines: BTreeMap<(u64, u64), ()>,
    /// Events waiting for their downloads, by delivery.
    localizing: FxHashMap<u64, Localizing>,
    /// Files written for us and not yet deleted.
    files: KeyedMap<String, File>,
    bytes: u64,
    /// Files of deliveries awaiting their verdict.
    by_delivery: FxHashMap<u64, Vec<String>>,
    /// Files of accepted deliveries, by when they go.
    expiry: BTreeMap<(u64, u64), String>,
    seq: u64,
    fetching: usize,
    uploads: usize,
}

impl Media {
    pub(super) fn next_deadline(&self) -> Option<u64> {
        let job = self.deadlines.keys().next().map(|&(at, _)| at);
        let file = self.expiry.keys().next().map(|&(at, _)| at);
        job.into_iter().chain(file).min()
    }

    pub(super) fn files(&self) -> (usize, u64) {
        (self.files.len(), self.bytes)
    }
}

impl Machine {
    fn media_base(&self) -> String {
        rules::media_base(&self.url)
    }

    fn media_headers(&self, now: Now, bearer: bool) -> Vec<(String, String)> {
        let mut headers = vec![("User-Agent".to_owned(), rules::MEDIA_USER_AGENT.to_owned())];
        if bearer
            && let Some(h) = bearer_header(
                &self.cfg.gateway_id,
                &self.cfg.secret,
                now.wall_secs,
                self.cfg.token_ttl_secs,
            )
        {
            headers.push(h);
        }
        headers
    }

    fn new_job(&mut self, now: Now, job: Job) -> u64 {
        self.media.next_job += 1;
        let id = self.media.next_job;
        let at = now.mono_ns.saturating_add(ms(self
            .cfg
            .media
            .timeout_ms
            .saturating_add(REPORT_GRACE_MS)));
        self.media.deadlines.insert((at, id), ());
        self.media.jobs.insert(id, (job, at));
        id
    }

    /// Hands an admitted event to the gateway, after localising its media
    /// when it has any (§4.3).
    pub(super) fn deliver_event(
        &mut self,
        now: Now,
        delivery: u64,
        buffer_id: Option<String>,
        mut event: MessageEvent,
    ) {
        if event.media_urls.is_empty() {
            return self.push_delivery(delivery, buffer_id, event);
        }
        if !self.cfg.media.client {
            self.without_media_client(&mut event);
            return self.push_delivery(delivery, buffer_id, event);
        }
        if let Some(loc) = self.start_localizing(now, delivery, buffer_id, event) {
            self.media.localizing.insert(delivery, loc);
        }
    }

    fn push_delivery(&mut self, delivery: u64, buffer_id: Option<String>, event: MessageEvent) {
        let json = event.to_gateway_json(self.cfg.authorization_is_upstream);
        self.outputs.push_back(Output::Deliver(Delivery {
            delivery,
            buffer_id,
            event: Box::new(event),
            json,
        }));
    }

    /// No media client: re-host URLs are dropped (with their MIME types),
    /// public ones kept; entries that are not `http(s)` URLs are dropped.
    fn without_media_client(&mut self, event: &mut MessageEvent) {
        let base = self.media_base();
        let urls = std::mem::take(&mut event.media_urls);
        let mut types = std::mem::take(&mut event.media_types).into_iter();
        for url in urls {
            let mime = types.next().unwrap_or_default();
            let error = if HttpUrl::parse(&url).is_none() {
                "not an http(s) URL"
            } else if rules::is_rehost(&url, &base) {
                "no media client to download a connector re-host"
            } else {
                event.media_urls.push(url);
                event.media_types.push(mime);
                continue;
            };
            event.media_errors.push(MediaError::new(url, error, false));
        }
    }

    /// Issues the downloads of an event's media; `None` when the event was
    /// delivered already (nothing to download).
    fn start_localizing(
        &mut self,
        now: Now,
        delivery: u64,
        buffer_id: Option<String>,
        mut event: MessageEvent,
    ) -> Option<Localizing> {
        let base = self.media_base();
        let urls = std::mem::take(&mut event.media_urls);
        let mut types = std::mem::take(&mut event.media_types).into_iter();
        let mut slots = Vec::with_capacity(urls.len());
        let mut pending = 0;
        for url in urls {
            let mime = types.next().unwrap_or_default();
            let http = HttpUrl::parse(&url).is_some();
            let state = if !http {
                SlotState::Failed("not an http(s) URL".into())
            } else if self.media_store_full() {
                SlotState::Failed("media store full: download refused".into())
            } else {
                // Issued at once, so the next entry's cap check counts it.
                let slot = slots.len();
                self.fetch(now, &url, Job::Fetch { delivery, slot });
                pending += 1;
                SlotState::Pending
            };
            slots.push(Slot {
                drop_on_failure: !http || rules::is_rehost(&url, &base),
                original: url.clone(),
                url,
                mime,
                hops: 0,
                state,
            });
        }
        let loc = Localizing {
            buffer_id,
            event: Box::new(event),
            pending,
            slots,
        };
        if loc.pending > 0 {
            return Some(loc);
        }
        self.finish_localizing(delivery, loc);
        None
    }

    fn media_store_full(&self) -> bool {
        self.media.files.len() + self.media.fetching >= self.cfg.media.max_files
            || self.media.bytes >= self.cfg.media.max_total_bytes
    }

    fn fetch(&mut self, now: Now, url: &str, job: Job) {
        let bearer = rules::is_rehost(url, &self.media_base());
        let headers = self.media_headers(now, bearer);
        let id = self.new_job(now, job);
        self.media.fetching += 1;
        self.stats.media_downloads += 1;
        self.outputs.push_back(Output::FetchMedia {
            job: id,
            request: MediaRequest {
                url: url.to_owned(),
                headers: Headers(headers),
                max_bytes: self.cfg.media.max_bytes,
                timeout_ms: self.cfg.media.timeout_ms,
                want_headers: vec!["location".into(), "content-type".into()],
                name_hint: rules::name_hint(url),
            },
        });
    }

    /// Every download of the event is done: rewrite its media lists in
    /// lockstep and deliver it.
    fn finish_localizing(&mut self, delivery: u64, loc: Localizing) {
        let Localizing {
            buffer_id,
            mut event,
            slots,
            ..
        } = loc;
        let mut files = Vec::new();
        for slot in slots {
            let error = match slot.state {
                SlotState::Local(path) => {
                    files.push(path.clone());
                    event.media_urls.push(path);
                    event.media_types.push(slot.mime);
                    continue;
                }
                SlotState::Failed(error) if !error.is_empty() => error,
                _ => "download failed".to_owned(),
            };
            let kept = !slot.drop_on_failure;
            event
                .media_errors
                .push(MediaError::new(slot.original.clone(), &error, kept));
            if kept {
                event.media_urls.push(slot.original);
                event.media_types.push(slot.mime);
            }
        }
        if !event.media_errors.is_empty() {
            self.stats.media_failures += event.media_errors.len() as u64;
            self.log(
                Level::Warn,
                format!(
                    "relay inbound media: {} of the event's attachments could not be downloaded",
                    event.media_errors.len()
                ),
            );
        }
        if !files.is_empty() {
            self.media.by_delivery.insert(delivery, files);
        }
        self.push_delivery(delivery, buffer_id, *event);
    }

    /// The host's report of a media request.
    pub(super) fn on_media_done(&mut self, now: Now, id: u64, outcome: MediaOutcome) {
        let Some((job, at)) = self.media.jobs.remove(&id) else {
            // Given up on (or never ours): its file has no owner.
            if let Some(path) = outcome.path {
                self.log(Level::Debug, "relay media report for an unknown job");
                self.outputs.push_back(Output::DeleteMedia(vec![path]));
            }
            return;
        };
        self.media.deadlines.remove(&(at, id));
        self.finish_job(now, job, outcome);
    }

    fn finish_job(&mut self, now: Now, job: Job, outcome: MediaOutcome) {
        match job {
            Job::Fetch { delivery, slot } => {
                self.media.fetching = self.media.fetching.saturating_sub(1);
                self.fetch_done(now, delivery, slot, outcome)
            }
            Job::Upload { request, send } => {
                self.media.uploads = self.media.uploads.saturating_sub(1);
                self.upload_done(now, request, &send, outcome)
            }
        }
    }

    fn fetch_done(&mut self, now: Now, delivery: u64, index: usize, outcome: MediaOutcome) {
        let Some(mut loc) = self.media.localizing.remove(&delivery) else {
            if let Some(path) = outcome.path {
                self.outputs.push_back(Output::DeleteMedia(vec![path]));
            }
            return;
        };
        let Some(slot) = loc.slots.get_mut(index) else {
            self.media.localizing.insert(delivery, loc);
            return;
        };
        let status = outcome.status;
        if (300..400).contains(&status) {
            let target = outcome
                .header("location")
                .and_then(|l| rules::resolve_location(&slot.url, l));
            match target {
                Some(target) if slot.hops < rules::MAX_REDIRECTS => {
                    slot.hops += 1;
                    slot.url = target.clone();
                    self.fetch(
                        now,
                        &target,
                        Job::Fetch {
                            delivery,
                            slot: index,
                        },
                    );
                    self.media.localizing.insert(delivery, loc);
                    return;
                }
                Some(_) => slot.state = SlotState::Failed("too many redirects".into()),
                None => {
                    slot.state =
                        SlotState::Failed(format!("HTTP {status} without a usable Location"))
                }
            }
        } else if let (true, Some(path)) = ((200..300).contains(&status), outcome.path.clone()) {
            if slot.mime.is_empty()
                && let Some(ct) = outcome.header("content-type")
            {
                slot.mime = rules::mime_of(ct);
            }
            self.media.bytes = self.media.bytes.saturating_add(outcome.size);
            self.media
                .files
                .insert(path.clone(), File { size: outcome.size });
            slot.state = SlotState::Local(path);
        } else {
            if let Some(path) = outcome.path {
                self.outputs.push_back(Output::DeleteMedia(vec![path]));
            }
            slot.state = SlotState::Failed(match outcome.error {
                Some(e) => e,
                None => format!("HTTP {status}"),
            });
        }
        loc.pending = loc.pending.saturating_sub(1);
        if loc.pending == 0 {
            self.finish_localizing(delivery, loc);
        } else {
            self.media.localizing.insert(delivery, loc);
        }
    }

    /// The gateway's verdict on a delivery: its files are deleted at once
    /// on a reject, kept for the retention after an accept.
    pub(super) fn media_verdict(&mut self, now: Now, delivery: u64, accepted: bool) {
        let Some(paths) = self.media.by_delivery.remove(&delivery) else {
            return;
        };
        if accepted {
            let at = now.mono_ns.saturating_add(ms(self.cfg.media.retention_ms));
            for path in paths {
                self.media.seq += 1;
                self.media.expiry.insert((at, self.media.seq), path);
            }
        } else {
            self.delete_files(paths);
        }
    }

    fn delete_files(&mut self, paths: Vec<String>) {
        for path in &paths {
            if let Some(f) = self.media.files.remove(path) {
                self.media.bytes = self.media.bytes.saturating_sub(f.size);
            }
        }
        self.outputs.push_back(Output::DeleteMedia(paths));
    }

    /// Media timers: reports the host never gave, files past retention.
    pub(super) fn expire_media(&mut self, now: Now) {
        let t = now.mono_ns;
        while let Some((&(at, id), _)) = self.media.deadlines.first_key_value() {
            if at > t {
                break;
            }
            self.media.deadlines.remove(&(at, id));
            if let Some((job, _)) = self.media.jobs.remove(&id) {
                self.log(Level::Warn, "relay media request got no report in time");
                let outcome = MediaOutcome {
                    error: Some("timed out waiting for the host".into()),
                    ..MediaOutcome::default()
                };
                self.finish_job(now, job, outcome);
            }
        }
        let mut expired = Vec::new();
        while let Some((&(at, seq), _)) = self.media.expiry.first_key_value() {
            if at > t {
                break;
            }
            if let Some(path) = self.media.expiry.remove(&(at, seq)) {
                expired.push(path);
            }
        }
        if !expired.is_empty() {
            self.delete_files(expired);
        }
    }

    // ----- outbound ------------------------------------------------------

    /// The `send-media` lane (§9.1): a public URL goes straight out, a
    /// local file is uploaded to the connector first.
    pub(super) fn send_media(&mut self, now: Now, request: u64, send: &MediaSend) {
        let refuse = |m: &mut Machine, why: &str| {
            m.complete(request, Completion::Sent(SendResult::failure(why)));
        };
        if send.chat_id.is_empty() || send.source.trim().is_empty() {
            return refuse(
                self,
                "relay send_media not sent: a chat and a source are required",
            );
        }
        if !MEDIA_KINDS.contains(&send.kind.as_str()) {
            return refuse(
                self,
                "relay send_media not sent: kind must be image, voice, audio, video or document",
            );
        }
        if !self.supports_op(Some(&send.chat_id), "send_media") {
            return refuse(self, MEDIA_OP_UNAVAILABLE);
        }
        if HttpUrl::parse(&send.source).is_some() {
            let url = send.source.clone();
            return self.send_media_frame(now, request, send, url);
        }
        if send.source.contains("://") {
            return refuse(
                self,
                "relay send_media not sent: the source must be a local file or an http(s) URL",
            );
        }
        if !self.cfg.media.client {
            return refuse(self, MEDIA_UNAVAILABLE);
        }
        if self.is_terminal() {
            return self.complete(request, Completion::Sent(SendResult::transport_closed()));
        }
        if self.media.uploads >= self.cfg.max_pending {
            let why = format!(
                "relay media upload refused: {} uploads already in progress",
                self.cfg.max_pending
            );
            return refuse(self, &why);
        }
        let name = send
            .filename
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| rules::file_name(&send.source));
        let mut headers = self.media_headers(now, true);
        headers.push((
            "Content-Type".into(),
            rules::content_type_for(name).to_owned(),
        ));
        headers.push((
            "X-Media-Filename".into(),
            rules::header_value(name, rules::MAX_FILENAME_CHARS),
        ));
        let url = format!("{}{}", self.media_base(), rules::MEDIA_PATH);
        let path = send.source.clone();
        let id = self.new_job(
            now,
            Job::Upload {
                request,
                send: Box::new(send.clone()),
            },
        );
        self.media.uploads += 1;
        self.stats.media_uploads += 1;
        self.outputs.push_back(Output::UploadMedia {
            job: id,
            request: MediaRequest {
                url,
                headers: Headers(headers),
                max_bytes: self.cfg.media.max_bytes,
                timeout_ms: self.cfg.media.timeout_ms,
                want_headers: Vec::new(),
                name_hint: None,
            },
            path,
        });
    }

    fn upload_done(&mut self, now: Now, request: u64, send: &MediaSend, outcome: MediaOutcome) {
        let status = outcome.status;
        let id = (200..300)
            .contains(&status)
            .then(|| outcome.body.as_deref().and_then(rules::upload_id))
            .flatten();
        let error = match (id, outcome.error) {
            (Some(id), _) => {
                let url = format!("{}{}/{id}", self.media_base(), rules::MEDIA_PATH);
                return self.send_media_frame(now, request, send, url);
            }
            (None, Some(e)) => format!("relay media upload failed: {e}"),
            (None, None) if status == 413 => {
                "relay media upload refused: the file is too large for the connector (413)".into()
            }
            (None, None) if (200..300).contains(&status) => {
                "relay media upload failed: the connector's reply has no usable id".into()
            }
            (None, None) => format!("relay media upload failed: HTTP {status}"),
        };
        self.stats.media_failures += 1;
        self.complete(request, Completion::Sent(SendResult::failure(&error)));
    }

    /// The `send_media` frame: the Slack reply-anchor and unfurl rules as on
    /// the text lane (§6.6.4), tagged with the chat's platform. A decline
    /// comes back as the result, never as a text fallback (§6.15).
    fn send_media_frame(&mut self, now: Now, request: u64, send: &MediaSend, url: String) {
        let chat = send.chat_id.as_str();
        let tag = self.routes.platform(chat).map(str::to_owned);
        self.check_route("send_media", chat, tag.is_some());
        let mut caller = self.caller_metadata(&send.metadata);
        let reply_to = self.slack_reply_anchor(chat, None, send.reply_to.as_deref(), &mut caller);
        self.stamp_unfurl(chat, None, &mut caller);
        let mut action = Map::new();
        action.insert("op".into(), Value::from("send_media"));
        action.insert("chat_id".into(), Value::from(chat));
        action.insert("media_kind".into(), Value::from(send.kind.as_str()));
        action.insert("source_url".into(), Value::from(url));
        action.insert("content".into(), Value::from(send.caption.as_str()));
        action.insert("reply_to".into(), reply_to.map_or(Value::Null, Value::from));
        action.insert(
            "metadata".into(),
            Value::Object(self.routes.reattach(chat, &caller)),
        );
        if let Some(name) = send.filename.as_deref().filter(|n| !n.is_empty()) {
            action.insert("filename".into(), Value::from(name));
        }
        self.issue(
            now,
            request,
            Action::Raw(action),
            tag,
            super::outbound::Purpose::Reply,
        );
    }
}
