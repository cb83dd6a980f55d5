//! gRPC services, one module each. A handler decodes the request into domain
//! types, checks who may do it, calls `auth`/`store`/`blob`, and encodes the
//! answer; rules live in `domain` and SQL in `store`.

pub mod auth;
mod convert;
pub mod meetings;
pub mod paging;
pub mod room;
pub mod users;

pub use auth::AuthApi;
pub use meetings::MeetingApi;
pub use room::RoomApi;
pub use users::UserApi;
