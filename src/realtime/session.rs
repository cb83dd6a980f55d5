//! The stream one participant reads: its bounded queue, heartbeats on idle
//! streams, the liveness deadline, and the way it ends.
//!
//! A `Stream` polled directly by tonic rather than a task per session: an
//! idle participant costs its queue and this struct, nothing that wakes.
//! It does not know the hub: a session that loses its client or goes
//! silent reports a [`Detached`] over a channel, and the hub's detach
//! task (which checks the slot's epoch) decides what that means.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    sync::mpsc,
    time::{Instant, Sleep},
};
use tokio_stream::Stream;
use tonic::Status;

use super::{
    queue,
    room::{self, CloseReason, DetachCause, SessionControl},
};
use crate::{
    error::AppError,
    proto::pb::{self, server_event::Event},
};

/// A session that lost its client or went silent, reported to the hub.
#[derive(Debug)]
pub struct Detached {
    pub control: Arc<SessionControl>,
    pub cause: DetachCause,
}

/// Where sessions report detaches. Unbounded, yet bounded by the number of
/// sessions: each reports at most once (a timed-out session is closed
/// before it is dropped).
pub type DetachSender = mpsc::UnboundedSender<Detached>;

pub struct SessionStream {
    rx: queue::Receiver,
    control: Arc<SessionControl>,
    detaches: DetachSender,
    /// The zero of `SessionControl::last_seen_ms`.
    started: Instant,
    heartbeat: Pin<Box<Sleep>>,
    /// When the last event went out. The heartbeat timer is not moved on
    /// each event (a timer-wheel update per recipient of every fan-out);
    /// when it fires early it is moved to this plus the interval.
    last_sent: Instant,
    liveness: Pin<Box<Sleep>>,
    ping_interval: Duration,
    ping_timeout: Duration,
    /// The last items of a stream that is ending.
    ending: VecDeque<Result<pb::ServerEvent, Status>>,
    finished: bool,
}

pub(super) fn error_event(code: &str, message: &str, request_id: &str) -> pb::ServerEvent {
    pb::ServerEvent {
        sequence: 0,
        event: Some(Event::Error(pb::ErrorEvent {
            code: code.into(),
            message: message.into(),
            request_id: request_id.into(),
        })),
    }
}

impl SessionStream {
    pub(super) fn new(
        rx: queue::Receiver,
        control: Arc<SessionControl>,
        (detaches, started): (DetachSender, Instant),
        ping_interval: Duration,
        ping_timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        Self {
            rx,
            control,
            detaches,
            started,
            heartbeat: Box::pin(tokio::time::sleep_until(now + ping_interval)),
            last_sent: now,
            liveness: Box::pin(tokio::time::sleep_until(now + ping_timeout)),
            ping_interval,
            ping_timeout,
            ending: VecDeque::new(),
            finished: false,
        }
    }

    /// Tells the hub; a hub that is gone has nothing left to detach.
    fn report(&self, cause: DetachCause) {
        // What is still queued is lost; a numbered event a resume replays,
        // one delivered outside the room's order nothing does.
        if self.rx.holds(room::unsequenced_replayable) {
            self.control.lose_unsequenced();
        }
        let _ = self.detaches.send(Detached {
            control: self.control.clone(),
            cause,
        });
    }

    pub fn meeting_id(&self) -> &str {
        &self.control.meeting_id
    }

    pub fn session_id(&self) -> &str {
        &self.control.session_id
    }

    pub fn control(&self) -> &Arc<SessionControl> {
        &self.control
    }

    /// Queues what a stream closed for `reason` says last.
    fn finish(&mut self, reason: Option<CloseReason>) {
        self.finished = true;
        let unavailable = |message: &str| Err(Status::from(AppError::Unavailable(message.into())));
        match reason {
            Some(CloseReason::Kicked) => self.ending.push_back(Err(Status::from(
                AppError::denied("KICKED", "the host removed you from this meeting"),
            ))),
            Some(CloseReason::SlowConsumer) => {
                self.ending.push_back(Ok(error_event(
                    "SLOW_CONSUMER",
                    "you fell behind the room; join again with your resume_token and last sequence",
                    "",
                )));
                self.ending
                    .push_back(unavailable("fell behind the room; resume"));
            }
            Some(CloseReason::TimedOut) => {
                self.ending.push_back(Ok(error_event(
                    "PING_TIMEOUT",
                    "nothing received from you within ping_timeout; join again with your resume_token",
                    "",
                )));
                self.ending.push_back(unavailable("ping timeout; resume"));
            }
            Some(CloseReason::Replaced) => self.ending.push_back(Ok(error_event(
                "SESSION_REPLACED",
                "this participant resumed on another stream",
                "",
            ))),
            Some(CloseReason::Shutdown) => self.ending.push_back(unavailable(
                "the server is shutting down; reconnect and resume",
            )),
            Some(CloseReason::Denied) => self.ending.push_back(Ok(error_event(
                "LOBBY_DENIED",
                "the host did not let you in",
                "",
            ))),
            Some(CloseReason::Left | CloseReason::MeetingEnded) | None => {}
        }
    }
}

impl Stream for SessionStream {
    type Item = Result<pb::ServerEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.ending.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(event)) => {
                    if event.sequence > 0 {
                        this.control.mark_sent(event.sequence);
                    }
                    this.last_sent = Instant::now();
                    return Poll::Ready(Some(Ok((*event).clone())));
                }
                // The hub dropped our sender: it closed us, and said why.
                Poll::Ready(None) => {
                    let reason = this.control.reason();
                    this.finish(reason);
                    continue;
                }
                Poll::Pending => {}
            }
            if this.liveness.as_mut().poll(cx).is_ready() {
                let deadline = this.started
                    + Duration::from_millis(this.control.last_seen_ms())
                    + this.ping_timeout;
                if Instant::now() >= deadline {
                    this.control.close(CloseReason::TimedOut);
                    this.report(DetachCause::TimedOut);
                    this.finish(Some(CloseReason::TimedOut));
                } else {
                    this.liveness.as_mut().reset(deadline);
                }
                continue;
            }
            if this.heartbeat.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                let due = this.last_sent + this.ping_interval;
                if now < due {
                    // Events went out meanwhile: not idle yet.
                    this.heartbeat.as_mut().reset(due);
                    continue;
                }
                this.last_sent = now;
                this.heartbeat.as_mut().reset(now + this.ping_interval);
                return Poll::Ready(Some(Ok(pb::ServerEvent {
                    sequence: 0,
                    event: Some(Event::Heartbeat(pb::Heartbeat {})),
                })));
            }
            return Poll::Pending;
        }
    }
}

impl Drop for SessionStream {
    /// A stream dropped while the hub still had it open lost its client:
    /// the participant keeps its slot for the resume grace period.
    fn drop(&mut self) {
        if self.control.reason().is_none() {
            self.report(DetachCause::Disconnected);
        }
    }
}
