//! gRPC services, one module each. A handler decodes the request into domain
//! types, checks who may do it, calls `auth`/`store`/`blob`, and encodes the
//! answer; rules live in `domain` and SQL in `store`.

mod access;
pub mod auth;
pub mod calls;
mod convert;
pub mod meetings;
pub mod paging;
pub mod room;
pub mod users;

pub use auth::AuthApi;
pub use calls::CallApi;
pub use convert::call as convert_call;
pub use meetings::MeetingApi;
pub use room::RoomApi;
pub use users::UserApi;
