//! UploadAvatar / GetAvatar: the bytes decide, big images shrink, metadata
//! is stripped, limits hold.

use std::io::Cursor;

use image::{ImageFormat, Rgb, RgbImage};
use tonic::Code;
use unio::proto::pb;

use crate::helpers::{assert_status, authed, bad_fields, spawn_app};

fn image_bytes(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A JPEG with an EXIF block (APP1) carrying a recognisable marker.
fn jpeg_with_exif() -> Vec<u8> {
    let jpeg = image_bytes(64, 64, ImageFormat::Jpeg);
    let payload = b"Exif\0\0SECRET-GPS-POSITION";
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[tokio::test]
async fn a_large_png_is_stored_shrunk_and_served_back() {
    let app = spawn_app().await;
    let (ada, token, _) = app.user("ada@example.com").await;
    let (_, bob_token, _) = app.user("bob@example.com").await;
    let user = app
        .users()
        .upload_avatar(authed(
            pb::UploadAvatarRequest {
                content_type: "image/png".into(),
                data: image_bytes(1200, 800, ImageFormat::Png),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(user.has_avatar);

    let avatar = app
        .users()
        .get_avatar(authed(
            pb::GetAvatarRequest {
                user_id: ada.id.clone(),
            },
            &bob_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(avatar.content_type, "image/jpeg");
    let decoded = image::load_from_memory(&avatar.data).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (512, 341));
}

#[tokio::test]
async fn metadata_is_stripped_and_the_declared_type_does_not_matter() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("ada@example.com").await;
    let upload = jpeg_with_exif();
    assert!(upload.windows(6).any(|w| w == b"SECRET"));
    app.users()
        .upload_avatar(authed(
            pb::UploadAvatarRequest {
                content_type: "image/gif".into(),
                data: upload,
            },
            &token,
        ))
        .await
        .unwrap();
    let avatar = app
        .users()
        .get_avatar(authed(pb::GetAvatarRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    assert!(!avatar.data.windows(6).any(|w| w == b"SECRET"));
    assert!(!avatar.data.windows(4).any(|w| w == b"Exif"));
    for format in [ImageFormat::Gif, ImageFormat::WebP] {
        app.users()
            .upload_avatar(authed(
                pb::UploadAvatarRequest {
                    content_type: String::new(),
                    data: image_bytes(40, 30, format),
                },
                &token,
            ))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn what_is_not_an_image_is_refused() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("ada@example.com").await;
    let mut truncated = image_bytes(64, 64, ImageFormat::Png);
    truncated.truncate(60);
    for data in [
        b"\x7fELF\x02\x01\x01\0\0\0\0\0".to_vec(),
        b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
        truncated,
        Vec::new(),
    ] {
        let status = app
            .users()
            .upload_avatar(authed(
                pb::UploadAvatarRequest {
                    content_type: "image/png".into(),
                    data,
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["data"]);
    }
    let status = app
        .users()
        .upload_avatar(authed(
            pb::UploadAvatarRequest {
                content_type: "application/x-msdownload".into(),
                data: image_bytes(4, 4, ImageFormat::Png),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["content_type"]);
    let me = app
        .users()
        .get_me(authed(pb::GetMeRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert!(!me.has_avatar, "nothing half-stored");
    assert_status(
        app.users()
            .get_avatar(authed(pb::GetAvatarRequest::default(), &token))
            .await,
        Code::NotFound,
        "AVATAR_NOT_FOUND",
    );
}

#[tokio::test]
async fn avatars_over_five_mebibytes_are_refused() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("ada@example.com").await;
    let mut data = image_bytes(16, 16, ImageFormat::Png);
    data.resize(5 * 1024 * 1024 + 1, 0);
    assert_status(
        app.users()
            .upload_avatar(authed(
                pb::UploadAvatarRequest {
                    content_type: "image/png".into(),
                    data,
                },
                &token,
            ))
            .await,
        Code::ResourceExhausted,
        "AVATAR_TOO_LARGE",
    );
    // Far above the limit tonic refuses the message before decoding it
    // (OUT_OF_RANGE, its code for an oversized message).
    let huge = vec![0u8; 8 * 1024 * 1024];
    let status = app
        .users()
        .upload_avatar(authed(
            pb::UploadAvatarRequest {
                content_type: "image/png".into(),
                data: huge,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
}

#[tokio::test]
async fn replacing_an_avatar_removes_the_old_bytes() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("ada@example.com").await;
    for _ in 0..3 {
        app.users()
            .upload_avatar(authed(
                pb::UploadAvatarRequest {
                    content_type: String::new(),
                    data: image_bytes(20, 20, ImageFormat::Png),
                },
                &token,
            ))
            .await
            .unwrap();
    }
    let blobs = walk(&app.data_path().join("blobs"));
    assert_eq!(blobs, 1, "one stored avatar after three uploads");
    app.users()
        .delete_user(authed(pb::DeleteUserRequest::default(), &token))
        .await
        .unwrap();
    assert_eq!(walk(&app.data_path().join("blobs")), 0);
}

fn walk(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}
