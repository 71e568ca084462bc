//! The stdio transport: one JSON-RPC message per line, each checked by [`super::frame`]
//! before rmcp sees it, so that malformed requests are answered rather than dropped.
//!
//! One task owns stdout and writes whole lines, both rmcp's messages and the answers given at
//! the edge, so the two never interleave within a line.

use std::io;

use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::RoleServer;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::frame::{self, Verdict, MAX_MESSAGE_BYTES};

/// A line to write, and who waits to hear it was written.
struct Outgoing {
    line: Vec<u8>,
    written: Option<oneshot::Sender<io::Result<()>>>,
}

/// A [`Transport`] over a reader and a writer of newline-delimited JSON-RPC.
pub struct CheckedLines<R> {
    read: BufReader<R>,
    /// The line read so far. It lives here, not in `receive`, because rmcp polls `receive`
    /// inside a `select!` and drops it whenever another branch is ready: the next call resumes
    /// the same line.
    line: Vec<u8>,
    /// Set while skipping the rest of a line longer than [`MAX_MESSAGE_BYTES`].
    discarding: bool,
    out: Option<mpsc::UnboundedSender<Outgoing>>,
    writer: Option<JoinHandle<()>>,
}

/// The most a line ends with: `\r\n`. The limit counts the message alone, so that a client
/// ending its lines with CRLF may send as much as one ending them with LF.
const LINE_END_BYTES: usize = 2;

enum Line {
    Whole,
    TooLong,
    End,
}

impl<R: AsyncRead + Unpin + Send> CheckedLines<R> {
    /// Reads from `read` and writes to `write`, on a task of its own. Call it inside a tokio
    /// runtime.
    pub fn new<W: AsyncWrite + Unpin + Send + 'static>(read: R, write: W) -> Self {
        let (out, rx) = mpsc::unbounded_channel();
        Self {
            read: BufReader::new(read),
            line: Vec::new(),
            discarding: false,
            out: Some(out),
            writer: Some(tokio::spawn(write_lines(write, rx))),
        }
    }

    /// Reads up to the next newline, never holding more than [`MAX_MESSAGE_BYTES`]; cancel-safe,
    /// as rmcp's own line reader is (nothing is consumed without being kept).
    async fn read_line(&mut self) -> io::Result<Line> {
        loop {
            let available = self.read.fill_buf().await?;
            if available.is_empty() {
                return Ok(Line::End);
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let take = newline.map_or(available.len(), |at| at + 1);
            let outcome = if self.discarding {
                if newline.is_some() {
                    self.discarding = false;
                }
                None
            } else if self.line.len() + take > MAX_MESSAGE_BYTES + LINE_END_BYTES {
                self.line.clear();
                self.discarding = newline.is_none();
                Some(Line::TooLong)
            } else {
                self.line.extend_from_slice(&available[..take]);
                newline.map(|_| Line::Whole)
            };
            self.read.consume(take);
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
        }
    }

    fn queue(&self, answer: &frame::Answer) {
        tracing::debug!(error = %frame::describe(answer), "answering a message at the edge");
        let mut line = answer.body.to_string().into_bytes();
        line.push(b'\n');
        if let Some(out) = &self.out {
            let _ = out.send(Outgoing {
                line,
                written: None,
            });
        }
    }
}

async fn write_lines<W: AsyncWrite + Unpin>(
    mut write: W,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(Outgoing { line, written }) = rx.recv().await {
        let result = async {
            write.write_all(&line).await?;
            write.flush().await
        }
        .await;
        let failed = result.is_err();
        if let Some(written) = written {
            let _ = written.send(result);
        }
        if failed {
            // The client is gone; later sends fail on the closed channel.
            return;
        }
    }
}

impl<R: AsyncRead + Unpin + Send> Transport<RoleServer> for CheckedLines<R> {
    type Error = io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl std::future::Future<Output = Result<(), io::Error>> + Send + 'static {
        let queued = serde_json::to_vec(&item)
            .map_err(io::Error::from)
            .and_then(|mut line| {
                line.push(b'\n');
                let (written, done) = oneshot::channel();
                self.out
                    .as_ref()
                    .ok_or_else(closed)?
                    .send(Outgoing {
                        line,
                        written: Some(written),
                    })
                    .map_err(|_| closed())?;
                Ok(done)
            });
        async move { queued?.await.map_err(|_| closed())? }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            match self.read_line().await {
                Ok(Line::Whole) => {}
                Ok(Line::TooLong) => {
                    self.queue(&frame::too_large());
                    continue;
                }
                // Bytes after the last newline are an unfinished message: nothing to answer.
                Ok(Line::End) => return None,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read stdin");
                    return None;
                }
            }
            let line = std::mem::take(&mut self.line);
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.len() > MAX_MESSAGE_BYTES {
                self.queue(&frame::too_large());
                continue;
            }
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match frame::check(text) {
                Verdict::Pass(message) => return Some(*message),
                Verdict::Answer(answer) => self.queue(&answer),
                Verdict::Drop => {}
            }
        }
    }

    async fn close(&mut self) -> Result<(), io::Error> {
        // Every line queued is written before the writer ends.
        drop(self.out.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
        Ok(())
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the client has gone away")
}
