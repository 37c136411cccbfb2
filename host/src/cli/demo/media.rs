//! The demo's media step (spec §9.1): an attachment the connector re-hosts
//! arrives as a local file, and a local file goes out by reference after an
//! authenticated upload, against the embedded stub's media endpoints.

use std::path::{Path, PathBuf};

use relay_host::{MediaKind, MediaSendRequest};
use serde_json::{Value, json};
use tokio::time::timeout;

use super::{STEP_TIMEOUT, Step, Walk, gateway_sent, note};

/// A tiny PNG-looking payload (the bytes only have to round-trip).
const PICTURE: &[u8] = b"\x89PNG\r\n\x1a\n demo chart";

/// The demo's scratch directory (media downloads and the outbox), removed
/// when the walk ends however it ends.
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("relay-host-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }

    /// Where the media client writes downloads.
    pub(super) fn media(&self) -> PathBuf {
        self.0.join("media")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Walk {
    pub(super) async fn media(&mut self, scratch: &Path) -> Step<()> {
        self.begin(
            "media",
            "Media by reference: an attachment downloaded, a file uploaded",
        );
        let url = self
            .stub
            .put_media(PICTURE.to_vec(), "image/png", Some("chart.png"));
        note(&format!(
            "connector: re-hosted a user's attachment at {url} (bearer required)"
        ));
        let event = json!({
            "text": "here is the chart", "message_type": "photo", "message_id": "m-media",
            "media_urls": [url], "media": [{"url": url, "mime": "image/png"}],
            "source": {"platform": "discord", "chat_id": "chan1", "chat_type": "group",
                "scope_id": "guildA", "user_id": "u1", "user_name": "alice"}
        });
        let message = self
            .deliver_live(event, "the message with a picture")
            .await?;
        let json: Value = serde_json::from_str(&message.json).unwrap_or(Value::Null);
        let path = json["media_urls"][0].as_str().unwrap_or("").to_owned();
        let bytes = std::fs::read(&path).unwrap_or_default();
        self.check(
            bytes == PICTURE,
            format!("media_urls[0] = {path:?} does not hold the attachment"),
        )?;
        let fetched = self
            .stub
            .media_requests()
            .into_iter()
            .find(|r| r.is_rehost_download());
        self.check(
            fetched.as_ref().and_then(|r| r.verified) == Some(true),
            "the connector saw no authenticated download",
        )?;
        note(&format!(
            "adapter delivered it only after the host downloaded it (with the bearer, to the \
             connector's origin only): media_urls {}, media_types {}",
            json["media_urls"], json["media_types"]
        ));
        message.accept();
        note("gateway: accept (the file stays for the retention, 1 h; a reject deletes it)");

        let outbox = scratch.join("outbox");
        let file = outbox.join("report.txt");
        std::fs::create_dir_all(&outbox)
            .and_then(|()| std::fs::write(&file, b"all green"))
            .map_err(|e| self.fail(format!("cannot write the demo file: {e}")))?;
        note(&format!(
            "gateway: send_media(\"chan1\", document, {:?})",
            file.display()
        ));
        let mark = self.stub.frame_count();
        let request =
            MediaSendRequest::new("chan1", MediaKind::Document, file.display().to_string())
                .with_caption("the report");
        let result = timeout(STEP_TIMEOUT, self.handle.send_media(request))
            .await
            .map_err(|_| self.fail("send_media never completed"))?;
        self.check(
            result.success,
            format!("send_media failed: {:?}", result.error),
        )?;
        let stored = self.stub.stored_media();
        let uploaded = stored.iter().find(|m| m.uploaded);
        self.check(
            uploaded.is_some_and(|m| m.bytes == b"all green"),
            "the connector holds no upload of the file",
        )?;
        note("host: POST /relay/media with the bearer; the connector answered {id, size}");
        let frame = self
            .frame_after(mark, "the send_media frame", |f| {
                f.op() == Some("send_media")
            })
            .await?;
        gateway_sent(&frame.raw);
        let source = frame
            .get("action")
            .and_then(|a| a.get("source_url"))
            .and_then(Value::as_str)
            .unwrap_or("");
        self.check(
            source.starts_with(&format!("{}/relay/media/", self.stub.base_url())),
            format!("source_url {source:?} is not the connector's reference"),
        )?;
        note("the wire carries the reference, never the local path");
        Ok(())
    }
}
