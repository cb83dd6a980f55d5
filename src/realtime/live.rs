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
//!
//! A stream is guarded by the guard it owns ([`Guarded::new`]), or, when a
//! task already runs for it (a Connect's reader), by that task's guard
//! through a [`Verdict`] ([`Guarded::shared`]): one guard per stream, one
//! re-check per change.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    sync::{Notify, oneshot},
    time::Sleep,
};
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

    /// A verdict for the stream this guard will guard from another task
    /// ([`Guard::drive`]): it holds items from the start while the first
    /// check runs.
    pub fn verdict(&self) -> Verdict {
        let verdict = Verdict::default();
        verdict
            .inner
            .checking
            .store(self.checking(), Ordering::Release);
        verdict
    }

    /// Like [`Guard::revoked`], telling `verdict` (and so the stream that
    /// reads it) while a check runs, and the status once access is gone.
    pub async fn drive(&mut self, verdict: &Verdict) -> Status {
        std::future::poll_fn(|cx| {
            let polled = self.poll_revoked(cx);
            match &polled {
                Poll::Ready(status) => verdict.revoke(status.clone()),
                Poll::Pending => verdict.set_checking(self.checking()),
            }
            polled
        })
        .await
    }
}

/// What a guard driven by another task tells the stream it guards.
#[derive(Clone, Default)]
pub struct Verdict {
    inner: Arc<VerdictInner>,
}

#[derive(Default)]
struct VerdictInner {
    checking: AtomicBool,
    revoked: Mutex<Option<Status>>,
    /// The guarded stream's waker.
    waker: atomic_waker::AtomicWaker,
    /// Whoever waits in [`Verdict::settled`].
    settled: Notify,
}

impl Verdict {
    fn set_checking(&self, checking: bool) {
        let was = self.inner.checking.swap(checking, Ordering::AcqRel);
        if was && !checking {
            self.inner.waker.wake();
            self.inner.settled.notify_waiters();
        }
    }

    /// Ends the stream with `status`; the first verdict stands.
    fn revoke(&self, status: Status) {
        self.inner
            .revoked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get_or_insert(status);
        self.inner.waker.wake();
        self.inner.settled.notify_waiters();
    }

    fn revoked(&self) -> Option<Status> {
        self.inner
            .revoked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Waits out a running check: `Ok` once none runs, `Err` with the
    /// status once access is gone. The side that acts for the client (a
    /// Connect's reader) waits here before each event, as the stream holds
    /// its items, so nothing is done on grounds being re-checked.
    pub async fn settled(&self) -> Result<(), Status> {
        loop {
            let notified = self.inner.settled.notified();
            tokio::pin!(notified);
            // Registered before looking, so a change in between wakes it.
            notified.as_mut().enable();
            if let Some(status) = self.revoked() {
                return Err(status);
            }
            if !self.inner.checking.load(Ordering::Acquire) {
                return Ok(());
            }
            notified.await;
        }
    }

    /// Fails the stream closed if whoever drives its guard stops without
    /// saying why (a panic, a cancelled task): dropped undisarmed, it
    /// ends the stream `UNAVAILABLE` rather than leave it unguarded.
    pub fn fail_closed(&self) -> FailClosed {
        FailClosed {
            verdict: Some(self.clone()),
            then: None,
        }
    }

    /// The status to end with, once access is gone; else whether a check
    /// runs. Registers `cx` to hear of either.
    fn poll(&self, cx: &mut Context<'_>) -> Result<bool, Status> {
        self.inner.waker.register(cx.waker());
        if let Some(status) = self.revoked() {
            return Err(status);
        }
        Ok(self.inner.checking.load(Ordering::Acquire))
    }
}

/// See [`Verdict::fail_closed`].
pub struct FailClosed {
    verdict: Option<Verdict>,
    then: Option<Box<dyn FnOnce() + Send>>,
}

impl FailClosed {
    /// Also runs `hook` if it fails closed (a room takes its participant
    /// out).
    pub fn then(mut self, hook: impl FnOnce() + Send + 'static) -> Self {
        self.then = Some(Box::new(hook));
        self
    }

    /// The driver stopped for a reason it handled.
    pub fn disarm(mut self) {
        self.verdict = None;
    }
}

impl Drop for FailClosed {
    fn drop(&mut self) {
        if let Some(verdict) = self.verdict.take() {
            verdict.revoke(Status::unavailable(
                "the stream's access could no longer be checked; connect again",
            ));
            if let Some(hook) = self.then.take() {
                hook();
            }
        }
    }
}

/// Where a guarded stream's verdict comes from.
enum Gate {
    Own(Guard),
    /// Driven elsewhere; the sender, dropped with the stream, tells the
    /// driver it can stop.
    Shared {
        verdict: Verdict,
        _alive: oneshot::Sender<()>,
    },
}

/// A response stream that ends with the guard's status when its access
/// goes. Nothing passes while a check runs.
pub struct Guarded<S> {
    inner: S,
    gate: Gate,
    done: bool,
    on_revoked: Option<Box<dyn FnOnce() + Send>>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, guard: Guard) -> Self {
        Self {
            inner,
            gate: Gate::Own(guard),
            done: false,
            on_revoked: None,
        }
    }

    /// `inner`, guarded by whoever drives a guard with `verdict`
    /// ([`Guard::drive`]). The receiver resolves once the stream is
    /// dropped: the driver's cue to stop.
    pub fn shared(inner: S, verdict: Verdict) -> (Self, oneshot::Receiver<()>) {
        let (alive, gone) = oneshot::channel();
        let guarded = Self {
            inner,
            gate: Gate::Shared {
                verdict,
                _alive: alive,
            },
            done: false,
            on_revoked: None,
        };
        (guarded, gone)
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
        let checking = match &mut this.gate {
            Gate::Own(guard) => match guard.poll_revoked(cx) {
                Poll::Ready(status) => Err(status),
                Poll::Pending => Ok(guard.checking()),
            },
            Gate::Shared { verdict, .. } => verdict.poll(cx),
        };
        let checking = match checking {
            Ok(checking) => checking,
            Err(status) => {
                this.done = true;
                if let Some(hook) = this.on_revoked.take() {
                    hook();
                }
                return Poll::Ready(Some(Err(status)));
            }
        };
        if checking {
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

    /// Whether nothing comes from `stream` for a moment.
    async fn quiet<S: Stream + Unpin>(stream: &mut S) -> bool {
        tokio::time::timeout(Duration::from_millis(30), stream.next())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_stream_guarded_by_another_tasks_guard_holds_while_it_checks_and_ends_when_it_fails()
    {
        let bus = LocalBus::new();
        let allowed = Arc::new(AtomicBool::new(true));
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        // A check that waits for the test's go-ahead.
        let check: Check = {
            let (allowed, runs, gate) = (allowed.clone(), runs.clone(), gate.clone());
            Arc::new(move || {
                let (allowed, runs, gate) = (allowed.clone(), runs.clone(), gate.clone());
                Box::pin(async move {
                    runs.fetch_add(1, Ordering::Relaxed);
                    gate.acquire().await.unwrap().forget();
                    if allowed.load(Ordering::Relaxed) {
                        Ok(())
                    } else {
                        Err(Status::unauthenticated("revoked"))
                    }
                })
            })
        };
        let mut guard = Guard::new(bus.as_ref(), vec![Topic::Session("s".into())], check);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<u32, Status>>(4);
        let verdict = guard.verdict();
        let (mut stream, mut gone) = Guarded::shared(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            verdict.clone(),
        );
        let driver = tokio::spawn(async move {
            tokio::select! {
                status = guard.drive(&verdict) => Some(status),
                _ = &mut gone => None,
            }
        });
        // The first check runs: nothing passes until it is done.
        tx.send(Ok(1)).await.unwrap();
        assert!(quiet(&mut stream).await, "held while the first check runs");
        gate.add_permits(1);
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        // A change: held again until its check passes.
        bus.publish(&Topic::Session("s".into()), BusEvent::AccessChanged);
        tokio::time::sleep(Duration::from_millis(10)).await;
        tx.send(Ok(2)).await.unwrap();
        assert!(quiet(&mut stream).await, "held while the re-check runs");
        gate.add_permits(1);
        assert_eq!(stream.next().await.unwrap().unwrap(), 2);
        assert_eq!(runs.load(Ordering::Relaxed), 2);
        // Revoked: the stream ends with the check's status, and so does the
        // driver.
        allowed.store(false, Ordering::Relaxed);
        bus.publish(&Topic::Session("s".into()), BusEvent::AccessChanged);
        gate.add_permits(1);
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(stream.next().await.is_none());
        let driven = driver.await.unwrap().expect("the driver saw it too");
        assert_eq!(driven.code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn settled_waits_out_a_running_check_and_reports_a_revocation() {
        let verdict = Verdict::default();
        verdict.set_checking(true);
        let waiter = tokio::spawn({
            let verdict = verdict.clone();
            async move { verdict.settled().await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished(), "waits while the check runs");
        verdict.set_checking(false);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken when the check passes")
            .unwrap()
            .unwrap();

        verdict.set_checking(true);
        let waiter = tokio::spawn({
            let verdict = verdict.clone();
            async move { verdict.settled().await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        verdict.revoke(Status::permission_denied("removed"));
        let status = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken when access goes")
            .unwrap()
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        // The first verdict stands.
        verdict.revoke(Status::unavailable("later"));
        assert_eq!(
            verdict.settled().await.unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[tokio::test]
    async fn a_driver_that_dies_fails_its_stream_closed() {
        let verdict = Verdict::default();
        let (mut stream, _gone) = Guarded::shared(
            tokio_stream::pending::<Result<u32, Status>>(),
            verdict.clone(),
        );
        // A driver that stops as planned leaves the stream alone.
        verdict.fail_closed().disarm();
        assert!(quiet(&mut stream).await);
        // One that panics ends it, and runs its hook.
        let hooked = Arc::new(AtomicBool::new(false));
        let driver = tokio::spawn({
            let (verdict, hooked) = (verdict.clone(), hooked.clone());
            async move {
                let _fail_closed = verdict
                    .fail_closed()
                    .then(move || hooked.store(true, Ordering::Relaxed));
                panic!("a bug in the reader");
            }
        });
        assert!(driver.await.is_err());
        assert!(hooked.load(Ordering::Relaxed), "the hook ran");
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn the_driver_of_a_shared_guard_hears_when_its_stream_is_dropped() {
        let (stream, gone) = Guarded::shared(
            tokio_stream::empty::<Result<u32, Status>>(),
            Verdict::default(),
        );
        drop(stream);
        tokio::time::timeout(Duration::from_secs(1), gone)
            .await
            .expect("told at once")
            .unwrap_err();
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
