//! Refuses PDFs that carry active content: scripts, actions run on opening, launch actions,
//! attached files, rich media, XFA forms, form submission/import. An identity document is a picture
//! of a card; none of these belong in it, and each is a way to attack the reviewer who opens it.
//!
//! The scanner is a pure function over the raw bytes: it reads every PDF name token (`/Name`),
//! decodes `#xx` escapes (`/J#61vaScript` is `/JavaScript`) and compares the whole name with the
//! list of active keys. Names are read everywhere — in dictionaries, strings and comments alike —
//! except inside stream bodies (`>> stream` … `endstream`), which hold compressed or binary data
//! where a short name like `/JS` would turn up by chance in a few percent of large scans.
//!
//! Dictionaries inside *compressed object streams* (`/Type /ObjStm`, PDF 1.5+) are not seen by this
//! byte scan; intake therefore also parses the file with a PDF library that inflates object
//! streams and checks every object with the same list (`kyufu_intake::inspect`), and refuses a file
//! with object streams that the library cannot read. The virus scanner and reviewers viewing
//! documents in a viewer with scripts off are the further layers.

/// Keys whose presence makes a PDF active, compared with the whole decoded name.
pub const ACTIVE_KEYS: &[&str] = &[
    "JavaScript",
    "JS",
    "OpenAction",
    "AA",
    "Launch",
    "EmbeddedFile",
    "EmbeddedFiles",
    "RichMedia",
    "XFA",
    "SubmitForm",
    "ImportData",
];

/// The first active key found in `pdf` (outside stream bodies), or `None` for a passive PDF.
pub fn active_content(pdf: &[u8]) -> Option<&'static str> {
    first_name(pdf, active_key)
}

/// Whether `name` (decoded, without the slash) occurs as a name token outside stream bodies.
pub fn has_name(pdf: &[u8], name: &str) -> bool {
    first_name(pdf, |n| (n == name.as_bytes()).then_some(())).is_some()
}

/// The first answer of `pick` for the decoded name tokens of `pdf`, outside stream bodies.
fn first_name<T>(pdf: &[u8], pick: impl Fn(&[u8]) -> Option<T>) -> Option<T> {
    let mut i = 0;
    while i < pdf.len() {
        match pdf[i] {
            b'/' => {
                let (name, next) = read_name(pdf, i + 1);
                if let Some(found) = pick(&name) {
                    return Some(found);
                }
                i = next;
            }
            b's' if stream_starts_at(pdf, i) => i = after_stream(pdf, i),
            _ => i += 1,
        }
    }
    None
}

/// The active key that `name` is, if it is one.
pub fn active_key(name: &[u8]) -> Option<&'static str> {
    ACTIVE_KEYS.iter().find(|k| k.as_bytes() == name).copied()
}

fn is_white(b: u8) -> bool {
    matches!(b, 0 | b'\t' | b'\n' | 0x0C | b'\r' | b' ')
}

fn is_delimiter(b: u8) -> bool {
    matches!(b, b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Reads a name starting at `start` (just after the `/`), decoding `#xx`; returns the decoded name
/// and the index after it. A `#` not followed by two hex digits stands for itself.
fn read_name(pdf: &[u8], start: usize) -> (Vec<u8>, usize) {
    let mut name = Vec::new();
    let mut i = start;
    while let Some(&b) = pdf.get(i) {
        if is_white(b) || is_delimiter(b) {
            break;
        }
        if b == b'#' {
            if let (Some(hi), Some(lo)) =
                (pdf.get(i + 1).copied().and_then(hex_value), pdf.get(i + 2).copied().and_then(hex_value))
            {
                name.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        name.push(b);
        i += 1;
    }
    (name, i)
}

/// Whether the keyword `stream` at `i` opens a stream body: it closes a dictionary (`>>`, maybe
/// with white space between) and is followed by an end of line.
fn stream_starts_at(pdf: &[u8], i: usize) -> bool {
    if !pdf[i..].starts_with(b"stream") {
        return false;
    }
    let after = &pdf[i + 6..];
    if !(after.starts_with(b"\n") || after.starts_with(b"\r\n")) {
        return false;
    }
    let before = pdf[..i].iter().rposition(|&b| !is_white(b));
    matches!(before, Some(j) if j >= 1 && pdf[j] == b'>' && pdf[j - 1] == b'>')
}

/// The index after the `endstream` that closes the stream opened at `i`; if there is none, just
/// after the keyword, so the rest of the file is still scanned.
fn after_stream(pdf: &[u8], i: usize) -> usize {
    const END: &[u8] = b"endstream";
    let body = i + 6;
    pdf[body..]
        .windows(END.len())
        .position(|w| w == END)
        .map_or(body, |p| body + p + END.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A small passive PDF as a scanner app writes it: catalog, pages, one image stream with
    /// binary data that happens to contain `/JS ` and `/AA>`.
    fn clean_pdf() -> Vec<u8> {
        let mut v = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
        v.extend_from_slice(b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R /Lang (ja-JP) >>\nendobj\n");
        v.extend_from_slice(b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n");
        v.extend_from_slice(b"3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /XObject << /Im0 4 0 R >> >> >>\nendobj\n");
        v.extend_from_slice(b"4 0 obj\n<< /Type /XObject /Subtype /Image /Width 2 /Height 2 /Filter /DCTDecode /Length 20 >>\nstream\n");
        v.extend_from_slice(b"\xff\xd8/JS \x00\x01/AA>\x10\x11\xfe\xff\xd9");
        v.extend_from_slice(b"\nendstream\nendobj\n");
        v.extend_from_slice(b"trailer\n<< /Root 1 0 R /Size 5 /Info << /Producer (Scanner #2) >> >>\n%%EOF\n");
        v
    }

    fn with_catalog_entry(entry: &str) -> Vec<u8> {
        let mut v = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog ".to_vec();
        v.extend_from_slice(entry.as_bytes());
        v.extend_from_slice(b" >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n");
        v
    }

    #[test]
    fn a_clean_pdf_passes_even_with_look_alike_bytes_in_a_stream_body() {
        assert_eq!(active_content(&clean_pdf()), None);
    }

    #[test]
    fn each_active_key_is_refused() {
        for key in ACTIVE_KEYS {
            let pdf = with_catalog_entry(&format!("/{key} 5 0 R"));
            assert_eq!(active_content(&pdf), Some(*key), "{key}");
        }
        let open_js = with_catalog_entry("/OpenAction << /S /JavaScript /JS (app.alert(1)) >>");
        assert_eq!(active_content(&open_js), Some("OpenAction"));
    }

    #[test]
    fn hex_escaped_names_are_decoded_before_matching() {
        assert_eq!(active_content(&with_catalog_entry("/S /J#61vaScript")), Some("JavaScript"));
        assert_eq!(active_content(&with_catalog_entry("/#4F#70#65#6E#41#63#74#69#6F#6E 4 0 R")), Some("OpenAction"));
        assert_eq!(active_content(&with_catalog_entry("/Lau#6ech")), Some("Launch"));
        // A `#` without two hex digits stands for itself: not an escape, not a key.
        assert_eq!(active_content(&with_catalog_entry("/J#S")), None);
    }

    #[test]
    fn whole_names_only_and_delimiters_end_a_name() {
        for benign in ["/JSON 1", "/AAA 1", "/Launcher 1", "/XFAx 1", "/MyJavaScript 1"] {
            assert_eq!(active_content(&with_catalog_entry(benign)), None, "{benign}");
        }
        assert_eq!(active_content(&with_catalog_entry("/AA<</O 1 0 R>>")), Some("AA"));
        assert_eq!(active_content(&with_catalog_entry("/Names<</JavaScript 9 0 R>>")), Some("JavaScript"));
        assert_eq!(active_content(b"%PDF-1.4\n<</JS"), Some("JS"), "at the very end of the file");
    }

    #[test]
    fn only_a_stream_after_a_dictionary_is_skipped() {
        // `stream` that does not close a dictionary is not a stream body: what follows is scanned.
        let fake = b"%PDF-1.4\n(text) stream\n<< /OpenAction 2 0 R >>\nendstream\n";
        assert_eq!(active_content(fake), Some("OpenAction"));
        // A stream without `endstream` does not hide the rest of the file.
        let unclosed = b"%PDF-1.4\n<< /Length 3 >>\nstream\nabc\n<< /Launch 1 >>";
        assert_eq!(active_content(unclosed), Some("Launch"));
        // After a real stream, scanning goes on.
        let mut after = clean_pdf();
        after.extend_from_slice(b"5 0 obj\n<< /RichMedia 1 >>\nendobj\n");
        assert_eq!(active_content(&after), Some("RichMedia"));
    }

    /// Escapes each byte of `name` as `#xx` where the mask bit is set.
    fn escape(name: &str, mask: u64) -> String {
        name.bytes()
            .enumerate()
            .map(|(i, b)| if mask >> (i % 64) & 1 == 1 { format!("#{b:02X}") } else { char::from(b).to_string() })
            .collect()
    }

    proptest! {
        #[test]
        fn any_escaping_of_an_active_key_is_found(k in 0..ACTIVE_KEYS.len(), mask in any::<u64>(), lower in any::<bool>()) {
            let key = ACTIVE_KEYS[k];
            let mut escaped = escape(key, mask);
            if lower {
                escaped = lower_hex_escapes(&escaped);
            }
            let pdf = with_catalog_entry(&format!("/{escaped} 3 0 R"));
            prop_assert_eq!(active_content(&pdf), Some(key));
        }

        #[test]
        fn random_plain_names_and_stream_bytes_never_panic_and_stay_clean(
            names in proptest::collection::vec("[A-Za-z]{1,12}", 0..20),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut pdf = b"%PDF-1.4\n<< ".to_vec();
            for n in &names {
                if !ACTIVE_KEYS.contains(&n.as_str()) {
                    pdf.extend_from_slice(format!("/{n} 1 ").as_bytes());
                }
            }
            pdf.extend_from_slice(b">>\nstream\n");
            pdf.extend(body.iter().filter(|&&b| b != b'e'));
            pdf.extend_from_slice(b"\nendstream\n%%EOF\n");
            prop_assert_eq!(active_content(&pdf), None);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = active_content(&bytes);
        }
    }

    /// Lower-cases only the hex digits of `#XX` escapes (names themselves are case-sensitive).
    fn lower_hex_escapes(name: &str) -> String {
        let mut out = String::new();
        let mut left = 0;
        for c in name.chars() {
            if c == '#' {
                left = 2;
                out.push(c);
            } else if left > 0 {
                left -= 1;
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}
