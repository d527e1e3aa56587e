//! Coupon codes: 16 symbols from an unambiguous 32-letter alphabet (80 bits from the operating
//! system's CSPRNG) plus one Luhn mod 32 check symbol, shown in groups of four:
//! `7KQ4-M2XH-9TRB-C3ND-E`. The check symbol catches every single mistyped symbol and most swaps of
//! neighbours; reading accepts lower case, missing hyphens and the look-alikes O/I/L.
//!
//! The random symbols come from `rand`'s thread-local generator, a ChaCha CSPRNG seeded and
//! periodically reseeded from the operating system: unguessable, and fast enough to draw millions.

use rand::Rng;

/// Crockford's base 32: no I, L, O, U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const DATA_SYMBOLS: usize = 16;

fn value(c: u8) -> Option<u32> {
    let c = match c.to_ascii_uppercase() {
        b'O' => b'0',
        b'I' | b'L' => b'1',
        other => other,
    };
    ALPHABET.iter().position(|&a| a == c).and_then(|p| u32::try_from(p).ok())
}

/// Luhn mod N check value over symbol values.
fn check_value(values: &[u32]) -> u32 {
    let n = 32;
    let mut sum = 0;
    let mut factor = 2;
    for &v in values.iter().rev() {
        let addend = factor * v;
        sum += addend / n + addend % n;
        factor = if factor == 2 { 1 } else { 2 };
    }
    (n - sum % n) % n
}

/// A fresh random coupon code.
pub fn generate() -> String {
    let mut rng = rand::thread_rng();
    let values: Vec<u32> = (0..DATA_SYMBOLS).map(|_| rng.gen_range(0..32)).collect();
    format_code(&values)
}

fn format_code(values: &[u32]) -> String {
    let mut out = String::with_capacity(DATA_SYMBOLS + 5);
    let symbol = |v: u32| ALPHABET[(v % 32) as usize] as char;
    for (i, &v) in values.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(symbol(v));
    }
    out.push('-');
    out.push(symbol(check_value(values)));
    out
}

/// The canonical form of a typed code, if it is well-formed and its check symbol fits.
pub fn normalize(typed: &str) -> Option<String> {
    let mut values = Vec::with_capacity(DATA_SYMBOLS + 1);
    for b in typed.bytes().filter(|b| !matches!(b, b'-' | b' ')) {
        values.push(value(b)?);
    }
    let (check, data) = values.split_last()?;
    if data.len() != DATA_SYMBOLS || check_value(data) != *check {
        return None;
    }
    Some(format_code(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_codes_are_valid_and_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let c = generate();
            assert_eq!(c.len(), 21);
            assert_eq!(normalize(&c).as_deref(), Some(c.as_str()));
            assert!(seen.insert(c));
        }
    }

    #[test]
    fn a_million_codes_are_unique() {
        let mut seen = HashSet::with_capacity(1_000_000);
        for _ in 0..1_000_000 {
            assert!(seen.insert(generate()), "collision");
        }
    }

    #[test]
    fn codes_carry_at_least_80_random_bits() {
        // 16 symbols of 32 = 80 bits, and every symbol position takes every value.
        let mut per_position = vec![HashSet::new(); DATA_SYMBOLS];
        for _ in 0..5_000 {
            let c = generate().replace('-', "");
            for (i, ch) in c.chars().take(DATA_SYMBOLS).enumerate() {
                per_position[i].insert(ch);
            }
        }
        assert!(per_position.iter().all(|s| s.len() == 32));
    }

    #[test]
    fn every_single_symbol_error_is_caught() {
        let code = generate();
        let bytes: Vec<u8> = code.bytes().collect();
        for i in (0..bytes.len()).filter(|&i| bytes[i] != b'-') {
            for &other in ALPHABET.iter().filter(|&&a| a != bytes[i]) {
                let mut typo = bytes.clone();
                typo[i] = other;
                let typo = String::from_utf8(typo).unwrap_or_default();
                assert_eq!(normalize(&typo), None, "{code} -> {typo}");
            }
        }
    }

    #[test]
    fn reading_is_forgiving_about_case_hyphens_and_lookalikes() {
        let code = format_code(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        let sloppy = code.replace('-', "").to_lowercase().replace('0', "o").replace('1', "l");
        assert_eq!(normalize(&sloppy).as_deref(), Some(code.as_str()));
        assert_eq!(normalize("ABCD"), None);
        assert_eq!(normalize("ÄÄÄÄ"), None);
        assert_eq!(normalize(""), None);
    }

    /// Every coupon code shown in the documentation, this module's included, passes the real check.
    #[test]
    fn every_documented_coupon_example_is_a_valid_code() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md"), root.join("crates/kyufu-pipeline/src/coupon_code.rs")];
        for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
        let shape = |w: &[u8]| {
            w.len() == 21
                && w.iter().enumerate().all(|(i, &c)| if i % 5 == 4 { c == b'-' } else { c.is_ascii_uppercase() || c.is_ascii_digit() })
        };
        let mut checked = 0;
        for file in &files {
            let text = std::fs::read(file).expect("read");
            for start in 0..text.len().saturating_sub(20) {
                let w = &text[start..start + 21];
                let bounded = |i: Option<&u8>| i.is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'-');
                if shape(w) && bounded(start.checked_sub(1).and_then(|i| text.get(i))) && bounded(text.get(start + 21)) {
                    let code = String::from_utf8_lossy(w);
                    assert_eq!(normalize(&code).as_deref(), Some(&*code), "{}: {code} fails its check symbol", file.display());
                    checked += 1;
                }
            }
        }
        assert!(checked >= 3, "README, openapi.yaml and this module each show a code; found {checked}");
    }
}
