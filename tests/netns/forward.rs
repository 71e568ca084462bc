//! The database as each host reaches it: the server listens on 127.0.0.1 only, so the test
//! runs, in the root namespace, one TCP forwarder per host, listening on the root end of that
//! host's link and connecting to the server. A host's traffic therefore crosses its own link,
//! and cutting the link cuts the host off.
//!
//! A forwarder can also delay what the host sends by a fixed time, as `tc netem delay` on the
//! host's card would: the stand-in for a kernel built without netem.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A running forwarder; dropping it stops it and every connection through it.
pub struct Forwarder {
    /// The port it listens on, at the address it was given.
    pub port: u16,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Forwarder {
    /// Listens on `listen` (a port of the system's choosing) and forwards every connection to
    /// `upstream`, on `runtime`. With `delay`, every byte from the host reaches the server
    /// that long after it arrived.
    ///
    /// # Errors
    /// When `listen` cannot be bound.
    pub fn start(
        runtime: &Handle,
        listen: Ipv4Addr,
        upstream: SocketAddr,
        delay: Option<Duration>,
    ) -> std::io::Result<Self> {
        let listener = runtime.block_on(TcpListener::bind((listen, 0)))?;
        let port = listener.local_addr()?.port();
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let spawned = tasks.clone();
        let accept = runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // Out of descriptors, say: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let connection = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    match delay {
                        None => {
                            let (mut client, mut server) = (client, server);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                        Some(delay) => delayed(client, server, delay).await,
                    }
                });
                let mut tasks = spawned.lock().unwrap_or_else(|p| p.into_inner());
                tasks.retain(|t| !t.is_finished());
                tasks.push(connection.abort_handle());
            }
        });
        tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(accept.abort_handle());
        Ok(Self { port, tasks })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

/// Forwards both ways, what the client sends arriving `delay` late, in order.
async fn delayed(client: TcpStream, server: TcpStream, delay: Duration) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let upward_read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` ends the writer once it has written what is queued.
    };
    let upward_write = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if server_write.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downward = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upward_read, upward_write, downward);
}
