//! `unio.v1.MeetingService`: scheduling, invitations, status changes,
//! attendance, history and calendar export. Rules (limits, the status
//! machine, who may do what) live in `domain::meeting`.

use std::collections::{HashMap, HashSet};

use tonic::{Request, Response, Status};

use super::{
    access::{self, Loaded, meeting_not_found},
    id_field,
};
use crate::wire;
use crate::{
    auth::{Caller, caller},
    domain::{
        Email, PageSize,
        calendar::{self, Attendee, CalendarEvent},
        meeting::{
            self, Access, Description, IllegalTransition, InviteStatus, JoinPolicy, MeetingStatus,
            Title,
        },
        new_id,
        notification::Draft,
        parse_id,
        recurrence::{self, TimeZone},
        report::{self, Stay},
        time::{from_timestamp, now_micros, to_timestamp},
    },
    error::{AppError, Violations},
    proto::pb::{self, meeting_service_server::MeetingService},
    realtime::bus::{BusEvent, Topic},
    state::AppState,
    store::{
        invites::{self, InviteScope, Invitee},
        ledger,
        meetings::{self, ListFilter, MeetingChanges, MeetingRecord, NewMeeting, NewSeries, Scope},
        participants, reports,
        users::{self, UserRecord},
    },
};

pub struct MeetingApi {
    state: AppState,
}

/// What UpdateMeeting's mask may name.
const UPDATABLE: &str = "title, description, start_time, duration_minutes, join_policy, waiting_room, locked, co_host_ids";

/// Starting and ending: the host and co-hosts (DESIGN §10).
const RUNS: (fn(&Access) -> bool, &str) = (
    Access::can_run,
    "only the host or a co-host may start or end the meeting",
);

fn not_invited() -> AppError {
    AppError::permission_denied("you are not a member of this meeting")
}

fn read_only(status: MeetingStatus) -> AppError {
    AppError::FailedPrecondition {
        reason: "MEETING_READ_ONLY",
        message: format!(
            "the meeting is {}; it can no longer be changed",
            status.as_str()
        ),
    }
}

fn illegal(err: IllegalTransition) -> AppError {
    AppError::FailedPrecondition {
        reason: "INVALID_STATUS_TRANSITION",
        message: err.to_string(),
    }
}

/// Keyset cursor `<start micros>:<id>` of meeting lists.
fn encode_cursor(record: &MeetingRecord) -> String {
    format!("{}:{}", record.start_at, record.id)
}

fn decode_cursor(cursor: &str) -> Option<meetings::Cursor> {
    let (at, id) = cursor.split_once(':')?;
    Some((at.parse().ok()?, id.to_owned()))
}

fn join_policy(raw: i32, field: &str, v: &mut Violations) -> Option<JoinPolicy> {
    match pb::JoinPolicy::try_from(raw) {
        Ok(pb::JoinPolicy::Unspecified | pb::JoinPolicy::InvitedOnly) => {
            Some(JoinPolicy::InvitedOnly)
        }
        Ok(pb::JoinPolicy::AnyoneWithLink) => Some(JoinPolicy::AnyoneWithLink),
        Err(_) => {
            v.add(
                field,
                "must be JOIN_POLICY_INVITED_ONLY or JOIN_POLICY_ANYONE_WITH_LINK",
            );
            None
        }
    }
}

/// `m` as a calendar event (no URL, rule or exceptions yet).
fn calendar_event<'a>(
    m: &'a MeetingRecord,
    host: &'a UserRecord,
    attendees: &'a [(invites::InviteRecord, Option<String>)],
    stamp: i64,
) -> CalendarEvent<'a> {
    CalendarEvent {
        uid: &m.id,
        title: &m.title,
        description: &m.description,
        start: m.start_at,
        duration_minutes: m.duration_minutes,
        status: m.status(),
        url: "",
        sequence: m.revision,
        created: m.created_at,
        last_modified: m.updated_at,
        stamp,
        organizer: Attendee {
            name: Some(&host.display_name),
            email: &host.email,
        },
        attendees: attendees
            .iter()
            .map(|(invite, name)| {
                (
                    Attendee {
                        name: name.as_deref(),
                        email: &invite.email,
                    },
                    invite.status(),
                )
            })
            .collect(),
        rule: None,
        exdates: Vec::new(),
        recurrence_id: None,
        last_start: None,
    }
}

/// Whether a change reaches the later occurrences of a series too.
fn following(raw: i32) -> Result<bool, AppError> {
    match pb::RecurrenceScope::try_from(raw) {
        Ok(pb::RecurrenceScope::Unspecified | pb::RecurrenceScope::This) => Ok(false),
        Ok(pb::RecurrenceScope::ThisAndFollowing) => Ok(true),
        Err(_) => Err(AppError::invalid(
            "scope",
            "must be RECURRENCE_SCOPE_THIS or RECURRENCE_SCOPE_THIS_AND_FOLLOWING",
        )),
    }
}

impl MeetingApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn load(&self, caller: &Caller, meeting_id: &str) -> Result<Loaded, AppError> {
        access::load(
            &self.state.meeting_view,
            meeting_id,
            &caller.user_id,
            caller.is_admin(),
        )
        .await
    }

    /// Tells whoever holds or caches meeting `meeting_id` that it changed.
    fn changed(&self, meeting_id: &str, event: BusEvent) {
        self.state
            .bus
            .publish(&Topic::Meeting(meeting_id.to_owned()), event);
    }

    /// Loads a meeting the caller may read.
    async fn viewable(&self, caller: &Caller, raw_id: &str) -> Result<Loaded, AppError> {
        let id = id_field("meeting_id", raw_id)?;
        let loaded = self.load(caller, &id).await?;
        if loaded.access.is_removed() {
            return Err(access::removed_by_host());
        }
        if !loaded.access.can_view() {
            return Err(not_invited());
        }
        Ok(loaded)
    }

    /// Loads a meeting the caller is a member of (host, invitee who did not
    /// decline, participant, admin): attendance and invitee addresses are
    /// theirs to see, not every link holder's.
    async fn member_view(&self, caller: &Caller, raw_id: &str) -> Result<Loaded, AppError> {
        let id = id_field("meeting_id", raw_id)?;
        access::member(&self.state.meeting_view, &id, caller).await
    }

    /// Loads a meeting the caller hosts.
    async fn managed(
        &self,
        caller: &Caller,
        raw_id: &str,
        field: &str,
    ) -> Result<Loaded, AppError> {
        self.permitted(
            caller,
            raw_id,
            field,
            Access::can_manage,
            "only the host may do this",
        )
        .await
    }

    /// Loads a meeting on which `allowed` lets the caller act; `denied`
    /// says who may, to a caller who may read the meeting.
    async fn permitted(
        &self,
        caller: &Caller,
        raw_id: &str,
        field: &str,
        allowed: fn(&Access) -> bool,
        denied: &str,
    ) -> Result<Loaded, AppError> {
        let id = id_field(field, raw_id)?;
        let loaded = self.load(caller, &id).await?;
        if !allowed(&loaded.access) {
            return Err(if loaded.access.is_removed() {
                access::removed_by_host()
            } else if loaded.access.can_view() {
                AppError::permission_denied(denied)
            } else {
                not_invited()
            });
        }
        Ok(loaded)
    }

    /// Parses `raw` as the new co-hosts: ids of members of the meeting,
    /// not its host, at most [`meeting::MAX_CO_HOSTS`]; duplicates collapse.
    async fn co_hosts(
        &self,
        record: &MeetingRecord,
        raw: &[String],
        v: &mut Violations,
    ) -> Result<Option<String>, AppError> {
        const FIELD: &str = "meeting.co_host_ids";
        if raw.len() > meeting::MAX_CO_HOSTS {
            v.add(FIELD, format!("at most {} co-hosts", meeting::MAX_CO_HOSTS));
            return Ok(None);
        }
        let mut ids: Vec<String> = Vec::new();
        for (i, raw_id) in raw.iter().enumerate() {
            let Ok(id) = parse_id(raw_id) else {
                v.add(&format!("{FIELD}[{i}]"), "must be a user id (UUID)");
                continue;
            };
            if id == record.host_id {
                v.add(&format!("{FIELD}[{i}]"), "is the host already");
                continue;
            }
            if ids.contains(&id) {
                continue;
            }
            // Read fresh: a caller must not fill the view with entries for
            // whomever they name.
            let member =
                match access::load_fresh(&self.state.meeting_view, &record.id, &id, false).await {
                    Ok(loaded) => loaded.access.is_member(),
                    Err(AppError::NotFound { .. }) => false,
                    Err(other) => return Err(other),
                };
            if !member || users::find_by_id(&self.state.db, &id).await?.is_none() {
                v.add(
                    &format!("{FIELD}[{i}]"),
                    "must be a member of the meeting (the host, an invitee who did not decline, or a past participant)",
                );
                continue;
            }
            ids.push(id);
        }
        Ok(Some(ids.join(" ")))
    }

    fn to_pb(&self, record: &MeetingRecord) -> pb::Meeting {
        wire::meeting(record, &self.state.config.public_url)
    }

    /// Parses invitee addresses under `field`: valid, at most 200, not the
    /// host's, duplicates collapsed (first spelling wins).
    fn invitees(
        &self,
        raw: &[String],
        host_email_key: &str,
        field: &str,
        v: &mut Violations,
    ) -> Vec<Email> {
        if raw.len() > meeting::MAX_INVITES_PER_CALL {
            v.add(
                field,
                format!(
                    "at most {} addresses per call",
                    meeting::MAX_INVITES_PER_CALL
                ),
            );
            return Vec::new();
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, address) in raw.iter().enumerate() {
            let name = format!("{field}[{i}]");
            let Some(email) = v.check(&name, Email::parse(address)) else {
                continue;
            };
            if email.key() == host_email_key {
                v.add(&name, "the host cannot invite themself");
                continue;
            }
            if seen.insert(email.key().to_owned()) {
                out.push(email);
            }
        }
        out
    }

    /// The caller's own account (hosts need their address and name).
    /// Each invitation may be an email to anyone, so inviting is bounded:
    /// only a host who proved their own address invites; a meeting holds at
    /// most `UNIO_MAX_INVITES_PER_MEETING`; one host sends at most
    /// `UNIO_MAX_INVITES_PER_DAY` a day, counted in a ledger that deleting
    /// meetings does not reset (an address invited again counts again, so
    /// the check errs low).
    async fn check_invite_limits(
        &self,
        me: &UserRecord,
        meeting_id: &str,
        adding: usize,
    ) -> Result<(), AppError> {
        if adding == 0 {
            return Ok(());
        }
        if !me.email_verified {
            return Err(AppError::FailedPrecondition {
                reason: "EMAIL_NOT_VERIFIED",
                message: "verify your own email address before inviting others \
                          (see SendVerificationEmail)"
                    .into(),
            });
        }
        let limits = &self.state.config.limits;
        let adding = adding as i64;
        let in_meeting = invites::count_in_meeting(&self.state.db, meeting_id).await?;
        if in_meeting + adding > limits.max_invites_per_meeting {
            return Err(AppError::ResourceExhausted {
                reason: "TOO_MANY_INVITES",
                message: format!(
                    "a meeting may have at most {} invitations",
                    limits.max_invites_per_meeting
                ),
                retry_after: None,
            });
        }
        let now = now_micros();
        let day = 86_400_000_000;
        let spent = ledger::spend(
            &self.state.db,
            &format!("invites:{}", me.id),
            adding,
            limits.max_invites_per_day,
            day,
            &me.id,
            now,
        )
        .await?;
        if let Err(free_at) = spent {
            let wait = crate::domain::time::wait_until(free_at, now);
            return Err(AppError::ResourceExhausted {
                reason: "TOO_MANY_INVITES",
                message: format!(
                    "you may send at most {} invitations a day; try again later",
                    limits.max_invites_per_day
                ),
                retry_after: Some(wait),
            });
        }
        Ok(())
    }

    /// Applies `changes` to `record` and the later occurrences of its
    /// series not over; a new start moves each by the same amount. Changed
    /// from the first occurrence, the series' own values change too.
    async fn update_following(
        &self,
        record: &MeetingRecord,
        series_id: &str,
        changes: &MeetingChanges<'_>,
        now: i64,
    ) -> Result<Vec<MeetingRecord>, AppError> {
        // Later occurrences move by the same time on the series' wall clock.
        let zone = TimeZone::from_db(&record.time_zone);
        let shift = changes
            .start_at
            .map(|start| zone.local_delta(record.start_at, start));
        let later = self.later_occurrences(record, None).await?;
        let mut targets = vec![(record.id.as_str(), changes.start_at)];
        for occurrence in later.iter().filter(|m| !m.status().is_over()) {
            let start = shift.map(|d| zone.shift_local(occurrence.start_at, d));
            if start.is_some_and(|at| at > meeting::LAST_START || !zone.covers(at)) {
                return Err(AppError::invalid(
                    "meeting.start_time",
                    "moves a later occurrence past the end of its time zone's known rules (2060)",
                ));
            }
            targets.push((occurrence.id.as_str(), start));
        }
        let series = meetings::find_series(&self.state.db, series_id).await?;
        let master = series
            .filter(|s| Some(s.start_at) == record.occurrence_at)
            .filter(|_| {
                changes.title.is_some()
                    || changes.description.is_some()
                    || changes.duration_minutes.is_some()
            })
            .map(|s| s.id);
        Ok(meetings::update_all(&self.state.db, &targets, changes, master.as_deref(), now).await?)
    }

    async fn me(&self, caller: &Caller) -> Result<UserRecord, AppError> {
        users::find_by_id(&self.state.db, &caller.user_id)
            .await?
            .ok_or_else(|| {
                AppError::unauthenticated("TOKEN_REVOKED", "your account no longer exists")
            })
    }

    /// The occurrences of `record`'s series after it that are still
    /// `status` (none for a single meeting).
    async fn later_occurrences(
        &self,
        record: &MeetingRecord,
        status: Option<MeetingStatus>,
    ) -> Result<Vec<MeetingRecord>, AppError> {
        let Some(series_id) = &record.series_id else {
            return Ok(Vec::new());
        };
        let later = meetings::occurrences(&self.state.db, series_id, record.occurrence_at).await?;
        Ok(later
            .into_iter()
            .filter(|m| m.id != record.id)
            .filter(|m| status.is_none_or(|s| m.status() == s))
            .collect())
    }

    /// Runs one status change (start, end, cancel), on the later scheduled
    /// occurrences of the series too when `following`.
    async fn change_status(
        &self,
        caller: &Caller,
        raw_id: &str,
        step: fn(MeetingStatus) -> Result<MeetingStatus, IllegalTransition>,
        (allowed, denied): (fn(&Access) -> bool, &str),
        following: bool,
    ) -> Result<pb::Meeting, AppError> {
        let loaded = self
            .permitted(caller, raw_id, "meeting_id", allowed, denied)
            .await?;
        let from = loaded.record.status();
        let to = step(from).map_err(illegal)?;
        let later = if following {
            self.later_occurrences(&loaded.record, Some(from)).await?
        } else {
            Vec::new()
        };
        let records: Vec<&MeetingRecord> = std::iter::once(&loaded.record).chain(&later).collect();
        let moved = self
            .state
            .meetings
            .change_statuses(&records, from, to)
            .await?;
        match moved.into_iter().find(|m| m.id == loaded.record.id) {
            Some(record) => Ok(self.to_pb(&record)),
            // Someone changed it between our read and write: judge again.
            None => {
                let now = meetings::find(&self.state.db, &loaded.record.id)
                    .await?
                    .ok_or_else(|| meeting_not_found(&loaded.record.id))?;
                Err(step(now.status())
                    .err()
                    .map(illegal)
                    .unwrap_or_else(|| read_only(now.status())))
            }
        }
    }
}

#[tonic::async_trait]
impl MeetingService for MeetingApi {
    #[tracing::instrument(skip_all)]
    async fn create_meeting(
        &self,
        request: Request<pb::CreateMeetingRequest>,
    ) -> Result<Response<pb::Meeting>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let me = self.me(&caller).await?;
        let host_key = me.email.to_lowercase();
        let now = now_micros();
        let mut v = Violations::new();
        let title = v.check("title", Title::parse(&r.title));
        let description = v.check("description", Description::parse(&r.description));
        let start_at = v.check(
            "start_time",
            meeting::parse_start_time(r.start_time.as_ref(), now),
        );
        let duration = v.check(
            "duration_minutes",
            meeting::parse_duration_minutes(r.duration_minutes),
        );
        let policy = join_policy(r.join_policy, "join_policy", &mut v);
        let zone = v.check("time_zone", TimeZone::parse(&r.time_zone));
        let emails = self.invitees(&r.invitee_emails, &host_key, "invitee_emails", &mut v);
        let (
            Some(title),
            Some(description),
            Some(start_at),
            Some(duration),
            Some(policy),
            Some(zone),
        ) = (title, description, start_at, duration, policy, zone)
        else {
            return Err(v.into_error().into());
        };
        let plan = if r.recurrence.trim().is_empty() {
            None
        } else {
            // Expanding a rule is CPU work: off the async workers.
            let rule = r.recurrence.clone();
            let planned =
                tokio::task::spawn_blocking(move || recurrence::plan(&rule, zone, start_at))
                    .await
                    .map_err(|e| AppError::internal(format!("expanding the rule: {e}")))?;
            v.check("recurrence", planned)
        };
        v.finish()?;

        let id = new_id();
        let series_id = new_id();
        let occurrences: Vec<(String, i64)> = plan
            .as_ref()
            .map(|plan| {
                plan.occurrences
                    .iter()
                    .enumerate()
                    .map(|(i, &at)| (if i == 0 { id.clone() } else { new_id() }, at))
                    .collect()
            })
            .unwrap_or_default();
        let series = plan.as_ref().map(|plan| NewSeries {
            id: &series_id,
            recurrence: &plan.rule,
            occurrences: &occurrences,
        });
        let invite_ids: Vec<String> = emails.iter().map(|_| new_id()).collect();
        let invitees: Vec<Invitee<'_>> = emails
            .iter()
            .zip(&invite_ids)
            .map(|(email, id)| Invitee {
                id,
                email: email.as_str(),
                email_key: email.key(),
            })
            .collect();
        let new = NewMeeting {
            id: &id,
            host_id: &caller.user_id,
            title: title.as_str(),
            description: description.as_str(),
            // A series starts at its first occurrence (whole seconds).
            start_at: occurrences.first().map_or(start_at, |(_, at)| *at),
            duration_minutes: duration,
            join_policy: policy,
            time_zone: zone.name(),
            now,
        };
        self.check_invite_limits(&me, &id, invitees.len()).await?;
        let mut draft = Draft::invite(&id, title.as_str(), &me.display_name).mailed();
        if let Some(plan) = &plan {
            draft.body = format!(
                "{} invited you to \"{}\", a series of {} meetings.",
                me.display_name,
                title.as_str(),
                plan.occurrences.len()
            );
        }
        let (record, _, notices) =
            meetings::create(&self.state.db, &new, series.as_ref(), &invitees, &draft).await?;
        super::deliver(&self.state, &notices);
        tracing::info!(
            meeting_id = %record.id,
            invites = invitees.len(),
            occurrences = occurrences.len().max(1),
            "meeting created"
        );
        Ok(Response::new(self.to_pb(&record)))
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn get_meeting(
        &self,
        request: Request<pb::GetMeetingRequest>,
    ) -> Result<Response<pb::Meeting>, Status> {
        let caller = caller(&request)?;
        let loaded = self
            .viewable(&caller, &request.get_ref().meeting_id)
            .await?;
        Ok(Response::new(self.to_pb(&loaded.record)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_meetings(
        &self,
        request: Request<pb::ListMeetingsRequest>,
    ) -> Result<Response<pb::ListMeetingsResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let mut statuses = Vec::new();
        for (i, raw) in r.statuses.iter().enumerate() {
            match pb::MeetingStatus::try_from(*raw) {
                Ok(pb::MeetingStatus::Scheduled) => statuses.push(MeetingStatus::Scheduled),
                Ok(pb::MeetingStatus::Ongoing) => statuses.push(MeetingStatus::Ongoing),
                Ok(pb::MeetingStatus::Completed) => statuses.push(MeetingStatus::Completed),
                Ok(pb::MeetingStatus::Cancelled) => statuses.push(MeetingStatus::Cancelled),
                _ => v.add(
                    &format!("statuses[{i}]"),
                    "must be a MEETING_STATUS other than UNSPECIFIED",
                ),
            }
        }
        statuses.sort_by_key(|s| s.as_str());
        statuses.dedup();
        let scope = match pb::MeetingRole::try_from(r.role) {
            Ok(pb::MeetingRole::Hosted) => Scope::Hosted,
            Ok(pb::MeetingRole::Invited) => Scope::Invited,
            Ok(pb::MeetingRole::Any | pb::MeetingRole::Unspecified) => Scope::Any,
            Err(_) => {
                v.add(
                    "role",
                    "must be MEETING_ROLE_HOSTED, MEETING_ROLE_INVITED or MEETING_ROLE_ANY",
                );
                Scope::Any
            }
        };
        let start_after = r
            .start_after
            .as_ref()
            .and_then(|ts| v.check("start_after", from_timestamp(ts)));
        let start_before = r
            .start_before
            .as_ref()
            .and_then(|ts| v.check("start_before", from_timestamp(ts)));
        if let (Some(after), Some(before)) = (start_after, start_before)
            && after >= before
        {
            v.add("start_before", "must be later than start_after");
        }
        let page = self.state.page_tokens.page_in(
            &mut v,
            format!(
                "ListMeetings|{}|{scope:?}|{statuses:?}|{start_after:?}|{start_before:?}",
                caller.user_id
            ),
            r.page_size,
            &r.page_token,
        );
        let Some(page) = page else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let filter = ListFilter {
            statuses,
            start_after,
            start_before,
        };
        let rows = meetings::list_for_user(
            &self.state.db,
            &caller.user_id,
            scope,
            &filter,
            page.key(decode_cursor)?.as_ref(),
            page.limit(),
        )
        .await?;
        let (rows, next_page_token) = page.finish(rows, encode_cursor);
        Ok(Response::new(pb::ListMeetingsResponse {
            meetings: rows.iter().map(|m| self.to_pb(m)).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_meeting(
        &self,
        request: Request<pb::UpdateMeetingRequest>,
    ) -> Result<Response<pb::Meeting>, Status> {
        let caller = caller(&request)?;
        let pb::UpdateMeetingRequest {
            meeting,
            update_mask,
            scope,
        } = request.into_inner();
        let following = following(scope)?;
        let Some(meeting) = meeting else {
            return Err(AppError::invalid("meeting", "is required").into());
        };
        let paths = update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(AppError::invalid(
                "update_mask",
                format!("must name at least one of {UPDATABLE}"),
            )
            .into());
        }
        let id = id_field("meeting.id", &meeting.id)?;
        let loaded = self.load(&caller, &id).await?;
        let access = loaded.access;
        if access.is_removed() {
            return Err(access::removed_by_host().into());
        }
        if !access.can_view() {
            return Err(not_invited().into());
        }
        // Each path asks its own permission (DESIGN §10).
        for path in &paths {
            let allowed = match path.as_str() {
                "waiting_room" | "locked" => access.can_run() || access.can_schedule(),
                "co_host_ids" => access.can_schedule(),
                _ => access.can_schedule(),
            };
            if !allowed {
                return Err(AppError::permission_denied(match path.as_str() {
                    "waiting_room" | "locked" => {
                        "only the host or a co-host may switch the waiting room or the lock"
                    }
                    "co_host_ids" => "only the host may name co-hosts",
                    _ if access.can_run() => "co-hosts may change waiting_room and locked only",
                    _ => "only the host may do this",
                })
                .into());
            }
        }
        // The later occurrences are the host's to change, not a co-host's
        // of this one.
        let series = match &loaded.record.series_id {
            Some(series_id) if following => {
                if !access.can_schedule() {
                    return Err(AppError::permission_denied(
                        "only the host may change the later occurrences of a series",
                    )
                    .into());
                }
                Some(series_id.clone())
            }
            _ => None,
        };
        let status = loaded.record.status();
        if status.is_over() {
            return Err(read_only(status).into());
        }

        let now = now_micros();
        let mut v = Violations::new();
        let (mut title, mut description, mut co_hosts) = (None, None, None);
        let mut changes = MeetingChanges::default();
        for path in &paths {
            match path.as_str() {
                "title" => title = v.check("meeting.title", Title::parse(&meeting.title)),
                "description" => {
                    description = v.check(
                        "meeting.description",
                        Description::parse(&meeting.description),
                    )
                }
                "start_time" => {
                    changes.start_at = v.check(
                        "meeting.start_time",
                        meeting::parse_start_time(meeting.start_time.as_ref(), now),
                    );
                }
                "duration_minutes" => {
                    changes.duration_minutes = v.check(
                        "meeting.duration_minutes",
                        meeting::parse_duration_minutes(meeting.duration_minutes),
                    );
                }
                "join_policy" => {
                    changes.join_policy =
                        join_policy(meeting.join_policy, "meeting.join_policy", &mut v)
                }
                "waiting_room" => changes.waiting_room = Some(meeting.waiting_room),
                "locked" => changes.locked = Some(meeting.locked),
                "co_host_ids" => {
                    co_hosts = self
                        .co_hosts(&loaded.record, &meeting.co_host_ids, &mut v)
                        .await?;
                }
                other => v.add(
                    "update_mask.paths",
                    format!("{other:?} cannot be updated; use {UPDATABLE}"),
                ),
            }
        }
        if series.is_some() && co_hosts.is_some() {
            v.add(
                "scope",
                "co-hosts are named per occurrence: use RECURRENCE_SCOPE_THIS with co_host_ids",
            );
        }
        if loaded.record.series_id.is_some()
            && let Some(at) = changes.start_at
            && !TimeZone::from_db(&loaded.record.time_zone).covers(at)
        {
            v.add(
                "meeting.start_time",
                "an occurrence of a series in a time zone other than UTC must start before 2060",
            );
        }
        v.finish()?;
        changes.co_host_ids = co_hosts.as_deref();
        if changes.start_at.is_some() && status != MeetingStatus::Scheduled {
            return Err(AppError::FailedPrecondition {
                reason: "MEETING_ALREADY_STARTED",
                message: "the meeting has started; its start time can no longer change".into(),
            }
            .into());
        }
        changes.title = title.as_ref().map(Title::as_str);
        changes.description = description.as_ref().map(Description::as_str);
        let updated = match &series {
            None => meetings::update(&self.state.db, &loaded.record.id, &changes, now)
                .await?
                .into_iter()
                .collect(),
            Some(series_id) => {
                self.update_following(&loaded.record, series_id, &changes, now)
                    .await?
            }
        };
        for record in &updated {
            // A stricter join policy can shut out link holders, and a
            // co-host named or dropped gains or loses powers.
            self.changed(
                &record.id,
                if changes.join_policy.is_some() || changes.co_host_ids.is_some() {
                    BusEvent::AccessChanged
                } else {
                    BusEvent::DataChanged
                },
            );
            if changes.waiting_room.is_some()
                || changes.locked.is_some()
                || changes.co_host_ids.is_some()
            {
                // The room hears of its new settings (and roles).
                self.state.hub.settings_changed(&self.to_pb(record));
            }
        }
        match updated.into_iter().find(|m| m.id == loaded.record.id) {
            Some(record) => Ok(Response::new(self.to_pb(&record))),
            None => {
                let now = meetings::find(&self.state.db, &loaded.record.id)
                    .await?
                    .ok_or_else(|| meeting_not_found(&loaded.record.id))?;
                Err(read_only(now.status()).into())
            }
        }
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn delete_meeting(
        &self,
        request: Request<pb::DeleteMeetingRequest>,
    ) -> Result<Response<pb::DeleteMeetingResponse>, Status> {
        let caller = caller(&request)?;
        let id = id_field("meeting_id", &request.get_ref().meeting_id)?;
        let loaded = self.load(&caller, &id).await?;
        if !loaded.access.can_delete() {
            return Err(if loaded.access.can_view() {
                AppError::permission_denied("only the host or an admin may delete a meeting")
            } else {
                not_invited()
            }
            .into());
        }
        if !self.state.meetings.delete(&id).await? {
            return Err(meeting_not_found(&id).into());
        }
        tracing::info!(meeting_id = %id, by = %caller.user_id, "meeting deleted");
        Ok(Response::new(pb::DeleteMeetingResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn start_meeting(
        &self,
        request: Request<pb::StartMeetingRequest>,
    ) -> Result<Response<pb::Meeting>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.change_status(
                &caller,
                &request.get_ref().meeting_id,
                MeetingStatus::start,
                RUNS,
                false,
            )
            .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn end_meeting(
        &self,
        request: Request<pb::EndMeetingRequest>,
    ) -> Result<Response<pb::Meeting>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.change_status(
                &caller,
                &request.get_ref().meeting_id,
                MeetingStatus::end,
                RUNS,
                false,
            )
            .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn cancel_meeting(
        &self,
        request: Request<pb::CancelMeetingRequest>,
    ) -> Result<Response<pb::Meeting>, Status> {
        let caller = caller(&request)?;
        let following = following(request.get_ref().scope)?;
        Ok(Response::new(
            self.change_status(
                &caller,
                &request.get_ref().meeting_id,
                MeetingStatus::cancel,
                (Access::can_schedule, "only the host may cancel the meeting"),
                following,
            )
            .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn invite_participants(
        &self,
        request: Request<pb::InviteParticipantsRequest>,
    ) -> Result<Response<pb::InviteParticipantsResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let loaded = self.managed(&caller, &r.meeting_id, "meeting_id").await?;
        if loaded.record.status().is_over() {
            return Err(read_only(loaded.record.status()).into());
        }
        let me = self.me(&caller).await?;
        let host_key = me.email.to_lowercase();
        let mut v = Violations::new();
        if r.emails.is_empty() {
            v.add("emails", "name at least one address");
        }
        let emails = self.invitees(&r.emails, &host_key, "emails", &mut v);
        v.finish()?;
        let ids: Vec<String> = emails.iter().map(|_| new_id()).collect();
        let invitees: Vec<Invitee<'_>> = emails
            .iter()
            .zip(&ids)
            .map(|(email, id)| Invitee {
                id,
                email: email.as_str(),
                email_key: email.key(),
            })
            .collect();
        self.check_invite_limits(&me, &loaded.record.id, invitees.len())
            .await?;
        let draft =
            Draft::invite(&loaded.record.id, &loaded.record.title, &me.display_name).mailed();
        // Invitations are to the series: the other occurrences not over
        // get them too, silently.
        let siblings: Vec<MeetingRecord> = match &loaded.record.series_id {
            Some(series_id) => meetings::occurrences(&self.state.db, series_id, None)
                .await?
                .into_iter()
                .filter(|m| m.id != loaded.record.id && !m.status().is_over())
                .collect(),
            None => Vec::new(),
        };
        let also: Vec<&str> = siblings.iter().map(|m| m.id.as_str()).collect();
        let (invites, notices) = invites::invite(
            &self.state.db,
            &loaded.record.id,
            &also,
            &invitees,
            &draft,
            now_micros(),
        )
        .await?;
        self.changed(&loaded.record.id, BusEvent::DataChanged);
        for id in also {
            self.changed(id, BusEvent::DataChanged);
        }
        Ok(Response::new(pb::InviteParticipantsResponse {
            invites: {
                super::deliver(&self.state, &notices);
                invites.iter().map(wire::invite).collect()
            },
        }))
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn list_invites(
        &self,
        request: Request<pb::ListInvitesRequest>,
    ) -> Result<Response<pb::ListInvitesResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let size = v.check("page_size", PageSize::parse(r.page_size));
        let mut statuses = Vec::new();
        for (i, raw) in r.statuses.iter().enumerate() {
            match pb::InviteStatus::try_from(*raw) {
                Ok(pb::InviteStatus::Pending) => statuses.push(InviteStatus::Pending),
                Ok(pb::InviteStatus::Accepted) => statuses.push(InviteStatus::Accepted),
                Ok(pb::InviteStatus::Declined) => statuses.push(InviteStatus::Declined),
                _ => v.add(
                    &format!("statuses[{i}]"),
                    "must be an INVITE_STATUS other than UNSPECIFIED",
                ),
            }
        }
        statuses.sort_by_key(|s| s.as_str());
        statuses.dedup();
        let meeting_id = if r.meeting_id.trim().is_empty() {
            None
        } else {
            v.check("meeting_id", parse_id(&r.meeting_id))
        };
        let Some(size) = size else {
            return Err(v.into_error().into());
        };
        v.finish()?;

        // The host (or an admin) sees a meeting's invites; everyone else
        // sees only their own.
        let mut sees_all = false;
        if let Some(id) = &meeting_id {
            let loaded = self.load(&caller, id).await?;
            if !loaded.access.can_view() {
                return Err(not_invited().into());
            }
            sees_all = loaded.access.can_manage() || caller.is_admin();
        }
        let scope = match (&meeting_id, sees_all) {
            (Some(id), true) => InviteScope::Meeting(id),
            (id, _) => InviteScope::User {
                user_id: &caller.user_id,
                meeting_id: id.as_deref(),
            },
        };
        let page = self.state.page_tokens.page(
            format!(
                "ListInvites|{}|{meeting_id:?}|{sees_all}|{statuses:?}",
                caller.user_id
            ),
            &r.page_token,
            size,
        )?;
        let rows = invites::list(
            &self.state.db,
            scope,
            &statuses,
            page.cursor(),
            page.limit(),
        )
        .await?;
        let (rows, next_page_token) = page.finish(rows, |i| i.id.clone());
        Ok(Response::new(pb::ListInvitesResponse {
            invites: rows.iter().map(wire::invite).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(invite_id = %request.get_ref().invite_id))]
    async fn respond_to_invite(
        &self,
        request: Request<pb::RespondToInviteRequest>,
    ) -> Result<Response<pb::Invite>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let invite_id = v.check("invite_id", parse_id(&r.invite_id));
        let response = match pb::InviteStatus::try_from(r.response) {
            Ok(pb::InviteStatus::Accepted) => Some(InviteStatus::Accepted),
            Ok(pb::InviteStatus::Declined) => Some(InviteStatus::Declined),
            _ => {
                v.add(
                    "response",
                    "must be INVITE_STATUS_ACCEPTED or INVITE_STATUS_DECLINED",
                );
                None
            }
        };
        let (Some(invite_id), Some(response)) = (invite_id, response) else {
            return Err(v.into_error().into());
        };
        let invite = invites::find(&self.state.db, &invite_id)
            .await?
            .ok_or_else(|| {
                AppError::not_found("INVITE_NOT_FOUND", format!("no invite with id {invite_id}"))
            })?;
        if invite.user_id.as_deref() != Some(caller.user_id.as_str()) {
            return Err(
                AppError::permission_denied("this invite is addressed to someone else").into(),
            );
        }
        let me = self.me(&caller).await?;
        let title = meetings::find(&self.state.db, &invite.meeting_id)
            .await?
            .map(|m| m.title)
            .unwrap_or_default();
        let draft = Draft::invite_response(
            &invite.meeting_id,
            &title,
            &me.display_name,
            response == InviteStatus::Accepted,
        );
        match invites::respond(
            &self.state.db,
            &invite_id,
            &caller.user_id,
            response,
            &draft,
            now_micros(),
        )
        .await?
        {
            Some((updated, notice, siblings)) => {
                // A decline ends membership (of the whole series).
                self.changed(&invite.meeting_id, BusEvent::AccessChanged);
                for id in &siblings {
                    self.changed(id, BusEvent::AccessChanged);
                }
                super::deliver(&self.state, notice.as_slice());
                Ok(Response::new(wire::invite(&updated)))
            }
            None => {
                let status = meetings::find(&self.state.db, &invite.meeting_id)
                    .await?
                    .map(|m| m.status())
                    .unwrap_or(MeetingStatus::Cancelled);
                Err(read_only(status).into())
            }
        }
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn list_participants(
        &self,
        request: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let size = PageSize::parse(r.page_size)
            .map_err(|e| AppError::invalid("page_size", e.to_string()))?;
        let loaded = self.member_view(&caller, &r.meeting_id).await?;
        let page = self.state.page_tokens.page(
            format!("ListParticipants|{}", loaded.record.id),
            &r.page_token,
            size,
        )?;
        let rows = participants::list(
            &self.state.db,
            &loaded.record.id,
            page.cursor(),
            page.limit(),
        )
        .await?;
        let (rows, next_page_token) = page.finish(rows, |p| p.id.clone());
        Ok(Response::new(pb::ListParticipantsResponse {
            participants: rows.iter().map(wire::participant).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_meeting_history(
        &self,
        request: Request<pb::GetMeetingHistoryRequest>,
    ) -> Result<Response<pb::GetMeetingHistoryResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let page = self.state.page_tokens.page_in(
            &mut v,
            format!("GetMeetingHistory|{}", caller.user_id),
            r.page_size,
            &r.page_token,
        );
        let Some(page) = page else {
            return Err(v.into_error().into());
        };
        let rows = meetings::history_for_user(
            &self.state.db,
            &caller.user_id,
            page.key(decode_cursor)?.as_ref(),
            page.limit(),
        )
        .await?;
        let (rows, next_page_token) = page.finish(rows, encode_cursor);
        Ok(Response::new(pb::GetMeetingHistoryResponse {
            meetings: rows.iter().map(|m| self.to_pb(m)).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn export_calendar(
        &self,
        request: Request<pb::ExportCalendarRequest>,
    ) -> Result<Response<pb::ExportCalendarResponse>, Status> {
        let caller = caller(&request)?;
        let loaded = self
            .member_view(&caller, &request.get_ref().meeting_id)
            .await?;
        let record = &loaded.record;
        let host = users::find_by_id(&self.state.db, &record.host_id)
            .await?
            .ok_or_else(|| AppError::internal("meeting without a host"))?;
        let attendees = invites::attendees(&self.state.db, &record.id).await?;
        let stamp = now_micros();
        let url_of = |m: &MeetingRecord| format!("{}/m/{}", self.state.config.public_url, m.id);
        let url = url_of(record);
        let event = |m| calendar_event(m, &host, &attendees, stamp);
        let series = match &record.series_id {
            Some(id) => meetings::find_series(&self.state.db, id).await?,
            None => None,
        };
        let Some(series) = series else {
            let mut single = event(record);
            single.url = &url;
            return Ok(Response::new(pb::ExportCalendarResponse {
                ics: calendar::to_ics(&[single], TimeZone::UTC),
                content_type: "text/calendar; charset=utf-8".into(),
                filename: format!("{}.ics", record.id),
            }));
        };
        // The series: its master event with the rule, EXDATE for what was
        // cancelled or deleted, and an override for each occurrence that
        // differs from the master.
        let zone = TimeZone::from_db(&series.time_zone);
        let starts = recurrence::occurrences(&series.recurrence, zone, series.start_at);
        let existing = meetings::occurrences(&self.state.db, &series.id, None).await?;
        let by_start: HashMap<i64, &MeetingRecord> = existing
            .iter()
            .filter_map(|m| m.occurrence_at.map(|at| (at, m)))
            .collect();
        let mut exdates = Vec::new();
        let mut changed = Vec::new();
        for at in &starts {
            match by_start.get(at) {
                None => exdates.push(*at),
                Some(m) if m.status() == MeetingStatus::Cancelled => exdates.push(*at),
                Some(m)
                    if m.title != series.title
                        || m.description != series.description
                        || m.duration_minutes != series.duration_minutes
                        || m.start_at != *at =>
                {
                    changed.push((*m, url_of(m)))
                }
                Some(_) => {}
            }
        }
        let master = CalendarEvent {
            uid: &series.id,
            title: &series.title,
            description: &series.description,
            start: series.start_at,
            duration_minutes: series.duration_minutes,
            status: if exdates.len() == starts.len() {
                MeetingStatus::Cancelled
            } else {
                MeetingStatus::Scheduled
            },
            url: &url,
            sequence: series.revision,
            created: series.created_at,
            last_modified: series.updated_at,
            rule: Some(&series.recurrence),
            exdates,
            last_start: starts.last().copied(),
            ..event(record)
        };
        let mut events = vec![master];
        for (m, url) in &changed {
            events.push(CalendarEvent {
                uid: &series.id,
                url,
                recurrence_id: m.occurrence_at,
                ..event(m)
            });
        }
        Ok(Response::new(pb::ExportCalendarResponse {
            ics: calendar::to_ics(&events, zone),
            content_type: "text/calendar; charset=utf-8".into(),
            filename: format!("{}.ics", record.id),
        }))
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn get_meeting_report(
        &self,
        request: Request<pb::GetMeetingReportRequest>,
    ) -> Result<Response<pb::GetMeetingReportResponse>, Status> {
        let caller = caller(&request)?;
        let loaded = self
            .permitted(
                &caller,
                &request.get_ref().meeting_id,
                "meeting_id",
                Access::can_report,
                "only the host, co-hosts and admins see the report",
            )
            .await?;
        let record = &loaded.record;
        let (rows, counts) = tokio::try_join!(
            reports::stays(&self.state.db, &record.id),
            reports::counts(&self.state.db, &record.id),
        )?;
        let now = now_micros();
        let stays: Vec<Stay> = rows
            .iter()
            .map(|r| Stay {
                user_id: r.user_id.clone(),
                joined_at: r.joined_at,
                left_at: r.left_at,
            })
            .collect();
        // Stays still open count until now, or until the end of a meeting
        // that is over (a late resume must not make time grow for ever).
        let until = if record.status().is_over() {
            record.actual_end_at.unwrap_or(now).min(now)
        } else {
            now
        };
        let (attendees, peak) = report::summarize(&stays, until);
        let names: HashMap<&str, &str> = rows
            .iter()
            .map(|r| (r.user_id.as_str(), r.display_name.as_str()))
            .collect();
        let duration = match (record.actual_start_at, record.actual_end_at) {
            (Some(start), end) => (end.unwrap_or(now) - start).max(0) / 1_000_000,
            (None, _) => 0,
        };
        Ok(Response::new(pb::GetMeetingReportResponse {
            attendees: attendees
                .into_iter()
                .map(|a| pb::AttendeeReport {
                    display_name: names
                        .get(a.user_id.as_str())
                        .copied()
                        .unwrap_or_default()
                        .to_owned(),
                    user_id: a.user_id,
                    first_join_time: Some(to_timestamp(a.first_join)),
                    last_leave_time: a.last_leave.map(to_timestamp),
                    total_seconds: a.total / 1_000_000,
                    joins: i32::try_from(a.joins).unwrap_or(i32::MAX),
                })
                .collect(),
            peak_participants: i32::try_from(peak).unwrap_or(i32::MAX),
            chat_messages: counts.chat_messages,
            files_shared: counts.files_shared,
            calls: counts.calls,
            actual_duration_seconds: duration,
        }))
    }
}
