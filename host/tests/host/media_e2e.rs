//! The media plane end to end (spec §9.1, §4.3): the real component asks,
//! the host's media client performs the HTTP requests against the stub
//! connector's media endpoints, and the gateway sees local files.

use super::media_client::TempDir;
use super::*;
use relay_host::{MediaKind, MediaOptions, MediaSendRequest};

const SECRET: &str = "media-secret";

fn media_stub_config() -> StubConfig {
    let mut d = descriptors::discord();
    d["supported_ops"] = json!(["send", "send_media"]);
    StubConfig {
        descriptor: relay_stub::HelloReply::Descriptor(d),
        ..StubConfig::default()
    }
    .with_secret(SECRET)
}

fn media_config(stub: &StubConnector, dir: &TempDir) -> AdapterConfig {
    let mut config = config(stub);
    config.gateway_id = "gw-media".into();
    config.secret = Some(Secret::new(SECRET));
    config.media = Some(MediaOptions::new(dir.media()));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_media_arrives_as_local_files_and_a_reject_deletes_them() {
    let dir = TempDir::new("inbound");
    let stub = stub_with(media_stub_config()).await;
    let rehost = stub.put_media(b"PNGDATA".to_vec(), "image/png", Some("cat.png"));
    let public = stub.put_public("notes.txt", b"hello".to_vec(), "text/plain");
    let (_handle, mut events) = spawn(media_config(&stub, &dir)).await;
    handshake(&stub, &mut events, 1).await;
    stub.push_inbound(json!({
        "text": "look", "message_id": "m1",
        "media_urls": [rehost, public],
        "media": [{"url": rehost, "mime": "image/png"}],
        "source": {"platform": "discord", "chat_id": "chan1", "chat_type": "group", "user_id": "u1"}
    }))
    .await
    .expect("pushed");
    let m = message(&mut events).await;
    let event: Value = serde_json::from_str(&m.json).expect("event JSON");
    let paths: Vec<String> = event["media_urls"]
        .as_array()
        .expect("media_urls")
        .iter()
        .map(|p| p.as_str().expect("path").to_owned())
        .collect();
    assert_eq!(paths.len(), 2, "{event}");
    assert!(paths.iter().all(|p| Path::new(p).starts_with(dir.media())));
    assert_eq!(std::fs::read(&paths[0]).expect("file"), b"PNGDATA");
    assert_eq!(std::fs::read(&paths[1]).expect("file"), b"hello");
    assert!(paths[0].ends_with(".png") && paths[1].ends_with(".txt"));
    assert_eq!(event["media_types"], json!(["image/png", "text/plain"]));
    // The bearer went to the re-host only; both carried our User-Agent.
    let requests = stub.media_requests();
    let rehost_get = requests
        .iter()
        .find(|r| r.is_rehost_download())
        .expect("re-host GET");
    let public_get = requests
        .iter()
        .find(|r| r.is_public_download())
        .expect("public GET");
    assert_eq!(rehost_get.verified, Some(true));
    assert!(!public_get.authorization);
    for r in [rehost_get, public_get] {
        assert!(
            r.user_agent
                .as_deref()
                .is_some_and(|ua| ua.contains("hermes-relay"))
        );
    }
    // Rejected: the files go at once.
    m.reject();
    wait_until("files deleted", || {
        paths.iter().all(|p| !Path::new(p).exists())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rehost_is_dropped_but_the_message_still_arrives() {
    let dir = TempDir::new("failed");
    let stub = stub_with(media_stub_config()).await;
    let rehost = format!("{}/relay/media/0000000000000000", stub.base_url());
    let (_handle, mut events) = spawn(media_config(&stub, &dir)).await;
    handshake(&stub, &mut events, 1).await;
    stub.push_inbound(json!({
        "text": "gone", "message_id": "m2", "media_urls": [rehost],
        "source": {"platform": "discord", "chat_id": "chan1", "chat_type": "group"}
    }))
    .await
    .expect("pushed");
    let m = message(&mut events).await;
    let event: Value = serde_json::from_str(&m.json).expect("event JSON");
    assert_eq!(event["text"], "gone");
    assert_eq!(event["media_urls"], json!([]));
    assert_eq!(event["media_types"], json!([]));
    assert_eq!(event["media_errors"][0]["error"], "HTTP 404");
    assert_eq!(event["media_errors"][0]["kept"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_media_uploads_a_local_file_and_sends_it_by_reference() {
    let dir = TempDir::new("upload");
    let stub = stub_with(media_stub_config()).await;
    let (handle, mut events) = spawn(media_config(&stub, &dir)).await;
    handshake(&stub, &mut events, 1).await;
    std::fs::create_dir_all(&dir.0).expect("dir");
    let file = dir.0.join("report.pdf");
    std::fs::write(&file, b"%PDF-1.7 tiny").expect("file");
    let request = MediaSendRequest::new("chan1", MediaKind::Document, file.display().to_string())
        .with_caption("the report");
    let result = resolved(handle.send_media(request)).await;
    assert!(result.success, "{result:?}");
    let stored = stub.stored_media();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].bytes, b"%PDF-1.7 tiny");
    assert_eq!(stored[0].filename.as_deref(), Some("report.pdf"));
    assert_eq!(stored[0].content_type.as_deref(), Some("application/pdf"));
    let upload = stub
        .media_requests()
        .into_iter()
        .find(|r| r.is_upload())
        .expect("upload");
    assert_eq!(upload.verified, Some(true));
    let action = stub.frames_of_type("outbound")[0]
        .json
        .clone()
        .expect("frame")["action"]
        .clone();
    assert_eq!(action["op"], "send_media");
    assert_eq!(action["media_kind"], "document");
    assert_eq!(action["content"], "the report");
    assert_eq!(
        action["source_url"],
        format!("{}/relay/media/{}", stub.base_url(), stored[0].id)
    );
    // An empty file is refused before any byte is sent.
    let empty = dir.0.join("empty.txt");
    std::fs::write(&empty, b"").expect("file");
    let request = MediaSendRequest::new("chan1", MediaKind::Document, empty.display().to_string());
    let result = resolved(handle.send_media(request)).await;
    assert!(!result.success);
    assert!(
        result.error.as_deref().is_some_and(|e| e.contains("empty")),
        "{result:?}"
    );
    assert_eq!(
        stub.media_requests()
            .iter()
            .filter(|r| r.is_upload())
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_an_earlier_process_left_past_the_retention_are_swept_at_spawn() {
    let dir = TempDir::new("sweep");
    std::fs::create_dir_all(dir.media()).expect("dir");
    let name = |c: char| {
        dir.media()
            .join(format!("{}.png", c.to_string().repeat(24)))
    };
    let (old, fresh, foreign) = (name('a'), name('b'), dir.media().join("keep-me.png"));
    for path in [&old, &fresh, &foreign] {
        std::fs::write(path, b"x").expect("file");
    }
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for path in [&old, &foreign] {
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(two_hours_ago))
            .expect("mtime");
    }
    let stub = stub_with(media_stub_config()).await;
    let (handle, _events) = spawn(media_config(&stub, &dir)).await;
    assert!(!old.exists(), "ours and past the retention: deleted");
    assert!(fresh.exists(), "within the retention: kept");
    assert!(foreign.exists(), "not named by us: never touched");
    handle.shutdown().await.expect("shutdown");
}
