//! Slow and oversized clients against a real receiver over real sockets:
//! thousands of stalled connections must not lock agents out, the read
//! deadlines must close them, and a body far over the limit must still get
//! its 413.

use std::time::Duration;

use crate::common::*;
use kattila_agent::simulate::SimFleet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request head that never completes.
const PARTIAL_HEAD: &[u8] = b"POST /status/updates HTTP/1.1\r\nHost: kattila\r\nContent-Le";

/// A complete head announcing a 3,000-byte report, and its first bytes.
const HEAD_AND_A_FEW_BYTES: &[u8] = b"POST /status/updates HTTP/1.1\r\nHost: kattila\r\n\
Content-Type: application/json\r\nContent-Length: 3000\r\n\r\n{\"version\":1,";

fn addr(h: &Harness) -> String {
    h.url.trim_start_matches("http://").to_string()
}

/// Opens `n` connections that stall: every fourth in the middle of its
/// request head, the others after the head and a few body bytes.
async fn open_stalled(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut stalled = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let bytes = if i.is_multiple_of(4) { PARTIAL_HEAD } else { HEAD_AND_A_FEW_BYTES };
        s.write_all(bytes).await.expect("write the stalled start");
        stalled.push(s);
    }
    stalled
}

/// True while the receiver keeps `s` open without answering on it.
fn still_open(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Reads until the receiver closes `s` (EOF or reset); returns what it sent.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_stalled_connections_do_not_lock_agents_out() {
    // Deadlines far away: this shows that stalled requests cost agents
    // nothing even before the deadlines close them. 16 in-flight slots, so
    // 16 stalled bodies would have been enough to take them all.
    let h = Harness::start(|c| {
        c.max_in_flight = 16;
        c.header_timeout = Duration::from_secs(3600);
        c.body_timeout = Duration::from_secs(3600);
    })
    .await;
    let stalled = open_stalled(&addr(&h), 4096).await;
    // Every stalled connection has been accepted and is being served.
    let mut waited = 0;
    while open_connections(&h).await < 4096 {
        waited += 1;
        assert!(waited < 1200, "the receiver never served all stalled connections");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // As many agents as in-flight slots: they never overload the receiver
    // by themselves.
    let fleet = SimFleet::new("stalled", 16);
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..fleet.agents.len() {
        let (fleet, url) = (fleet.clone(), h.url.clone());
        sends.spawn(async move {
            let mut agent = SimAgent::new(&fleet, i);
            let mut results = Vec::new();
            for _ in 0..4 {
                results.push(agent.send(&url).await.map(|_| ()).map_err(|e| e.to_string()));
            }
            results
        });
    }
    let mut committed = 0;
    while let Some(results) = sends.join_next().await {
        for r in results.unwrap() {
            r.expect("a real report commits while thousands of clients stall");
            committed += 1;
        }
    }
    let rows: i64 = h.conn().query_row("SELECT count(*) FROM reports", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, committed);
    let open = stalled.iter().filter(|s| still_open(s)).count();
    assert_eq!(open, stalled.len(), "the stalled connections were still open during the reports");
}

/// `kattila_http_connections` from the receiver's metrics.
async fn open_connections(h: &Harness) -> u64 {
    h.get_text("/metrics")
        .await
        .lines()
        .find_map(|l| l.strip_prefix("kattila_http_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_deadlines_close_stalled_trickling_and_idle_connections() {
    let h = Harness::start(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.body_timeout = Duration::from_secs(1);
        c.body_min_rate = 1000;
    })
    .await;
    let addr = addr(&h);
    let mut stalled = open_stalled(&addr, 200).await;

    // An idle keep-alive connection after one complete exchange.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /status/live HTTP/1.1\r\nHost: kattila\r\n\r\n").await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = idle.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head[..n]));

    // A body trickling one byte every 200 ms: never idle for the 1 s body
    // timeout, but far below 1,000 bytes/s on average.
    let mut trickle = TcpStream::connect(&addr).await.unwrap();
    trickle
        .write_all(
            b"POST /status/updates HTTP/1.1\r\nHost: kattila\r\nContent-Length: 2000\r\n\r\n",
        )
        .await
        .unwrap();
    let trickler = tokio::spawn(async move {
        for _ in 0..2000 {
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        trickle
    });

    let safety = Duration::from_secs(120);
    for (i, s) in stalled.iter_mut().enumerate() {
        let answer = tokio::time::timeout(safety, read_until_closed(s))
            .await
            .expect("a stalled connection was closed by the deadlines");
        let answer = String::from_utf8_lossy(&answer);
        if i.is_multiple_of(4) {
            assert!(answer.is_empty(), "an incomplete head gets no answer: {answer}");
        } else {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains("\"error\":\"timeout\""), "{answer}");
            assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        }
    }
    let answer = tokio::time::timeout(safety, read_until_closed(&mut idle))
        .await
        .expect("an idle keep-alive connection was closed");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    let mut trickle = trickler.await.unwrap();
    let answer = tokio::time::timeout(safety, read_until_closed(&mut trickle))
        .await
        .expect("a trickling body was cut off");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    let fleet = SimFleet::new("after-deadlines", 2);
    SimAgent::new(&fleet, 0).send(&h.url).await.expect("agents are served afterwards");
    let metrics = h.get_text("/metrics").await;
    assert!(metrics.contains("kattila_reports_rejected_total{reason=\"timeout\"}"), "{metrics}");
}

/// Sends `body_len` bytes of body after `head` while reading the answer,
/// as a client that writes its whole request would; returns the answer.
async fn send_oversized(addr: String, head: String, body_len: usize) -> String {
    let stream = TcpStream::connect(&addr).await.unwrap();
    let (mut rx, mut tx) = stream.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        if tx.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            // The receiver may stop reading: a broken pipe here is fine,
            // as long as the answer arrives.
            if tx.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
        let _ = tx.shutdown().await;
    });
    let answer = read_answer(&mut rx).await;
    writer.abort();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_far_over_the_limit_gets_its_413_every_time() {
    let h = Harness::start(|_| {}).await;
    let five_mib = 5 << 20;
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..40 {
        // Most announce their length; some send chunks of unknown total.
        let head = if i % 4 == 3 {
            "POST /status/updates HTTP/1.1\r\nHost: kattila\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_string()
        } else {
            format!("POST /status/updates HTTP/1.1\r\nHost: kattila\r\nContent-Length: {five_mib}\r\n\r\n")
        };
        let chunked = i % 4 == 3;
        let addr = addr(&h);
        clients.spawn(async move {
            if chunked {
                send_oversized_chunked(addr, head, five_mib).await
            } else {
                send_oversized(addr, head, five_mib).await
            }
        });
    }
    while let Some(answer) = clients.join_next().await {
        let answer = answer.unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        assert!(answer.contains("\"error\":\"too_large\""), "{answer}");
    }
    let rows: i64 = h.conn().query_row("SELECT count(*) FROM reports", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0);
}

/// What the receiver sends until it closes, with a read error (a reset)
/// noted at the end instead of dropped.
async fn read_answer(rx: &mut tokio::net::tcp::OwnedReadHalf) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => {
                answer.extend_from_slice(format!("<read error: {e}>").as_bytes());
                break;
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Like [`send_oversized`], in 64 KiB chunks of chunked encoding.
async fn send_oversized_chunked(addr: String, head: String, body_len: usize) -> String {
    let stream = TcpStream::connect(&addr).await.unwrap();
    let (mut rx, mut tx) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
        chunk.extend(std::iter::repeat_n(b' ', 64 * 1024));
        chunk.extend_from_slice(b"\r\n");
        if tx.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for _ in 0..body_len / (64 * 1024) {
            if tx.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = tx.write_all(b"0\r\n\r\n").await;
    });
    let answer = read_answer(&mut rx).await;
    writer.abort();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_announced_with_expect_100_continue_is_refused_unread() {
    let h = Harness::start(|_| {}).await;
    let mut s = TcpStream::connect(addr(&h)).await.unwrap();
    s.write_all(
        b"POST /status/updates HTTP/1.1\r\nHost: kattila\r\nContent-Length: 5242880\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    // No body is ever sent: the answer must come without it.
    let answer = tokio::time::timeout(Duration::from_secs(60), read_until_closed(&mut s))
        .await
        .expect("answered without the body");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "no 100 Continue, a 413 at once: {answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");

    // The real client, reusing its connection pool after a 413.
    let client = reqwest::Client::new();
    let url = format!("{}/status/updates", h.url);
    let r = client.post(&url).body(vec![b' '; 5 << 20]).send().await.expect("the 413 arrives");
    assert_eq!(r.status().as_u16(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_large");
    let fleet = SimFleet::new("after-413", 2);
    SimAgent::new(&fleet, 0).send(&h.url).await.expect("the next request is served");
    let r = client.get(format!("{}/status/agents", h.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "the same client's next request is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_is_disconnected() {
    let h = Harness::start(|c| c.header_timeout = Duration::from_secs(1)).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr(&h).parse().unwrap()).await.unwrap();
    // Pipelined requests whose answers (a few KB each) are far more than
    // the socket buffers hold; none of them is ever read.
    let requests = b"GET /metrics HTTP/1.1\r\nHost: kattila\r\n\r\n".repeat(3000);
    let writer = tokio::spawn(async move {
        let _ = s.write_all(&requests).await;
        s
    });
    let mut closed = false;
    for _ in 0..1200 {
        let metrics = h.get_text("/metrics").await;
        if metrics.contains("kattila_http_timeouts_total{phase=\"send\"} 1") {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "the receiver closed the connection whose answers were never read");
    let mut s = writer.await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(60), read_until_closed(&mut s)).await;
    assert!(rest.is_ok(), "the connection is closed: reading its backlog ends");
}

/// A trickle that announces a large body must keep up the minimum rate all
/// along: it is cut off once it falls behind, not only at the deadline its
/// announced length would allow (1,000 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_announcing_a_large_body_is_cut_off_once_it_falls_behind() {
    let h = Harness::start(|c| {
        c.body_timeout = Duration::from_secs(1);
        c.body_min_rate = 1000;
    })
    .await;
    let mut trickle = TcpStream::connect(addr(&h)).await.unwrap();
    trickle
        .write_all(
            b"POST /status/updates HTTP/1.1\r\nHost: kattila\r\nContent-Length: 1000000\r\n\r\n",
        )
        .await
        .unwrap();
    let trickler = tokio::spawn(async move {
        // 5 bytes a second, never idle for the 1 s body timeout.
        for _ in 0..10_000 {
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        trickle
    });
    // A safety net far below the 1,000 s the announced length would allow.
    let mut trickle =
        tokio::time::timeout(Duration::from_secs(60), trickler).await.expect("cut off").unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(60), read_until_closed(&mut trickle))
        .await
        .expect("the connection closes");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// The body budget holds what a stalled body sent, plus less than one
/// 16 KiB piece: never a buffer grown ahead of the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_holds_about_what_it_sent_in_the_budget() {
    let h = Harness::start(|_| {}).await;
    let mut s = TcpStream::connect(addr(&h)).await.unwrap();
    s.write_all(
        b"POST /status/updates HTTP/1.1\r\nHost: kattila\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let sent = 600 * 1024;
    let piece = vec![b' '; 4096];
    for _ in 0..sent / piece.len() {
        s.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await.unwrap();
        s.write_all(&piece).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    let held = |metrics: &str| -> usize {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("kattila_body_budget_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .expect("the budget gauge")
    };
    let mut in_budget = 0;
    for _ in 0..200 {
        in_budget = held(&h.get_text("/metrics").await);
        if in_budget >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(in_budget >= sent, "all {sent} bytes arrived and are charged: {in_budget}");
    assert!(
        in_budget < sent + 16 * 1024,
        "the budget holds what was sent plus less than one piece, not a doubled buffer: {in_budget}"
    );
    assert!(still_open(&s), "the body is still being received");
}
