//! The live side of meetings: rooms, sessions, fan-out and resume.
//!
//! - [`chat`]: the chat writer: group commit, then delivery in order.
//! - [`hub`]: [`RoomHub`], every room of this node; joins, resumes, leaves,
//!   kicks, fan-out. All state sits behind std mutexes held for short,
//!   synchronous sections, never across an await.
//! - [`room`]: one room's participants, sequence counter and replay buffer.
//! - [`session`]: the stream a participant reads ([`SessionStream`]): its
//!   bounded queue, heartbeats, liveness and the way it ends.
//! - [`rate`]: per-session token buckets.
//! - [`ice`]: STUN/TURN servers handed out in `joined`.
//! - [`inbox`]: live delivery of notifications to WatchNotifications.
//!
//! The hub is in-process: one node serves a room. Cross-node fan-out over
//! Redis is planned behind the same interface.

pub mod chat;
pub mod hub;
pub mod ice;
pub mod inbox;
pub mod rate;
pub mod room;
pub mod session;

pub use hub::{HubConfig, RoomHub};
pub use session::SessionStream;
