//! What every client of a remote OpenAI-compatible server shares (a
//! persona's own LLM, an external voice): the HTTP client for a base URL,
//! the message of an error body, and an error with its causes.

use std::time::Duration;

use tokio::time::Instant;

/// Why a request got no successful response.
#[derive(Debug)]
pub enum SendError {
    /// No response headers by the deadline.
    Timeout,
    /// The connection failed on every attempt.
    Connect { attempts: u32, reason: String },
    /// The request failed after connecting.
    Broken(String),
    /// A non-2xx answer and the server's error message.
    Status { status: u16, message: String },
}

/// Sends the request `build` makes (again for each attempt) until it has a
/// 2xx response: a failure to connect is tried again `retries` times with a
/// short backoff, anything else is final; the whole wait for headers ends at
/// `deadline`. The body of an error answer is read for at most `body_wait`.
pub async fn send(
    build: impl Fn() -> reqwest::RequestBuilder,
    deadline: Instant,
    retries: u32,
    body_wait: Duration,
) -> Result<reqwest::Response, SendError> {
    let mut attempt = 0;
    let response = loop {
        match tokio::time::timeout_at(deadline, build().send()).await {
            Err(_) => return Err(SendError::Timeout),
            Ok(Ok(response)) => break response,
            Ok(Err(e)) if e.is_connect() && attempt < retries => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(SendError::Connect { attempts: attempt + 1, reason: error_chain(&e) });
            }
            Ok(Err(e)) => return Err(SendError::Broken(error_chain(&e))),
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = tokio::time::timeout(body_wait, response.text()).await.ok().and_then(Result::ok);
    Err(SendError::Status {
        status: status.as_u16(),
        message: body.as_deref().map(error_message).unwrap_or_else(|| "no error body".into()),
    })
}

/// A client with `headers` on every request and the URL of `path` under
/// `base_url` (which must be http or https, e.g. `https://host/v1`).
pub fn client(
    base_url: &str,
    path: &str,
    headers: &[(String, String)],
    connect: Duration,
) -> Result<(reqwest::Client, String), String> {
    let base = base_url.trim_end_matches('/');
    let parsed = reqwest::Url::parse(base).map_err(|e| format!("base_url {base:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("base_url {base:?} is not http(s)"));
    }
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("header name {name:?}: {e}"))?;
        let value = reqwest::header::HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
        map.insert(name, value);
    }
    let http =
        reqwest::Client::builder().connect_timeout(connect).default_headers(map).build().map_err(|e| e.to_string())?;
    Ok((http, format!("{base}/{}", path.trim_start_matches('/'))))
}

/// OpenAI's `{"error": {"message": …}}` (or `{"error": "…"}`), else the
/// body itself, shortened.
pub fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    match parsed.as_ref().and_then(|v| v["error"]["message"].as_str().or_else(|| v["error"].as_str())) {
        Some(message) => message.to_string(),
        None if body.trim().is_empty() => "no error body".into(),
        None => body.chars().take(300).collect(),
    }
}

/// An error and its sources, joined by ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_headers_and_error_bodies() {
        let connect = Duration::from_secs(1);
        let (_, url) = client("http://127.0.0.1:9/v1/", "chat/completions", &[], connect).unwrap();
        assert_eq!(url, "http://127.0.0.1:9/v1/chat/completions");
        assert!(client("ftp://x/v1", "a", &[], connect).is_err());
        assert!(client("not a url", "a", &[], connect).is_err());
        assert!(client("http://h/v1", "a", &[("bad header".into(), "v".into())], connect).is_err());
        assert_eq!(error_message(r#"{"error":{"message":"bad key","type":"auth"}}"#), "bad key");
        assert_eq!(error_message(r#"{"error":"overloaded"}"#), "overloaded");
        assert_eq!(error_message("plain text"), "plain text");
        assert_eq!(error_message(" "), "no error body");
    }
}
