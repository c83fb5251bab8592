//! The demo resources `hopcore server` serves:
//!
//! | path | methods | what |
//! |---|---|---|
//! | /.well-known/core | GET | the links below (RFC 6690), built in |
//! | /hello | GET | "Hello from hopcore", text/plain |
//! | /echo | GET, POST, PUT | POST/PUT: 2.04 echoing payload and Content-Format; GET: the last one |
//! | /time | GET (observable) | the current UTC time, e.g. "2026-11-23T17:41:00Z"; notifies every second |
//! | /large | GET | 4096 bytes of a printable pattern: Block2 is needed |

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hopcore_codec::{content_format, num, Code, Message};

use super::resource::{content, text, uint_option, Attributes, Request, Resource};
use super::{Notifier, Server};

/// Size of the /large representation.
pub const LARGE_SIZE: usize = 4096;

/// The demo server: /hello, /echo, /time (observable, notified every second), /large and
/// /.well-known/core.
pub fn demo_server() -> Server {
    let mut s = Server::new();
    s.add_resource("/hello", Hello)
        .add_resource("/echo", Echo::default())
        .add_resource("/time", Time)
        .add_resource("/large", Large)
        .on_start(|notifier| tick_time(notifier, "/time"));
    s
}

/// Notifies `path` at each full second of the wall clock.
async fn tick_time(notifier: Notifier, path: &'static str) {
    let into_second = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let first = tokio::time::Instant::now() + Duration::from_nanos(u64::from(1_000_000_000 - into_second));
    let mut every = tokio::time::interval_at(first, Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        notifier.notify(path);
    }
}

/// GET → "Hello from hopcore".
#[derive(Debug, Clone, Copy, Default)]
pub struct Hello;

impl Resource for Hello {
    fn attributes(&self) -> Attributes {
        Attributes::new().content_format(content_format::TEXT_PLAIN).title("Hello")
    }
    fn allows(&self, method: Code) -> bool {
        method == Code::GET
    }
    fn get(&self, _req: &Request) -> Message {
        text("Hello from hopcore")
    }
}

/// POST/PUT store and echo the payload with its Content-Format (2.04); GET returns the last one.
#[derive(Debug, Default)]
pub struct Echo {
    last: Mutex<(Vec<u8>, Option<u32>)>,
}

impl Echo {
    fn store(&self, req: &Request) -> Message {
        let cf = uint_option(&req.message.options, num::CONTENT_FORMAT);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = (req.payload().to_vec(), cf);
        echo_response(Code::CHANGED, &last.0, last.1)
    }
}

fn echo_response(code: Code, payload: &[u8], cf: Option<u32>) -> Message {
    let mut m = Message::response(code).with_payload(payload.to_vec());
    if let Some(cf) = cf {
        m.options.set_uint(num::CONTENT_FORMAT, cf);
    }
    m
}

impl Resource for Echo {
    fn attributes(&self) -> Attributes {
        Attributes::new().title("Echo")
    }
    fn allows(&self, method: Code) -> bool {
        matches!(method, Code::GET | Code::POST | Code::PUT)
    }
    fn get(&self, _req: &Request) -> Message {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        echo_response(Code::CONTENT, &last.0, last.1)
    }
    fn post(&self, req: &Request) -> Message {
        self.store(req)
    }
    fn put(&self, req: &Request) -> Message {
        self.store(req)
    }
}

/// GET → the current UTC time; observable.
#[derive(Debug, Clone, Copy, Default)]
pub struct Time;

impl Resource for Time {
    fn attributes(&self) -> Attributes {
        Attributes::new()
            .content_format(content_format::TEXT_PLAIN)
            .resource_type("time")
            .title("UTC time")
            .observable()
    }
    fn allows(&self, method: Code) -> bool {
        method == Code::GET
    }
    fn get(&self, _req: &Request) -> Message {
        text(utc_now())
    }
}

/// GET → [`large_payload`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Large;

impl Resource for Large {
    fn attributes(&self) -> Attributes {
        Attributes::new().content_format(content_format::TEXT_PLAIN).max_size(LARGE_SIZE as u64).title("Large")
    }
    fn allows(&self, method: Code) -> bool {
        method == Code::GET
    }
    fn get(&self, _req: &Request) -> Message {
        content(Code::CONTENT, content_format::TEXT_PLAIN, large_payload())
    }
}

/// 64 lines of 64 bytes: a 3-digit line number, a space, 59 characters of a rotating
/// alphabet, and a newline. Every block of 16 bytes or more differs from its neighbours.
pub fn large_payload() -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = Vec::with_capacity(LARGE_SIZE);
    for line in 0..LARGE_SIZE / 64 {
        out.extend_from_slice(format!("{line:03} ").as_bytes());
        out.extend((0..59).map(|i| ALPHABET[(line + i) % ALPHABET.len()]));
        out.push(b'\n');
    }
    out
}

/// The current UTC time as "YYYY-MM-DDTHH:MM:SSZ".
pub fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Seconds since the Unix epoch as "YYYY-MM-DDTHH:MM:SSZ" (RFC 3339).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_455_660), "2026-11-23T17:41:00Z");
        assert_eq!(format_utc(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(utc_now().len(), 20);
    }

    #[test]
    fn large_pattern() {
        let p = large_payload();
        assert_eq!(p.len(), LARGE_SIZE);
        assert!(p.iter().all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\n'));
        assert!(p.starts_with(b"000 ABCDEF"));
        assert_eq!(&p[64..70], b"001 BC");
        for (i, c) in p.chunks(16).enumerate().skip(1) {
            assert_ne!(c, &p[(i - 1) * 16..i * 16]);
        }
    }
}
