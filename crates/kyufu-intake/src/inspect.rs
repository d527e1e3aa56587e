//! Checks of an uploaded document's content, after its type is known from the magic bytes and
//! before anything is stored: an image must decode completely within a pixel cap (read from the
//! header first, so a decompression bomb costs nothing), a PDF must carry no active content
//! (`kyufu_domain::pdf`). JPEGs are decoded by zune-jpeg in strict mode: its lenient default
//! fills a truncated scan with grey, which would let a half-uploaded photo through. Decoding is CPU work and runs on the blocking pool, at most a few at a
//! time so concurrent large images cannot take all memory.

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use image::{ImageFormat, ImageReader, Limits};
use kyufu_domain::document::MAX_IMAGE_PIXELS;
use kyufu_domain::ErrorCode;
use tokio::sync::Semaphore;

/// Bytes per pixel the decoder may allocate at most (16-bit RGBA).
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// Why an image was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageProblem {
    /// Not decodable: damaged, truncated, or not really the format its magic says.
    Unreadable,
    /// Width × height above the cap.
    TooManyPixels,
}

impl ImageProblem {
    pub fn code(self) -> ErrorCode {
        match self {
            ImageProblem::Unreadable => ErrorCode::DocumentUnreadable,
            ImageProblem::TooManyPixels => ErrorCode::DocumentTooManyPixels,
        }
    }
}

/// Decodes `bytes` as `format` completely, refusing more than `max_pixels` from the header alone.
pub fn check_image(bytes: &[u8], format: ImageFormat, max_pixels: u64) -> Result<(u32, u32), ImageProblem> {
    if format == ImageFormat::Jpeg {
        return check_jpeg(bytes, max_pixels);
    }
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|_| ImageProblem::Unreadable)?;
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(ImageProblem::TooManyPixels);
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL));
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ImageProblem::TooManyPixels,
        _ => ImageProblem::Unreadable,
    })?;
    Ok((image.width(), image.height()))
}

fn check_jpeg(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32), ImageProblem> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::options::DecoderOptions;
    // The decoder's own size limit would be a format error; the pixel cap is checked here instead.
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|_| ImageProblem::Unreadable)?;
    let info = decoder.info().ok_or(ImageProblem::Unreadable)?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(ImageProblem::TooManyPixels);
    }
    decoder.decode().map_err(|_| ImageProblem::Unreadable)?;
    Ok((w, h))
}

/// The image format for a sniffed content type, if it is an image.
pub fn image_format(content_type: &str) -> Option<ImageFormat> {
    match content_type {
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/png" => Some(ImageFormat::Png),
        _ => None,
    }
}

/// Runs the content checks for `content_type`; images are decoded on the blocking pool under
/// `decoders` (one permit per concurrent decode).
pub async fn check_document(bytes: &Bytes, content_type: &str, decoders: &Arc<Semaphore>) -> Result<(), ErrorCode> {
    if content_type == "application/pdf" {
        return match kyufu_domain::pdf::active_content(bytes) {
            Some(_) => Err(ErrorCode::DocumentActiveContent),
            None => Ok(()),
        };
    }
    let Some(format) = image_format(content_type) else { return Ok(()) };
    let _permit = decoders.clone().acquire_owned().await.map_err(|_| ErrorCode::Internal)?;
    let bytes = bytes.clone();
    tokio::task::spawn_blocking(move || check_image(&bytes, format, MAX_IMAGE_PIXELS))
        .await
        .map_err(|_| ErrorCode::Internal)?
        .map(|_| ())
        .map_err(ImageProblem::code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    /// A PNG whose header claims `w` × `h` but carries one tiny IDAT: a bomb's shape.
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut png = encode(1, 1, ImageFormat::Png);
        // IHDR data starts after the 8-byte signature, 4-byte length and 4-byte type.
        png[16..20].copy_from_slice(&w.to_be_bytes());
        png[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }

    #[test]
    fn real_images_decode() {
        assert_eq!(check_image(&encode(32, 24, ImageFormat::Png), ImageFormat::Png, MAX_IMAGE_PIXELS), Ok((32, 24)));
        assert_eq!(check_image(&encode(32, 24, ImageFormat::Jpeg), ImageFormat::Jpeg, MAX_IMAGE_PIXELS), Ok((32, 24)));
    }

    #[test]
    fn truncated_or_fake_images_are_unreadable() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let full = encode(64, 64, format);
            let cut = &full[..full.len() / 2];
            assert_eq!(check_image(cut, format, MAX_IMAGE_PIXELS), Err(ImageProblem::Unreadable), "{format:?} cut in half");
        }
        assert_eq!(check_image(b"\x89PNG\r\n\x1a\n\0\0\0\0padding", ImageFormat::Png, MAX_IMAGE_PIXELS), Err(ImageProblem::Unreadable));
        assert_eq!(check_image(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J'], ImageFormat::Jpeg, MAX_IMAGE_PIXELS), Err(ImageProblem::Unreadable));
    }

    #[test]
    fn a_huge_canvas_is_refused_from_the_header() {
        // 100 000 × 100 000 = 10 gigapixels claimed in a file of a few dozen bytes.
        let bomb = png_claiming(100_000, 100_000);
        assert!(bomb.len() < 100);
        assert_eq!(check_image(&bomb, ImageFormat::Png, MAX_IMAGE_PIXELS), Err(ImageProblem::TooManyPixels));
        // The cap is on the product: a small real image over a low cap is refused too.
        assert_eq!(check_image(&encode(10, 10, ImageFormat::Png), ImageFormat::Png, 99), Err(ImageProblem::TooManyPixels));
        assert_eq!(check_image(&encode(10, 10, ImageFormat::Png), ImageFormat::Png, 100), Ok((10, 10)));
        assert_eq!(check_image(&encode(10, 10, ImageFormat::Jpeg), ImageFormat::Jpeg, 99), Err(ImageProblem::TooManyPixels));
        // A JPEG header claiming 60 000 × 60 000, with no scan data behind it.
        let mut jpeg = encode(8, 8, ImageFormat::Jpeg);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline SOF0");
        jpeg[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
        assert_eq!(check_image(&jpeg, ImageFormat::Jpeg, MAX_IMAGE_PIXELS), Err(ImageProblem::TooManyPixels));
    }

    #[tokio::test]
    async fn check_document_routes_by_type() {
        let decoders = Arc::new(Semaphore::new(1));
        let png = Bytes::from(encode(8, 8, ImageFormat::Png));
        assert_eq!(check_document(&png, "image/png", &decoders).await, Ok(()));
        let bad = Bytes::from_static(b"\xFF\xD8\xFF\xE0 not a jpeg");
        assert_eq!(check_document(&bad, "image/jpeg", &decoders).await, Err(ErrorCode::DocumentUnreadable));
        let js = Bytes::from_static(b"%PDF-1.4\n<< /OpenAction 2 0 R >>");
        assert_eq!(check_document(&js, "application/pdf", &decoders).await, Err(ErrorCode::DocumentActiveContent));
        assert_eq!(check_document(&Bytes::from_static(b"%PDF-1.4\n"), "application/pdf", &decoders).await, Ok(()));
    }
}
