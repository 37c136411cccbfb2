//! The media client on the command line (spec §9.1): `--media-dir`,
//! `GATEWAY_RELAY_MEDIA_DIR`, `media_dir` and the `media_*` keys as
//! `config check` shows and refuses them, and the stdio bridge's
//! `send_media` op (plus inbound attachments as local paths) against the
//! stub connector. A child of the stdio tests, for their [`Bridge`].

use super::*;

/// Every media key of `config check`'s object.
const MEDIA_KEYS: &[&str] = &[
    "media_dir",
    "media_allow_private_addresses",
    "media_max_bytes",
    "media_timeout_ms",
    "media_retention_ms",
    "media_max_files",
    "media_max_total_bytes",
];

/// A directory under the system's temp dir, removed on drop.
struct MediaDir(PathBuf);

impl MediaDir {
    fn new(name: &str) -> MediaDir {
        let dir = std::env::temp_dir().join(format!(
            "relay-host-cli-media-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        MediaDir(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for MediaDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Discord descriptor, advertising `send_media`.
fn media_stub_config() -> StubConfig {
    let mut descriptor = descriptors::discord();
    descriptor["supported_ops"] = json!(["send", "edit", "typing", "send_media"]);
    StubConfig::default().with_descriptor("discord", descriptor)
}

/// The first `send_media` frame's `action`.
async fn send_media_action(stub: &StubConnector) -> Value {
    let frame = stub
        .wait_for_frame(|f| f.op() == Some("send_media"), WAIT)
        .await
        .unwrap();
    frame.get("action").cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_shows_the_media_settings_and_their_precedence() {
    let base = ["--connector", "http://127.0.0.1:9"];
    // No directory: no media client, every media key null.
    let (c, _) = config_check(&base, &[]).await;
    for key in MEDIA_KEYS {
        assert_eq!(c[*key], Value::Null, "{key}: {c}");
    }

    // The directory alone: the spec's defaults.
    let dir_only = TempFile::new("media-dir.toml", b"media_dir = \"/from/file/media\"\n");
    let (c, _) = config_check(&[&base[..], &["--config", dir_only.path()]].concat(), &[]).await;
    assert_eq!(c["media_dir"], "/from/file/media");
    assert_eq!(c["media_allow_private_addresses"], false);
    assert_eq!(c["media_max_bytes"], 26_214_400);
    assert_eq!(c["media_timeout_ms"], 30_000);
    assert_eq!(c["media_retention_ms"], 3_600_000);
    assert_eq!(c["media_max_files"], 512);
    assert_eq!(c["media_max_total_bytes"], 1_073_741_824u64);

    // Every key from the file.
    let tuned = TempFile::new(
        "media-tuned.toml",
        b"media_dir = \"/from/file/media\"\n\
          media_allow_private_addresses = true\n\
          media_max_bytes = 1048576\n\
          media_timeout_ms = 5000\n\
          media_retention_ms = 60000\n\
          media_max_files = 8\n\
          media_max_total_bytes = 8388608\n",
    );
    let with_file = [&base[..], &["--config", tuned.path()]].concat();
    let (c, _) = config_check(&with_file, &[]).await;
    assert_eq!(
        MEDIA_KEYS.iter().map(|k| c[*k].clone()).collect::<Vec<_>>(),
        vec![
            json!("/from/file/media"),
            json!(true),
            json!(1_048_576),
            json!(5000),
            json!(60_000),
            json!(8),
            json!(8_388_608),
        ],
        "{c}"
    );

    // The environment over the file (the keys still from the file), the
    // flag over both.
    let env = [("GATEWAY_RELAY_MEDIA_DIR", "/from/env/media")];
    let (c, _) = config_check(&with_file, &env).await;
    assert_eq!(c["media_dir"], "/from/env/media");
    assert_eq!(c["media_max_files"], 8);
    let flagged = [&with_file[..], &["--media-dir", "/from/flag/media"]].concat();
    let (c, _) = config_check(&flagged, &env).await;
    assert_eq!(c["media_dir"], "/from/flag/media");

    // A key with the directory from the environment only is fine.
    let key_only = TempFile::new("media-key.toml", b"media_max_files = 3\n");
    let (c, _) = config_check(&[&base[..], &["--config", key_only.path()]].concat(), &env).await;
    assert_eq!(
        (&c["media_dir"], &c["media_max_files"]),
        (&json!("/from/env/media"), &json!(3))
    );

    // A relative directory is shown as the absolute one the host uses.
    let (c, _) = config_check(&[&base[..], &["--media-dir", "rel/media"]].concat(), &[]).await;
    let shown = c["media_dir"].as_str().unwrap();
    assert!(
        Path::new(shown).is_absolute() && shown.ends_with("/rel/media"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_keys_without_a_media_dir_and_bad_media_values_exit_2() {
    let url = "http://127.0.0.1:9";
    let orphans = TempFile::new(
        "media-orphans.toml",
        b"media_max_bytes = 1024\nmedia_timeout_ms = 100\n",
    );
    let private = TempFile::new(
        "media-private.toml",
        b"media_allow_private_addresses = true\n",
    );
    let zero = TempFile::new(
        "media-zero.toml",
        b"media_dir = \"/tmp/m\"\nmedia_max_bytes = 0\nmedia_timeout_ms = 0\n",
    );
    let below = TempFile::new(
        "media-below.toml",
        b"media_dir = \"/tmp/m\"\nmedia_max_bytes = 2048\nmedia_max_total_bytes = 1024\n",
    );
    let wrong_type = TempFile::new(
        "media-type.toml",
        b"media_dir = \"/tmp/m\"\nmedia_max_files = -1\n",
    );
    let empty = TempFile::new("media-empty.toml", b"media_dir = \"\"\n");
    let cases: Vec<Case> = vec![
        (
            vec![
                "config",
                "check",
                "--connector",
                url,
                "--config",
                orphans.path(),
            ],
            vec![],
            "media_max_bytes, media_timeout_ms without media_dir",
        ),
        (
            vec!["run", "--connector", url, "--config", private.path()],
            vec![],
            "media_allow_private_addresses without media_dir",
        ),
        (
            vec![
                "config",
                "check",
                "--connector",
                url,
                "--config",
                zero.path(),
            ],
            vec![],
            "media_max_bytes must be at least 1",
        ),
        (
            vec![
                "config",
                "check",
                "--connector",
                url,
                "--config",
                zero.path(),
            ],
            vec![],
            "media_timeout_ms must be longer than 0",
        ),
        (
            vec![
                "config",
                "check",
                "--connector",
                url,
                "--config",
                below.path(),
            ],
            vec![],
            "media_max_total_bytes must be at least media_max_bytes",
        ),
        (
            vec![
                "config",
                "check",
                "--connector",
                url,
                "--config",
                wrong_type.path(),
            ],
            vec![],
            "media-type.toml",
        ),
        (
            vec![
                "config",
                "check",
                "--connector",
                url,
                "--config",
                empty.path(),
            ],
            vec![],
            "media_dir must not be empty",
        ),
        // clap's own check.
        (
            vec!["config", "check", "--connector", url, "--media-dir", ""],
            vec![],
            "a value is required for '--media-dir <DIR>'",
        ),
    ];
    for (args, env, expected) in cases {
        expect_exit_2(&args, &env, expected).await;
    }
}

/// Without `--media-dir`: a public URL goes out as a `send_media` frame
/// with every argument; a local file is refused (no client), a bad `kind`
/// and a missing `source` are the bridge's errors, and none sends anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_send_media_sends_a_public_url_and_refuses_a_bad_kind() {
    let stub = stub(media_stub_config()).await;
    let mut b = Bridge::start(&stub, "platforms = [\"discord\"]\n", None).await;
    stub.push_inbound(events::discord_text("show me"))
        .await
        .unwrap();
    let delivery = b.delivery_of("show me").await;
    b.ok(json!({"id": 0, "op": "accept", "delivery": delivery}))
        .await;

    let url = "https://cdn.example.com/cats/tabby.png";
    let sent = b
        .ok(
            json!({"id": "m1", "op": "send_media", "chat_id": "chan1", "kind": "image",
                   "source": url, "caption": "a tabby", "reply_to": "m-41",
                   "filename": "tabby.png", "metadata": {"note": "n1"}}),
        )
        .await;
    assert_eq!(sent["success"], true, "{sent}");
    let action = send_media_action(&stub).await;
    assert_eq!(
        (
            &action["chat_id"],
            &action["media_kind"],
            &action["source_url"],
            &action["content"],
            &action["filename"],
            &action["reply_to"],
        ),
        (
            &json!("chan1"),
            &json!("image"),
            &json!(url),
            &json!("a tabby"),
            &json!("tabby.png"),
            &json!("m-41"),
        ),
        "{action}"
    );
    // The caller's metadata, with the chat's routing re-attached.
    assert_eq!(action["metadata"]["note"], "n1", "{action}");
    assert_eq!(action["metadata"]["scope_id"], "guildA", "{action}");

    // A local file needs the media client.
    let file = TempFile::new("cat.png", b"PNGDATA");
    let refused = b
        .ok(
            json!({"id": "m2", "op": "send_media", "chat_id": "chan1", "kind": "image",
                   "source": file.path()}),
        )
        .await;
    assert_eq!(refused["success"], false, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("relay media unavailable")),
        "{refused}"
    );

    // Bad arguments: error lines naming the op and what was wrong.
    let bad_kind = b
        .error(
            json!({"id": "m3", "op": "send_media", "chat_id": "chan1", "kind": "gif",
                      "source": url}),
        )
        .await;
    assert!(
        bad_kind.starts_with(
            "send_media: unknown kind `gif` (kinds: image, voice, audio, video, document)"
        ),
        "{bad_kind}"
    );
    let not_a_string = b
        .error(
            json!({"id": "m4", "op": "send_media", "chat_id": "chan1", "kind": 3,
                      "source": url}),
        )
        .await;
    assert!(
        not_a_string.starts_with("send_media: invalid type"),
        "{not_a_string}"
    );
    assert!(
        b.error(json!({"id": "m5", "op": "send_media", "chat_id": "chan1", "kind": "image"}))
            .await
            .starts_with("send_media: missing field `source`"),
    );

    // A later send still goes; only the first `send_media` went out.
    b.ok(json!({"id": "m6", "op": "send", "chat_id": "chan1", "content": "after"}))
        .await;
    stub.wait_for_frame(|f| f.op() == Some("send"), WAIT)
        .await
        .unwrap();
    let media_frames = stub
        .frames_of_type("outbound")
        .iter()
        .filter(|f| f.op() == Some("send_media"))
        .count();
    assert_eq!(media_frames, 1, "the refused ones sent nothing");
    assert!(
        stub.media_requests().is_empty(),
        "no upload without a client"
    );

    assert_eq!(b.ok(json!({"id": "z", "op": "shutdown"})).await, json!({}));
    assert_eq!(b.p.wait_exit(WAIT).await, 0, "{}", b.p.context());
}

/// With `media_dir`: an inbound attachment arrives as a local file in the
/// directory, and `send_media` uploads a local file to the connector and
/// sends it by reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_send_media_uploads_a_local_file_with_a_media_dir() {
    let dir = MediaDir::new("upload");
    let stub = stub(media_stub_config()).await;
    let extra = format!(
        "platforms = [\"discord\"]\nmedia_dir = \"{}\"\n",
        dir.path()
    );
    let mut b = Bridge::start(&stub, &extra, None).await;

    // Inbound: the re-host URL becomes a file of ours, 0600.
    let rehost = stub.put_media(b"PNGDATA".to_vec(), "image/png", Some("cat.png"));
    let mut event = events::discord_text("a cat");
    event["media_urls"] = json!([rehost]);
    stub.push_inbound(event).await.unwrap();
    let line =
        b.p.wait_line(
            "the message with media",
            |v| v["kind"] == "message" && v["event"]["text"] == "a cat",
            WAIT,
        )
        .await;
    let path = line["event"]["media_urls"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no local path: {line}"))
        .to_owned();
    assert!(Path::new(&path).starts_with(&dir.0), "{path}");
    assert_eq!(std::fs::read(&path).unwrap(), b"PNGDATA");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{path}");
    }
    b.ok(json!({"id": 0, "op": "accept", "delivery": line["delivery"]}))
        .await;

    // Outbound: the file is uploaded, then sent by reference.
    let file = TempFile::new("q3.pdf", b"%PDF-1.7 tiny");
    let sent = b
        .ok(
            json!({"id": "u1", "op": "send_media", "chat_id": "chan1", "kind": "document",
                   "source": file.path(), "caption": "the report",
                   "filename": "Q3 report.pdf"}),
        )
        .await;
    assert_eq!(sent["success"], true, "{sent}");
    let stored: Vec<_> = stub
        .stored_media()
        .into_iter()
        .filter(|m| m.uploaded)
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].bytes, b"%PDF-1.7 tiny");
    assert_eq!(stored[0].filename.as_deref(), Some("Q3 report.pdf"));
    assert_eq!(stored[0].content_type.as_deref(), Some("application/pdf"));
    let action = send_media_action(&stub).await;
    assert_eq!(
        (
            &action["media_kind"],
            &action["source_url"],
            &action["content"],
            &action["filename"],
        ),
        (
            &json!("document"),
            &json!(stub.media_url(&stored[0].id)),
            &json!("the report"),
            &json!("Q3 report.pdf"),
        ),
        "{action}"
    );

    assert_eq!(b.ok(json!({"id": "z", "op": "shutdown"})).await, json!({}));
    assert_eq!(b.p.wait_exit(WAIT).await, 0, "{}", b.p.context());
}
