//! `collective message …` and `collective note …`: inter-site messages and notes from the shell.

use std::time::Duration;

use clap::Subcommand;
use collective_client::MessageWriter;
use collective_proto::v1 as pb;
use collective_proto::v1::messages_client::MessagesClient;
use collective_proto::v1::notes_client::NotesClient;
use tokio_stream::StreamExt;

use super::client::Client;
use super::output::{print, Format};

/// Inter-site messages.
#[derive(Subcommand, Debug)]
pub enum MessageCommand {
    /// Send an event to one site, or to every other active site with `--to '*'`.
    Send {
        /// The sending site.
        #[arg(long)]
        from: u32,
        /// A site id, or `*` for every other active site.
        #[arg(long)]
        to: String,
        /// Object id (selects the receiving handlers).
        #[arg(long)]
        object: String,
        /// Event id (selects the receiving handlers).
        #[arg(long)]
        event: String,
        /// Elements in order: `int:42`, `str:TEXT`, `note:NAME` (the sending site's note).
        #[arg(short = 'e', long = "element")]
        elements: Vec<String>,
    },
    /// Send a request to one site and wait for its response (or the timeout).
    Request {
        /// The sending site.
        #[arg(long)]
        from: u32,
        /// The site asked.
        #[arg(long)]
        to: u32,
        /// Object id.
        #[arg(long)]
        object: String,
        /// Event id.
        #[arg(long)]
        event: String,
        /// How long to wait for the response; 0 waits without limit.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Elements in order: `int:42`, `str:TEXT`, `note:NAME`.
        #[arg(short = 'e', long = "element")]
        elements: Vec<String>,
    },
    /// Answer a request: by its correlation id, to its response destination.
    Respond {
        /// The answering site (the one the request was sent to).
        #[arg(long)]
        from: u32,
        /// The request's correlation id.
        #[arg(long)]
        correlation_id: u64,
        /// The request's response destination.
        #[arg(long)]
        to: u32,
        /// Elements in order: `int:42`, `str:TEXT`, `note:NAME`.
        #[arg(short = 'e', long = "element")]
        elements: Vec<String>,
    },
    /// Receive a site's deliveries: what is queued, then what arrives.
    Subscribe {
        /// The receiving site.
        #[arg(long)]
        site: u32,
        /// Only these handlers: `OBJECT:EVENT` (an empty side matches any).
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// Acknowledge each delivery once printed (it leaves the queue).
        #[arg(long)]
        ack: bool,
        /// Stop after this many deliveries (0: never).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Acknowledge deliveries by id.
    Ack {
        /// The receiving site.
        #[arg(long)]
        site: u32,
        /// Message ids.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Queued messages and bytes per site, against the limits.
    Backlog {
        /// Only this site (0: every site).
        #[arg(long, default_value_t = 0)]
        site: u32,
    },
    /// Set the queue bounds of every site.
    Limits {
        /// Most queued messages per site.
        #[arg(long)]
        messages: u64,
        /// Most queued bytes per site.
        #[arg(long)]
        bytes: u64,
    },
}

/// Notes scoped to a site.
#[derive(Subcommand, Debug)]
pub enum NoteCommand {
    /// Create a note.
    Create {
        /// The site.
        #[arg(long)]
        site: u32,
        /// Its name.
        name: String,
        /// Time to live in minutes (none: until removed).
        #[arg(long)]
        ttl_minutes: Option<u32>,
    },
    /// A note with its attributes, or one attribute with `--attribute` and `--type`.
    Get {
        /// The site.
        #[arg(long)]
        site: u32,
        /// The note.
        name: String,
        /// One attribute.
        #[arg(long, requires = "type")]
        attribute: Option<String>,
        /// The attribute's type: Integer, String or DateTime.
        #[arg(long = "type")]
        r#type: Option<String>,
    },
    /// Append to, replace or remove values of an attribute.
    Update {
        /// The site.
        #[arg(long)]
        site: u32,
        /// The note.
        name: String,
        /// The attribute.
        #[arg(long)]
        attribute: String,
        /// append (the attribute must exist), replace (creates it) or remove.
        #[arg(long)]
        op: String,
        /// Integer, String or DateTime (ms since the Unix epoch).
        #[arg(long = "type")]
        r#type: String,
        /// The values.
        values: Vec<String>,
    },
    /// Remove a note.
    Remove {
        /// The site.
        #[arg(long)]
        site: u32,
        /// The note.
        name: String,
    },
    /// The site's notes.
    List {
        /// The site.
        #[arg(long)]
        site: u32,
    },
}

/// Parses `int:…`, `str:…`, `note:…` elements, fetching notes from `site`.
async fn elements(client: &Client, site: u32, specs: &[String]) -> anyhow::Result<Vec<pb::Element>> {
    let mut writer = MessageWriter::new();
    for (index, spec) in specs.iter().enumerate() {
        let (kind, value) = spec
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--element {index}: {spec:?} is not int:N, str:TEXT or note:NAME"))?;
        writer = match kind {
            "int" => writer.integer(
                value.parse().map_err(|_| anyhow::anyhow!("--element {index}: {value:?} is not a 64-bit integer"))?,
            ),
            "str" => writer.string(value),
            "note" => {
                let request = pb::GetNoteRequest { site, name: value.to_string(), serializable: false };
                let note = client
                    .call(|c| {
                        let r = request.clone();
                        async move { NotesClient::new(c).get_note(r).await }
                    })
                    .await?
                    .into_inner();
                writer.note(note)
            }
            other => anyhow::bail!("--element {index}: {other:?} is not int, str or note"),
        };
    }
    Ok(writer.finish())
}

fn attribute(kind: &str, values: &[String]) -> anyhow::Result<pb::Attribute> {
    use pb::attribute::Values;
    let integers = |what: &str| -> anyhow::Result<Vec<i64>> {
        values.iter().map(|v| v.parse().map_err(|_| anyhow::anyhow!("{v:?} is not {what}"))).collect()
    };
    let values = match kind {
        "Integer" => Values::Integers(pb::IntegerList { values: integers("a 64-bit integer")? }),
        "String" => Values::Strings(pb::StringList { values: values.to_vec() }),
        "DateTime" => Values::DateTimes(pb::IntegerList { values: integers("ms since the Unix epoch")? }),
        other => anyhow::bail!("--type: {other:?} is not Integer, String or DateTime"),
    };
    Ok(pb::Attribute { values: Some(values) })
}

fn print_delivery(format: Format, delivery: &pb::Delivery) -> anyhow::Result<()> {
    match format {
        Format::Json => crate::outln!("{}", serde_json::to_string(delivery)?),
        Format::Table => crate::outln!(
            "{} {}→{} {}/{} correlation={} respond_to={} {}",
            delivery.id,
            delivery.from_site,
            delivery.to_site,
            delivery.object_id,
            delivery.event_id,
            delivery.correlation_id,
            delivery.response_destination,
            serde_json::to_string(&delivery.elements)?
        ),
    }
    Ok(())
}

/// Runs a `message` command.
pub async fn message(client: &Client, command: MessageCommand, format: Format, timeout_ms: u64) -> anyhow::Result<()> {
    let msg = |c| MessagesClient::new(c);
    match command {
        MessageCommand::Send { from, to, object, event, elements: specs } => {
            let to_site = match to.as_str() {
                "*" => 0,
                id => id.parse().map_err(|_| anyhow::anyhow!("--to: {id:?} is neither a site id nor *"))?,
            };
            let request = pb::SendEventRequest {
                from_site: from,
                to_site,
                object_id: object,
                event_id: event,
                elements: elements(client, from, &specs).await?,
            };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { msg(c).send_event(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        MessageCommand::Request { from, to, object, event, timeout_ms: wait_ms, elements: specs } => {
            let request = pb::SendRequestRequest {
                from_site: from,
                to_site: to,
                object_id: object,
                event_id: event,
                elements: elements(client, from, &specs).await?,
                timeout_ms: wait_ms,
            };
            // The call outlasts the request's own timeout (0: no deadline at all).
            let deadline = if wait_ms == 0 {
                Duration::from_secs(365 * 24 * 3_600)
            } else {
                Duration::from_millis(wait_ms + timeout_ms)
            };
            let waiting = client.with_timeout(deadline);
            let response = waiting
                .call(|c| {
                    let r = request.clone();
                    async move { msg(c).send_request(r).await }
                })
                .await?
                .into_inner();
            if response.timed_out {
                crate::outln!("timed out: no response to request {} within {wait_ms} ms", response.correlation_id);
                std::process::exit(3);
            }
            match response.response {
                Some(delivery) => print_delivery(format, &delivery)?,
                None => anyhow::bail!("request {} returned neither a response nor a timeout", response.correlation_id),
            }
        }
        MessageCommand::Respond { from, correlation_id, to, elements: specs } => {
            let request = pb::SendResponseRequest {
                from_site: from,
                correlation_id,
                response_destination: to,
                elements: elements(client, from, &specs).await?,
            };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { msg(c).send_response(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        MessageCommand::Subscribe { site, filters, ack, count } => {
            let filters = filters
                .iter()
                .map(|f| {
                    let (object_id, event_id) = f.split_once(':').unwrap_or((f.as_str(), ""));
                    pb::HandlerFilter { object_id: object_id.to_string(), event_id: event_id.to_string() }
                })
                .collect();
            let request = pb::SubscribeRequest { site, filters };
            let streaming = client.with_timeout(Duration::from_secs(365 * 24 * 3_600));
            let mut stream = streaming
                .call(|c| {
                    let r = request.clone();
                    async move { msg(c).subscribe(r).await }
                })
                .await?
                .into_inner();
            let mut seen = 0;
            while let Some(delivery) = stream.next().await {
                let delivery = delivery?;
                print_delivery(format, &delivery)?;
                if ack {
                    let request = pb::AckRequest { site, ids: vec![delivery.id] };
                    client
                        .call(|c| {
                            let r = request.clone();
                            async move { msg(c).ack(r).await }
                        })
                        .await?;
                }
                seen += 1;
                if count != 0 && seen >= count {
                    break;
                }
            }
        }
        MessageCommand::Ack { site, ids } => {
            let request = pb::AckRequest { site, ids };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { msg(c).ack(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        MessageCommand::Backlog { site } => {
            let request = pb::BacklogRequest { site, serializable: false };
            let response = client.call(|c| async move { msg(c).backlog(request).await }).await?;
            print(format, &response.into_inner(), Some("sites"));
        }
        MessageCommand::Limits { messages, bytes } => {
            let request = pb::QueueLimits { messages, bytes };
            let response = client.call(|c| async move { msg(c).set_queue_limits(request).await }).await?;
            print(format, &response.into_inner(), None);
        }
    }
    Ok(())
}

/// Runs a `note` command.
pub async fn note(client: &Client, command: NoteCommand, format: Format, serializable: bool) -> anyhow::Result<()> {
    let notes = |c| NotesClient::new(c);
    match command {
        NoteCommand::Create { site, name, ttl_minutes } => {
            let request = pb::CreateNoteRequest { site, name, ttl_minutes: ttl_minutes.unwrap_or(0) };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { notes(c).create_note(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        NoteCommand::Get { site, name, attribute: Some(attribute), r#type } => {
            let request =
                pb::GetAttributeRequest { site, name, attribute, r#type: r#type.unwrap_or_default(), serializable };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { notes(c).get_attribute(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        NoteCommand::Get { site, name, attribute: None, .. } => {
            let request = pb::GetNoteRequest { site, name, serializable };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { notes(c).get_note(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        NoteCommand::Update { site, name, attribute, op, r#type, values } => {
            let request = pb::UpdateAttributeRequest {
                site,
                name,
                attribute,
                op,
                values: Some(self::attribute(&r#type, &values)?),
            };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { notes(c).update_attribute(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        NoteCommand::Remove { site, name } => {
            let request = pb::NoteRef { site, name };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { notes(c).remove_note(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        NoteCommand::List { site } => {
            let request = pb::ListNotesRequest { site, serializable };
            let response = client.call(|c| async move { notes(c).list_notes(request).await }).await?;
            print(format, &response.into_inner(), Some("notes"));
        }
    }
    Ok(())
}
