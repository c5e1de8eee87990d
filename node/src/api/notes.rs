//! `collective.v1.Notes`: named notes scoped to a site, with typed list attributes and an
//! optional time to live.

use std::sync::Arc;

use collective_proto::v1 as pb;
use collective_proto::v1::notes_server::Notes;
use collective_statemachine::notes::{Attribute, UpdateOp};
use collective_statemachine::{Command, Principal, Rejection};
use tonic::{Request, Response, Status};

use super::convert;
use super::error::ApiError;
use super::{principal, read};
use crate::node::Node;

/// Serves notes.
pub struct NotesService {
    /// The node.
    pub node: Arc<Node>,
}

type Reply<T> = Result<Response<T>, Status>;

impl NotesService {
    async fn write(&self, principal: Principal, command: Command) -> Reply<pb::WriteResponse> {
        let applied = self.node.write(principal, command).await?;
        Ok(Response::new(convert::write_response(applied)))
    }
}

#[tonic::async_trait]
impl Notes for NotesService {
    async fn create_note(&self, request: Request<pb::CreateNoteRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let ttl_minutes = (request.ttl_minutes != 0).then_some(request.ttl_minutes);
        self.write(principal, Command::CreateNote { site: request.site, name: request.name, ttl_minutes }).await
    }

    async fn get_note(&self, request: Request<pb::GetNoteRequest>) -> Reply<pb::Note> {
        let request = request.into_inner();
        let now = self.node.now_ms();
        let note = read(&self.node, request.serializable, |state| {
            let note = state.messaging.notes.note(request.site, &request.name, now.max(state.last_at_ms))?;
            Ok(convert::note_value_out(&note.value, note.expires_at_ms))
        })
        .await?;
        Ok(Response::new(note))
    }

    async fn get_attribute(&self, request: Request<pb::GetAttributeRequest>) -> Reply<pb::Attribute> {
        let request = request.into_inner();
        let expected = match request.r#type.as_str() {
            "Integer" | "String" | "DateTime" => request.r#type.clone(),
            other => {
                return Err(
                    ApiError::invalid("type", format!("{other:?} is not one of Integer, String, DateTime")).into()
                )
            }
        };
        let now = self.node.now_ms();
        let attribute = read(&self.node, request.serializable, |state| {
            let note = state.messaging.notes.note(request.site, &request.name, now.max(state.last_at_ms))?;
            let attribute = note.value.attributes.get(&request.attribute).ok_or_else(|| {
                Rejection::not_found("attribute", format!("{} of note {}", request.attribute, note.value.name))
            })?;
            if attribute.type_name() != expected {
                return Err(Rejection::precondition(
                    "type",
                    format!("attribute {} holds {} values, not {expected}", request.attribute, attribute.type_name()),
                )
                .into());
            }
            Ok(convert::attribute_out(attribute))
        })
        .await?;
        Ok(Response::new(attribute))
    }

    async fn update_attribute(&self, request: Request<pb::UpdateAttributeRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let op = match request.op.as_str() {
            "append" => UpdateOp::Append,
            "replace" => UpdateOp::Replace,
            "remove" => UpdateOp::Remove,
            other => return Err(ApiError::invalid("op", format!("{other:?} is not append, replace or remove")).into()),
        };
        let values: Attribute = convert::attribute_in(request.values, "values")?;
        self.write(
            principal,
            Command::UpdateNoteAttribute {
                site: request.site,
                name: request.name,
                attribute: request.attribute,
                op,
                values,
            },
        )
        .await
    }

    async fn remove_note(&self, request: Request<pb::NoteRef>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.write(principal, Command::RemoveNote { site: request.site, name: request.name }).await
    }

    async fn list_notes(&self, request: Request<pb::ListNotesRequest>) -> Reply<pb::ListNotesResponse> {
        let request = request.into_inner();
        let now = self.node.now_ms();
        let notes = read(&self.node, request.serializable, |state| {
            state.site(request.site)?;
            Ok(state
                .messaging
                .notes
                .live(request.site, now.max(state.last_at_ms))
                .map(|note| convert::note_value_out(&note.value, note.expires_at_ms))
                .collect())
        })
        .await?;
        Ok(Response::new(pb::ListNotesResponse { notes }))
    }
}
