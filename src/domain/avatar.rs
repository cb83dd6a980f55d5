//! Avatar images: the bytes decide the format, and what is stored is a fresh
//! encoding of the decoded pixels.
//!
//! Re-encoding drops every metadata block (EXIF with GPS positions, ICC,
//! comments) and any payload smuggled after the image data, and bounds what
//! clients download to 512×512.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, codecs::jpeg::JpegEncoder};

pub const MAX_SIDE: u32 = 512;
/// Decoding refuses larger canvases: a tiny file can declare a huge one.
/// 4096×4096 RGBA is 64 MiB, the most one decode may allocate.
pub const MAX_DECODE_SIDE: u32 = 4096;
const MAX_DECODE_ALLOC: u64 = 64 * 1024 * 1024;
const JPEG_QUALITY: u8 = 85;

/// The declared content types that may accompany an upload.
pub const ACCEPTED_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/webp", "image/gif"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvatarError {
    #[error("is empty")]
    Empty,
    #[error("is {size} bytes; avatars may be at most {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("is not a PNG, JPEG, WebP or GIF image")]
    UnsupportedFormat,
    #[error("could not be decoded as {0}: the file is damaged or truncated")]
    Undecodable(&'static str),
    #[error("is larger than {MAX_DECODE_SIDE}×{MAX_DECODE_SIDE} pixels")]
    TooManyPixels,
}

/// A stored avatar: re-encoded bytes and their content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avatar {
    pub content_type: &'static str,
    pub data: Vec<u8>,
}

impl Avatar {
    /// Decodes, shrinks to at most 512×512 and re-encodes an upload. Images
    /// with transparency become PNG, others JPEG. CPU-bound: call it from a
    /// blocking task.
    pub fn from_upload(bytes: &[u8], max_bytes: usize) -> Result<Self, AvatarError> {
        if bytes.is_empty() {
            return Err(AvatarError::Empty);
        }
        if bytes.len() > max_bytes {
            return Err(AvatarError::TooLarge {
                size: bytes.len(),
                max: max_bytes,
            });
        }
        let format = image::guess_format(bytes).map_err(|_| AvatarError::UnsupportedFormat)?;
        let name = match format {
            ImageFormat::Png => "PNG",
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::WebP => "WebP",
            ImageFormat::Gif => "GIF",
            _ => return Err(AvatarError::UnsupportedFormat),
        };
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_DECODE_SIDE);
        limits.max_image_height = Some(MAX_DECODE_SIDE);
        limits.max_alloc = Some(MAX_DECODE_ALLOC);
        reader.limits(limits);
        let image = reader.decode().map_err(|err| match err {
            image::ImageError::Limits(_) => AvatarError::TooManyPixels,
            _ => AvatarError::Undecodable(name),
        })?;
        let image = if image.width() > MAX_SIDE || image.height() > MAX_SIDE {
            image.thumbnail(MAX_SIDE, MAX_SIDE)
        } else {
            image
        };
        encode(&image).map_err(|_| AvatarError::Undecodable(name))
    }
}

fn encode(image: &DynamicImage) -> Result<Avatar, image::ImageError> {
    let mut out = Cursor::new(Vec::new());
    if image.color().has_alpha() {
        DynamicImage::ImageRgba8(image.to_rgba8()).write_to(&mut out, ImageFormat::Png)?;
        return Ok(Avatar {
            content_type: "image/png",
            data: out.into_inner(),
        });
    }
    let rgb = image.to_rgb8();
    JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY).encode_image(&rgb)?;
    Ok(Avatar {
        content_type: "image/jpeg",
        data: out.into_inner(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = RgbImage::from_pixel(width, height, Rgb([200, 30, 30]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn shrinks_large_images_to_512() {
        let avatar = Avatar::from_upload(&png(1024, 600), 5 << 20).unwrap();
        assert_eq!(avatar.content_type, "image/jpeg");
        let decoded = image::load_from_memory(&avatar.data).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (512, 300));
    }

    #[test]
    fn keeps_transparency_as_png() {
        let img = RgbaImage::from_pixel(8, 8, Rgba([0, 0, 0, 10]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        let avatar = Avatar::from_upload(&out.into_inner(), 5 << 20).unwrap();
        assert_eq!(avatar.content_type, "image/png");
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        assert_eq!(
            Avatar::from_upload(b"\x7fELF\x02\x01\x01", 100),
            Err(AvatarError::UnsupportedFormat)
        );
        assert_eq!(Avatar::from_upload(b"", 100), Err(AvatarError::Empty));
        let mut truncated = png(64, 64);
        truncated.truncate(40);
        assert_eq!(
            Avatar::from_upload(&truncated, 5 << 20),
            Err(AvatarError::Undecodable("PNG"))
        );
    }

    #[test]
    fn refuses_oversized_uploads_before_decoding() {
        let bytes = png(4, 4);
        assert!(matches!(
            Avatar::from_upload(&bytes, bytes.len() - 1),
            Err(AvatarError::TooLarge { .. })
        ));
    }
}
