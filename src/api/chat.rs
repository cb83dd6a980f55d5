//! `unio.v1.ChatService`, and the chat half of the room: both send through
//! [`send`], so validation, idempotency, storage and delivery are one path.

use tonic::{Request, Response, Status};

use super::access;
use crate::{
    auth::{Caller, caller},
    domain::{
        PageSize,
        chat::{ChatText, parse_client_message_id},
        new_id, parse_id,
    },
    error::{AppError, Violations},
    proto::pb::{self, chat_service_server::ChatService},
    realtime::chat::to_pb_with_file,
    state::AppState,
    store::chat::{self, Appended, NewMessage},
};

pub struct ChatApi {
    state: AppState,
}

impl ChatApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn read_only() -> AppError {
    AppError::FailedPrecondition {
        reason: "MEETING_READ_ONLY",
        message: "the meeting is over; its chat is read-only".into(),
    }
}

/// Validates, stores (or finds, for a retry) and delivers one message from
/// `sender_id` as `sender_name`. The caller has checked membership.
/// SendMessage's path: a member of the meeting sends under their name.
pub async fn send_as_member(
    state: &AppState,
    caller: &Caller,
    meeting_id: &str,
    text: &str,
    client_message_id: &str,
) -> Result<pb::ChatMessage, AppError> {
    access::member(&state.meeting_view, meeting_id, caller).await?;
    // A finished meeting's chat is read-only, but a retry of a message
    // already stored still gets it back: the chat log decides.
    // The sender's name from the in-memory view (a rename drops it).
    let name = state
        .accounts
        .view()
        .user(&caller.user_id)
        .await?
        .map(|u| u.display_name.clone())
        .unwrap_or_default();
    send(
        state,
        &caller.user_id,
        &name,
        meeting_id,
        text,
        client_message_id,
    )
    .await
}

pub async fn send(
    state: &AppState,
    sender_id: &str,
    sender_name: &str,
    meeting_id: &str,
    text: &str,
    client_message_id: &str,
) -> Result<pb::ChatMessage, AppError> {
    let mut v = Violations::new();
    let text = v.check("text", ChatText::parse(text));
    let client_id = v.check(
        "client_message_id",
        parse_client_message_id(client_message_id),
    );
    let (Some(text), Some(client_id)) = (text, client_id) else {
        return Err(v.into_error());
    };
    // One budget per user and meeting, however many sessions or paths the
    // user sends from.
    let key = (sender_id.to_owned(), meeting_id.to_owned());
    if let Err(wait) = state.limits.chat.check(&key) {
        return Err(AppError::ResourceExhausted {
            reason: "RATE_LIMITED",
            message: "you are sending chat messages too fast in this meeting; slow down".into(),
            retry_after: Some(wait.max(std::time::Duration::from_millis(100))),
        });
    }
    let message = NewMessage {
        id: new_id(),
        meeting_id: meeting_id.to_owned(),
        sender_id: sender_id.to_owned(),
        sender_display_name: sender_name.to_owned(),
        text: text.as_str().to_owned(),
        client_message_id: client_id,
        file_id: None,
    };
    match state.chat.append(message).await? {
        Appended::Stored(record) | Appended::Existing(record) => {
            Ok(crate::wire::chat_message(&record))
        }
        Appended::MeetingClosed => Err(read_only()),
    }
}

#[tonic::async_trait]
impl ChatService for ChatApi {
    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::ChatMessage>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let meeting_id = super::id_field("meeting_id", &r.meeting_id)?;
        let message = send_as_member(
            &self.state,
            &caller,
            &meeting_id,
            &r.text,
            &r.client_message_id,
        )
        .await?;
        Ok(Response::new(message))
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let meeting_id = v.check("meeting_id", parse_id(&r.meeting_id));
        let size = v.check("page_size", PageSize::parse(r.page_size));
        if r.after_sequence < 0 {
            v.add("after_sequence", "must not be negative");
        }
        let (Some(meeting_id), Some(size)) = (meeting_id, size) else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        access::member(&self.state.meeting_view, &meeting_id, &caller).await?;
        let after = (r.after_sequence > 0).then_some(r.after_sequence);
        let page = self.state.page_tokens.page(
            format!("ListMessages|{meeting_id}|{after:?}"),
            &r.page_token,
            size,
        )?;
        let cursor = page.key(|c| c.parse::<i64>().ok())?;
        let rows = chat::list(&self.state.db, &meeting_id, after, cursor, page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |m| m.sequence.to_string());
        Ok(Response::new(pb::ListMessagesResponse {
            messages: {
                let mut messages = Vec::with_capacity(rows.len());
                for row in &rows {
                    messages.push(to_pb_with_file(&self.state.db, row).await);
                }
                messages
            },
            next_page_token,
        }))
    }
}
