//! The live side of meetings: rooms, sessions, fan-out and resume.
//!
//! - [`chat`]: the chat writer: group commit, then delivery in order.
//! - [`cluster`]: the hub's link to other nodes: room events ordered by
//!   each room's log in Redis (DESIGN §9).
//! - [`hub`]: [`RoomHub`], every room of this node: finds rooms and
//!   sessions, routes joins, resumes, leaves, kicks and fan-out. All state
//!   sits behind std mutexes held for short, synchronous sections, never
//!   across an await; it holds no database handle.
//! - [`room`]: one room's participants, sequence counter and replay buffer;
//!   the only code that moves a slot's epoch.
//! - [`inbound`]: what a client may send; typed codes of refused events.
//! - [`attendance`]: the one ordered writer of attendance rows (joins,
//!   leaves, reopens, departures at shutdown).
//! - [`session`]: the stream a participant reads ([`SessionStream`]): its
//!   bounded queue, heartbeats, liveness and the way it ends.
//! - [`queue`]: each session's bounded event queue (allocates only while
//!   events wait).
//! - [`rate`]: per-session token buckets.
//! - [`reaper`]: every timer of the hub (grace periods, closed rooms) in
//!   one task over a deadline map.
//! - [`ice`]: STUN/TURN servers handed out in `joined`.
//! - [`inbox`]: live delivery of notifications to WatchNotifications.
//! - [`bus`]: the event backbone (DESIGN §8): access changes and live
//!   notifications by topic; in-process on one node.
//! - [`redis_bus`]: the same bus over Redis pub/sub, across nodes
//!   (DESIGN §9).
//! - [`room_log`]: a room's sequence and replay in Redis, one order for
//!   every node (DESIGN §9).
//! - [`live`]: streams that end when their access does (a guard that
//!   re-checks on each access change).
//!
//! The hub is in-process: one node serves a room. Room events move onto
//! the bus with cluster mode.

pub mod attendance;
pub mod bus;
pub mod chat;
pub mod cluster;
pub mod hub;
#[cfg(test)]
mod hub_tests;
pub mod ice;
pub mod inbound;
pub mod inbox;
pub mod live;
pub mod queue;
pub mod rate;
pub mod reaper;
pub mod redis_bus;
pub mod room;
pub mod room_log;
pub mod session;
pub mod settings;

pub use hub::{HubConfig, RoomHub};
pub use session::SessionStream;
