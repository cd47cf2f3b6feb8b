//! A fault-injecting TCP proxy for tests: it sits between the hub and a
//! database on a free loopback port and can pass traffic, refuse new
//! connections, black-hole them (accept, never answer), delay every chunk,
//! or cut connections after a number of bytes in one direction.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Close each new connection at once (the database seems down).
    Refuse,
    /// Accept new connections but never forward or answer (a dead route).
    BlackHole,
    /// Forward, sleeping this long before each chunk (a slow WAN link).
    Delay(Duration),
}

struct Shared {
    mode: Mutex<Mode>,
    upstream: SocketAddr,
    live: Mutex<Vec<TcpStream>>,
    /// Bytes server->client still allowed before every connection is cut
    /// (negative: no budget).
    down_budget: AtomicI64,
    /// Bytes client->server still allowed before every connection is cut.
    up_budget: AtomicI64,
    cuts: AtomicI64,
    stopped: AtomicBool,
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    /// The loopback port clients connect to.
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream_port` on 127.0.0.1, in [`Mode::Pass`].
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            live: Mutex::new(Vec::new()),
            down_budget: AtomicI64::new(-1),
            up_budget: AtomicI64::new(-1),
            cuts: AtomicI64::new(0),
            stopped: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let shared = accepting.clone();
                thread::spawn(move || serve(shared, client));
            }
        });
        FaultProxy { port, shared }
    }

    /// Switches the mode for new connections (and the delay of live ones).
    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Cuts every live connection now.
    pub fn cut_all(&self) {
        cut_all(&self.shared);
    }

    /// Cuts every live connection once `bytes` more have gone from the
    /// database to the client (mid-read), then lets traffic pass again.
    pub fn cut_after_down_bytes(&self, bytes: i64) {
        self.shared.down_budget.store(bytes, Ordering::SeqCst);
    }

    /// Cuts every live connection once `bytes` more have gone from the
    /// client to the database (mid-write), then lets traffic pass again.
    pub fn cut_after_up_bytes(&self, bytes: i64) {
        self.shared.up_budget.store(bytes, Ordering::SeqCst);
    }

    /// How many times connections were cut by a byte budget.
    pub fn cuts(&self) -> i64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        cut_all(&self.shared);
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn cut_all(shared: &Shared) {
    for stream in shared.live.lock().unwrap().drain(..) {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

fn serve(shared: Arc<Shared>, client: TcpStream) {
    let mode = *shared.mode.lock().unwrap();
    match mode {
        Mode::Refuse => {
            let _ = client.shutdown(Shutdown::Both);
        }
        Mode::BlackHole => {
            shared
                .live
                .lock()
                .unwrap()
                .push(client.try_clone().unwrap());
            let mut sink = [0u8; 4096];
            let mut client = client;
            while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
        }
        Mode::Pass | Mode::Delay(_) => {
            let Ok(server) = TcpStream::connect(shared.upstream) else {
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            {
                let mut live = shared.live.lock().unwrap();
                live.push(client.try_clone().unwrap());
                live.push(server.try_clone().unwrap());
            }
            let up = (
                shared.clone(),
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
            );
            thread::spawn(move || pump(&up.0, up.1, up.2, true));
            pump(&shared, server, client, false);
        }
    }
}

/// Copies `from` to `to` until either closes; `upward`: client -> server.
fn pump(shared: &Shared, mut from: TcpStream, mut to: TcpStream, upward: bool) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Mode::Delay(delay) = *shared.mode.lock().unwrap() {
            thread::sleep(delay);
        }
        let budget = if upward {
            &shared.up_budget
        } else {
            &shared.down_budget
        };
        if budget.load(Ordering::SeqCst) >= 0 {
            let left = budget.fetch_sub(n as i64, Ordering::SeqCst) - n as i64;
            if left < 0 {
                budget.store(-1, Ordering::SeqCst);
                shared.cuts.fetch_add(1, Ordering::SeqCst);
                cut_all(shared);
                break;
            }
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
