//! Shared-file rules: names are metadata only and get sanitised; types come
//! from the bytes (magic numbers) against an allow-list, and the name's
//! extension must agree with them.
//!
//! A file is text only if all of it is UTF-8 without NULs (checked as it
//! streams in by [`TextCheck`]), so a text head cannot smuggle a JAR behind
//! it. An extension that tells the reader's computer to treat the file as
//! something else (`.html`, `.svg`, `.bat`, `.exe` on a PNG) is refused:
//! the type we sniffed is only safe if the file opens as that type.

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
    // Leading dots hide files; trailing dots and spaces vanish on Windows,
    // turning "x.exe." into "x.exe" after our extension check. Trimmed until
    // nothing changes: ". .html" must not end as ".html".
    let mut name = cleaned;
    loop {
        let trimmed = name
            .trim()
            .trim_start_matches('.')
            .trim_end_matches(['.', ' '])
            .to_owned();
        if trimmed == name {
            break;
        }
        name = trimmed;
    }
    if name.len() > MAX_NAME_BYTES {
        let mut cut = MAX_NAME_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    let name = name.trim_end_matches(['.', ' ']).trim_end().to_owned();
    if name.is_empty() {
        "file".to_owned()
    } else {
        name
    }
}

/// The lower-case extension of a (sanitised) name, without the dot; empty
/// when there is none.
pub fn extension(name: &str) -> String {
    // A name that is all extension (".html") still has one.
    name.rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Extensions each sniffed type may carry (none is always fine).
fn allowed_extensions(content_type: &str) -> &'static [&'static str] {
    match content_type {
        "image/png" => &["png"],
        "image/jpeg" => &["jpg", "jpeg", "jpe", "jfif"],
        "image/gif" => &["gif"],
        "image/webp" => &["webp"],
        "application/pdf" => &["pdf"],
        "application/zip" => &["zip"],
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => &["docx"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => &["xlsx"],
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => &["pptx"],
        "application/vnd.oasis.opendocument.text" => &["odt"],
        "application/vnd.ms-office" => &["doc", "xls", "ppt", "msg"],
        TEXT => &[
            "txt", "text", "md", "markdown", "csv", "tsv", "log", "json", "yaml", "yml", "ics",
            "vtt", "srt",
        ],
        _ => &[],
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Whether a whole file is UTF-8 text without NULs, fed in pieces of any
/// size (a character may straddle two pieces).
#[derive(Debug, Clone)]
pub struct TextCheck {
    /// The start of a character cut at the end of the last piece.
    carry: Vec<u8>,
    text: bool,
}

impl Default for TextCheck {
    fn default() -> Self {
        Self {
            carry: Vec::new(),
            text: true,
        }
    }
}

impl TextCheck {
    pub fn push(&mut self, mut bytes: &[u8]) {
        if !self.text {
            return;
        }
        if bytes.contains(&0) {
            self.text = false;
            return;
        }
        // Complete the character carried over from the last piece.
        while !self.carry.is_empty() && !bytes.is_empty() {
            self.carry.push(bytes[0]);
            bytes = &bytes[1..];
            match std::str::from_utf8(&self.carry) {
                Ok(_) => self.carry.clear(),
                Err(e) if e.error_len().is_some() => {
                    self.text = false;
                    return;
                }
                Err(_) if self.carry.len() >= 4 => {
                    self.text = false;
                    return;
                }
                Err(_) => {}
            }
        }
        if bytes.is_empty() {
            return;
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => {}
            Err(e) if e.error_len().is_none() => {
                self.carry = bytes[e.valid_up_to()..].to_vec();
            }
            Err(_) => self.text = false,
        }
    }

    /// Whether everything pushed was text (no character left unfinished).
    pub fn finish(&self) -> bool {
        self.text && self.carry.is_empty()
    }
}

fn is_format(c: char) -> bool {
    matches!(c as u32, 0x00AD | 0x061C | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB)
}

/// Container formats that also carry programs, refused by name.
const EXECUTABLE_CONTAINERS: [&str; 7] = [".jar", ".apk", ".xpi", ".msi", ".msix", ".appx", ".exe"];

/// The content type of a file from its first bytes (and whether all of it
/// is text), or why it is refused: a type off the allow-list, or a name
/// whose extension does not match the type.
pub fn sniff(
    head: &[u8],
    name: &str,
    whole_is_text: bool,
) -> Result<&'static str, ValidationError> {
    let content_type = sniff_bytes(head, name, whole_is_text)?;
    let ext = extension(name);
    let allowed = allowed_extensions(content_type);
    if ext.is_empty() || allowed.contains(&ext.as_str()) {
        return Ok(content_type);
    }
    Err(ValidationError::new(format!(
        "the name ends in .{ext} but the content is {content_type}; use {}",
        allowed
            .iter()
            .map(|e| format!(".{e}"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn sniff_bytes(
    head: &[u8],
    name: &str,
    whole_is_text: bool,
) -> Result<&'static str, ValidationError> {
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
    // Plain text: all of it UTF-8 without NULs.
    if whole_is_text {
        return Ok(TEXT);
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

    fn text(bytes: &[u8]) -> bool {
        let mut check = TextCheck::default();
        check.push(bytes);
        check.finish()
    }

    #[test]
    fn the_bytes_decide_the_type_and_the_name_must_agree() {
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n....", "cat.png", false).unwrap(),
            "image/png"
        );
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n....", "cat", false).unwrap(),
            "image/png"
        );
        assert!(sniff(b"\x89PNG\r\n\x1a\n....", "virus.exe", false).is_err());
        assert!(sniff(b"\x7fELF\x02\x01", "cat.png", false).is_err());
        assert!(sniff(b"MZ\x90\x00", "doc.pdf", false).is_err());
        assert!(sniff(b"#!/bin/sh\nrm -rf /", "notes.txt", true).is_err());
        assert_eq!(
            sniff(b"%PDF-1.7", "x.PDF", false).unwrap(),
            "application/pdf"
        );
        assert!(
            sniff(b"PK\x03\x04rest", "a.docx", false)
                .unwrap()
                .contains("wordprocessingml")
        );
        assert!(sniff(b"PK\x03\x04rest", "a.jar", false).is_err());
        assert_eq!(sniff(b"hello\nworld", "a", true).unwrap(), TEXT);
        assert_eq!(sniff(b"a,b\n1,2", "t.csv", true).unwrap(), TEXT);
        assert_eq!(sniff(b"", "empty", true).unwrap(), TEXT);
        assert!(sniff(&[0, 1, 2, 3, 0xff], "blob.bin", false).is_err());
        // Text that a computer would run or render as something else.
        for name in [
            "x.html", "x.htm", "x.svg", "x.bat", "x.js", "x.ps1", "x.hta",
        ] {
            assert!(
                sniff(b"<svg onload=alert(1)>", name, true).is_err(),
                "{name}"
            );
        }
        // A text head with a non-text tail (a JAR glued behind it) is not text.
        assert!(sniff(b"just some words", "x.txt", false).is_err());
    }

    #[test]
    fn text_is_checked_across_pieces() {
        assert!(text("héllo wörld".as_bytes()));
        let bytes = "€uro".as_bytes();
        let mut check = TextCheck::default();
        check.push(&bytes[..1]);
        check.push(&bytes[1..2]);
        check.push(&bytes[2..]);
        assert!(check.finish(), "a character split three ways");
        let mut cut = TextCheck::default();
        cut.push(&bytes[..2]);
        assert!(!cut.finish(), "a character left unfinished");
        assert!(!text(b"ok\0nul"));
        assert!(!text(&[b'a', 0xff, b'b']));
        let mut tail = TextCheck::default();
        tail.push(b"plain words\n");
        tail.push(b"PK\x03\x04\x14\x00\x08\x00\x08\x00\xa3");
        assert!(!tail.finish(), "a zip behind a text head");
    }

    #[test]
    fn trailing_dots_and_spaces_go() {
        assert_eq!(sanitize_filename("x.exe."), "x.exe");
        assert_eq!(sanitize_filename("x.html . ."), "x.html");
        for sneaky in [". .html", ".\u{a0}.svg", " . . .hta", "..\u{2003}.js"] {
            let name = sanitize_filename(sneaky);
            assert!(!name.starts_with('.'), "{sneaky:?} became {name:?}");
            // Either no extension is left ("html"), or it is checked.
            let accepted = sniff(b"<script>alert(1)</script>", &name, true).is_ok();
            assert!(!accepted || extension(&name).is_empty(), "{name}");
        }
        assert_eq!(extension(".html"), "html");
        assert_eq!(extension("x.exe"), "exe");
        assert_eq!(extension("archive.tar.GZ"), "gz");
        assert_eq!(extension("noext"), "");
    }

    #[test]
    fn hashes_are_hex() {
        assert!(parse_sha256("").unwrap().is_none());
        assert!(parse_sha256(&"A".repeat(64)).unwrap().is_some());
        assert!(parse_sha256("abc").is_err());
    }
}
