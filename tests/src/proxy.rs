//! A TCP proxy between a client (an agent) and a server, for tests of
//! what happens when the network fails: it forwards `127.0.0.1:PORT` to an
//! upstream address and, on demand, cuts every open connection at once or
//! refuses new ones for a while.
//!
//! Threads and blocking sockets, so that it works from plain `#[test]`s
//! and keeps forwarding while the test thread sleeps or waits.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Forwards connections to `upstream` until dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    upstream: Mutex<String>,
    /// Open connections: both sockets of each, by connection number.
    open: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    /// New connections are closed at once until then.
    refuse_until: Mutex<Option<Instant>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    cut: AtomicU64,
    refused: AtomicU64,
    stopped: AtomicBool,
}

/// What the proxy has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections forwarded to the upstream.
    pub accepted: u64,
    /// Connections cut by [`Proxy::cut_all`].
    pub cut: u64,
    /// Connections closed on arrival (refused, or the upstream was down).
    pub refused: u64,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`
    /// (`host:port`).
    pub fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared { upstream: Mutex::new(upstream.to_string()), ..Shared::default() });
        let s = shared.clone();
        std::thread::Builder::new().name("proxy-accept".into()).spawn(move || accept_loop(listener, s))?;
        Ok(Self { addr, shared })
    }

    /// The proxy's `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Forwards new connections to another upstream (open ones stay).
    pub fn set_upstream(&self, upstream: &str) {
        *self.shared.upstream.lock().unwrap() = upstream.to_string();
    }

    /// Cuts every open connection, both ways; returns how many there were.
    /// Each side sees its connection end (a FIN, or a reset when it still
    /// had data in flight), as when a switch or a NAT drops the flow.
    pub fn cut_all(&self) -> usize {
        let open = std::mem::take(&mut *self.shared.open.lock().unwrap());
        for (_, client, server) in &open {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        self.shared.cut.fetch_add(open.len() as u64, Ordering::SeqCst);
        open.len()
    }

    /// Closes new connections on arrival for `period` (the client's
    /// connect succeeds, then the connection ends before any byte).
    pub fn refuse_for(&self, period: Duration) {
        *self.shared.refuse_until.lock().unwrap() = Some(Instant::now() + period);
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.lock().unwrap().len()
    }

    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            accepted: self.shared.accepted.load(Ordering::SeqCst),
            cut: self.shared.cut.load(Ordering::SeqCst),
            refused: self.shared.refused.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        self.cut_all();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let refusing = shared.refuse_until.lock().unwrap().is_some_and(|t| Instant::now() < t);
        let upstream = shared.upstream.lock().unwrap().clone();
        let server = if refusing { None } else { TcpStream::connect(&upstream).ok() };
        let Some(server) = server else {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) =
            (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone())
        else {
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        shared.open.lock().unwrap().push((id, c3, s3));
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let pipes = Arc::new(AtomicU64::new(2));
        for (from, into) in [(client, s2), (server, c2)] {
            let (shared, pipes) = (shared.clone(), pipes.clone());
            std::thread::spawn(move || {
                pipe(from, into);
                // The second direction to end forgets the connection.
                if pipes.fetch_sub(1, Ordering::SeqCst) == 1 {
                    shared.open.lock().unwrap().retain(|(i, _, _)| *i != id);
                }
            });
        }
    }
}

/// Copies `from` into `into` until either ends, then ends both.
fn pipe(mut from: TcpStream, mut into: TcpStream) {
    let mut buf = [0u8; 16 << 10];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || into.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = into.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
