//! The media plane on a fake clock (spec §9.1, §4.3, §2.7 `send_media`,
//! §6.15): inbound localisation, uploads, retention, and who gets the
//! bearer.

use super::tests::{
    Harness, acks, actions, answer, deliveries, lane, sent_result, test_config, warns,
};
use super::*;
use serde_json::json;

const MEDIA_DESCRIPTOR: &str = r#"{"contract_version":1,"platform":"discord","label":"Discord","max_message_length":2000,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":true,"markdown_dialect":"discord","len_unit":"chars","supported_ops":["send","send_media"]}"#;
const REHOST: &str = "http://127.0.0.1:9100/relay/media/aa11";
const PUBLIC: &str = "https://cdn.example/pics/cat.png";

fn media_harness(client: bool) -> (Harness, u32) {
    let mut cfg = test_config();
    cfg.media.client = client;
    cfg.media.max_files = 4;
    let mut h = Harness::new(cfg);
    let conn = h.open();
    h.recv(
        conn,
        &format!(r#"{{"type":"descriptor","descriptor":{MEDIA_DESCRIPTOR}}}"#),
    );
    (h, conn)
}

fn media_line(urls: &[&str], buffer_id: Option<&str>) -> String {
    let mut v = json!({"type":"inbound","event":{"text":"look","message_id":"m1",
        "media_urls": urls,
        "media":[{"url": PUBLIC, "mime":"image/png"}],
        "source":{"platform":"discord","chat_id":"c1","chat_type":"group","user_id":"u1"}}});
    if let Some(b) = buffer_id {
        v["bufferId"] = json!(b);
    }
    v.to_string()
}

fn fetches(out: &[Output]) -> Vec<(u64, MediaRequest)> {
    out.iter()
        .filter_map(|o| match o {
            Output::FetchMedia { job, request } => Some((*job, request.clone())),
            _ => None,
        })
        .collect()
}

fn deleted(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::DeleteMedia(paths) => Some(paths.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn has_bearer(r: &MediaRequest) -> bool {
    r.headers.iter().any(|(n, _)| n == "Authorization")
}

fn done(h: &mut Harness, job: u64, outcome: MediaOutcome) -> Vec<Output> {
    h.input(Input::MediaDone { job, outcome })
}

fn ok_file(path: &str, size: u64) -> MediaOutcome {
    MediaOutcome {
        status: 200,
        headers: vec![("content-type".into(), "image/jpeg".into())],
        size,
        path: Some(path.into()),
        ..MediaOutcome::default()
    }
}

fn event_json(out: &[Output]) -> Value {
    let d = deliveries(out);
    assert_eq!(d.len(), 1, "one delivery");
    serde_json::from_str(&d[0].json).expect("event JSON")
}

#[test]
fn inbound_media_is_localised_before_delivery_and_the_bearer_goes_only_to_rehosts() {
    let (mut h, conn) = media_harness(true);
    let out = h.recv(conn, &media_line(&[REHOST, PUBLIC], Some("b1")));
    assert!(deliveries(&out).is_empty(), "held until downloaded");
    assert_eq!(h.m.stats().undelivered, 1, "holds its delivery slot");
    let jobs = fetches(&out);
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].1.url, REHOST);
    assert!(has_bearer(&jobs[0].1), "re-host: bearer");
    assert!(!has_bearer(&jobs[1].1), "public: never the bearer");
    for (_, r) in &jobs {
        assert!(
            r.headers
                .iter()
                .any(|(n, v)| n == "User-Agent" && v.contains("hermes"))
        );
        assert_eq!(r.max_bytes, crate::media::MEDIA_MAX_BYTES);
    }
    assert_eq!(jobs[1].1.name_hint.as_deref(), Some("cat.png"));
    // Reports may come in any order; the event goes out once all are in.
    assert!(deliveries(&done(&mut h, jobs[1].0, ok_file("/m/b.png", 5))).is_empty());
    let out = done(&mut h, jobs[0].0, ok_file("/m/a.jpg", 7));
    let e = event_json(&out);
    assert_eq!(e["media_urls"], json!(["/m/a.jpg", "/m/b.png"]));
    // A missing MIME type is taken from the response; a known one kept.
    assert_eq!(e["media_types"], json!(["image/jpeg", "image/png"]));
    assert_eq!(e.get("media_errors"), None);
    assert_eq!(h.m.stats().media_files, 2);
    assert_eq!(h.m.stats().media_bytes, 12);
    // Accepted: acked, files kept for the retention, then deleted.
    let d = deliveries(&out)[0].delivery;
    let out = h.input(Input::AcceptDelivery(d));
    assert_eq!(acks(&out), vec!["b1"]);
    assert!(deleted(&out).is_empty());
    let out = h.advance(crate::media::MEDIA_RETENTION_MS - 1);
    assert!(deleted(&out).is_empty());
    let out = h.advance(1);
    assert_eq!(deleted(&out), vec!["/m/a.jpg", "/m/b.png"]);
    assert_eq!(h.m.stats().media_files, 0);
}

#[test]
fn failed_downloads_drop_rehosts_keep_public_urls_and_never_the_message() {
    let (mut h, conn) = media_harness(true);
    let out = h.recv(
        conn,
        &media_line(&[REHOST, PUBLIC, "file:///etc/passwd"], None),
    );
    let jobs = fetches(&out);
    assert_eq!(jobs.len(), 2, "no request for a non-http(s) entry");
    let fail = |status| MediaOutcome {
        status,
        ..MediaOutcome::default()
    };
    done(&mut h, jobs[0].0, fail(404));
    let out = done(&mut h, jobs[1].0, fail(500));
    let e = event_json(&out);
    assert_eq!(e["text"], "look");
    assert_eq!(e["media_urls"], json!([PUBLIC]), "public kept as a URL");
    assert_eq!(e["media_types"], json!(["image/png"]), "types in lockstep");
    assert_eq!(
        e["media_errors"],
        json!([
            {"url": REHOST, "error": "HTTP 404", "kept": false},
            {"url": PUBLIC, "error": "HTTP 500", "kept": true},
            {"url": "file:///etc/passwd", "error": "not an http(s) URL", "kept": false},
        ])
    );
    assert_eq!(warns(&out, "could not be downloaded"), 1);
}

#[test]
fn without_a_media_client_rehosts_are_dropped_and_public_urls_kept() {
    let (mut h, conn) = media_harness(false);
    let out = h.recv(conn, &media_line(&[REHOST, PUBLIC], None));
    assert!(fetches(&out).is_empty());
    let e = event_json(&out);
    assert_eq!(e["media_urls"], json!([PUBLIC]));
    assert_eq!(e["media_types"], json!(["image/png"]));
    assert_eq!(e["media_errors"][0]["kept"], false);
}

#[test]
fn redirects_are_followed_by_the_machine_without_carrying_the_bearer_away() {
    let (mut h, conn) = media_harness(true);
    let out = h.recv(conn, &media_line(&[REHOST], None));
    let (job, first) = fetches(&out).remove(0);
    assert!(has_bearer(&first));
    let out = done(
        &mut h,
        job,
        MediaOutcome {
            status: 302,
            headers: vec![("location".into(), "https://cdn.example/x.png".into())],
            ..MediaOutcome::default()
        },
    );
    let (job, hop) = fetches(&out).remove(0);
    assert_eq!(hop.url, "https://cdn.example/x.png");
    assert!(!has_bearer(&hop), "another origin: no bearer");
    // A redirect back into the media path of the connector carries it again.
    let out = done(
        &mut h,
        job,
        MediaOutcome {
            status: 301,
            headers: vec![("location".into(), REHOST.into())],
            ..MediaOutcome::default()
        },
    );
    let (mut job, hop) = fetches(&out).remove(0);
    assert!(has_bearer(&hop));
    // Hops are bounded; then the entry fails (a re-host: dropped).
    let mut out = Vec::new();
    for _ in 0..10 {
        out = done(
            &mut h,
            job,
            MediaOutcome {
                status: 302,
                headers: vec![("location".into(), "/relay/media/again".into())],
                ..MediaOutcome::default()
            },
        );
        match fetches(&out).first() {
            Some((next, _)) => job = *next,
            None => break,
        }
    }
    let e = event_json(&out);
    assert_eq!(e["media_urls"], json!([]));
    assert_eq!(e["media_errors"][0]["error"], "too many redirects");
}

#[test]
fn a_rejected_delivery_deletes_its_files_at_once() {
    let (mut h, conn) = media_harness(true);
    let out = h.recv(conn, &media_line(&[PUBLIC], None));
    let (job, _) = fetches(&out).remove(0);
    let out = done(&mut h, job, ok_file("/m/c.png", 3));
    let d = deliveries(&out)[0].delivery;
    let out = h.input(Input::RejectDelivery(d));
    assert_eq!(deleted(&out), vec!["/m/c.png"]);
    assert_eq!(h.m.stats().media_files, 0);
}

#[test]
fn the_file_cap_refuses_downloads_instead_of_deleting_files_in_use() {
    let (mut h, conn) = media_harness(true);
    // max_files is 4: four files in use, the fifth download is refused.
    let urls: Vec<String> = (0..5)
        .map(|i| format!("https://cdn.example/{i}.png"))
        .collect();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let out = h.recv(conn, &media_line(&refs, None));
    let jobs = fetches(&out);
    assert_eq!(jobs.len(), 4);
    let mut out = Vec::new();
    for (i, (job, _)) in jobs.iter().enumerate() {
        out = done(&mut h, *job, ok_file(&format!("/m/{i}.png"), 1));
    }
    let e = event_json(&out);
    assert_eq!(e["media_urls"].as_array().map(Vec::len), Some(5));
    assert_eq!(e["media_urls"][4], urls[4], "refused public URL kept");
    assert!(
        e["media_errors"][0]["error"]
            .as_str()
            .is_some_and(|s| s.contains("media store full"))
    );
    assert!(deleted(&h.outputs).is_empty());
}

#[test]
fn a_host_that_never_reports_does_not_hold_the_event_forever() {
    let (mut h, conn) = media_harness(true);
    let out = h.recv(conn, &media_line(&[PUBLIC], None));
    let (job, _) = fetches(&out).remove(0);
    let out = h.advance(crate::media::MEDIA_TIMEOUT_MS + 5_000);
    let e = event_json(&out);
    assert_eq!(e["media_urls"], json!([PUBLIC]));
    // A late report's file has no owner: deleted.
    let out = done(&mut h, job, ok_file("/m/late.png", 1));
    assert_eq!(deleted(&out), vec!["/m/late.png"]);
}

// ----- outbound ---------------------------------------------------------------------

fn media_send(source: &str) -> Lane {
    Lane::SendMedia(MediaSend {
        chat_id: "c1".into(),
        kind: "document".into(),
        source: source.into(),
        caption: "the report".into(),
        reply_to: None,
        filename: Some("report.pdf".into()),
        metadata: "{}".into(),
    })
}

fn uploads(out: &[Output]) -> Vec<(u64, MediaRequest, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::UploadMedia { job, request, path } => {
                Some((*job, request.clone(), path.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_local_file_is_uploaded_then_sent_by_reference() {
    let (mut h, conn) = media_harness(true);
    let (r, out) = lane(&mut h, media_send("/tmp/out/report.pdf"));
    assert!(
        actions(&out).is_empty(),
        "nothing on the wire before the upload"
    );
    let (job, req, path) = uploads(&out).remove(0);
    assert_eq!(path, "/tmp/out/report.pdf");
    assert_eq!(req.url, "http://127.0.0.1:9100/relay/media");
    assert!(has_bearer(&req));
    let header = |n: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("Content-Type").as_deref(), Some("application/pdf"));
    assert_eq!(header("X-Media-Filename").as_deref(), Some("report.pdf"));
    let out = done(
        &mut h,
        job,
        MediaOutcome {
            status: 200,
            body: Some(r#"{"id":"aa11","size":3}"#.into()),
            ..MediaOutcome::default()
        },
    );
    assert_eq!(
        actions(&out),
        vec![
            json!({"op":"send_media","chat_id":"c1","media_kind":"document",
            "source_url": REHOST, "content":"the report","reply_to":null,
            "metadata":{},"filename":"report.pdf"})
        ]
    );
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":true,"message_id":"m9"}),
    );
    assert_eq!(sent_result(&out, r).message_id.as_deref(), Some("m9"));
}

#[test]
fn a_public_url_goes_straight_out_and_a_decline_has_no_fallback() {
    let (mut h, conn) = media_harness(false);
    let (r, out) = lane(&mut h, media_send(PUBLIC));
    assert!(uploads(&out).is_empty());
    assert_eq!(actions(&out)[0]["source_url"], PUBLIC);
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":false,"code":"egress_declined","error":"discord egress declined: target is not an approved destination for this connection"}),
    );
    let result = sent_result(&out, r);
    assert!(result.declined && !result.success);
    assert!(actions(&out).is_empty(), "never degraded to a text send");
}

#[test]
fn send_media_refusals_are_clear_and_send_nothing() {
    let (mut h, _) = media_harness(false);
    let (r, out) = lane(&mut h, media_send("/tmp/x.pdf"));
    assert_eq!(
        sent_result(&out, r).error.as_deref(),
        Some(MEDIA_UNAVAILABLE)
    );
    let (r, out) = lane(&mut h, media_send("ftp://h/x.pdf"));
    assert!(!sent_result(&out, r).success);
    let mut bad_kind = media_send(PUBLIC);
    if let Lane::SendMedia(m) = &mut bad_kind {
        m.kind = "sticker".into();
    }
    let (r, out) = lane(&mut h, bad_kind);
    assert!(!sent_result(&out, r).success);
    assert!(actions(&h.outputs).is_empty());
    // Not advertised: the op-unavailable error the gateway falls back on.
    let mut h = Harness::new(test_config());
    h.connect();
    let (r, out) = lane(&mut h, media_send(PUBLIC));
    assert_eq!(
        sent_result(&out, r).error.as_deref(),
        Some(MEDIA_OP_UNAVAILABLE)
    );
}

#[test]
fn upload_failures_complete_the_request_with_the_reason() {
    let (mut h, _) = media_harness(true);
    for (outcome, needle) in [
        (
            MediaOutcome {
                error: Some("empty file".into()),
                ..MediaOutcome::default()
            },
            "empty file",
        ),
        (
            MediaOutcome {
                status: 413,
                ..MediaOutcome::default()
            },
            "413",
        ),
        (
            MediaOutcome {
                status: 200,
                body: Some(r#"{"id":"../../x"}"#.into()),
                ..MediaOutcome::default()
            },
            "no usable id",
        ),
    ] {
        let (r, out) = lane(&mut h, media_send("/tmp/x.pdf"));
        let (job, _, _) = uploads(&out).remove(0);
        let out = done(&mut h, job, outcome);
        let result = sent_result(&out, r);
        assert!(
            result.error.as_deref().is_some_and(|e| e.contains(needle)),
            "{result:?}"
        );
        assert!(actions(&out).is_empty());
    }
}
