//! A latency-injecting TCP proxy for the WAN scenario: every chunk read on
//! one side is delivered to the other `delay` later (chunks are queued, not
//! serialised behind the delay), like a long link with plenty of bandwidth
//! and a TCP window of [`WINDOW_CHUNKS`] x 64 KiB per direction: at most
//! that much is in flight, so a reader that stops reading holds the sender
//! back as over a real link. (An unbounded queue let the proxy read whole
//! site tables ahead of the hub: the WAN pass then outran loopback and the
//! bench process's memory held the tables.)

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running proxy; it stops when dropped.
pub struct LatencyProxy {
    /// The loopback port clients connect to.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LatencyProxy {
    /// Listens on a free loopback port and forwards each connection to
    /// `upstream`, delaying each direction by `delay` (so a round trip costs
    /// `2 * delay` more). Errors: the listener cannot bind.
    pub async fn start(upstream: SocketAddr, delay: Duration) -> std::io::Result<LatencyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(delayed_copy(client_read, server_write, delay));
                    tokio::spawn(delayed_copy(server_read, client_write, delay));
                });
            }
        });
        Ok(LatencyProxy { port, task })
    }
}

/// Chunks (of at most 64 KiB) in flight per direction of a proxied
/// connection: a 1 MiB window, 25 MiB/s per connection at a 40 ms round
/// trip, far above what one site read sends.
const WINDOW_CHUNKS: usize = 16;

/// Copies `from` to `to`, each chunk delivered `delay` after it was read.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (sender, mut receiver) = mpsc::channel::<(Instant, Vec<u8>)>(WINDOW_CHUNKS);
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if sender
                    .send((Instant::now() + delay, buffer[..n].to_vec()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(sender);
    let _ = writer.await;
}
