//! Records and tokens to protobuf messages.

use crate::{
    auth::accounts::Tokens,
    domain::{AuthProvider, Role, time::to_timestamp},
    proto::pb,
    store::users::UserRecord,
};

/// How much of a user the reader may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserView {
    /// The user themself, or an admin.
    Full,
    /// Anyone else: no email address.
    Public,
}

pub fn user(record: &UserRecord, view: UserView) -> pb::User {
    pb::User {
        id: record.id.clone(),
        email: match view {
            UserView::Full => record.email.clone(),
            UserView::Public => String::new(),
        },
        display_name: record.display_name.clone(),
        role: role(record.role()) as i32,
        auth_provider: provider(record.auth_provider()) as i32,
        has_avatar: record.avatar_key.is_some(),
        is_active: record.is_active,
        create_time: Some(to_timestamp(record.created_at)),
        update_time: Some(to_timestamp(record.updated_at)),
    }
}

pub fn role(role: Role) -> pb::Role {
    match role {
        Role::User => pb::Role::User,
        Role::Admin => pb::Role::Admin,
    }
}

fn provider(provider: AuthProvider) -> pb::AuthProvider {
    match provider {
        AuthProvider::Password => pb::AuthProvider::Password,
        AuthProvider::Google => pb::AuthProvider::Google,
        AuthProvider::Microsoft => pb::AuthProvider::Microsoft,
    }
}

pub fn token_pair(tokens: Tokens) -> pb::TokenPair {
    pb::TokenPair {
        access_token: tokens.access.token,
        refresh_token: tokens.refresh,
        token_type: "Bearer".to_owned(),
        access_token_expire_time: Some(to_timestamp(tokens.access.expires_at)),
        refresh_token_expire_time: Some(to_timestamp(tokens.refresh_expires_at)),
    }
}

pub fn auth_response(record: &UserRecord, tokens: Tokens) -> pb::AuthResponse {
    pb::AuthResponse {
        user: Some(user(record, UserView::Full)),
        tokens: Some(token_pair(tokens)),
    }
}
