//! Hand-written JSON for the two documents every poll handles: the ticket's claims, read from the
//! ticket presented and written into the refreshed one, and the answer. A waiting visitor's poll
//! does little else, and serde_json's general machinery cost as much as the signatures. serde_json
//! stays the reference: these helpers write exactly what it writes for these shapes (the tests
//! compare them), and whatever the exact reader does not recognise is left to serde_json.

/// Appends `s` as a JSON string. Tokens and plain ids (letters, digits, `-`, `_`, `.`) are copied
/// as they are; anything else goes through serde_json's escaping.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    // Every byte is checked (no early exit), which the compiler turns into a few wide compares.
    let plain = s.bytes().fold(true, |plain, b| plain & (b.is_ascii_alphanumeric() | (b == b'-') | (b == b'_') | (b == b'.')));
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Appends `n` as serde_json writes it.
pub(crate) fn push_u64(out: &mut Vec<u8>, n: u64) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &n);
}

/// Reads JSON of one exact shape: each step answers `None` where the input is not what the
/// writers above would have written (whitespace, escapes, another key order, a leading zero), and
/// the caller then hands the whole input to serde_json, which decides. So for any input the result
/// is serde_json's.
pub(crate) struct Exact<'a> {
    rest: &'a [u8],
}

impl<'a> Exact<'a> {
    pub(crate) fn new(json: &'a [u8]) -> Self {
        Exact { rest: json }
    }

    /// Consumes `expected` if the input goes on with it.
    pub(crate) fn eat(&mut self, expected: &[u8]) -> bool {
        match self.rest.strip_prefix(expected) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// `key` (with its punctuation) and then a string without escapes or control characters.
    pub(crate) fn str_after(&mut self, key: &[u8]) -> Option<&'a str> {
        if !self.eat(key) || !self.eat(b"\"") {
            return None;
        }
        let end = self.rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        let (text, rest) = self.rest.split_at(end);
        self.rest = rest.strip_prefix(b"\"")?;
        std::str::from_utf8(text).ok()
    }

    /// `key` and then an unsigned integer as serde_json writes one: digits, no leading zero.
    pub(crate) fn uint_after(&mut self, key: &[u8]) -> Option<u64> {
        if !self.eat(key) {
            return None;
        }
        let digits = self.rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let (number, rest) = self.rest.split_at(digits);
        if number.is_empty() || (number.len() > 1 && number[0] == b'0') {
            return None;
        }
        self.rest = rest;
        number.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    }

    /// An optional field: `Some(None)` when the input does not go on with `key`.
    pub(crate) fn optional_uint_after(&mut self, key: &[u8]) -> Option<Option<u64>> {
        if self.rest.starts_with(key) {
            self.uint_after(key).map(Some)
        } else {
            Some(None)
        }
    }

    /// Whether everything was read.
    pub(crate) fn is_done(&self) -> bool {
        self.rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_numbers_are_written_as_serde_json_writes_them() {
        for s in ["k1.abc-_XYZ09", "", "with space", "quote \" and \\ back", "tab\tline\nnul\u{0}", "東京 — é", "</script>"] {
            let mut out = Vec::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).expect("json"), "{s:?}");
        }
        for n in [0, 7, 10, 1_796_304_308, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn the_exact_reader_takes_only_what_the_writers_write() {
        let mut r = Exact::new(br#"{"a":"x y","b":0,"c":18446744073709551615}"#);
        assert_eq!(r.str_after(br#"{"a":"#), Some("x y"));
        assert_eq!(r.uint_after(br#","b":"#), Some(0));
        assert_eq!(r.optional_uint_after(br#","z":"#), Some(None));
        assert_eq!(r.optional_uint_after(br#","c":"#), Some(Some(u64::MAX)));
        assert!(r.eat(b"}") && r.is_done());
        for (key, input) in [
            (&br#""n":"#[..], &br#""n":01"#[..]),
            (br#""n":"#, br#""n":18446744073709551616"#),
            (br#""n":"#, br#""n":-1"#),
            (br#""n":"#, br#""n": 1"#),
            (br#""n":"#, br#""m":1"#),
        ] {
            assert_eq!(Exact::new(input).uint_after(key), None, "{}", String::from_utf8_lossy(input));
        }
        for input in [&br#""s":"a\"b""#[..], br#""s":"a"#, b"\"s\":\"a\x01\"", br#""s":x"#, b"\"s\":\"\xff\""] {
            assert_eq!(Exact::new(input).str_after(br#""s":"#), None, "{}", String::from_utf8_lossy(input));
        }
    }
}
