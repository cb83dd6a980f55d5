//! One integration-test binary (it compiles once): each module tests one
//! area against the real server started by `helpers::spawn_app`.
//!
//! Set `UNIO_TEST_POSTGRES_URL=postgres://…` to run every test against
//! PostgreSQL instead of SQLite (the test command does both).

mod accounts;
mod avatars;
mod calendar;
mod calls;
mod chat;
mod cluster;
mod cluster_rooms;
mod corpus;
mod email;
mod fake_idp;
mod faults;
mod files;
mod grpc_web;
mod helpers;
mod lifecycle;
mod live;
mod mail_sink;
mod matrix;
mod meetings;
mod notifications;
mod oauth;
mod push;
mod reports;
mod room_features;
mod rooms;
mod series;
mod sweep;
mod telemetry;
mod tokens;
mod users;
mod verification;
mod web;
mod webhooks;
