//! The receiver's HTTP surface: every answer is JSON in the documented error
//! shape, the bearer scheme is case-insensitive, and liveness and readiness
//! tell a load balancer what it needs to know.

use std::time::Duration;

use crate::common::*;
use kattila_keysource::test_server::TestDnsServer;
use kattila_keysource::KeyConfig;
use kattila_receiver::config::AdminToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Checks that `response` is an error in the documented JSON shape and
/// returns its status and body.
async fn json_error(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    assert!(content_type.starts_with("application/json"), "{status}: {content_type:?} {text:?}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    (status, body)
}

/// Sends raw request bytes and returns the whole answer (the receiver
/// closes the connection after it).
async fn raw(h: &Harness, request: &[u8]) -> String {
    let mut s = TcpStream::connect(h.url.trim_start_matches("http://")).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the receiver closed the connection after its answer");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_json_in_the_error_shape() {
    let h = Harness::start(|c| c.admin_token = Some(AdminToken(ADMIN.into()))).await;
    let client = reqwest::Client::new();

    let r = client.get(format!("{}/no/such/path", h.url)).send().await.unwrap();
    let (status, body) = json_error(r).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    let r = client.get(format!("{}/status/updates", h.url)).send().await.unwrap();
    let allow = r.headers().get(reqwest::header::ALLOW).map(|v| v.to_str().unwrap().to_string());
    let (status, body) = json_error(r).await;
    assert_eq!((status, body["error"].as_str()), (405, Some("method_not_allowed")));
    assert_eq!(allow.as_deref(), Some("POST"));

    let r = client.delete(format!("{}/status/agents", h.url)).send().await.unwrap();
    let allow = r.headers().get(reqwest::header::ALLOW).map(|v| v.to_str().unwrap().to_string());
    let (status, _) = json_error(r).await;
    assert_eq!(status, 405);
    assert!(allow.is_some_and(|a| a.contains("GET")), "the Allow header lists GET");

    // An admin body over the limit.
    let r = client
        .post(format!("{}/status/admin/reset", h.url))
        .bearer_auth(ADMIN)
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    let (status, body) = json_error(r).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")));

    // Bodies that cannot be read (broken chunked encoding), admin and ingest.
    for (path, auth) in [
        ("/status/admin/reset", format!("Authorization: Bearer {ADMIN}\r\n")),
        ("/status/updates", String::new()),
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: kattila\r\n{auth}Transfer-Encoding: chunked\r\n\r\nnot-hex\r\n"
        );
        let answer = raw(&h, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        let lower = answer.to_ascii_lowercase();
        assert!(lower.contains("content-type: application/json"), "{path}: {answer}");
        assert!(lower.contains("connection: close"), "{path}: {answer}");
        let json = answer.split("\r\n\r\n").nth(1).unwrap();
        let body: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(body["error"], "bad_request", "{path}: {body}");
    }
    let rows: i64 = h.conn().query_row("SELECT count(*) FROM reports", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "refused requests changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive_and_the_token_is_not() {
    let h = Harness::start(|c| c.admin_token = Some(AdminToken(ADMIN.into()))).await;
    let client = reqwest::Client::new();
    let reset = |authorization: String| {
        client
            .post(format!("{}/status/admin/reset", h.url))
            .header(reqwest::header::AUTHORIZATION, authorization)
            .body("{}")
            .send()
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = reset(format!("{scheme} {ADMIN}")).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{scheme}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["status"], "ok");
    }
    let upper_token = ADMIN.to_ascii_uppercase();
    for wrong in [
        format!("Bearer {upper_token}"),
        format!("Basic {ADMIN}"),
        format!("Bearer{ADMIN}"),
        format!("Bearer {ADMIN}x"),
        "Bearer".to_string(),
    ] {
        let r = reset(wrong.clone()).await.unwrap();
        let (status, body) = json_error(r).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{wrong}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_always_ready_only_when_reports_can_be_accepted() {
    // DNS unreachable at start: a port nothing listens on.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let h = Harness::start(|c| {
        c.keys = KeyConfig::Dns {
            name: "psk.kattila.test".into(),
            server: Some(closed),
            refresh: Duration::from_millis(200),
            timeout: Duration::from_millis(200),
        }
    })
    .await;
    let (status, body) = h.get("/status/live").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("live")));
    let r = reqwest::get(format!("{}/status/ready", h.url)).await.unwrap();
    let (status, body) = json_error(r).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("not_ready")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("no fleet key"), "{body}");
    // The detailed view keeps answering 200, as it always did.
    let (status, body) = h.get("/status/healthcheck").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("degraded")));
    drop(h);

    // DNS answers later: not ready, then ready.
    let server = TestDnsServer::start("psk.kattila.test", "late-key").await.unwrap();
    server.remove_record();
    let h = Harness::start(|c| {
        c.keys = KeyConfig::Dns {
            name: "psk.kattila.test".into(),
            server: Some(server.addr()),
            refresh: Duration::from_millis(200),
            timeout: Duration::from_millis(500),
        }
    })
    .await;
    assert_eq!(h.get("/status/ready").await.0, 503);
    server.set_value("late-key");
    let mut ready = (0, serde_json::Value::Null);
    for _ in 0..200 {
        ready = h.get("/status/ready").await;
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((ready.0, ready.1["status"].as_str()), (200, Some("ready")), "{}", ready.1);
    assert_eq!(h.get("/status/live").await.0, 200);

    // The database file disappears (deleted by mistake, a lost mount).
    std::fs::remove_file(&h.db).unwrap();
    let r = reqwest::get(format!("{}/status/ready", h.url)).await.unwrap();
    let (status, body) = json_error(r).await;
    assert_eq!(status, 503);
    assert!(body["detail"].as_str().unwrap().contains("database not readable"), "{body}");
    assert_eq!(h.get("/status/live").await.0, 200, "still live: a restart would not help");
}
