//! The documents step, off the request path: every image document is decoded in full (within the
//! pixel cap), turned upright by its EXIF orientation, scaled so its longer side is at most
//! `RENDITION_MAX_SIDE`, and written as a JPEG without any metadata under `rendition_key`. That
//! rendition is what reviewers see. PDFs are passed on as they are (intake checked them).
//!
//! Intake only walked the file's structure, so this is where a damaged scan inside a well-formed
//! file is found: no rendition is written, the event goes on all the same, and ID-check, finding
//! an image without a rendition, sends the application to `needs_review` with
//! `document_unreadable` next to whatever else it found. Nothing is lost.
//!
//! Safe to redo: the rendition is a pure function of the stored document, written once
//! (`AlreadyExists` on a redo means it is there); the status is not touched; forwarding twice is
//! harmless since ID-check is idempotent.

use std::io::Cursor;
use std::sync::Arc;

use async_trait::async_trait;
use image::codecs::jpeg::JpegEncoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageFormat, ImageReader, Limits, RgbImage};
use kyufu_domain::document::MAX_IMAGE_PIXELS;
use kyufu_domain::imagefile::{strip_jpeg, ImageProblem};
use kyufu_domain::Status;
use kyufu_ports::events::{rendition_key, ApplicationEvent};
use kyufu_ports::{AdapterError, Document, DocumentStore, EventBus, Message, StatusStore};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::metrics::StageMetrics;
use crate::runner::{Handled, Stage, StageError};

pub const NAME: &str = "documents";

/// Longer side of a rendition: an identity card stays legible, a review page loads fast.
pub const RENDITION_MAX_SIDE: u32 = 2000;
/// JPEG quality of a rendition.
pub const RENDITION_QUALITY: u8 = 85;
/// Bytes per pixel a decode may allocate at most (16-bit RGBA).
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// Decodes an image document completely (within `max_pixels`) and turns it upright; `None` for a
/// type that is not an image.
pub fn decode(bytes: &[u8], content_type: &str, max_pixels: u64) -> Option<Result<DynamicImage, ImageProblem>> {
    match content_type {
        "image/jpeg" => Some(decode_jpeg(bytes, max_pixels)),
        "image/png" => Some(decode_png(bytes, max_pixels)),
        _ => None,
    }
}

/// Makes the rendition of an image document: decoded, upright, at most `RENDITION_MAX_SIDE` on
/// its longer side, JPEG, no metadata. `None` for a type that has no rendition (PDF).
pub fn render(bytes: &[u8], content_type: &str, max_pixels: u64) -> Option<Result<Vec<u8>, ImageProblem>> {
    Some(decode(bytes, content_type, max_pixels)?.and_then(|img| {
        // `thumbnail` averages whole source pixels (fixed point): a few times cheaper than a
        // filtered resize, and for a shrink by 2 or more just as sharp.
        let img = if img.width().max(img.height()) > RENDITION_MAX_SIDE {
            img.thumbnail(RENDITION_MAX_SIDE, RENDITION_MAX_SIDE)
        } else {
            img
        };
        let mut out = Cursor::new(Vec::new());
        JpegEncoder::new_with_quality(&mut out, RENDITION_QUALITY)
            .encode_image(&img.to_rgb8())
            .map_err(|_| ImageProblem::Unreadable)?;
        Ok(out.into_inner())
    }))
}

/// A JPEG decoded by zune-jpeg in strict mode (its lenient default fills a truncated scan with
/// grey), turned upright.
fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, ImageProblem> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let facts = strip_jpeg(bytes, max_pixels)?.facts;
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let pixels = decoder.decode().map_err(|_| ImageProblem::Unreadable)?;
    let img = RgbImage::from_raw(facts.width, facts.height, pixels).ok_or(ImageProblem::Unreadable)?;
    let mut img = DynamicImage::ImageRgb8(img);
    img.apply_orientation(Orientation::from_exif(facts.orientation).unwrap_or(Orientation::NoTransforms));
    Ok(img)
}

fn decode_png(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, ImageProblem> {
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), ImageFormat::Png)
        .into_dimensions()
        .map_err(|_| ImageProblem::Unreadable)?;
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(ImageProblem::TooManyPixels);
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL));
    let mut reader = ImageReader::with_format(Cursor::new(bytes), ImageFormat::Png);
    reader.limits(limits);
    reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ImageProblem::TooManyPixels,
        _ => ImageProblem::Unreadable,
    })
}

pub struct Documents {
    pub bus: Arc<dyn EventBus>,
    pub status: Arc<dyn StatusStore>,
    pub documents: Arc<dyn DocumentStore>,
    pub output_topic: String,
    pub metrics: StageMetrics,
    /// Permits for decodes at once (each can take a few hundred MB for a large photo).
    pub decoders: Arc<Semaphore>,
}

impl Documents {
    /// Makes and stores the rendition of `ev`'s document; `false` if it could not be decoded.
    async fn make_rendition(&self, ev: &ApplicationEvent) -> Result<bool, StageError> {
        let key = rendition_key(&ev.program_id, ev.application_id);
        if self.documents.get(&key).await?.is_some() {
            return Ok(true);
        }
        let Some(doc) = self.documents.get(&ev.document.key).await? else {
            // ID-check gives the reason (`document_missing`).
            return Ok(false);
        };
        // The permit covers the decode only: held through the store's put as well, it capped the
        // stage at (permits / put latency), ~40 applications/s on a loaded S3.
        let rendered = {
            let _permit = self.decoders.clone().acquire_owned().await.map_err(|_| StageError::Failed("shutting down".into()))?;
            let content_type = doc.content_type.clone();
            tokio::task::spawn_blocking(move || render(&doc.bytes, &content_type, MAX_IMAGE_PIXELS))
                .await
                .map_err(|e| StageError::Failed(format!("render task: {e}")))?
        };
        let bytes = match rendered {
            None => return Ok(true),
            Some(Ok(bytes)) => bytes,
            Some(Err(_)) => return Ok(false),
        };
        let sha256 = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let rendition = Document { content_type: "image/jpeg".to_owned(), sha256, bytes: bytes.into() };
        match self.documents.put(&key, &rendition).await {
            Ok(()) | Err(AdapterError::AlreadyExists) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl Stage for Documents {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn handle(&self, ev: &ApplicationEvent, raw: &Message) -> Result<Handled, StageError> {
        let Some(record) = self.status.get(ev.application_id).await? else {
            return Err(StageError::Poison("no status record".into()));
        };
        if record.status != Status::Received {
            return Ok(Handled::Skipped);
        }
        let outcome = if self.make_rendition(ev).await? { "rendered" } else { "undecodable" };
        self.bus.publish(&self.output_topic, &raw.key, &raw.payload).await?;
        self.metrics.decisions.with_label_values(&[NAME, outcome]).inc();
        Ok(Handled::Done(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kyufu_domain::imagefile::metadata_kinds;
    use loadtest::photos::{camera_jpeg, looks_upright};

    #[test]
    fn a_camera_photo_becomes_an_upright_small_jpeg_without_metadata() {
        for (orientation, (w, h), expected) in [(1, (640, 480), (640, 480)), (3, (640, 480), (640, 480)), (8, (640, 480), (640, 480)), (6, (2400, 1800), (2000, 1500))] {
            let jpeg = camera_jpeg(w, h, orientation, 3);
            assert!(metadata_kinds(&jpeg).contains(&"gps"));
            let stored = strip_jpeg(&jpeg, MAX_IMAGE_PIXELS).expect("walks").bytes;
            let out = render(&stored, "image/jpeg", MAX_IMAGE_PIXELS).expect("an image").expect("renders");
            assert!(metadata_kinds(&out).is_empty(), "orientation {orientation}: {:?}", metadata_kinds(&out));
            let img = image::load_from_memory(&out).expect("decodes").to_rgb8();
            assert_eq!(img.dimensions(), expected, "orientation {orientation}");
            assert!(looks_upright(&img), "orientation {orientation}");
        }
    }

    #[test]
    fn a_damaged_scan_is_unreadable_and_a_pdf_has_no_rendition() {
        let mut jpeg = camera_jpeg(64, 48, 1, 3);
        // A Huffman table claiming far more codes than it holds: the file is well-formed segment
        // by segment, but no decoder can read its scan.
        let dht = jpeg.windows(2).position(|w| w == [0xFF, 0xC4]).expect("DHT");
        for b in &mut jpeg[dht + 5..dht + 21] {
            *b = 0xFF;
        }
        assert!(strip_jpeg(&jpeg, MAX_IMAGE_PIXELS).is_ok(), "the structural walk passes it");
        assert_eq!(render(&jpeg, "image/jpeg", MAX_IMAGE_PIXELS), Some(Err(ImageProblem::Unreadable)));
        assert_eq!(render(b"%PDF-1.4", "application/pdf", MAX_IMAGE_PIXELS), None);
    }
}
