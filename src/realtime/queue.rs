//! A session's bounded queue of room events: many senders (the room, under
//! its lock), one receiver (the session's stream).
//!
//! Hand-written rather than tokio's bounded `mpsc`: that channel allocates
//! its shared state and a first block of 32 slots up front and keeps them
//! while the stream idles — about 1.3 KiB per session in a heaptrack
//! profile of idle rooms, paid by every one of thousands of idle streams.
//! This queue is a `VecDeque` behind a mutex (held for one push or pop,
//! never across an await): it allocates while events wait and gives the
//! memory back once drained, so an idle session costs one small `Arc`.
//! The API is the slice of `mpsc` the room uses: `try_send`, `poll_recv`,
//! and the end of the stream once every sender is gone.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use atomic_waker::AtomicWaker;

use crate::proto::pb;

pub type Item = Arc<pb::ServerEvent>;

/// A queue drained below this many slots keeps its buffer; a larger one
/// is given back.
const KEEP_SLOTS: usize = 8;

struct Shared {
    state: Mutex<State>,
    /// The receiver's waker.
    waker: AtomicWaker,
}

struct State {
    events: VecDeque<Item>,
    capacity: usize,
    senders: usize,
    receiver: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn holds(&self, what: impl Fn(&pb::ServerEvent) -> bool) -> bool {
        self.lock().events.iter().any(|event| what(event))
    }
}

/// Why an event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue holds `capacity` events: its reader fell behind.
    Full,
    /// The reader is gone.
    Closed,
}

pub struct Sender {
    shared: Arc<Shared>,
}

pub struct Receiver {
    shared: Arc<Shared>,
}

/// A queue of at most `capacity` events.
pub fn channel(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            events: VecDeque::new(),
            capacity,
            senders: 1,
            receiver: true,
        }),
        waker: AtomicWaker::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl Sender {
    /// The receiver is gone: nothing sent now would reach anyone.
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().receiver
    }

    /// Whether an event still queued (not yet taken by the receiver) is
    /// one that `what` picks.
    pub fn holds(&self, what: impl Fn(&pb::ServerEvent) -> bool) -> bool {
        self.shared.holds(what)
    }

    pub fn try_send(&self, event: Item) -> Result<(), TrySendError> {
        {
            let mut state = self.shared.lock();
            if !state.receiver {
                return Err(TrySendError::Closed);
            }
            if state.events.len() >= state.capacity {
                return Err(TrySendError::Full);
            }
            state.events.push_back(event);
        }
        self.shared.waker.wake();
        Ok(())
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let last = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.waker.wake();
        }
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl Receiver {
    /// [`Sender::holds`].
    pub fn holds(&self, what: impl Fn(&pb::ServerEvent) -> bool) -> bool {
        self.shared.holds(what)
    }

    /// The next event; `None` once every sender is gone and the queue is
    /// drained.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.shared.waker.register(cx.waker());
        let mut state = self.shared.lock();
        if let Some(event) = state.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        if state.events.capacity() > KEEP_SLOTS {
            state.events = VecDeque::new();
        }
        if state.senders == 0 {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// The next event if one is queued (tests).
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Option<Item> {
        self.shared.lock().events.pop_front()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver = false;
        state.events = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    fn event(sequence: u64) -> Item {
        Arc::new(pb::ServerEvent {
            sequence,
            event: None,
        })
    }

    #[tokio::test]
    async fn holds_up_to_its_capacity_in_order_then_ends_with_its_senders() {
        let (tx, mut rx) = channel(2);
        let other = tx.clone();
        tx.try_send(event(1)).unwrap();
        other.try_send(event(2)).unwrap();
        assert_eq!(tx.try_send(event(3)), Err(TrySendError::Full));
        assert_eq!(poll_fn(|cx| rx.poll_recv(cx)).await.unwrap().sequence, 1);
        tx.try_send(event(3)).unwrap();
        drop(tx);
        drop(other);
        // What was queued is still delivered, then the end.
        assert_eq!(poll_fn(|cx| rx.poll_recv(cx)).await.unwrap().sequence, 2);
        assert_eq!(poll_fn(|cx| rx.poll_recv(cx)).await.unwrap().sequence, 3);
        assert!(poll_fn(|cx| rx.poll_recv(cx)).await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_and_a_gone_one_refuses_events() {
        let (tx, mut rx) = channel(4);
        let reader = tokio::spawn(async move {
            let first = poll_fn(|cx| rx.poll_recv(cx)).await;
            (first, rx)
        });
        tokio::task::yield_now().await;
        tx.try_send(event(7)).unwrap();
        let (first, rx) = reader.await.unwrap();
        assert_eq!(first.unwrap().sequence, 7);
        drop(rx);
        assert_eq!(tx.try_send(event(8)), Err(TrySendError::Closed));
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let (tx, mut rx) = channel(100);
        for n in 0..50 {
            tx.try_send(event(n)).unwrap();
        }
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        while let Poll::Ready(Some(_)) = rx.poll_recv(&mut cx) {}
        assert_eq!(rx.shared.lock().events.capacity(), 0);
    }
}
