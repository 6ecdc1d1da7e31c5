//! A small HTTP/1.1 file server for action tests and benchmarks, with the
//! faults a download must survive: connections cut mid-body, a server that
//! goes away and comes back on the same port, servers without Range support,
//! and bodies shorter than their Content-Length.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the server does wrong, consumed request by request.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// For the first N responses (one entry each): close the connection
    /// after this many body bytes.
    pub cut_after: Vec<u64>,
    /// After each cut, stop listening for this long (connections are refused),
    /// then listen again on the same port.
    pub down_for: Option<Duration>,
    /// Answer every request with the whole body (200), ignoring Range.
    pub ignore_range: bool,
    /// Every response claims the full length but ends after this many bytes.
    pub always_short: Option<u64>,
}

#[derive(Debug, Default)]
struct Shared {
    faults: Faults,
    /// `Range` header of each request (empty when none).
    ranges: Vec<String>,
    /// Bytes of body actually sent, over all responses.
    sent: u64,
}

pub struct FileServer {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    /// Serves `body` at every path, on 127.0.0.1.
    pub fn start(body: Vec<u8>, faults: Faults) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared { faults, ..Shared::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let body = Arc::new(body);
        let (s, st) = (shared.clone(), stop.clone());
        thread::spawn(move || accept_loop(listener, addr, body, s, st));
        FileServer { addr, shared, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// The Range header of each request so far ("" for none).
    pub fn ranges(&self) -> Vec<String> {
        self.shared.lock().unwrap().ranges.clone()
    }

    pub fn bytes_sent(&self) -> u64 {
        self.shared.lock().unwrap().sent
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
    }
}

fn accept_loop(
    mut listener: TcpListener,
    addr: SocketAddr,
    body: Arc<Vec<u8>>,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) {
    loop {
        let Ok((stream, _)) = listener.accept() else { continue };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        // Served on this thread one at a time: a cut must be able to take
        // the listener down before the client reconnects.
        let cut = serve(stream, &body, &shared);
        let down = shared.lock().unwrap().faults.down_for;
        if let (true, Some(d)) = (cut, down) {
            drop(listener);
            thread::sleep(d);
            listener = loop {
                match TcpListener::bind(addr) {
                    Ok(l) => break l,
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            };
        }
    }
}

/// Answers one request; true when the body was cut on purpose.
fn serve(stream: TcpStream, body: &[u8], shared: &Mutex<Shared>) -> bool {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut range = String::new();
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return false;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = v.trim().to_string();
        }
    }
    let (start, cut, short) = {
        let mut s = shared.lock().unwrap();
        s.ranges.push(range.clone());
        let cut = if s.faults.cut_after.is_empty() { None } else { Some(s.faults.cut_after.remove(0)) };
        let start = if s.faults.ignore_range { 0 } else { parse_range(&range).unwrap_or(0) };
        (start.min(body.len() as u64), cut, s.faults.always_short)
    };
    let total = body.len() as u64;
    let head = if start > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{total}\r\nETag: \"kiln-test\"\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
            total - start,
            total - 1
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nETag: \"kiln-test\"\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n"
        )
    };
    let mut stream = stream;
    if stream.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let mut end = total;
    if let Some(c) = cut {
        end = end.min(start + c);
    }
    if let Some(s) = short {
        end = end.min(s);
    }
    let end = end.max(start);
    let mut sent = 0;
    for piece in body[start as usize..end as usize].chunks(1 << 20) {
        if stream.write_all(piece).is_err() {
            break;
        }
        sent += piece.len() as u64;
    }
    shared.lock().unwrap().sent += sent;
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    cut.is_some()
}

/// `bytes=N-` (the only form kiln sends).
fn parse_range(value: &str) -> Option<u64> {
    value.strip_prefix("bytes=")?.split('-').next()?.parse().ok()
}
