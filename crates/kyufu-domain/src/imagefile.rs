//! The cheap checks of an image document on the request path, without decoding a pixel: a walk of
//! the file's structure (JPEG: every marker segment and the entropy-coded scans through EOI; PNG:
//! every chunk with its CRC, IHDR first, IEND last), the pixel cap from the header, and a copy of
//! the file without its metadata.
//!
//! What is dropped: in a JPEG every APPn segment except JFIF (APP0), the ICC profile (APP2) and
//! Adobe's colour-transform flag (APP14, needed to read CMYK scans), every comment, and anything
//! after EOI (phones append multi-picture data there); the EXIF orientation alone is written back
//! as a 32-byte EXIF segment, so the picture still turns upright. In a PNG every chunk outside a
//! short list of rendering chunks (text, `eXIf`, `tIME`, private chunks). Location (EXIF GPS, XMP)
//! therefore never reaches storage, even before the documents step has made its rendition.
//!
//! A damaged scan inside a well-formed file passes this walk; the full decode in the documents
//! step finds it and sends the application to review.

use std::ops::Range;

/// Why an image file was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageProblem {
    /// Not a well-formed file of its format: truncated, damaged, or not what its magic says.
    Unreadable,
    /// Width × height above the cap.
    TooManyPixels,
}

/// What the walk learnt about a well-formed image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFacts {
    pub width: u32,
    pub height: u32,
    /// EXIF orientation 1–8 (1: upright, or none given).
    pub orientation: u8,
}

/// A well-formed image and the same file without metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripped {
    pub facts: ImageFacts,
    pub bytes: Vec<u8>,
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
const EXIF_HEADER: &[u8] = b"Exif\0\0";
const ICC_HEADER: &[u8] = b"ICC_PROFILE\0";
/// EXIF tag of the orientation.
const ORIENTATION_TAG: u16 = 0x0112;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn within_cap(width: u32, height: u32, max_pixels: u64) -> Result<(), ImageProblem> {
    if width == 0 || height == 0 {
        return Err(ImageProblem::Unreadable);
    }
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageProblem::TooManyPixels);
    }
    Ok(())
}

/// Start-of-frame markers (every coding process), which carry the image size.
fn is_sof(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF)
}

/// Whether an application segment is kept: JFIF, an ICC profile, Adobe's transform flag.
fn keep_app_segment(marker: u8, payload: &[u8]) -> bool {
    match marker {
        0xE0 => payload.starts_with(b"JFIF\0"),
        0xE2 => payload.starts_with(ICC_HEADER),
        0xEE => payload.starts_with(b"Adobe"),
        _ => false,
    }
}

/// Index just past the entropy-coded data that starts at `i`: the `0xFF` of the next marker that
/// is neither a stuffed zero, a restart marker nor fill.
fn end_of_scan(b: &[u8], mut i: usize) -> Result<usize, ImageProblem> {
    loop {
        let ff = b[i..].iter().position(|&x| x == 0xFF).ok_or(ImageProblem::Unreadable)?;
        i += ff;
        match b.get(i + 1) {
            None => return Err(ImageProblem::Unreadable),
            Some(0x00) | Some(0xD0..=0xD7) => i += 2,
            // Fill bytes before a marker: look again from the next 0xFF.
            Some(0xFF) => i += 1,
            Some(_) => return Ok(i),
        }
    }
}

/// Walks a JPEG from SOI to EOI. Returns the facts and the byte ranges to keep in a copy without
/// metadata (SOI is not among them).
fn walk_jpeg(b: &[u8], max_pixels: u64) -> Result<(ImageFacts, Vec<Range<usize>>), ImageProblem> {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return Err(ImageProblem::Unreadable);
    }
    let mut keep = Vec::new();
    let mut size: Option<(u32, u32)> = None;
    let mut orientation = 1;
    let mut scans = 0;
    let mut i = 2;
    loop {
        if b.get(i) != Some(&0xFF) {
            return Err(ImageProblem::Unreadable);
        }
        while b.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let marker = *b.get(i + 1).ok_or(ImageProblem::Unreadable)?;
        match marker {
            0xD9 => break,
            0xD8 | 0x00 | 0xD0..=0xD7 => return Err(ImageProblem::Unreadable),
            0x01 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        let len = usize::from(be16(b, i + 2).ok_or(ImageProblem::Unreadable)?);
        let end = i + 2 + len;
        if len < 2 || end > b.len() {
            return Err(ImageProblem::Unreadable);
        }
        let payload = &b[i + 4..end];
        match marker {
            m if is_sof(m) => {
                if size.is_some() {
                    return Err(ImageProblem::Unreadable);
                }
                let height = u32::from(be16(payload, 1).ok_or(ImageProblem::Unreadable)?);
                let width = u32::from(be16(payload, 3).ok_or(ImageProblem::Unreadable)?);
                within_cap(width, height, max_pixels)?;
                size = Some((width, height));
                keep.push(i..end);
            }
            0xDA => {
                if size.is_none() {
                    return Err(ImageProblem::Unreadable);
                }
                scans += 1;
                let data_end = end_of_scan(b, end)?;
                keep.push(i..data_end);
                i = data_end;
                continue;
            }
            0xE1 if payload.starts_with(EXIF_HEADER) => {
                orientation = exif_orientation(&payload[EXIF_HEADER.len()..]).unwrap_or(orientation);
            }
            0xE0..=0xEF | 0xFE => {
                if keep_app_segment(marker, payload) {
                    keep.push(i..end);
                }
            }
            _ => keep.push(i..end),
        }
        i = end;
    }
    let (width, height) = size.ok_or(ImageProblem::Unreadable)?;
    if scans == 0 {
        return Err(ImageProblem::Unreadable);
    }
    keep.push(i..i + 2);
    Ok((ImageFacts { width, height, orientation }, keep))
}

/// The orientation tag (1–8) of IFD0 in a TIFF-structured EXIF block, if present and valid.
pub fn exif_orientation(tiff: &[u8]) -> Option<u8> {
    let big = match tiff.get(0..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |at: usize| tiff.get(at..at + 2).map(|s| if big { u16::from_be_bytes([s[0], s[1]]) } else { u16::from_le_bytes([s[0], s[1]]) });
    let u32_at = |at: usize| {
        tiff.get(at..at + 4)
            .map(|s| if big { u32::from_be_bytes([s[0], s[1], s[2], s[3]]) } else { u32::from_le_bytes([s[0], s[1], s[2], s[3]]) })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let count = usize::from(u16_at(ifd)?);
    (0..count).find_map(|n| {
        let entry = ifd + 2 + n * 12;
        (u16_at(entry)? == ORIENTATION_TAG && u16_at(entry + 2)? == 3)
            .then(|| u16_at(entry + 8))
            .flatten()
            .and_then(|v| u8::try_from(v).ok())
            .filter(|v| (1..=8).contains(v))
    })
}

/// An APP1 EXIF segment holding only the orientation (big-endian TIFF, one IFD0 entry).
fn orientation_segment(orientation: u8) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&ORIENTATION_TAG.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&u16::from(orientation).to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes());
    let len = u16::try_from(2 + EXIF_HEADER.len() + tiff.len()).unwrap_or(u16::MAX);
    let mut seg = vec![0xFF, 0xE1];
    seg.extend_from_slice(&len.to_be_bytes());
    seg.extend_from_slice(EXIF_HEADER);
    seg.extend_from_slice(&tiff);
    seg
}

/// Checks a JPEG's structure and pixel cap and copies it without metadata (orientation kept).
pub fn strip_jpeg(b: &[u8], max_pixels: u64) -> Result<Stripped, ImageProblem> {
    let (facts, keep) = walk_jpeg(b, max_pixels)?;
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&[0xFF, 0xD8]);
    if facts.orientation != 1 {
        out.extend_from_slice(&orientation_segment(facts.orientation));
    }
    for r in keep {
        out.extend_from_slice(&b[r]);
    }
    Ok(Stripped { facts, bytes: out })
}

/// PNG chunks kept in a copy without metadata: the critical ones and those that change rendering.
const PNG_KEPT: &[&[u8; 4]] = &[b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"bKGD", b"pHYs"];

/// Checks a PNG's chunks (each CRC, IHDR first, IDAT present, IEND last) and pixel cap, and copies
/// it without metadata chunks.
pub fn strip_png(b: &[u8], max_pixels: u64) -> Result<Stripped, ImageProblem> {
    if !b.starts_with(PNG_SIGNATURE) {
        return Err(ImageProblem::Unreadable);
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(PNG_SIGNATURE);
    let mut i = PNG_SIGNATURE.len();
    let mut facts = None;
    let mut idat = false;
    loop {
        let len = usize::try_from(be32(b, i).ok_or(ImageProblem::Unreadable)?).map_err(|_| ImageProblem::Unreadable)?;
        let end = i.checked_add(12).and_then(|e| e.checked_add(len)).ok_or(ImageProblem::Unreadable)?;
        if end > b.len() {
            return Err(ImageProblem::Unreadable);
        }
        let kind: [u8; 4] = b[i + 4..i + 8].try_into().map_err(|_| ImageProblem::Unreadable)?;
        let crc = be32(b, end - 4).ok_or(ImageProblem::Unreadable)?;
        if crc32fast::hash(&b[i + 4..end - 4]) != crc {
            return Err(ImageProblem::Unreadable);
        }
        let data = &b[i + 8..end - 4];
        match (&kind, facts.is_some()) {
            (b"IHDR", false) if len == 13 => {
                let (width, height) = (be32(data, 0).unwrap_or(0), be32(data, 4).unwrap_or(0));
                within_cap(width, height, max_pixels)?;
                facts = Some(ImageFacts { width, height, orientation: 1 });
            }
            (_, false) => return Err(ImageProblem::Unreadable),
            (b"IHDR", true) => return Err(ImageProblem::Unreadable),
            (b"IDAT", true) => idat = true,
            _ => {}
        }
        // An unknown critical chunk (upper-case first letter) means a decoder cannot read the file.
        let known = PNG_KEPT.contains(&&kind);
        if !known && kind[0].is_ascii_uppercase() {
            return Err(ImageProblem::Unreadable);
        }
        if known {
            out.extend_from_slice(&b[i..end]);
        }
        i = end;
        if &kind == b"IEND" {
            break;
        }
    }
    match facts {
        Some(facts) if idat => Ok(Stripped { facts, bytes: out }),
        _ => Err(ImageProblem::Unreadable),
    }
}

/// Metadata found in an image file, by kind (`exif`, `gps`, `xmp`, `comment`, `text`, `trailer`):
/// what a test asserts is absent from what is stored. Orientation-only EXIF counts as none.
pub fn metadata_kinds(b: &[u8]) -> Vec<&'static str> {
    let mut found = Vec::new();
    let mut push = |k: &'static str| {
        if !found.contains(&k) {
            found.push(k)
        }
    };
    if contains(b, b"http://ns.adobe.com/xap/1.0/") || contains(b, b"<x:xmpmeta") {
        push("xmp");
    }
    if b.starts_with(&[0xFF, 0xD8]) {
        if let Ok((_, keep)) = walk_jpeg(b, u64::MAX) {
            if keep.last().is_some_and(|r| r.end < b.len()) {
                push("trailer");
            }
        }
        let mut i = 2;
        while let (Some(0xFF), Some(marker), Some(len)) = (b.get(i).copied(), b.get(i + 1).copied(), be16(b, i + 2)) {
            let end = (i + 2 + usize::from(len)).min(b.len());
            let payload = b.get(i + 4..end).unwrap_or_default();
            match marker {
                0xDA => break,
                0xE1 if payload.starts_with(EXIF_HEADER) => {
                    let tiff = &payload[EXIF_HEADER.len()..];
                    if tiff.len() > 32 || exif_orientation(tiff).is_none() {
                        push("exif");
                    }
                    // GPS IFD pointer tag 0x8825, in either byte order.
                    if contains(tiff, &[0x88, 0x25]) || contains(tiff, &[0x25, 0x88]) {
                        push("gps");
                    }
                }
                0xE0..=0xEF if !keep_app_segment(marker, payload) => push("exif"),
                0xFE => push("comment"),
                _ => {}
            }
            i = end;
        }
    } else if b.starts_with(PNG_SIGNATURE) {
        let mut i = PNG_SIGNATURE.len();
        while let (Some(len), Some(kind)) = (be32(b, i), b.get(i + 4..i + 8)) {
            match kind {
                b"eXIf" => push("exif"),
                b"tEXt" | b"zTXt" | b"iTXt" => push("text"),
                _ => {}
            }
            i = i.saturating_add(12).saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        }
    }
    found
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG's skeleton: SOI, APP1 EXIF with GPS and orientation 6, COM, DQT, SOF0 `w`×`h`, SOS
    /// with stuffed bytes and a restart marker, EOI, then a trailer.
    fn skeleton(w: u16, h: u16) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        let mut tiff = b"II\x2a\0\x08\0\0\0".to_vec();
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
        tiff.extend_from_slice(&[0x25, 0x88, 4, 0, 1, 0, 0, 0, 0x26, 0, 0, 0]);
        tiff.extend_from_slice(&[0, 0, 0, 0]);
        let mut app1 = EXIF_HEADER.to_vec();
        app1.extend_from_slice(&tiff);
        segment(&mut v, 0xE1, &app1);
        segment(&mut v, 0xFE, b"taken at home");
        segment(&mut v, 0xDB, &[0; 65]);
        let mut sof = vec![8];
        sof.extend_from_slice(&h.to_be_bytes());
        sof.extend_from_slice(&w.to_be_bytes());
        sof.extend_from_slice(&[1, 1, 0x11, 0]);
        segment(&mut v, 0xC0, &sof);
        segment(&mut v, 0xDA, &[1, 1, 0, 0, 63, 0]);
        v.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xD9]);
        v.extend_from_slice(b"MPF trailer");
        v
    }

    fn segment(v: &mut Vec<u8>, marker: u8, payload: &[u8]) {
        v.extend_from_slice(&[0xFF, marker]);
        v.extend_from_slice(&u16::try_from(payload.len() + 2).expect("short").to_be_bytes());
        v.extend_from_slice(payload);
    }

    #[test]
    fn a_jpeg_is_walked_to_eoi_and_stripped_of_everything_but_orientation() {
        let jpeg = skeleton(4000, 3000);
        assert_eq!(metadata_kinds(&jpeg), vec!["trailer", "exif", "gps", "comment"]);
        let s = strip_jpeg(&jpeg, 40_000_000).expect("well formed");
        assert_eq!(s.facts, ImageFacts { width: 4000, height: 3000, orientation: 6 });
        assert_eq!(metadata_kinds(&s.bytes), Vec::<&str>::new());
        assert!(s.bytes.ends_with(&[0xFF, 0xD9]));
        // The stripped copy walks the same and keeps its orientation.
        assert_eq!(strip_jpeg(&s.bytes, 40_000_000).expect("again").facts.orientation, 6);
        assert_eq!(strip_jpeg(&jpeg, 11_999_999), Err(ImageProblem::TooManyPixels));
    }

    #[test]
    fn a_cut_jpeg_is_unreadable_wherever_it_is_cut() {
        let jpeg = skeleton(8, 8);
        let eoi = jpeg.len() - b"MPF trailer".len();
        for cut in 0..eoi {
            assert_eq!(strip_jpeg(&jpeg[..cut], 40_000_000).map(|s| s.facts), Err(ImageProblem::Unreadable), "cut at {cut}");
        }
    }

    fn png(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut v = PNG_SIGNATURE.to_vec();
        for (kind, data) in chunks {
            v.extend_from_slice(&u32::try_from(data.len()).expect("short").to_be_bytes());
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            v.extend_from_slice(&body);
            v.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        }
        v
    }

    fn ihdr(w: u32, h: u32) -> Vec<u8> {
        let mut d = w.to_be_bytes().to_vec();
        d.extend_from_slice(&h.to_be_bytes());
        d.extend_from_slice(&[8, 2, 0, 0, 0]);
        d
    }

    #[test]
    fn png_chunks_are_checked_and_text_dropped() {
        let file = png(&[(b"IHDR", ihdr(3, 2)), (b"tEXt", b"GPS\x0035.6,139.7".to_vec()), (b"IDAT", vec![1, 2]), (b"IEND", vec![])]);
        assert_eq!(metadata_kinds(&file), vec!["text"]);
        let s = strip_png(&file, 100).expect("well formed");
        assert_eq!((s.facts.width, s.facts.height), (3, 2));
        assert!(metadata_kinds(&s.bytes).is_empty());
        assert_eq!(strip_png(&file, 5), Err(ImageProblem::TooManyPixels));
        let mut bad_crc = file.clone();
        let last = bad_crc.len() - 20;
        bad_crc[last] ^= 1;
        assert_eq!(strip_png(&bad_crc, 100), Err(ImageProblem::Unreadable));
        assert_eq!(strip_png(&file[..file.len() - 1], 100), Err(ImageProblem::Unreadable));
        let no_idat = png(&[(b"IHDR", ihdr(3, 2)), (b"IEND", vec![])]);
        assert_eq!(strip_png(&no_idat, 100), Err(ImageProblem::Unreadable));
        let unknown_critical = png(&[(b"IHDR", ihdr(3, 2)), (b"QQQQ", vec![]), (b"IDAT", vec![1]), (b"IEND", vec![])]);
        assert_eq!(strip_png(&unknown_critical, 100), Err(ImageProblem::Unreadable));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use proptest::prelude::*;
        proptest!(|(tail in proptest::collection::vec(any::<u8>(), 0..300))| {
            for head in [&[0xFF, 0xD8, 0xFF][..], PNG_SIGNATURE] {
                let mut b = head.to_vec();
                b.extend_from_slice(&tail);
                let _ = strip_jpeg(&b, 1000);
                let _ = strip_png(&b, 1000);
                let _ = metadata_kinds(&b);
            }
        });
    }
}
