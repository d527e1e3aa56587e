//! Server CPU per identity document, in one run: intake's request-path check of a 12-megapixel
//! camera JPEG (with EXIF and GPS, made in code) against the full decode that used to run there,
//! the documents step's CPU per image (decode, turn upright, scale, encode: what an operator sizes
//! workers by), the request-path check of a PDF with object streams, and the bytes a phone sends
//! for the same photo after the form's downscale (emulated here as the form does it: longer side
//! 2,000 px, JPEG quality 0.85; the browser test checks the real one).
//!
//! CPU is the main thread's own time on a core (`/proc/thread-self/schedstat`), so other load on
//! the machine does not count. Run: `make bench-documents`. (An example of the pipeline crate, which
//! has both the request-path check and the documents step in reach without the test servers.)

use std::time::Duration;

use bytes::Bytes;
use kyufu_domain::document::MAX_IMAGE_PIXELS;
use loadtest::photos::{camera_jpeg, modern_pdf, CAMERA_12MP};

/// CPU time this thread has run so far.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Mean CPU per call of `f`: at least `n` calls, and as many more as make 300 ms of CPU (the
/// kernel brings a thread's CPU time up to date only every scheduler tick, so a few quick calls
/// would read as none).
fn cpu_per_call(n: u32, mut f: impl FnMut()) -> Duration {
    f();
    let start = thread_cpu();
    let mut calls = 0u32;
    while calls < n || thread_cpu() - start < Duration::from_millis(300) {
        f();
        calls += 1;
    }
    (thread_cpu() - start) / calls
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if thread_cpu() == Duration::ZERO {
        eprintln!("document_bench: /proc/thread-self/schedstat is not readable; needs Linux with schedstats");
        std::process::exit(1);
    }
    let (w, h) = CAMERA_12MP;
    let photo = Bytes::from(camera_jpeg(w, h, 6, 1));
    let pdf = Bytes::from(modern_pdf(2));
    println!("12-MP camera JPEG: {w}×{h}, {} bytes, EXIF orientation 6 with GPS and XMP", photo.len());
    println!("PDF 1.5 with object streams and a cross-reference stream: {} bytes", pdf.len());

    let stored = kyufu_intake::inspect::inspect(&photo, "image/jpeg").expect("the photo passes intake");
    let request_path = cpu_per_call(40, || {
        let _ = kyufu_intake::inspect::inspect(&photo, "image/jpeg");
    });
    let full_decode = cpu_per_call(4, || {
        let _ = kyufu_pipeline::documents::decode(&photo, "image/jpeg", MAX_IMAGE_PIXELS);
    });
    let rendition = kyufu_pipeline::documents::render(&stored, "image/jpeg", MAX_IMAGE_PIXELS)
        .expect("an image")
        .expect("the photo renders");
    let documents_step = cpu_per_call(4, || {
        let _ = kyufu_pipeline::documents::render(&stored, "image/jpeg", MAX_IMAGE_PIXELS);
    });
    let pdf_path = cpu_per_call(40, || {
        let _ = kyufu_intake::inspect::inspect(&pdf, "application/pdf");
    });
    assert!(kyufu_intake::inspect::inspect(&pdf, "application/pdf").is_ok(), "the PDF passes intake");

    println!();
    println!("{:<58} {:>12}", "server CPU per upload", "ms");
    println!("{:<58} {:>12.2}", "request path now (structure walk, metadata stripped)", ms(request_path));
    println!("{:<58} {:>12.2}", "request path before (full strict decode)", ms(full_decode));
    println!("{:<58} {:>12.1}x", "  ratio before / now", full_decode.as_secs_f64() / request_path.as_secs_f64().max(1e-9));
    println!("{:<58} {:>12.3}", "request path, PDF 1.5 with object streams (lopdf)", ms(pdf_path));
    println!("{:<58} {:>12.2}", "documents step per 12-MP image (off the request path)", ms(documents_step));
    println!(
        "{:<58} {:>12.1}",
        "  12-MP images per second per documents worker core",
        1.0 / documents_step.as_secs_f64().max(1e-9)
    );
    println!();
    println!("bytes stored by intake for the photo (metadata stripped): {}", stored.len());
    println!("bytes a phone uploads after the form's downscale (2000 px, q0.85; emulated): {}", rendition.len());
    println!(
        "target: request path <= 10 ms: {}",
        if request_path <= Duration::from_millis(10) { "met" } else { "NOT met" }
    );
}
