//! Webhook delivery after the Standard Webhooks specification
//! (<https://www.standardwebhooks.com/>, `spec/standard-webhooks.md` in
//! github.com/standard-webhooks/standard-webhooks).
//!
//! Each POST carries the event's JSON body and the headers `webhook-id`
//! (the event id: the same on every attempt, the receiver's idempotency
//! key; repeated as `idempotency-key`), `webhook-timestamp` (unix seconds
//! of this attempt) and, with a secret, `webhook-signature`:
//! `v1,` + base64(HMAC-SHA256(secret bytes, "{id}.{timestamp}.{body}")).
//! Any 2xx answer is a delivery; anything else, or no answer within the
//! handler's timeout, is a failed attempt.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::WebhookSecret;

/// The `webhook-signature` value of one delivery: `v1,` followed by the
/// standard base64 of HMAC-SHA256 keyed with `secret`'s bytes over
/// `{id}.{timestamp}.{body}` (Standard Webhooks, "Signature scheme").
pub fn signature(secret: &WebhookSecret, id: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// `url` without its query and fragment, for messages (a query may carry
/// a token).
fn shown(url: &url::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    shown.to_string()
}

/// POSTs `body` as event `id` to `url`, signed with `secret` when given.
///
/// Errors (one line, naming the URL without its query): the request could
/// not be sent or timed out after `timeout`, or the answer was not 2xx (its
/// status and the start of its body).
pub async fn post(
    client: &reqwest::Client,
    url: &url::Url,
    secret: Option<&WebhookSecret>,
    timeout: Duration,
    id: &str,
    body: &str,
) -> Result<(), String> {
    let timestamp = chrono::Utc::now().timestamp();
    let mut request = client
        .post(url.clone())
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("idempotency-key", id)
        .header("webhook-timestamp", timestamp.to_string())
        .body(body.to_string());
    if let Some(secret) = secret {
        request = request.header("webhook-signature", signature(secret, id, timestamp, body));
    }
    let response = request.send().await.map_err(|e| {
        let why = if e.is_timeout() {
            format!("no answer within {}", humantime::format_duration(timeout))
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            e.without_url().to_string()
        };
        format!("webhook {}: {why}", shown(url))
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let start: String = text.chars().take(200).collect();
    Err(format!(
        "webhook {}: HTTP {status}: {}",
        shown(url),
        start.trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worked out independently of this code, with Python 3's standard
    /// library:
    /// `base64.b64encode(hmac.new(base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    /// b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}',
    /// hashlib.sha256).digest())`, which is also the example of the
    /// Standard Webhooks reference libraries' tests.
    #[test]
    fn the_signature_matches_an_independently_computed_hmac() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn messages_do_not_show_the_query() {
        let url = url::Url::parse("https://u:p@example.com/hook?token=abc#x").unwrap();
        assert_eq!(shown(&url), "https://u@example.com/hook");
    }
}
