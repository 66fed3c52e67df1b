//! Sending one message on one channel: the generic webhook (JSON body,
//! HMAC-SHA256 signature over `timestamp.body`), Slack/Mattermost incoming
//! webhooks, ntfy's publish API and e-mail over SMTP. One attempt, no
//! retries: the delivery worker decides those.

use std::time::Duration;

use anyhow::Context;
use hmac::{KeyInit, Mac};
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::config::{Channel, ChannelKind, EmailChannel, SmtpTls};
use super::message::{html_escape, Message};

/// Header names of HTTP channels.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
pub const TIMESTAMP_HEADER: &str = "Kattila-Timestamp";
pub const SIGNATURE_HEADER: &str = "Kattila-Signature";

/// The signature header's value: `v1=` and the hex HMAC-SHA256 of
/// `"{timestamp}.{body}"` under the channel's secret.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends `message` (already made for this channel) once.
pub async fn send(
    client: &reqwest::Client,
    channel: &Channel,
    message: &Message,
) -> anyhow::Result<()> {
    match &channel.kind {
        ChannelKind::Webhook { url, secret } => {
            let body = serde_json::to_vec(message).expect("a message serialises");
            let now = kattila_fleet::unix_now();
            let mut req = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(IDEMPOTENCY_HEADER, &message.idempotency_key)
                .header(TIMESTAMP_HEADER, now.to_string());
            if let Some(secret) = secret {
                req = req.header(SIGNATURE_HEADER, signature(secret.0.as_bytes(), now, &body));
            }
            check(req.body(body).timeout(channel.timeout).send().await).await
        }
        ChannelKind::Slack { url } => {
            let mut text = format!("*{}*\n{}", message.title, message.text);
            if let Some(u) = &message.url {
                text.push_str(&format!("\n<{u}|Dashboard>"));
            }
            let body = serde_json::json!({ "text": text });
            let req = client
                .post(&url.0)
                .header(IDEMPOTENCY_HEADER, &message.idempotency_key)
                .json(&body)
                .timeout(channel.timeout);
            // The URL is the secret: an error must not print it.
            check(req.send().await.map_err(|e| e.without_url())).await
        }
        ChannelKind::Ntfy { url, topic, token } => {
            let tags = match (message.event.as_str(), message.subject.severity.as_str()) {
                ("resolved", _) => "white_check_mark",
                ("test", _) => "test_tube",
                (_, "critical") => "rotating_light",
                (_, "warning") => "warning",
                _ => "information_source",
            };
            let mut req = client
                .post(format!("{url}/{topic}"))
                .header("Title", header_safe(&message.title))
                .header("Priority", message.priority().to_string())
                .header("Tags", format!("{tags},kattila"))
                .header(IDEMPOTENCY_HEADER, &message.idempotency_key)
                .body(message.plain())
                .timeout(channel.timeout);
            if let Some(u) = &message.url {
                req = req.header("Click", u);
            }
            if let Some(t) = token {
                req = req.bearer_auth(&t.0);
            }
            check(req.send().await).await
        }
        ChannelKind::Email(email) => send_email(email, message, channel.timeout).await,
    }
}

/// HTTP headers carry no line breaks and only visible ASCII here.
fn header_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' }).collect()
}

async fn check(sent: Result<reqwest::Response, reqwest::Error>) -> anyhow::Result<()> {
    let response = sent.map_err(|e| anyhow::anyhow!("{e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(200).collect();
    anyhow::bail!("answered {status}: {body}")
}

async fn send_email(
    email: &EmailChannel,
    message: &Message,
    timeout: Duration,
) -> anyhow::Result<()> {
    let tls = || -> anyhow::Result<TlsParameters> {
        let mut b = TlsParameters::builder(email.host.clone());
        if let Some(ca) = &email.ca_file {
            let pem =
                std::fs::read(ca).with_context(|| format!("reading ca_file {}", ca.display()))?;
            b = b.add_root_certificate(Certificate::from_pem(&pem).context("ca_file")?);
        }
        Ok(b.build_rustls()?)
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.host)
        .port(email.port)
        .timeout(Some(timeout));
    transport = match email.tls {
        SmtpTls::StartTls => transport.tls(Tls::Required(tls()?)),
        SmtpTls::Tls => transport.tls(Tls::Wrapper(tls()?)),
        SmtpTls::None => transport.tls(Tls::None),
    };
    if let (Some(user), Some(password)) = (&email.username, &email.password) {
        transport = transport.credentials(Credentials::new(user.clone(), password.0.clone()));
    }
    let mut builder = lettre::Message::builder()
        .from(email.from.parse::<Mailbox>()?)
        .subject(format!("[kattila] {}", message.title))
        // Receivers that keep Message-IDs drop a retried copy.
        .message_id(Some(format!("<{}@kattila>", message.idempotency_key)));
    for to in &email.to {
        builder = builder.to(to.parse::<Mailbox>()?);
    }
    let html = format!(
        "<html><body><h2>{}</h2><p>{}</p>{}<p style=\"color:#666\">Event {}</p></body></html>",
        html_escape(&message.title),
        html_escape(&message.text),
        message
            .url
            .as_ref()
            .map(|u| format!("<p><a href=\"{0}\">{0}</a></p>", html_escape(u)))
            .unwrap_or_default(),
        html_escape(&message.idempotency_key),
    );
    let mail = builder.multipart(
        MultiPart::alternative()
            .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(message.plain()))
            .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html)),
    )?;
    transport.build().send(mail).await.map_err(|e| anyhow::anyhow!("SMTP: {e}"))?;
    Ok(())
}
