//! Every timer of the hub in one task: resume grace periods and the
//! placeholders of closed rooms wait in one deadline map, and the task
//! sleeps until the earliest (as mini-redis purges expiring keys), instead
//! of one spawned task sleeping per timer.
//!
//! A timer is never cancelled: what it fires re-checks that it still
//! applies (a grace period carries its slot's epoch, a placeholder its
//! room's state), which is simpler than finding and removing it.

use std::collections::BTreeMap;

use tokio::{sync::mpsc, time::Instant};

/// What comes due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// A detached participant's resume grace period ends.
    Grace {
        meeting_id: String,
        participant_id: String,
        epoch: u64,
    },
    /// A closed room's placeholder (which answers late joiners that the
    /// meeting is over) may go.
    ClosedRoom { meeting_id: String },
}

/// Schedules timers on the reaper task.
#[derive(Debug, Clone)]
pub struct Reaper {
    tx: mpsc::UnboundedSender<(Instant, Due)>,
}

impl Reaper {
    /// Starts the task; `fire` runs for each timer at its deadline, in
    /// deadline order. The task ends when every `Reaper` is dropped.
    pub fn start(fire: impl Fn(Due) + Send + 'static) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Due)>();
        tokio::spawn(async move {
            // Keyed by deadline, then arrival, so equal deadlines keep order.
            let mut timers: BTreeMap<(Instant, u64), Due> = BTreeMap::new();
            let mut arrivals = 0u64;
            loop {
                let next = timers.keys().next().map(|(at, _)| *at);
                tokio::select! {
                    scheduled = rx.recv() => match scheduled {
                        Some((at, due)) => {
                            arrivals += 1;
                            timers.insert((at, arrivals), due);
                        }
                        None => break,
                    },
                    () = sleep_until(next) => {
                        let now = Instant::now();
                        while let Some(entry) = timers.first_entry() {
                            if entry.key().0 > now {
                                break;
                            }
                            fire(entry.remove());
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Fires `due` at `at`.
    pub fn at(&self, at: Instant, due: Due) {
        // The task only ends when no Reaper is left to call this.
        let _ = self.tx.send((at, due));
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use super::*;

    fn room(id: &str) -> Due {
        Due::ClosedRoom {
            meeting_id: id.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timers_fire_at_their_deadlines_in_order() {
        let fired = Arc::new(Mutex::new(Vec::new()));
        let seen = fired.clone();
        let reaper = Reaper::start(move |due| seen.lock().unwrap().push(due));
        let start = Instant::now();
        reaper.at(start + Duration::from_secs(30), room("late"));
        reaper.at(start + Duration::from_secs(10), room("early"));
        reaper.at(start + Duration::from_secs(10), room("early-too"));
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(fired.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            *fired.lock().unwrap(),
            vec![room("early"), room("early-too")]
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(fired.lock().unwrap().len(), 3);
        assert_eq!(fired.lock().unwrap()[2], room("late"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_scheduled_while_waiting_for_a_later_one_is_not_late() {
        let fired = Arc::new(Mutex::new(Vec::new()));
        let seen = fired.clone();
        let reaper = Reaper::start(move |due| seen.lock().unwrap().push((Instant::now(), due)));
        let start = Instant::now();
        reaper.at(start + Duration::from_secs(60), room("late"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        reaper.at(start + Duration::from_secs(5), room("soon"));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let fired = fired.lock().unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].0, start + Duration::from_secs(5));
    }
}
