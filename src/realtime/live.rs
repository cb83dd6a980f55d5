//! Live access (DESIGN §8): a long-lived stream lasts only as long as the
//! grounds it was opened on.
//!
//! A [`Guard`] watches the topics a stream holds access under (its
//! session, its user, its meeting) with a [`Signal`]. Each access change on
//! one of them (several at once run it once) runs the stream's [`Check`] — the same
//! decision a new call would get — and a failed check ends the stream
//! with that call's status. An event is only a nudge to re-check, so a
//! publisher need not know who holds what, and a lost event costs a
//! check, never a grant.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Sleep;
use tokio_stream::Stream;
use tonic::Status;

use super::bus::{Bus, Signal, Topic};

/// The re-check of a stream's access: `Ok` while it still holds.
pub type Check = Arc<dyn Fn() -> Checking + Send + Sync>;

/// One run of a [`Check`].
pub type Checking = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// Besides every announced change, a guard re-checks this often: changes
/// made where no bus reaches (another process on the same database) end
/// open streams within this bound too.
pub const RECHECK_EVERY: Duration = Duration::from_secs(30);

pub struct Guard {
    signal: Signal,
    check: Check,
    running: Option<Checking>,
    every: Pin<Box<Sleep>>,
}

impl Guard {
    /// Watches, then checks once at once: a change announced between the
    /// call's own check and the watch is not missed.
    pub fn new(bus: &dyn Bus, topics: Vec<Topic>, check: Check) -> Self {
        let signal = bus.watch(topics);
        let running = Some(check());
        Self {
            signal,
            check,
            running,
            every: Box::pin(tokio::time::sleep(RECHECK_EVERY)),
        }
    }

    /// Whether a check is running (a guarded stream holds its items until
    /// it passes).
    pub fn checking(&self) -> bool {
        self.running.is_some()
    }

    /// Ready with the status to end the stream with once its access is
    /// gone; pending while it holds.
    pub fn poll_revoked(&mut self, cx: &mut Context<'_>) -> Poll<Status> {
        loop {
            if let Some(running) = &mut self.running {
                match running.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => self.running = None,
                    Poll::Ready(Err(status)) => {
                        self.running = None;
                        return Poll::Ready(status);
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.every.as_mut().poll(cx).is_ready() {
                self.every
                    .as_mut()
                    .reset(tokio::time::Instant::now() + RECHECK_EVERY);
                self.running = Some((self.check)());
                continue;
            }
            match self.signal.poll_fired(cx) {
                Poll::Ready(()) => self.running = Some((self.check)()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Checks now, once: `Err` with the status to end with if access is
    /// gone. Not cancel-safe: a check it takes over and drops is lost, so
    /// await it to the end.
    pub async fn recheck(&mut self) -> Result<(), Status> {
        if let Some(running) = self.running.take() {
            running.await?;
        }
        (self.check)().await
    }

    /// Resolves with the ending status once access is gone.
    pub async fn revoked(&mut self) -> Status {
        std::future::poll_fn(|cx| self.poll_revoked(cx)).await
    }
}

/// A response stream that ends with the guard's status when its access
/// goes. Nothing passes while a check runs.
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
    done: bool,
    on_revoked: Option<Box<dyn FnOnce() + Send>>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, guard: Guard) -> Self {
        Self {
            inner,
            guard,
            done: false,
            on_revoked: None,
        }
    }

    /// Runs `hook` when access goes (a room takes its participant out at
    /// once).
    pub fn on_revoked(mut self, hook: impl FnOnce() + Send + 'static) -> Self {
        self.on_revoked = Some(Box::new(hook));
        self
    }
}

impl<S, T> Stream for Guarded<S>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        // The guard first, so that a busy stream cannot starve its check.
        if let Poll::Ready(status) = this.guard.poll_revoked(cx) {
            this.done = true;
            if let Some(hook) = this.on_revoked.take() {
                hook();
            }
            return Poll::Ready(Some(Err(status)));
        }
        if this.guard.checking() {
            // Woken when the check ends.
            return Poll::Pending;
        }
        let next = Pin::new(&mut this.inner).poll_next(cx);
        if matches!(next, Poll::Ready(None)) {
            this.done = true;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicBool, AtomicUsize, Ordering},
        time::Duration,
    };

    use tokio_stream::StreamExt;

    use super::*;
    use crate::realtime::bus::{BusEvent, LocalBus};

    fn check(allowed: Arc<AtomicBool>, runs: Arc<AtomicUsize>) -> Check {
        Arc::new(move || {
            let allowed = allowed.clone();
            let runs = runs.clone();
            Box::pin(async move {
                runs.fetch_add(1, Ordering::Relaxed);
                if allowed.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err(Status::unauthenticated("revoked"))
                }
            })
        })
    }

    #[tokio::test]
    async fn a_stream_ends_when_a_recheck_fails_and_not_before() {
        let bus = LocalBus::new();
        let allowed = Arc::new(AtomicBool::new(true));
        let runs = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<u32, Status>>(4);
        let guard = Guard::new(
            bus.as_ref(),
            vec![Topic::Session("s".into())],
            check(allowed.clone(), runs.clone()),
        );
        let mut stream = Guarded::new(tokio_stream::wrappers::ReceiverStream::new(rx), guard);

        tx.send(Ok(1)).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        assert_eq!(
            runs.load(Ordering::Relaxed),
            1,
            "checked once on subscribing"
        );
        // A change that leaves access standing: checked, and the stream goes on.
        bus.publish(&Topic::Session("s".into()), BusEvent::AccessChanged);
        tx.send(Ok(2)).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 2);
        assert_eq!(runs.load(Ordering::Relaxed), 2);
        // Another topic is none of its business.
        bus.publish(&Topic::Session("t".into()), BusEvent::AccessChanged);
        assert!(
            tokio::time::timeout(Duration::from_millis(30), stream.next())
                .await
                .is_err()
        );
        // Revoked: the stream ends with the check's status.
        allowed.store(false, Ordering::Relaxed);
        bus.publish(&Topic::Session("s".into()), BusEvent::AccessChanged);
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_no_bus_announced_is_caught_by_the_periodic_check() {
        let bus = LocalBus::new();
        let allowed = Arc::new(AtomicBool::new(true));
        let runs = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<u32, Status>>(4);
        let guard = Guard::new(
            bus.as_ref(),
            vec![Topic::Session("s".into())],
            check(allowed.clone(), runs.clone()),
        );
        let mut stream = Guarded::new(tokio_stream::wrappers::ReceiverStream::new(rx), guard);
        tx.send(Ok(1)).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        assert_eq!(runs.load(Ordering::Relaxed), 1);
        allowed.store(false, Ordering::Relaxed);
        // Nothing said on the bus: the stream lasts until the next periodic check.
        let ended = tokio::time::timeout(RECHECK_EVERY + Duration::from_secs(1), stream.next())
            .await
            .expect("ended by the periodic check");
        assert_eq!(
            ended.unwrap().unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(runs.load(Ordering::Relaxed), 2);
    }
}
