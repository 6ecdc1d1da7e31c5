//! Ships an attempt's output to the server while the action runs.
//!
//! Lines are numbered from 1 and sent in batches: one flush every
//! [`FLUSH_EVERY`] or [`MAX_BATCH`] lines, whichever comes first. Batches go
//! out one at a time and in order, so the server stores lines in order, and
//! a resent batch is deduplicated by seq.

use std::time::Duration;

use kiln_proto::time::to_proto;
use kiln_proto::v1::{LogBatch, LogLine, LogStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::client::ServerClient;
use crate::runtime::OutputLine;

const FLUSH_EVERY: Duration = Duration::from_millis(50);
const MAX_BATCH: usize = 500;

pub struct LogShipper {
    tx: mpsc::Sender<Shipment>,
    task: JoinHandle<()>,
}

enum Shipment {
    Line(OutputLine),
    /// Send what is pending now and say when the server has it.
    Flush(oneshot::Sender<()>),
}

impl LogShipper {
    pub fn start(client: ServerClient, workflow_id: String, action_index: u32, attempt_id: String) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let task =
            tokio::spawn(ship(client, rx, LogBatch { workflow_id, action_index, attempt_id, lines: Vec::new() }));
        Self { tx, task }
    }

    pub async fn send(&self, line: OutputLine) {
        // The receiver only goes away when shipping gave up; the action's
        // output is then dropped rather than stalling the action.
        let _ = self.tx.send(Shipment::Line(line)).await;
    }

    /// Returns once every line sent so far is with the server.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Shipment::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Sends what is left and waits until the server has it.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

async fn ship(client: ServerClient, mut rx: mpsc::Receiver<Shipment>, template: LogBatch) {
    let mut seq = 0u64;
    let mut pending = Vec::new();
    let mut open = true;
    while open {
        let mut acks = Vec::new();
        // Wait for a first line, then gather more for up to FLUSH_EVERY
        // (a flush request cuts the wait short).
        let mut take = |s: Option<Shipment>, pending: &mut Vec<OutputLine>, acks: &mut Vec<oneshot::Sender<()>>| match s
        {
            Some(Shipment::Line(line)) => {
                pending.push(line);
                true
            }
            Some(Shipment::Flush(ack)) => {
                acks.push(ack);
                false
            }
            None => {
                open = false;
                false
            }
        };
        let mut gather = take(rx.recv().await, &mut pending, &mut acks);
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while gather && pending.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(s) => gather = take(s, &mut pending, &mut acks),
                Err(_) => break,
            }
        }
        if pending.is_empty() {
            for ack in acks {
                let _ = ack.send(());
            }
            continue;
        }
        let now = to_proto(std::time::SystemTime::now());
        let lines = pending
            .drain(..)
            .map(|l| {
                seq += 1;
                LogLine {
                    seq,
                    stream: if l.stderr { LogStream::Stderr } else { LogStream::Stdout } as i32,
                    time: Some(now),
                    text: l.text,
                }
            })
            .collect();
        let batch = LogBatch { lines, ..template.clone() };
        if let Err(e) = client.push_logs(batch).await {
            tracing::warn!(error = %e.message(), "shipping logs failed; dropping this batch");
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}
