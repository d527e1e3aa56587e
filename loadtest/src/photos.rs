//! Identity documents as phones send them, made in code: a camera JPEG (any size, 12 megapixels
//! by default) with the EXIF a phone writes (make, model, orientation, a GPS position) and an XMP
//! packet with the position again, and a PDF with compressed object streams as current tools write
//! it. The benchmark, the load tester's document profile and the tests of intake, the documents
//! step and the form all upload these.
//!
//! The picture is a landscape card whose top band is red; it is stored turned the way the EXIF
//! orientation says the camera held it, so "upright" can be checked on what comes out: wider than
//! high, red on top.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{imageops, RgbImage};

/// Width × height of a 12-megapixel phone photo (4:3), upright.
pub const CAMERA_12MP: (u32, u32) = (4032, 3024);

/// The GPS position written into every generated photo (a street in Toyama): what must never be
/// stored.
pub const GPS_LATITUDE: (u32, u32, u32) = (36, 41, 47);
pub const GPS_LONGITUDE: (u32, u32, u32) = (137, 12, 49);

/// The upright picture: a card on a desk, red band on top, texture so it compresses like a photo.
pub fn upright(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    RgbImage::from_fn(width, height, |px, py| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let grain = (x & 0x0F) as u8;
        if py < height / 10 {
            return image::Rgb([200 + grain, 30 + grain, 30 + grain]);
        }
        // Stripes like printed lines on the card, a soft gradient like desk light.
        let line = if (py / 24) % 3 == 0 && px % 400 < 300 { 60u8 } else { 0 };
        let light = u8::try_from(120 + (px * 80 / width.max(1)) + (py * 40 / height.max(1))).unwrap_or(255);
        let v = light.saturating_sub(line).saturating_add(grain);
        image::Rgb([v, v.saturating_sub(10), v.saturating_sub(25)])
    })
}

/// The sensor's pixels for a picture that is upright once `orientation` (EXIF 1, 3, 6 or 8) is
/// applied.
fn as_captured(img: &RgbImage, orientation: u8) -> RgbImage {
    match orientation {
        3 => imageops::rotate180(img),
        6 => imageops::rotate270(img),
        8 => imageops::rotate90(img),
        _ => img.clone(),
    }
}

/// A camera JPEG of an upright `width` × `height` picture, captured with `orientation`, with EXIF
/// (make, model, orientation, GPS) and XMP (GPS) segments, at JPEG quality 92.
pub fn camera_jpeg(width: u32, height: u32, orientation: u8, seed: u64) -> Vec<u8> {
    let sensor = as_captured(&upright(width, height, seed), orientation);
    let mut encoded = Cursor::new(Vec::new());
    // An RGB buffer of the right size always encodes; an empty Vec would be refused loudly.
    let _ = JpegEncoder::new_with_quality(&mut encoded, 92).encode_image(&sensor);
    let encoded = encoded.into_inner();
    let mut out = Vec::with_capacity(encoded.len() + 1024);
    out.extend_from_slice(&[0xFF, 0xD8]);
    app_segment(&mut out, 0xE1, &exif(orientation));
    app_segment(&mut out, 0xE1, &xmp());
    out.extend_from_slice(encoded.get(2..).unwrap_or_default());
    out
}

fn app_segment(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&u16::try_from(payload.len() + 2).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(payload);
}

/// One little-endian TIFF IFD entry: tag, type, count, value or offset.
fn entry(out: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: u32) {
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
}

/// EXIF as a phone writes it (little-endian TIFF): IFD0 with make, model, orientation and the GPS
/// IFD pointer; the GPS IFD with latitude and longitude.
fn exif(orientation: u8) -> Vec<u8> {
    const ASCII: u16 = 2;
    const SHORT: u16 = 3;
    const LONG: u16 = 4;
    const RATIONAL: u16 = 5;
    let (make, model) = (b"Kyufu Phone\0", b"Camera 12MP\0");
    // Layout: header 8, IFD0 (4 entries) 2+48+4 = 54, GPS IFD (4 entries) 54, then the data.
    let ifd0 = 8u32;
    let gps = ifd0 + 54;
    let data = gps + 54;
    let make_at = data;
    let model_at = make_at + make.len() as u32;
    let lat_at = model_at + model.len() as u32;
    let lon_at = lat_at + 24;
    let mut t = b"II\x2a\0".to_vec();
    t.extend_from_slice(&ifd0.to_le_bytes());
    t.extend_from_slice(&4u16.to_le_bytes());
    entry(&mut t, 0x010F, ASCII, make.len() as u32, make_at);
    entry(&mut t, 0x0110, ASCII, model.len() as u32, model_at);
    entry(&mut t, 0x0112, SHORT, 1, u32::from(orientation));
    entry(&mut t, 0x8825, LONG, 1, gps);
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(&4u16.to_le_bytes());
    entry(&mut t, 0x0001, ASCII, 2, u32::from(b'N'));
    entry(&mut t, 0x0002, RATIONAL, 3, lat_at);
    entry(&mut t, 0x0003, ASCII, 2, u32::from(b'E'));
    entry(&mut t, 0x0004, RATIONAL, 3, lon_at);
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(make);
    t.extend_from_slice(model);
    for (d, m, s) in [GPS_LATITUDE, GPS_LONGITUDE] {
        for v in [d, m, s] {
            t.extend_from_slice(&v.to_le_bytes());
            t.extend_from_slice(&1u32.to_le_bytes());
        }
    }
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&t);
    payload
}

fn xmp() -> Vec<u8> {
    let (lat, lon) = (GPS_LATITUDE, GPS_LONGITUDE);
    let mut payload = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
    payload.extend_from_slice(
        format!(
            "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\
             <rdf:Description xmlns:exif=\"http://ns.adobe.com/exif/1.0/\" exif:GPSLatitude=\"{},{}.{}N\" exif:GPSLongitude=\"{},{}.{}E\"/>\
             </rdf:RDF></x:xmpmeta>",
            lat.0, lat.1, lat.2, lon.0, lon.1, lon.2
        )
        .as_bytes(),
    );
    payload
}

/// Whether a decoded picture is upright: wider than high, and its top band redder than its
/// bottom.
pub fn looks_upright(img: &RgbImage) -> bool {
    let (w, h) = img.dimensions();
    if w <= h || h < 20 {
        return false;
    }
    let redness = |y: u32| {
        (0..w).step_by(7).map(|x| {
            let p = img.get_pixel(x, y);
            i64::from(p[0]) - i64::from(p[1])
        }).sum::<i64>()
    };
    redness(h / 40) > redness(h - 1 - h / 40) + i64::from(w / 7) * 60
}

/// A one-page PDF as current tools write it: PDF 1.5 with its dictionaries in a compressed object
/// stream and a cross-reference stream, with `pages` pages of text.
pub fn modern_pdf(pages: u32) -> Vec<u8> {
    use lopdf::{dictionary, Document, Object, Stream};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let kids: Vec<Object> = (0..pages)
        .map(|n| {
            let text = format!("BT /F1 12 Tf 72 720 Td (Residence card, page {}) Tj ET", n + 1);
            let content = doc.add_object(Stream::new(dictionary! {}, text.into_bytes()));
            doc.add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Contents" => content }).into()
        })
        .collect();
    let count = i64::from(pages);
    doc.objects.insert(pages_id, Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => kids, "Count" => count }));
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    // Writing to a Vec cannot fail for lack of space; an empty document would be refused loudly.
    let _ = doc.save_modern(&mut out);
    out
}

/// The documents of the load tester's `--documents camera` profile: phone photos of varied sizes
/// and orientations, with EXIF, GPS and XMP, and PDFs with object streams of 1 to 3 pages. Made once
/// per process (a few seconds), then picked by salt, so a retry sends the same bytes.
pub struct CameraDocuments {
    pub photos: Vec<Vec<u8>>,
    pub pdfs: Vec<Vec<u8>>,
}

/// Upright size and orientation of each photo of the camera set: 12, 8 and 5 megapixels, 4:3 and
/// 16:9, held every way.
const CAMERA_SET: &[(u32, u32, u8)] = &[(4032, 3024, 6), (4032, 3024, 1), (3264, 2448, 3), (4032, 2268, 8), (2592, 1944, 6), (4000, 3000, 1)];

static CAMERA_DOCUMENTS: std::sync::OnceLock<CameraDocuments> = std::sync::OnceLock::new();

/// Switches this process's uploads to the camera set (makes it on the first call).
pub fn use_camera_documents() -> &'static CameraDocuments {
    CAMERA_DOCUMENTS.get_or_init(|| CameraDocuments {
        photos: CAMERA_SET.iter().enumerate().map(|(i, &(w, h, o))| camera_jpeg(w, h, o, i as u64 + 1)).collect(),
        pdfs: (1..=3).map(modern_pdf).collect(),
    })
}

/// The camera set, if this process uses it.
pub fn camera_documents() -> Option<&'static CameraDocuments> {
    CAMERA_DOCUMENTS.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_camera_jpeg_carries_gps_and_turns_upright_by_its_orientation() {
        for orientation in [1, 3, 6, 8] {
            let jpeg = camera_jpeg(320, 240, orientation, 7);
            let gps = jpeg.windows(2).any(|w| w == [0x25, 0x88]);
            assert!(gps, "the GPS IFD pointer is there");
            let mut decoder = image::codecs::jpeg::JpegDecoder::new(Cursor::new(&jpeg)).expect("decoder");
            use image::ImageDecoder;
            let o = decoder.orientation().expect("orientation");
            let mut img = image::DynamicImage::from_decoder(decoder).expect("decode");
            img.apply_orientation(o);
            assert!(looks_upright(&img.to_rgb8()), "orientation {orientation}");
        }
        let sideways = image::load_from_memory(&camera_jpeg(320, 240, 6, 7)).expect("decode").to_rgb8();
        assert!(!looks_upright(&sideways), "as stored, orientation 6 is on its side");
    }

    #[test]
    fn the_modern_pdf_has_object_streams() {
        let pdf = modern_pdf(2);
        assert!(pdf.starts_with(b"%PDF-1.5"));
        assert!(pdf.windows(6).any(|w| w == b"ObjStm"));
    }
}
