//! `unio.v1.CallService`: calls inside a meeting. Rules (the call status
//! machine, durations) live in `domain::call`; every change is pushed to the
//! meeting's room as a `call` event.

use tonic::{Request, Response, Status};

use super::{access, id_field};
use crate::wire;
use crate::{
    auth::{Caller, caller},
    domain::{
        PageSize,
        call::{self, CallStatus, IllegalCallTransition, RingLimit},
        meeting::MeetingStatus,
        new_id,
        notification::Draft,
        time::now_micros,
    },
    error::AppError,
    proto::pb::{self, call_service_server::CallService, server_event::Event},
    state::AppState,
    store::{
        calls::{self, CallRecord, Started},
        users,
    },
};

pub struct CallApi {
    state: AppState,
}

fn illegal(err: IllegalCallTransition) -> AppError {
    AppError::FailedPrecondition {
        reason: "INVALID_STATUS_TRANSITION",
        message: err.to_string(),
    }
}

impl CallApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    fn announce(&self, record: &CallRecord) -> pb::CallSession {
        let session = wire::call(record);
        self.state
            .hub
            .broadcast(&record.meeting_id, Event::Call(Box::new(session.clone())));
        session
    }

    async fn load_call(&self, raw_id: &str) -> Result<CallRecord, AppError> {
        let id = id_field("call_id", raw_id)?;
        calls::find(&self.state.db, &id)
            .await?
            .ok_or_else(|| AppError::not_found("CALL_NOT_FOUND", format!("no call with id {id}")))
    }

    /// Members of the call's meeting, and the call's own parties, may read it.
    async fn readable(&self, caller: &Caller, raw_id: &str) -> Result<CallRecord, AppError> {
        let record = self.load_call(raw_id).await?;
        let is_party = record.caller_id == caller.user_id
            || record.callee_id.as_deref() == Some(&caller.user_id);
        if !is_party {
            access::member(&self.state.meeting_view, &record.meeting_id, caller).await?;
        }
        Ok(record)
    }

    /// Applies one status change decided by `step`, or explains why not.
    async fn change(
        &self,
        mut record: CallRecord,
        step: impl Fn(CallStatus) -> Result<CallStatus, IllegalCallTransition>,
    ) -> Result<pb::CallSession, AppError> {
        // A concurrent change (answered, ended, missed) makes the
        // conditional update miss: judge the new state and try again.
        for _ in 0..3 {
            let from = record.status();
            let to = step(from).map_err(illegal)?;
            let now = now_micros();
            let answered_at = (to == CallStatus::Active).then_some(now);
            let (ended_at, duration) = match to {
                CallStatus::Ended | CallStatus::Declined | CallStatus::Missed => (
                    Some(now),
                    call::duration_seconds(
                        record.started_at,
                        record.answered_at,
                        now,
                        record.callee_id.is_some(),
                    ),
                ),
                _ => (None, 0),
            };
            let changed = calls::transition(
                &self.state.db,
                &record.id,
                from,
                to,
                answered_at,
                ended_at,
                duration,
            )
            .await?;
            if let Some(updated) = changed {
                return Ok(self.announce(&updated));
            }
            record = calls::find(&self.state.db, &record.id)
                .await?
                .ok_or_else(|| AppError::not_found("CALL_NOT_FOUND", "the call is gone"))?;
        }
        Err(AppError::Unavailable(
            "the call keeps changing; try again".into(),
        ))
    }
}

#[tonic::async_trait]
impl CallService for CallApi {
    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn start_call(
        &self,
        request: Request<pb::StartCallRequest>,
    ) -> Result<Response<pb::CallSession>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let meeting_id = id_field("meeting_id", &r.meeting_id)?;
        let callee = if r.callee_id.trim().is_empty() {
            None
        } else {
            Some(id_field("callee_id", &r.callee_id)?)
        };
        let loaded = access::load(
            &self.state.meeting_view,
            &meeting_id,
            &caller.user_id,
            caller.is_admin(),
        )
        .await?;
        if loaded.access.status.is_over() {
            return Err(AppError::FailedPrecondition {
                reason: "MEETING_NOT_JOINABLE",
                message: format!(
                    "the meeting is {}; no more calls",
                    loaded.access.status.as_str()
                ),
            }
            .into());
        }
        if !loaded.access.can_join() {
            return Err(AppError::permission_denied("you are not a member of this meeting").into());
        }
        if let Some(callee) = &callee {
            if *callee == caller.user_id {
                return Err(AppError::invalid("callee_id", "you cannot call yourself").into());
            }
            let theirs =
                access::load_fresh(&self.state.meeting_view, &meeting_id, callee, false).await?;
            if !theirs.access.is_member() {
                return Err(
                    AppError::invalid("callee_id", "is not a member of this meeting").into(),
                );
            }
        }

        let now = now_micros();
        if loaded.access.status == MeetingStatus::Scheduled {
            // Only who may start the meeting (host, co-hosts) starts it
            // with a call: an invitee must not take it out of their hands.
            if !loaded.access.can_run() {
                return Err(AppError::FailedPrecondition {
                    reason: "MEETING_NOT_STARTED",
                    message: "the host has not started this meeting yet; calls begin once it has"
                        .into(),
                }
                .into());
            }
            // A call starts its meeting (unless someone else just did).
            self.state
                .meetings
                .change_status(
                    &loaded.record,
                    MeetingStatus::Scheduled,
                    MeetingStatus::Ongoing,
                )
                .await?;
        }
        let status = CallStatus::initial(callee.is_some());
        let call_id = new_id();
        let call_draft = match &callee {
            Some(_) => {
                let me = users::find_by_id(&self.state.db, &caller.user_id)
                    .await?
                    .map(|u| u.display_name)
                    .unwrap_or_default();
                Some(
                    Draft::incoming_call(&meeting_id, &loaded.record.title, &me).for_call(&call_id),
                )
            }
            None => None,
        };
        let started = calls::create(
            &self.state.db,
            &call_id,
            &meeting_id,
            &caller.user_id,
            callee.as_deref(),
            status,
            call_draft.as_ref(),
            now,
        )
        .await?;
        let (record, notice) = match started {
            Started::New(record, notice) => (record, notice),
            // Asking again rings nothing new: the same call answers.
            Started::AlreadyRinging(record) => return Ok(Response::new(wire::call(&record))),
            Started::Limited(RingLimit::CallerTooFast(at)) => {
                let wait = crate::domain::time::wait_until(at, now);
                return Err(AppError::ResourceExhausted {
                    reason: "TOO_MANY_CALLS",
                    message: format!(
                        "you started {} calls in the last minute; try again in {} seconds",
                        call::MAX_CALLS_PER_MINUTE,
                        wait.as_secs()
                    ),
                    retry_after: Some(wait),
                }
                .into());
            }
            Started::Limited(RingLimit::CalleeBusy) => {
                return Err(AppError::ResourceExhausted {
                    reason: "CALLEE_BUSY",
                    message: "the callee has too many calls ringing; try again shortly".into(),
                    retry_after: Some(std::time::Duration::from_secs(5)),
                }
                .into());
            }
        };
        super::deliver(&self.state, notice.as_slice());
        tracing::info!(call_id = %record.id, %meeting_id, "call started");
        Ok(Response::new(self.announce(&record)))
    }

    #[tracing::instrument(skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn answer_call(
        &self,
        request: Request<pb::AnswerCallRequest>,
    ) -> Result<Response<pb::CallSession>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let record = self.load_call(&r.call_id).await?;
        if record.callee_id.as_deref() != Some(caller.user_id.as_str()) {
            return Err(AppError::permission_denied("only the callee may answer this call").into());
        }
        Ok(Response::new(
            self.change(record, |s| s.answer(r.accept)).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn end_call(
        &self,
        request: Request<pb::EndCallRequest>,
    ) -> Result<Response<pb::CallSession>, Status> {
        let caller = caller(&request)?;
        let record = self.load_call(&request.get_ref().call_id).await?;
        let is_party = record.caller_id == caller.user_id
            || record.callee_id.as_deref() == Some(&caller.user_id);
        if !is_party {
            return Err(AppError::permission_denied(
                "only the caller or the callee may end this call",
            )
            .into());
        }
        Ok(Response::new(self.change(record, CallStatus::end).await?))
    }

    #[tracing::instrument(skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn get_call(
        &self,
        request: Request<pb::GetCallRequest>,
    ) -> Result<Response<pb::CallSession>, Status> {
        let caller = caller(&request)?;
        let record = self.readable(&caller, &request.get_ref().call_id).await?;
        Ok(Response::new(wire::call(&record)))
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn list_calls(
        &self,
        request: Request<pb::ListCallsRequest>,
    ) -> Result<Response<pb::ListCallsResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let meeting_id = id_field("meeting_id", &r.meeting_id)?;
        let size = PageSize::parse(r.page_size)
            .map_err(|e| AppError::invalid("page_size", e.to_string()))?;
        access::member(&self.state.meeting_view, &meeting_id, &caller).await?;
        let page =
            self.state
                .page_tokens
                .page(format!("ListCalls|{meeting_id}"), &r.page_token, size)?;
        let rows = calls::list(&self.state.db, &meeting_id, page.cursor(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |c| c.id.clone());
        Ok(Response::new(pb::ListCallsResponse {
            calls: rows.iter().map(wire::call).collect(),
            next_page_token,
        }))
    }
}
