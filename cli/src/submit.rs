//! Presence changes over one `Submit` stream (`collective.v1.Presences/Submit`): each change goes
//! out with an id, and whoever sent it waits for the outcome with that id. Used by
//! `collective status submit` and `collective bench presence --api stream`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use collective_proto::v1 as pb;
use collective_proto::v1::presence_change::Change;
use collective_proto::v1::presence_outcome::Outcome;
use collective_proto::v1::presences_client::PresencesClient;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use super::client::{Client, Conn};
use super::output::Format;

// Changes of one stream awaiting their outcome: as many as the server reads ahead; a sender
// waits for a slot beyond it.
use collective::api::presence::SUBMIT_IN_FLIGHT_MAX;
/// Changes queued for the stream before a sender waits for the connection.
const SEND_BUFFER: usize = 1_024;

type Reply = oneshot::Sender<Result<pb::WriteResponse, tonic::Status>>;

/// The changes sent and not yet answered, by id; once the stream has ended, why.
#[derive(Default)]
struct Waiting {
    replies: HashMap<u64, Reply>,
    ended: Option<tonic::Status>,
}

/// One open `Submit` stream, shared by any number of senders.
pub struct Submitter {
    changes: mpsc::Sender<pb::PresenceChange>,
    waiting: Arc<Mutex<Waiting>>,
    slots: Semaphore,
    next_id: AtomicU64,
}

impl Submitter {
    /// Opens a stream on `conn`; a task reads its outcomes and hands each to its sender. When the
    /// stream ends, every change still waiting fails with the reason.
    pub async fn open(conn: Conn) -> Result<Submitter, tonic::Status> {
        let (changes, queued) = mpsc::channel(SEND_BUFFER);
        let mut outcomes = PresencesClient::new(conn).submit(ReceiverStream::new(queued)).await?.into_inner();
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let reader = waiting.clone();
        tokio::spawn(async move {
            let ended = loop {
                match outcomes.message().await {
                    Ok(Some(outcome)) => {
                        let reply = reader.lock().expect("submit lock").replies.remove(&outcome.id);
                        if let Some(reply) = reply {
                            let _ = reply.send(result_of(outcome.outcome));
                        }
                    }
                    Ok(None) => break tonic::Status::unavailable("the server ended the submit stream"),
                    Err(status) => break status,
                }
            };
            // UNAVAILABLE whatever ended the stream: the outcome of these is unknown (a reset
            // may arrive as RESOURCE_EXHAUSTED, which would read as "not applied").
            let mut waiting = reader.lock().expect("submit lock");
            for (_, reply) in waiting.replies.drain() {
                let _ = reply.send(Err(tonic::Status::unavailable(format!(
                    "the submit stream ended ({:?}: {}) before this change was answered; its outcome is unknown",
                    ended.code(),
                    ended.message()
                ))));
            }
            waiting.ended = Some(ended);
        });
        Ok(Submitter { changes, waiting, slots: Semaphore::new(SUBMIT_IN_FLIGHT_MAX), next_id: AtomicU64::new(1) })
    }

    /// Sends one change and waits for its outcome: what the unary call would have answered, or
    /// the status it would have failed with.
    pub async fn submit(&self, change: Change) -> Result<pb::WriteResponse, tonic::Status> {
        self.submit_or_return(change).await.unwrap_or_else(|(_, status)| Err(status))
    }

    /// `submit`, but a change that was not sent because the stream has ended comes back with
    /// the reason, to be sent on another stream.
    async fn submit_or_return(&self, change: Change) -> Result<Answer, (Change, tonic::Status)> {
        let _slot = self.slots.acquire().await.expect("the semaphore is never closed");
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, outcome) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock().expect("submit lock");
            if let Some(ended) = &waiting.ended {
                let status = tonic::Status::unavailable(format!(
                    "the submit stream ended ({:?}: {}); the change was not sent",
                    ended.code(),
                    ended.message()
                ));
                return Err((change, status));
            }
            waiting.replies.insert(id, reply);
        }
        let _forget = Forget { waiting: &self.waiting, id };
        if let Err(unsent) = self.changes.send(pb::PresenceChange { id, change: Some(change) }).await {
            let status = tonic::Status::unavailable("the submit stream is closed; the change was not sent");
            return Err((unsent.0.change.expect("sent with a change"), status));
        }
        Ok(outcome.await.unwrap_or_else(|_| {
            Err(tonic::Status::unavailable(
                "the submit stream ended before this change was answered; its outcome is unknown",
            ))
        }))
    }
}

/// A change's outcome, as the unary call's result.
type Answer = Result<pb::WriteResponse, tonic::Status>;

/// How many streams one change of `status submit` is offered to before it fails unsent.
const STREAM_OPENS_PER_CHANGE: usize = 3;

/// `status submit`'s stream: when it ends (its member stopped, its connection broke), the
/// changes after are sent on a new one, opened through the client's failover across
/// `--endpoints`. Changes that were in flight on the old one keep their unknown outcome.
struct Reopening<'a> {
    client: &'a Client,
    stream: Mutex<Arc<Submitter>>,
    /// Held while a new stream opens, so senders that find the same ended stream open one.
    reopening: tokio::sync::Mutex<()>,
}

impl Reopening<'_> {
    async fn submit(&self, mut change: Change) -> Answer {
        let mut last = None;
        for _ in 0..STREAM_OPENS_PER_CHANGE {
            let stream = self.stream.lock().expect("stream lock").clone();
            match stream.submit_or_return(change).await {
                Ok(answer) => return answer,
                Err((unsent, status)) => {
                    change = unsent;
                    let _opening = self.reopening.lock().await;
                    if Arc::ptr_eq(&self.stream.lock().expect("stream lock"), &stream) {
                        let opened = self.client.call(Submitter::open).await?;
                        eprintln!("{}; sending the changes after it on a new stream", status.message());
                        *self.stream.lock().expect("stream lock") = Arc::new(opened);
                    }
                    last = Some(status);
                }
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no submit stream stayed open")))
    }
}

/// Removes a change's entry from the replies when its `submit` ends, answered or dropped while
/// it waited (an answered one is already gone), so a cancelled sender leaves nothing behind.
struct Forget<'a> {
    waiting: &'a Mutex<Waiting>,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiting.lock().expect("submit lock").replies.remove(&self.id);
    }
}

/// A stream outcome as the unary call's result: a `ChangeError` becomes the status it describes,
/// with its details, so `describe` and `tonic_types` read it as they read a unary call's.
fn result_of(outcome: Option<Outcome>) -> Result<pb::WriteResponse, tonic::Status> {
    match outcome {
        Some(Outcome::Written(response)) => Ok(response),
        Some(Outcome::Error(error)) => {
            Err(tonic::Status::with_details(tonic::Code::from_i32(error.code), error.message, error.details.into()))
        }
        None => Err(tonic::Status::internal("the server answered a change without an outcome")),
    }
}

/// One line of `collective status submit`: a presence change, named by `change`.
#[derive(Debug, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case", deny_unknown_fields)]
enum ChangeLine {
    SetStatus {
        username: String,
        status_key: String,
        #[serde(default)]
        until_ms: Option<u64>,
        #[serde(default)]
        detail: String,
    },
    LogOn {
        username: String,
        site: u32,
        #[serde(default)]
        server: String,
    },
    LogOff {
        username: String,
        #[serde(default)]
        reason: String,
    },
    StartInteraction {
        username: String,
        interaction_id: String,
    },
    EndInteraction {
        username: String,
        interaction_id: String,
    },
}

impl From<ChangeLine> for Change {
    fn from(line: ChangeLine) -> Change {
        match line {
            ChangeLine::SetStatus { username, status_key, until_ms, detail } => {
                Change::SetStatus(pb::SetStatusRequest { username, status_key, until_ms, detail })
            }
            ChangeLine::LogOn { username, site, server } => Change::LogOn(pb::LogOnRequest { username, site, server }),
            ChangeLine::LogOff { username, reason } => Change::LogOff(pb::LogOffRequest { username, reason }),
            ChangeLine::StartInteraction { username, interaction_id } => {
                Change::StartInteraction(pb::InteractionRequest { username, interaction_id })
            }
            ChangeLine::EndInteraction { username, interaction_id } => {
                Change::EndInteraction(pb::InteractionRequest { username, interaction_id })
            }
        }
    }
}

/// Longest line `collective status submit` reads (a change is a few hundred bytes).
const LINE_BYTES_MAX: usize = 65_536;

/// One line of input by number: its text, or why it cannot be a change.
type Line = (u64, Result<String, String>);

/// Reads `input` line by line into `lines` (blank lines skipped, numbers kept): a line longer
/// than `LINE_BYTES_MAX` or not UTF-8 is passed on as its reason, and its rest skipped. Stops at
/// the end of the input, or at a read error, which it passes on.
async fn read_lines(input: impl tokio::io::AsyncRead + Unpin, lines: mpsc::Sender<std::io::Result<Line>>) {
    let mut reader = tokio::io::BufReader::new(input);
    let (mut buffer, mut number) = (Vec::new(), 0u64);
    loop {
        buffer.clear();
        let read = (&mut reader).take(LINE_BYTES_MAX as u64 + 1).read_until(b'\n', &mut buffer).await;
        let line = match read {
            Err(error) => {
                let _ = lines.send(Err(error)).await;
                return;
            }
            Ok(0) => return,
            Ok(_) if buffer.len() > LINE_BYTES_MAX && !buffer.ends_with(b"\n") => {
                if let Err(error) = skip_line(&mut reader).await {
                    let _ = lines.send(Err(error)).await;
                    return;
                }
                Err(format!("the line is longer than {LINE_BYTES_MAX} bytes"))
            }
            Ok(_) => {
                let text = buffer.strip_suffix(b"\n").unwrap_or(&buffer);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                String::from_utf8(text.to_vec()).map_err(|_| "the line is not UTF-8 text".to_string())
            }
        };
        number += 1;
        if line.as_ref().is_ok_and(|text| text.trim().is_empty()) {
            continue;
        }
        if lines.send(Ok((number, line))).await.is_err() {
            return;
        }
    }
}

/// Reads past the rest of a line, in bounded pieces.
async fn skip_line(reader: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<()> {
    let mut piece = Vec::new();
    loop {
        piece.clear();
        let read = reader.take(LINE_BYTES_MAX as u64).read_until(b'\n', &mut piece).await?;
        if read == 0 || piece.ends_with(b"\n") {
            return Ok(());
        }
    }
}

/// `collective status submit`: sends the changes of `file` (standard input without one), one
/// JSON object per line, over one stream (a new one, on the next member that answers, when it
/// ends: `Reopening`), up to `SUBMIT_IN_FLIGHT_MAX` at a time, and prints
/// each line's outcome as it arrives. Blank lines are skipped. A line that is not a change fails
/// alone, naming its line; the command fails at the end if any line did, or if the input could
/// not be read to its end (after the outcomes of what was sent).
pub async fn submit_lines(client: &Client, file: Option<PathBuf>, format: Format) -> anyhow::Result<()> {
    let input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match &file {
        Some(path) => {
            Box::new(tokio::fs::File::open(path).await.map_err(|e| anyhow::anyhow!("--file {}: {e}", path.display()))?)
        }
        None => Box::new(tokio::io::stdin()),
    };
    let submitter = Reopening {
        client,
        stream: Mutex::new(Arc::new(client.call(Submitter::open).await?)),
        reopening: tokio::sync::Mutex::new(()),
    };
    let (lines_in, mut lines) = mpsc::channel(256);
    tokio::spawn(read_lines(input, lines_in));
    let mut answering = FuturesUnordered::new();
    let (mut total, mut failed, mut last) = (0u64, 0u64, 0u64);
    let mut unreadable = None;
    loop {
        // Print what is answered while reading on, and read no further ahead than the stream.
        while answering.len() >= SUBMIT_IN_FLIGHT_MAX {
            if let Some((line, result)) = answering.next().await {
                failed += u64::from(!report(format, line, result));
            }
        }
        let (number, line) = tokio::select! {
            biased;
            Some((line, result)) = answering.next(), if !answering.is_empty() => {
                failed += u64::from(!report(format, line, result));
                continue;
            }
            line = lines.recv() => match line {
                None => break,
                Some(Err(error)) => {
                    unreadable = Some(error);
                    break;
                }
                Some(Ok(line)) => line,
            },
        };
        (total, last) = (total + 1, number);
        let change = line.and_then(|text| {
            serde_json::from_str::<ChangeLine>(&text).map_err(|error| format!("not a presence change: {error}"))
        });
        match change {
            Ok(change) => {
                let submitter = &submitter;
                answering.push(async move { (number, submitter.submit(change.into()).await) });
            }
            Err(reason) => {
                failed += 1;
                report(format, number, Err(tonic::Status::invalid_argument(reason)));
            }
        }
    }
    while let Some((line, result)) = answering.next().await {
        failed += u64::from(!report(format, line, result));
    }
    eprintln!("{} of {total} changes written", total - failed);
    if let Some(error) = unreadable {
        anyhow::bail!("reading the changes after line {last}: {error}; the lines after it were not sent");
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {total} changes failed (the lines above say why)");
    }
    Ok(())
}

/// Prints one line's outcome; whether it was written.
fn report(format: Format, line: u64, result: Result<pb::WriteResponse, tonic::Status>) -> bool {
    let written = result.is_ok();
    match (format, result) {
        (Format::Json, Ok(response)) => {
            crate::outln!(
                "{}",
                serde_json::json!({ "line": line, "revision": response.revision, "events": response.events })
            )
        }
        (Format::Json, Err(status)) => crate::outln!(
            "{}",
            serde_json::json!({ "line": line, "code": format!("{:?}", status.code()), "error": super::describe(&status) })
        ),
        (Format::Table, Ok(response)) => crate::outln!("line {line}: written at revision {}", response.revision),
        (Format::Table, Err(status)) => crate::outln!("line {line}: {}", super::describe(&status)),
    }
    written
}
