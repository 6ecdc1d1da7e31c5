//! A download that survives connection drops.
//!
//! [`Download`] is a `Read` over the body of one URL. When the connection
//! breaks, stalls or ends before `Content-Length`, it asks again with
//! `Range: bytes=OFFSET-` (and `If-Range` with the first response's
//! validator, so a file replaced on the server is an error, not a splice of
//! two files) and goes on from the last byte handed out. The caller sees one
//! continuous stream, so hashing and decompression need no restart.
//! A short body is never a success: Tinkerbell's image2disk reports a
//! truncated download as a good write.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};

use crate::{Failure, Result};

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Resume after interruptions at all.
    pub enabled: bool,
    /// How long one outage may last before giving up.
    pub max_outage: Duration,
    /// A read that waits this long for data counts as a drop.
    pub idle_timeout: Duration,
    /// The whole download, resumes included, must end within this
    /// (archive2disk's `HTTP_CLIENT_TIMEOUT_MINUTES`, which is Go's
    /// `http.Client.Timeout`: a limit on the whole exchange, body included).
    pub total_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            enabled: false,
            max_outage: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(30),
            total_timeout: None,
        }
    }
}

impl RetryPolicy {
    /// Tinkerbell's `RETRY_ENABLED`/`RETRY_DURATION_MINUTES`, kiln's
    /// `RETRY_DURATION_SECONDS` and `HTTP_IDLE_TIMEOUT_SECONDS`. As in
    /// Tinkerbell's image2disk, retrying is off unless `RETRY_ENABLED` says
    /// true: a dropped connection then fails the action at once. Tinkerbell
    /// retries by starting again; kiln resumes where the drop happened.
    pub fn from_env(env: &mut crate::env::Env) -> RetryPolicy {
        let mut p = RetryPolicy { enabled: env.flag("RETRY_ENABLED", false), ..RetryPolicy::default() };
        if let Some(m) = env.number::<u64>("RETRY_DURATION_MINUTES", false) {
            p.max_outage = Duration::from_secs(m * 60);
        }
        if let Some(s) = env.number::<u64>("RETRY_DURATION_SECONDS", false) {
            p.max_outage = Duration::from_secs(s);
        }
        if let Some(s) = env.number::<u64>("HTTP_IDLE_TIMEOUT_SECONDS", false) {
            p.idle_timeout = Duration::from_secs(s.max(1));
        }
        p
    }
}

/// Checks a URL variable: http or https with a host.
pub fn parse_url(value: &str) -> std::result::Result<String, String> {
    let url = reqwest::Url::parse(value).map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{value:?} must be an http:// or https:// URL"));
    }
    Ok(url.to_string())
}

/// Why a request did not give a usable body.
enum Attempt {
    /// Worth trying again (connection refused or reset, 5xx, timeout).
    Retry(String),
    Fatal(Failure),
}

pub struct Download {
    client: Client,
    url: String,
    action: &'static str,
    policy: RetryPolicy,
    body: Option<Response>,
    offset: u64,
    total: Option<u64>,
    /// A strong ETag or Last-Modified from the first response, for If-Range.
    validator: Option<String>,
    resumes: u32,
    /// Since when no byte arrived, and the retry delay reached: a server that
    /// answers every resume and then sends nothing is an outage too.
    outage: Option<(Instant, Duration)>,
    /// When the whole download must be over (`total_timeout`).
    deadline: Option<Instant>,
}

impl Download {
    /// Starts the download; retries the first request like any other.
    pub fn open(url: &str, action: &'static str, policy: RetryPolicy) -> Result<Download> {
        let policy_deadline = policy.total_timeout.map(|t| Instant::now() + t);
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // The blocking client applies this to each read: an idle timeout.
            .timeout(policy.idle_timeout)
            .build()
            .map_err(|e| Failure::new("DownloadFailed", format!("HTTP client: {e}")))?;
        let mut d = Download {
            client,
            url: url.to_string(),
            action,
            policy,
            body: None,
            offset: 0,
            total: None,
            validator: None,
            resumes: 0,
            outage: None,
            deadline: policy_deadline,
        };
        d.connect(None)?;
        Ok(d)
    }

    /// The body's full length when the server said it.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Bytes handed out so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many times the download was resumed.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// (Re)connects at `self.offset`, retrying until the outage budget is
    /// spent. `cause` is why the previous connection ended.
    fn connect(&mut self, mut cause: Option<String>) -> Result<()> {
        loop {
            if let Some(c) = &cause {
                self.check_deadline(c)?;
                if !self.policy.enabled {
                    return Err(self.failed(c, "resuming is off (RETRY_ENABLED=false)"));
                }
                let (since, delay) = *self.outage.get_or_insert((Instant::now(), Duration::ZERO));
                if since.elapsed() + delay > self.policy.max_outage {
                    let budget = self.policy.max_outage.as_secs();
                    return Err(self.failed(c, &format!("no progress for {budget} s, gave up")));
                }
                std::thread::sleep(delay);
                let next = (delay * 2).clamp(Duration::from_millis(250), Duration::from_secs(5));
                self.outage = Some((since, next));
                crate::log(self.action, format_args!("download interrupted at byte {} ({c}); resuming", self.offset));
            }
            match self.request() {
                Ok(response) => {
                    self.body = Some(response);
                    if cause.is_some() {
                        self.resumes += 1;
                    }
                    return Ok(());
                }
                Err(Attempt::Fatal(f)) => return Err(f),
                Err(Attempt::Retry(why)) => {
                    if cause.is_none() && !self.policy.enabled {
                        return Err(self.failed(&why, "resuming is off (RETRY_ENABLED=false)"));
                    }
                    cause = Some(why);
                }
            }
        }
    }

    /// Past the deadline, whatever went wrong is the timeout.
    fn check_deadline(&self, why: &str) -> Result<()> {
        match (self.deadline, self.policy.total_timeout) {
            (Some(d), Some(t)) if Instant::now() >= d => {
                Err(self.failed(why, &format!("the download did not finish within {t:?}, gave up")))
            }
            _ => Ok(()),
        }
    }

    fn failed(&self, why: &str, what: &str) -> Failure {
        let of = self.total.map(|t| format!(" of {t}")).unwrap_or_default();
        Failure::new("DownloadFailed", format!("{}: {why}; {what} after {} bytes{of}", self.url, self.offset))
    }

    fn request(&mut self) -> std::result::Result<Response, Attempt> {
        let mut req = self.client.get(&self.url);
        if let Some(d) = self.deadline {
            // The blocking client's own timeout is per read; this one ends
            // the request, body included, at the deadline.
            req = req.timeout(d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
        }
        if self.offset > 0 {
            req = req.header(RANGE, format!("bytes={}-", self.offset));
            if let Some(v) = &self.validator {
                req = req.header(IF_RANGE, v);
            }
        }
        let mut response = req.send().map_err(|e| Attempt::Retry(error_chain(&e)))?;
        let status = response.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Attempt::Retry(format!("HTTP {status}")));
        }
        if self.offset == 0 {
            if status != StatusCode::OK {
                return Err(Attempt::Fatal(Failure::new("DownloadFailed", format!("GET {}: HTTP {status}", self.url))));
            }
            self.total = response.content_length();
            self.validator = validator(&response);
            return Ok(response);
        }
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let (start, total) = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range)
                    .ok_or_else(|| Attempt::Fatal(self.failed("206 without a usable Content-Range", "stopped")))?;
                if start != self.offset || (total.is_some() && self.total.is_some() && total != self.total) {
                    return Err(Attempt::Fatal(self.failed(
                        &format!("server resumed at byte {start} of {total:?}, expected {}", self.offset),
                        "stopped",
                    )));
                }
                Ok(response)
            }
            StatusCode::OK => {
                // A 200 is either a server without Range support or an
                // If-Range that no longer matched: the file changed under us.
                if self.validator.is_some() && validator(&response) != self.validator {
                    return Err(Attempt::Fatal(Failure::new(
                        "ImageChanged",
                        format!("{} changed on the server during the download (validator no longer matches)", self.url),
                    )));
                }
                if response.content_length().is_some() && response.content_length() != self.total {
                    return Err(Attempt::Fatal(Failure::new(
                        "ImageChanged",
                        format!("{} changed size on the server during the download", self.url),
                    )));
                }
                // No Range support: read and drop what we already have.
                crate::log(
                    self.action,
                    format_args!("server ignores Range; skipping {} bytes already written", self.offset),
                );
                let skipped = io::copy(&mut (&mut response).take(self.offset), &mut io::sink())
                    .map_err(|e| Attempt::Retry(e.to_string()))?;
                if skipped != self.offset {
                    return Err(Attempt::Retry(format!("connection ended while skipping to byte {}", self.offset)));
                }
                Ok(response)
            }
            other => Err(Attempt::Fatal(self.failed(&format!("HTTP {other} on resume"), "stopped"))),
        }
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(body) = self.body.as_mut() else {
                return Err(io::Error::other(self.failed("no connection", "stopped")));
            };
            let cause = match body.read(buf) {
                Ok(0) => match self.total {
                    Some(t) if self.offset < t => format!("connection closed at byte {} of {t}", self.offset),
                    _ => return Ok(0),
                },
                Ok(n) => {
                    self.offset += n as u64;
                    self.outage = None;
                    if let Some(t) = self.total
                        && self.offset > t
                    {
                        return Err(io::Error::other(
                            self.failed("server sent more than its Content-Length", "stopped"),
                        ));
                    }
                    return Ok(n);
                }
                Err(e) => error_chain(&e),
            };
            self.body = None;
            self.connect(Some(cause)).map_err(io::Error::other)?;
        }
    }
}

/// The failure inside an I/O error from a [`Download`], or a new one.
pub fn failure_of(e: io::Error, reason: &'static str, doing: &str) -> Failure {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Failure>()) {
        Some(f) => f.clone(),
        None => Failure::new(reason, format!("{doing}: {e}")),
    }
}

fn validator(response: &Response) -> Option<String> {
    let h = response.headers();
    let etag = h.get(ETAG).and_then(|v| v.to_str().ok()).filter(|e| !e.starts_with("W/"));
    etag.or_else(|| h.get(LAST_MODIFIED).and_then(|v| v.to_str().ok())).map(str::to_string)
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = if total == "*" { None } else { Some(total.parse().ok()?) };
    Some((start.parse().ok()?, total))
}

/// reqwest hides the useful part ("connection refused") in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(parse_content_range("bytes 100-199/1000"), Some((100, Some(1000))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    /// A one-shot HTTP server: announces `length` bytes, sends `body` one
    /// byte every `pace`, then closes.
    fn trickle(length: usize, body: &'static [u8], pace: Duration) -> String {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut req = [0u8; 4096];
            let _ = conn.read(&mut req);
            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n");
            for b in body {
                if conn.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(pace);
            }
        });
        format!("http://{addr}/a.tar")
    }

    #[test]
    fn retrying_is_off_unless_asked() {
        let mut env = crate::env::Env::from_pairs([("X", "")]);
        let p = RetryPolicy::from_env(&mut env);
        assert!(!p.enabled && p.total_timeout.is_none());
        assert_eq!(p.max_outage, Duration::from_secs(600));
        let url = trickle(10, b"12345", Duration::ZERO);
        let mut d = Download::open(&url, "test", p).unwrap();
        let err = io::copy(&mut d, &mut io::sink()).unwrap_err();
        let f = failure_of(err, "DownloadFailed", "reading");
        assert_eq!(f.reason, "DownloadFailed");
        assert!(f.message.contains("resuming is off (RETRY_ENABLED=false)"), "{}", f.message);
        let mut env = crate::env::Env::from_pairs([("RETRY_ENABLED", "T"), ("RETRY_DURATION_MINUTES", "2")]);
        let p = RetryPolicy::from_env(&mut env);
        assert!(p.enabled && p.max_outage == Duration::from_secs(120));
    }

    #[test]
    fn the_total_timeout_ends_a_slow_download() {
        let url = trickle(100, &[b'x'; 100], Duration::from_millis(50));
        let policy = RetryPolicy { total_timeout: Some(Duration::from_millis(700)), ..RetryPolicy::default() };
        let started = Instant::now();
        let mut d = Download::open(&url, "test", policy).unwrap();
        let err = io::copy(&mut d, &mut io::sink()).unwrap_err();
        let f = failure_of(err, "DownloadFailed", "reading");
        assert!(f.message.contains("did not finish within 700ms"), "{}", f.message);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(650) && took < Duration::from_secs(4), "{took:?}");
        // Fast enough: the same limit does not get in the way.
        let url = trickle(5, b"12345", Duration::ZERO);
        let policy = RetryPolicy { total_timeout: Some(Duration::from_secs(5)), ..RetryPolicy::default() };
        let mut body = Vec::new();
        Download::open(&url, "test", policy).unwrap().read_to_end(&mut body).unwrap();
        assert_eq!(body, b"12345");
    }

    #[test]
    fn urls_must_be_http() {
        assert!(parse_url("http://10.0.2.2:8080/img.raw.zst").is_ok());
        assert!(parse_url("ftp://host/x").unwrap_err().contains("http://"));
        assert!(parse_url("not a url").unwrap_err().contains("not a URL"));
    }
}
