//! `unio.v1.UserService`: profiles, admin management, passwords, avatars.

use tonic::{Request, Response, Status};

use crate::realtime::bus::Topic;
use crate::wire::{self, UserView};
use crate::{
    auth::{Caller, caller},
    blob::BlobError,
    domain::{Avatar, AvatarError, DisplayName, Password, Role, push::Platform, time::now_micros},
    error::{AppError, Violations},
    proto::pb::{self, user_service_server::UserService},
    state::AppState,
    store::{
        devices,
        users::{self, UserChanges, UserRecord},
    },
};

pub struct UserApi {
    state: AppState,
}

impl UserApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// The user's row, read through the in-memory view.
    async fn load(&self, user_id: &str) -> Result<std::sync::Arc<UserRecord>, AppError> {
        self.state
            .accounts
            .view()
            .user(user_id)
            .await?
            .ok_or_else(|| {
                AppError::not_found("USER_NOT_FOUND", format!("no user with id {user_id}"))
            })
    }

    /// The id a request names in `field`, or the caller's own when empty.
    fn target(caller: &Caller, field: &str, raw: &str) -> Result<String, AppError> {
        if raw.trim().is_empty() {
            return Ok(caller.user_id.clone());
        }
        super::id_field(field, raw)
    }
}

fn view_for(caller: &Caller, user_id: &str) -> UserView {
    if caller.is_admin() || caller.user_id == user_id {
        UserView::Full
    } else {
        UserView::Public
    }
}

/// Paths UpdateUser accepts, and whether only admins may set them.
const UPDATABLE: [(&str, bool); 3] = [("display_name", false), ("role", true), ("is_active", true)];

#[tonic::async_trait]
impl UserService for UserApi {
    #[tracing::instrument(skip_all)]
    async fn get_me(
        &self,
        request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&request)?;
        let user = self.load(&caller.user_id).await?;
        Ok(Response::new(wire::user(&user, UserView::Full)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&request)?;
        let user_id = super::id_field("user_id", &request.get_ref().user_id)?;
        let user = self.load(&user_id).await?;
        if !user.is_active && !caller.is_admin() && user.id != caller.user_id {
            return Err(AppError::not_found(
                "USER_NOT_FOUND",
                format!("no user with id {user_id}"),
            )
            .into());
        }
        Ok(Response::new(wire::user(
            &user,
            view_for(&caller, &user.id),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = caller(&request)?;
        if !caller.is_admin() {
            return Err(AppError::permission_denied("only admins may list users").into());
        }
        let pb::ListUsersRequest {
            page_size,
            page_token,
            query,
        } = request.into_inner();
        let query = query.trim().to_owned();
        let mut v = Violations::new();
        let page = self.state.page_tokens.page_in(
            &mut v,
            format!("ListUsers|{query}"),
            page_size,
            &page_token,
        );
        if query.chars().count() > 200 {
            v.add("query", "must be at most 200 characters");
        }
        if query.chars().any(char::is_control) {
            v.add("query", "must not contain control characters");
        }
        let Some(page) = page else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let rows = users::list(&self.state.db, &query, page.cursor(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |u| u.id.clone());
        Ok(Response::new(pb::ListUsersResponse {
            users: rows.iter().map(|u| wire::user(u, UserView::Full)).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&request)?;
        let pb::UpdateUserRequest { user, update_mask } = request.into_inner();
        let Some(user) = user else {
            return Err(AppError::invalid("user", "is required").into());
        };
        let paths = update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(AppError::invalid(
                "update_mask",
                "must name at least one of display_name, role, is_active",
            )
            .into());
        }
        let target = Self::target(&caller, "user.id", &user.id)?;

        let mut v = Violations::new();
        let mut changes = UserChanges::default();
        let mut display_name = None;
        for path in &paths {
            let Some((_, admin_only)) = UPDATABLE.iter().find(|(name, _)| name == path) else {
                v.add(
                    "update_mask.paths",
                    format!("{path:?} cannot be updated; use display_name, role or is_active"),
                );
                continue;
            };
            if *admin_only && !caller.is_admin() {
                return Err(
                    AppError::permission_denied(format!("only admins may change {path}")).into(),
                );
            }
            match path.as_str() {
                "display_name" => {
                    display_name =
                        v.check("user.display_name", DisplayName::parse(&user.display_name))
                }
                "role" => match pb::Role::try_from(user.role) {
                    Ok(pb::Role::User) => changes.role = Some(Role::User),
                    Ok(pb::Role::Admin) => changes.role = Some(Role::Admin),
                    _ => v.add("user.role", "must be ROLE_USER or ROLE_ADMIN"),
                },
                _ => changes.is_active = Some(user.is_active),
            }
        }
        v.finish()?;
        if target != caller.user_id && !caller.is_admin() {
            return Err(AppError::permission_denied("you may only update your own profile").into());
        }
        if target == caller.user_id
            && (changes.role == Some(Role::User) || changes.is_active == Some(false))
        {
            return Err(AppError::FailedPrecondition {
                reason: "SELF_LOCKOUT",
                message: "an admin cannot demote or deactivate themself; ask another admin".into(),
            }
            .into());
        }
        changes.display_name = display_name.as_ref().map(DisplayName::as_str);
        let updated = users::update(&self.state.db, &target, &changes, now_micros())
            .await?
            .ok_or_else(|| {
                AppError::not_found("USER_NOT_FOUND", format!("no user with id {target}"))
            })?;
        // Cached rows drop, and open streams re-check: a deactivated
        // user's end now.
        self.state
            .accounts
            .access_changed(Topic::User(updated.id.clone()));
        Ok(Response::new(wire::user(&updated, UserView::Full)))
    }

    #[tracing::instrument(skip_all)]
    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = caller(&request)?;
        let pb::ChangePasswordRequest {
            current_password,
            new_password,
        } = request.into_inner();
        let user = self.load(&caller.user_id).await?;
        let email = crate::domain::Email::parse(&user.email).ok();
        let mut v = Violations::new();
        if current_password.is_empty() && user.password_hash.is_some() {
            v.add("current_password", "is required");
        }
        let new_password = v.check(
            "new_password",
            Password::parse(&new_password, email.as_ref()),
        );
        if new_password
            .as_ref()
            .is_some_and(|p| p.expose() == current_password)
        {
            v.add("new_password", "must differ from the current password");
        }
        let Some(new_password) = new_password.filter(|_| v.is_empty()) else {
            return Err(v.into_error().into());
        };
        self.state
            .accounts
            .change_password(&caller, &current_password, &new_password)
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = caller(&request)?;
        let target = Self::target(&caller, "user_id", &request.get_ref().user_id)?;
        if target != caller.user_id && !caller.is_admin() {
            return Err(AppError::permission_denied("you may only delete your own account").into());
        }
        // Their files' bytes go too (the rows cascade with the user).
        let blob_keys = crate::store::files::blob_keys_of_user(&self.state.db, &target).await?;
        // So do the meetings they host (their rooms close below).
        let (deleted, hosted) = users::delete(&self.state.db, &target)
            .await?
            .ok_or_else(|| {
                AppError::not_found("USER_NOT_FOUND", format!("no user with id {target}"))
            })?;
        // Their streams end before anything slower happens.
        self.state
            .accounts
            .access_changed(Topic::User(deleted.id.clone()));
        for meeting_id in &hosted {
            self.state.meetings.gone(meeting_id);
        }
        if let Some(key) = &deleted.avatar_key
            && let Err(err) = self.state.blobs.delete(key).await
        {
            tracing::warn!(error = %err, "could not remove a deleted user's avatar");
        }
        for key in blob_keys {
            let _ = self.state.blobs.delete(&key).await;
            let _ = self.state.blobs.delete_temp(&key).await;
        }
        tracing::info!(user_id = %deleted.id, by = %caller.user_id, "user deleted");
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn upload_avatar(
        &self,
        request: Request<pb::UploadAvatarRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&request)?;
        let pb::UploadAvatarRequest { content_type, data } = request.into_inner();
        let max = self.state.config.limits.max_avatar_bytes;
        let content_type = content_type.trim().to_ascii_lowercase();
        if !content_type.is_empty() && !crate::domain::AVATAR_TYPES.contains(&content_type.as_str())
        {
            return Err(AppError::invalid(
                "content_type",
                "must be image/png, image/jpeg, image/webp or image/gif",
            )
            .into());
        }
        // Decoding takes a core and up to 64 MiB: a few at a time, and
        // more are shed rather than queued on the blocking pool.
        let permit = self
            .state
            .limits
            .image_decodes
            .clone()
            .try_acquire_owned()
            .map_err(|_| AppError::ResourceExhausted {
                reason: "SERVER_BUSY",
                message: "the server is processing too many images right now; retry shortly".into(),
                retry_after: Some(std::time::Duration::from_secs(1)),
            })?;
        let avatar = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            Avatar::from_upload(&data, max)
        })
        .await
        .map_err(|e| AppError::internal_from("avatar task", e))?
        .map_err(|err| match err {
            AvatarError::TooLarge { .. } | AvatarError::TooManyPixels => {
                AppError::ResourceExhausted {
                    reason: "AVATAR_TOO_LARGE",
                    message: format!("data {err}"),
                    retry_after: None,
                }
            }
            other => AppError::invalid("data", other.to_string()),
        })?;
        let key = self
            .state
            .blobs
            .put(&avatar.data)
            .await
            .map_err(|e| match e {
                BlobError::Io(io) => {
                    tracing::warn!(error = %io, "blob storage failed");
                    AppError::Unavailable("file storage is unavailable; retry shortly".into())
                }
                other => AppError::internal_from("storing an avatar", other),
            })?;
        let stored = users::set_avatar(
            &self.state.db,
            &caller.user_id,
            &key,
            avatar.content_type,
            now_micros(),
        )
        .await;
        let (user, previous) = match stored {
            Ok(Some(found)) => found,
            Ok(None) | Err(_) => {
                let _ = self.state.blobs.delete(&key).await;
                stored?;
                return Err(
                    AppError::not_found("USER_NOT_FOUND", "your account no longer exists").into(),
                );
            }
        };
        // Cached copies of the row drop before the old bytes go.
        self.state
            .accounts
            .access_changed(Topic::User(user.id.clone()));
        if let Some(old) = previous
            && let Err(err) = self.state.blobs.delete(&old).await
        {
            tracing::warn!(error = %err, "could not remove a replaced avatar");
        }
        Ok(Response::new(wire::user(&user, UserView::Full)))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn get_avatar(
        &self,
        request: Request<pb::GetAvatarRequest>,
    ) -> Result<Response<pb::GetAvatarResponse>, Status> {
        let caller = caller(&request)?;
        let target = Self::target(&caller, "user_id", &request.get_ref().user_id)?;
        let user = self.load(&target).await?;
        let (Some(key), Some(content_type)) =
            (user.avatar_key.clone(), user.avatar_content_type.clone())
        else {
            return Err(AppError::not_found("AVATAR_NOT_FOUND", "this user has no avatar").into());
        };
        let data = self.state.blobs.get(&key).await.map_err(|e| match e {
            // Replaced by a concurrent upload, or lost from the disk.
            BlobError::Missing(_) => {
                AppError::not_found("AVATAR_NOT_FOUND", "the avatar is gone; try again")
            }
            other => AppError::internal_from("reading an avatar", other),
        })?;
        Ok(Response::new(pb::GetAvatarResponse { content_type, data }))
    }

    #[tracing::instrument(skip_all)]
    async fn register_device(
        &self,
        request: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let integrations = &self.state.config.integrations;
        let platform = match pb::DevicePlatform::try_from(r.platform) {
            Ok(pb::DevicePlatform::Fcm) => Platform::Fcm,
            Ok(pb::DevicePlatform::Apns) => Platform::Apns,
            _ => {
                return Err(AppError::invalid(
                    "platform",
                    "must be DEVICE_PLATFORM_FCM or DEVICE_PLATFORM_APNS",
                )
                .into());
            }
        };
        let token = platform
            .parse_token(&r.token)
            .map_err(|e| AppError::invalid("token", e.to_string()))?;
        let configured = match platform {
            Platform::Fcm => integrations.fcm.is_some(),
            Platform::Apns => integrations.apns.is_some(),
        };
        if !configured {
            return Err(AppError::FailedPrecondition {
                reason: "PUSH_NOT_CONFIGURED",
                message: format!(
                    "this server has no {} credentials; pushes to this platform are off",
                    platform.as_str().to_uppercase()
                ),
            }
            .into());
        }
        let device = devices::register(
            &self.state.db,
            &caller.user_id,
            platform,
            &token,
            now_micros(),
        )
        .await?;
        Ok(Response::new(pb::Device {
            id: device.id,
            platform: r.platform,
            create_time: Some(crate::domain::time::to_timestamp(device.created_at)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn unregister_device(
        &self,
        request: Request<pb::UnregisterDeviceRequest>,
    ) -> Result<Response<pb::UnregisterDeviceResponse>, Status> {
        let caller = caller(&request)?;
        // Every token of either platform is of FCM's alphabet (APNs' hex
        // included); anything else was never registered.
        let token = Platform::Fcm
            .parse_token(&request.get_ref().token)
            .map_err(|e| AppError::invalid("token", e.to_string()))?;
        let token = token.as_str();
        // APNs tokens are kept in lower case.
        let removed = devices::unregister(&self.state.db, &caller.user_id, token).await?
            || devices::unregister(&self.state.db, &caller.user_id, &token.to_ascii_lowercase())
                .await?;
        if !removed {
            return Err(AppError::not_found(
                "DEVICE_NOT_FOUND",
                "you have no device with this token",
            )
            .into());
        }
        Ok(Response::new(pb::UnregisterDeviceResponse {}))
    }
}
