//! Checks of an uploaded document's content on the request path, after its type is known from the
//! magic bytes and before anything is stored. Only cheap checks run here (a few milliseconds for a
//! 12-megapixel photo); the full decode is the documents step's work, off the request path
//! (`kyufu_pipeline::documents`):
//! - an image's structure is walked (JPEG markers and scans through EOI, PNG chunks and their
//!   CRCs) and its pixel count read from the header, so a truncated upload or a decompression bomb
//!   is refused without decoding a pixel; what is stored is the same file without its metadata
//!   (`kyufu_domain::imagefile`): no GPS position or camera tags ever reach storage;
//! - a PDF must carry no active content: the byte scan of `kyufu_domain::pdf`, then every object
//!   as the PDF library lopdf reads it, compressed object streams included. A file with object
//!   streams that the library cannot read is refused as unreadable, since its objects could not be
//!   checked.
//!
//! The work runs on the blocking pool, at most a few at a time.

use std::sync::Arc;

use bytes::Bytes;
use kyufu_domain::document::MAX_IMAGE_PIXELS;
pub use kyufu_domain::imagefile::ImageProblem;
use kyufu_domain::imagefile::{strip_jpeg, strip_png, Stripped};
use kyufu_domain::ErrorCode;
use tokio::sync::Semaphore;

fn problem_code(p: ImageProblem) -> ErrorCode {
    match p {
        ImageProblem::Unreadable => ErrorCode::DocumentUnreadable,
        ImageProblem::TooManyPixels => ErrorCode::DocumentTooManyPixels,
    }
}

/// Walks an image of `content_type` and copies it without metadata; `None` for a non-image type.
pub fn check_image(bytes: &[u8], content_type: &str, max_pixels: u64) -> Option<Result<Stripped, ImageProblem>> {
    match content_type {
        "image/jpeg" => Some(strip_jpeg(bytes, max_pixels)),
        "image/png" => Some(strip_png(bytes, max_pixels)),
        _ => None,
    }
}

/// The active key a PDF carries anywhere, compressed object streams included, or an error code
/// for a PDF whose object streams cannot be read.
pub fn check_pdf(pdf: &[u8]) -> Result<(), ErrorCode> {
    if kyufu_domain::pdf::active_content(pdf).is_some() {
        return Err(ErrorCode::DocumentActiveContent);
    }
    // The library is outside input's first reader here: a panic in it is a refusal, not a crash.
    let parsed = std::panic::catch_unwind(|| lopdf::Document::load_mem(pdf));
    match parsed {
        Ok(Ok(doc)) => {
            // lopdf leaves out the objects of an object stream it cannot inflate, silently.
            let lost = doc.reference_table.entries.iter().any(|(&number, entry)| {
                matches!(entry, lopdf::xref::XrefEntry::Compressed { .. }) && !doc.objects.contains_key(&(number, 0))
            });
            if lost {
                return Err(ErrorCode::DocumentUnreadable);
            }
            let active = std::iter::once(&lopdf::Object::Dictionary(doc.trailer.clone()))
                .chain(doc.objects.values())
                .find_map(active_in_object);
            match active {
                Some(_) => Err(ErrorCode::DocumentActiveContent),
                None => Ok(()),
            }
        }
        // Without object streams the byte scan above has seen every dictionary.
        _ if kyufu_domain::pdf::has_name(pdf, "ObjStm") => Err(ErrorCode::DocumentUnreadable),
        _ => Ok(()),
    }
}

/// The first active key among the names of `object` (dictionary keys and name values, nested).
fn active_in_object(object: &lopdf::Object) -> Option<&'static str> {
    use lopdf::Object;
    let mut todo = vec![object];
    while let Some(o) = todo.pop() {
        let dict = match o {
            Object::Name(n) => match kyufu_domain::pdf::active_key(n) {
                Some(k) => return Some(k),
                None => continue,
            },
            Object::Array(items) => {
                todo.extend(items.iter());
                continue;
            }
            Object::Dictionary(d) => d,
            Object::Stream(s) => &s.dict,
            _ => continue,
        };
        for (key, value) in dict.iter() {
            if let Some(k) = kyufu_domain::pdf::active_key(key) {
                return Some(k);
            }
            todo.push(value);
        }
    }
    None
}

/// The request-path check of a document of `content_type` (known from its bytes), synchronous:
/// the bytes to store (an image without metadata; anything else as uploaded) or the refusal.
pub fn inspect(bytes: &Bytes, content_type: &str) -> Result<Bytes, ErrorCode> {
    if content_type == "application/pdf" {
        return check_pdf(bytes).map(|()| bytes.clone());
    }
    match check_image(bytes, content_type, MAX_IMAGE_PIXELS) {
        Some(Ok(stripped)) => Ok(Bytes::from(stripped.bytes)),
        Some(Err(p)) => Err(problem_code(p)),
        None => Ok(bytes.clone()),
    }
}

/// Runs `inspect` on the blocking pool under `workers` (one permit per concurrent check).
pub async fn check_document(bytes: &Bytes, content_type: &str, workers: &Arc<Semaphore>) -> Result<Bytes, ErrorCode> {
    let _permit = workers.clone().acquire_owned().await.map_err(|_| ErrorCode::Internal)?;
    let (bytes, content_type) = (bytes.clone(), content_type.to_owned());
    tokio::task::spawn_blocking(move || inspect(&bytes, &content_type)).await.map_err(|_| ErrorCode::Internal)?
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::ImageFormat;
    use lopdf::{dictionary, Document, Object, Stream};

    use super::*;

    fn encode(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    fn mime(format: ImageFormat) -> &'static str {
        if format == ImageFormat::Png { "image/png" } else { "image/jpeg" }
    }

    fn dims(bytes: &[u8], format: ImageFormat, max_pixels: u64) -> Result<(u32, u32), ImageProblem> {
        let s = check_image(bytes, mime(format), max_pixels).expect("an image type")?;
        // What is stored still decodes to the same picture size.
        let back = image::load_from_memory_with_format(&s.bytes, format).expect("stored copy decodes");
        assert_eq!((back.width(), back.height()), (s.facts.width, s.facts.height));
        Ok((s.facts.width, s.facts.height))
    }

    /// A PNG whose header claims `w` × `h` but carries one tiny IDAT: a bomb's shape.
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut png = encode(1, 1, ImageFormat::Png);
        // IHDR data starts after the 8-byte signature, 4-byte length and 4-byte type.
        png[16..20].copy_from_slice(&w.to_be_bytes());
        png[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32fast::hash(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    #[test]
    fn real_images_pass() {
        assert_eq!(dims(&encode(32, 24, ImageFormat::Png), ImageFormat::Png, MAX_IMAGE_PIXELS), Ok((32, 24)));
        assert_eq!(dims(&encode(32, 24, ImageFormat::Jpeg), ImageFormat::Jpeg, MAX_IMAGE_PIXELS), Ok((32, 24)));
    }

    #[test]
    fn truncated_or_fake_images_are_unreadable() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let full = encode(64, 64, format);
            let cut = &full[..full.len() / 2];
            assert_eq!(dims(cut, format, MAX_IMAGE_PIXELS), Err(ImageProblem::Unreadable), "{format:?} cut in half");
            let short = &full[..full.len() - 1];
            assert_eq!(dims(short, format, MAX_IMAGE_PIXELS), Err(ImageProblem::Unreadable), "{format:?} without its last byte");
        }
        assert_eq!(dims(b"\x89PNG\r\n\x1a\n\0\0\0\0padding", ImageFormat::Png, MAX_IMAGE_PIXELS), Err(ImageProblem::Unreadable));
        assert_eq!(dims(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J'], ImageFormat::Jpeg, MAX_IMAGE_PIXELS), Err(ImageProblem::Unreadable));
    }

    #[test]
    fn a_huge_canvas_is_refused_from_the_header() {
        // 100 000 × 100 000 = 10 gigapixels claimed in a file of a few dozen bytes.
        let bomb = png_claiming(100_000, 100_000);
        assert!(bomb.len() < 100);
        assert_eq!(dims(&bomb, ImageFormat::Png, MAX_IMAGE_PIXELS), Err(ImageProblem::TooManyPixels));
        // The cap is on the product: a small real image over a low cap is refused too.
        assert_eq!(dims(&encode(10, 10, ImageFormat::Png), ImageFormat::Png, 99), Err(ImageProblem::TooManyPixels));
        assert_eq!(dims(&encode(10, 10, ImageFormat::Png), ImageFormat::Png, 100), Ok((10, 10)));
        assert_eq!(dims(&encode(10, 10, ImageFormat::Jpeg), ImageFormat::Jpeg, 99), Err(ImageProblem::TooManyPixels));
        // A JPEG header claiming 60 000 × 60 000, with no scan data behind it.
        let mut jpeg = encode(8, 8, ImageFormat::Jpeg);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline SOF0");
        jpeg[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
        assert_eq!(dims(&jpeg, ImageFormat::Jpeg, MAX_IMAGE_PIXELS), Err(ImageProblem::TooManyPixels));
    }

    /// A one-page PDF written by lopdf with `catalog_extra` in its catalog; with object streams
    /// (PDF 1.5, every dictionary compressed) when `modern`.
    fn lopdf_pdf(catalog_extra: Option<(&str, Object)>, modern: bool) -> Vec<u8> {
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        let content = doc.add_object(Stream::new(dictionary! {}, b"BT /F1 12 Tf 72 720 Td (ID card) Tj ET".to_vec()));
        let page = doc.add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Contents" => content });
        doc.objects.insert(pages_id, Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => vec![page.into()], "Count" => 1 }));
        let mut catalog = dictionary! { "Type" => "Catalog", "Pages" => pages_id };
        if let Some((k, v)) = catalog_extra {
            catalog.set(k, v);
        }
        let catalog_id = doc.add_object(catalog);
        doc.trailer.set("Root", catalog_id);
        let mut out = Vec::new();
        if modern {
            doc.save_modern(&mut out).expect("save with object streams");
        } else {
            doc.save_to(&mut out).expect("save");
        }
        out
    }

    #[test]
    fn active_content_inside_compressed_object_streams_is_refused() {
        let js = dictionary! { "S" => "JavaScript", "JS" => Object::string_literal("app.alert(1)") };
        let open = lopdf_pdf(Some(("OpenAction", Object::Dictionary(js))), true);
        assert!(kyufu_domain::pdf::has_name(&open, "ObjStm"), "the catalog sits in an object stream");
        assert_eq!(kyufu_domain::pdf::active_content(&open), None, "the byte scan alone cannot see it");
        assert_eq!(check_pdf(&open), Err(ErrorCode::DocumentActiveContent));
        let launch = lopdf_pdf(Some(("AA", Object::Dictionary(dictionary! { "O" => dictionary! { "S" => "Launch" } }))), true);
        assert_eq!(check_pdf(&launch), Err(ErrorCode::DocumentActiveContent));
        // The same documents without active content pass, with and without object streams.
        assert_eq!(check_pdf(&lopdf_pdf(None, true)), Ok(()));
        assert_eq!(check_pdf(&lopdf_pdf(None, false)), Ok(()));
        assert_eq!(check_pdf(&lopdf_pdf(Some(("Lang", Object::string_literal("ja-JP"))), true)), Ok(()));
        // An object stream the library cannot inflate: refused, since nothing in it was checked.
        let mut damaged = open.clone();
        let objstm = damaged.windows(6).position(|w| w == b"ObjStm").expect("an object stream");
        let body = objstm + damaged[objstm..].windows(7).position(|w| w == b"stream\n").expect("its body") + 7;
        for b in &mut damaged[body + 2..body + 12] {
            *b = b'x';
        }
        assert_eq!(check_pdf(&damaged), Err(ErrorCode::DocumentUnreadable));
    }

    #[tokio::test]
    async fn check_document_routes_by_type() {
        let workers = Arc::new(Semaphore::new(1));
        let png = Bytes::from(encode(8, 8, ImageFormat::Png));
        assert!(check_document(&png, "image/png", &workers).await.is_ok());
        let bad = Bytes::from_static(b"\xFF\xD8\xFF\xE0 not a jpeg");
        assert_eq!(check_document(&bad, "image/jpeg", &workers).await, Err(ErrorCode::DocumentUnreadable));
        let js = Bytes::from_static(b"%PDF-1.4\n<< /OpenAction 2 0 R >>");
        assert_eq!(check_document(&js, "application/pdf", &workers).await, Err(ErrorCode::DocumentActiveContent));
        let plain = Bytes::from_static(b"%PDF-1.4\n");
        assert_eq!(check_document(&plain, "application/pdf", &workers).await, Ok(plain));
    }
}
