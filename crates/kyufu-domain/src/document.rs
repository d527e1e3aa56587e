//! What an identity document may be: JPEG, PNG or PDF, decided from the first bytes, never from
//! the client's Content-Type; at most `MAX_DOCUMENT_BYTES`; an image of at most
//! `MAX_IMAGE_PIXELS` (checked by intake from the header before decoding); a PDF without active
//! content (`crate::pdf`).

/// Upper bound of an identity document upload (10 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 10 * 1024 * 1024;

/// Upper bound of an image document's width × height (40 megapixels: a phone camera gives 12–50).
/// Checked from the header, so a small file claiming a huge canvas (a decompression bomb) is
/// refused before any pixel is decoded.
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;

/// The content type the bytes really are, if it is one we accept.
pub fn sniff_content_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        Some("image/png")
    } else if bytes.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_magic_bytes() {
        assert_eq!(sniff_content_type(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]), Some("image/jpeg"));
        assert_eq!(sniff_content_type(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff_content_type(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(sniff_content_type(b"GIF89a"), None);
        assert_eq!(sniff_content_type(b"<html>"), None);
        assert_eq!(sniff_content_type(b""), None);
    }
}
