//! Shared-file rules: names are metadata only and get sanitised; types come
//! from the bytes (magic numbers) against an allow-list.

use super::ValidationError;

pub const MAX_NAME_BYTES: usize = 255;
/// How many leading bytes the sniffer looks at.
pub const SNIFF_BYTES: usize = 4096;

/// The last path component with control characters removed, trimmed, at
/// most 255 bytes (cut on a character boundary); "file" if nothing is left.
pub fn sanitize_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    // Control characters, and the invisible format characters (bidi
    // overrides such as U+202E) that make "invoice\u{202e}gnp.exe" read as
    // a .png.
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_format(*c))
        .collect();
    let mut name = cleaned.trim().trim_start_matches('.').trim().to_owned();
    if name.len() > MAX_NAME_BYTES {
        let mut cut = MAX_NAME_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    if name.is_empty() {
        "file".to_owned()
    } else {
        name
    }
}

fn is_format(c: char) -> bool {
    matches!(c as u32, 0x00AD | 0x061C | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB)
}

/// Container formats that also carry programs, refused by name.
const EXECUTABLE_CONTAINERS: [&str; 7] = [".jar", ".apk", ".xpi", ".msi", ".msix", ".appx", ".exe"];

/// The content type of a file from its first bytes, or why it is refused.
/// `name` only tells office formats apart inside the zip container.
pub fn sniff(head: &[u8], name: &str) -> Result<&'static str, ValidationError> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    let refused = |what: &str| {
        Err(ValidationError::new(format!(
            "{what} files are not allowed"
        )))
    };
    if starts(b"\x7fELF")
        || starts(b"MZ")
        || starts(&[0xFE, 0xED, 0xFA, 0xCE])
        || starts(&[0xFE, 0xED, 0xFA, 0xCF])
        || starts(&[0xCE, 0xFA, 0xED, 0xFE])
        || starts(&[0xCF, 0xFA, 0xED, 0xFE])
        || starts(&[0xCA, 0xFE, 0xBA, 0xBE])
    {
        return refused("executable");
    }
    if starts(b"#!") {
        return refused("script");
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Ok("image/png");
    }
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Ok("image/jpeg");
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Ok("image/gif");
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Ok("image/webp");
    }
    if starts(b"%PDF-") {
        return Ok("application/pdf");
    }
    let lower = name.to_ascii_lowercase();
    let container = starts(b"PK\x03\x04")
        || starts(b"PK\x05\x06")
        || starts(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]);
    if container && EXECUTABLE_CONTAINERS.iter().any(|ext| lower.ends_with(ext)) {
        return refused("installer and application package");
    }
    if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        return Ok(if lower.ends_with(".docx") {
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        } else if lower.ends_with(".xlsx") {
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        } else if lower.ends_with(".pptx") {
            "application/vnd.openxmlformats-officedocument.presentationml.presentation"
        } else if lower.ends_with(".odt") {
            "application/vnd.oasis.opendocument.text"
        } else {
            "application/zip"
        });
    }
    if starts(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return Ok("application/vnd.ms-office");
    }
    // Plain text: UTF-8 without NULs (a character cut at the sniff window's
    // end is fine).
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    if valid && !head.contains(&0) {
        return Ok("text/plain; charset=utf-8");
    }
    Err(ValidationError::new(
        "is not an allowed type (images, PDF, plain text, office documents, zip)",
    ))
}

/// A declared SHA-256: 64 hex digits, compared in lower case.
pub fn parse_sha256(raw: &str) -> Result<Option<String>, ValidationError> {
    let value = raw.trim().to_ascii_lowercase();
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() != 64 || !value.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ValidationError::new("must be 64 hexadecimal digits"));
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_paths_and_controls() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\Users\\x\\report.pdf"), "report.pdf");
        assert_eq!(sanitize_filename("bad\u{0}name\n.txt"), "badname.txt");
        assert_eq!(sanitize_filename(".."), "file");
        assert_eq!(sanitize_filename(""), "file");
        assert_eq!(sanitize_filename(".hidden"), "hidden");
        assert_eq!(
            sanitize_filename("invoice\u{202e}gnp.exe"),
            "invoicegnp.exe"
        );
        let long = "é".repeat(200);
        let cut = sanitize_filename(&long);
        assert!(cut.len() <= 255 && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_bytes_decide_the_type() {
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n....", "virus.exe").unwrap(),
            "image/png"
        );
        assert!(sniff(b"\x7fELF\x02\x01", "cat.png").is_err());
        assert!(sniff(b"MZ\x90\x00", "doc.pdf").is_err());
        assert!(sniff(b"#!/bin/sh\nrm -rf /", "notes.txt").is_err());
        assert_eq!(sniff(b"%PDF-1.7", "x").unwrap(), "application/pdf");
        assert!(
            sniff(b"PK\x03\x04rest", "a.docx")
                .unwrap()
                .contains("wordprocessingml")
        );
        assert_eq!(
            sniff(b"hello\nworld", "a").unwrap(),
            "text/plain; charset=utf-8"
        );
        assert_eq!(sniff(b"", "empty").unwrap(), "text/plain; charset=utf-8");
        assert!(sniff(&[0, 1, 2, 3, 0xff], "blob.bin").is_err());
    }

    #[test]
    fn hashes_are_hex() {
        assert!(parse_sha256("").unwrap().is_none());
        assert!(parse_sha256(&"A".repeat(64)).unwrap().is_some());
        assert!(parse_sha256("abc").is_err());
    }
}
