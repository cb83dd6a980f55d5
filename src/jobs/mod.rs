//! Background work that runs beside the RPCs on every node.
//!
//! - [`missed_calls`]: ringing calls nobody answered become MISSED.
//! - [`reminders`]: one reminder per member before a meeting starts.
//! - [`mailer`]: sends queued email with retries (when SMTP is configured).
//! - [`uploads`]: discards browser uploads left unfinished for 24 hours.
//! - [`expired`]: forgets expired throttle keys, OAuth states and links.
//! - [`webhooks`]: delivers queued webhook events with retries for 24 h.
//! - [`push`]: sends queued pushes to phones (FCM, APNs).
//!
//! Jobs act through single conditional UPDATEs, so several nodes running
//! the same job never act twice on one row.

pub mod expired;
pub mod mailer;
pub mod missed_calls;
pub mod push;
pub mod reminders;
pub mod uploads;
pub mod webhooks;
