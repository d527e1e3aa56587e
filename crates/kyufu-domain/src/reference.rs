//! Application references a person can read out on the phone and type on a keypad: ten symbols of
//! Crockford's base-32 alphabet (no I, L, O, U), nine carrying 45 bits and one check symbol, shown
//! as `XXXXX-XXXXX`. Reading is forgiving the way Crockford intends: lower case, full-width
//! characters, spaces and hyphens are accepted, I and L read as 1 and O as 0.
//!
//! The check symbol is the weighted sum `Σ (i+1)·v_i mod 37` of the nine data symbols. 37 is prime
//! and larger than every symbol's value and every weight, so each single wrong symbol and each
//! swap of two neighbours changes it. References whose sum falls on 32..36 (no symbol in the
//! alphabet) are never issued: `from_bits` returns `None` and the issuer draws again.

use unicode_normalization::UnicodeNormalization;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols carrying data.
const DATA: usize = 9;
/// Symbols in all, with the check symbol.
pub const LEN: usize = DATA + 1;

fn value(c: char) -> Option<u32> {
    let c = match c.to_ascii_uppercase() {
        'I' | 'L' => '1',
        'O' => '0',
        c => c,
    };
    ALPHABET.iter().position(|&a| a as char == c).and_then(|p| u32::try_from(p).ok())
}

fn checksum(values: &[u32]) -> u32 {
    values.iter().enumerate().map(|(i, v)| (i as u32 + 1) * v).sum::<u32>() % 37
}

/// A reference in its canonical form: ten upper-case symbols, no separator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference(String);

impl Reference {
    /// The reference made of the low 45 bits of `bits`, if its check symbol is in the alphabet.
    pub fn from_bits(bits: u64) -> Option<Reference> {
        let values: Vec<u32> = (0..DATA).rev().map(|i| ((bits >> (5 * i)) & 31) as u32).collect();
        let check = checksum(&values);
        if check >= 32 {
            return None;
        }
        let s = values.iter().chain(std::iter::once(&check)).map(|&v| ALPHABET[v as usize] as char).collect();
        Some(Reference(s))
    }

    /// Reads what a person typed; `None` unless it has ten symbols with the right check symbol.
    pub fn parse(input: &str) -> Option<Reference> {
        let folded: String = input.nfkc().filter(|c| !c.is_whitespace() && !matches!(c, '-' | '‐' | '−' | 'ー')).collect();
        if folded.chars().count() != LEN {
            return None;
        }
        let values: Vec<u32> = folded.chars().map(value).collect::<Option<_>>()?;
        if checksum(&values[..DATA]) != values[DATA] {
            return None;
        }
        Some(Reference(values.iter().map(|&v| ALPHABET[v as usize] as char).collect()))
    }

    /// Canonical form, the key in the store.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How it is shown: `XXXXX-XXXXX`.
    pub fn display(&self) -> String {
        format!("{}-{}", &self.0[..5], &self.0[5..])
    }
}

/// A short code in the same alphabet, from raw bytes (8 symbols from 40 bits), shown `XXXX-XXXX`.
pub fn short_code(bytes: &[u8; 5]) -> String {
    let bits = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let s: String = (0..8).rev().map(|i| ALPHABET[((bits >> (5 * i)) & 31) as usize] as char).collect();
    format!("{}-{}", &s[..4], &s[4..])
}

/// Reads a short code as typed (forgiving like `Reference::parse`); `None` unless eight symbols.
pub fn parse_short_code(input: &str) -> Option<[u8; 5]> {
    let folded: String = input.nfkc().filter(|c| !c.is_whitespace() && !matches!(c, '-' | '‐' | '−' | 'ー')).collect();
    if folded.chars().count() != 8 {
        return None;
    }
    let bits = folded.chars().map(value).try_fold(0u64, |acc, v| v.map(|v| (acc << 5) | u64::from(v)))?;
    let b = bits.to_be_bytes();
    Some([b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_reference(mut bits: u64) -> Reference {
        loop {
            if let Some(r) = Reference::from_bits(bits) {
                return r;
            }
            bits = bits.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        }
    }

    #[test]
    fn typed_forms_are_read_back() {
        let r = any_reference(0x1234_5678_9abc);
        let shown = r.display();
        assert_eq!(shown.len(), 11);
        assert_eq!(Reference::parse(&shown), Some(r.clone()));
        assert_eq!(Reference::parse(&shown.to_lowercase()), Some(r.clone()));
        let wide: String = shown.chars().map(|c| if c == '-' { 'ー' } else { char::from_u32(c as u32 + 0xFEE0).unwrap_or(c) }).collect();
        assert_eq!(Reference::parse(&wide), Some(r.clone()), "full-width and a long dash: {wide}");
        let spaced = format!(" {} {} ", &r.as_str()[..5], &r.as_str()[5..]);
        assert_eq!(Reference::parse(&spaced), Some(r.clone()));
        assert_eq!(Reference::parse(""), None);
        assert_eq!(Reference::parse("UUUUUUUUUU"), None);
        assert_eq!(Reference::parse(&r.as_str()[..9]), None);
    }

    #[test]
    fn ambiguous_letters_read_as_digits() {
        // A reference whose symbols include 0 and 1, typed with O and l.
        let r = Reference::from_bits(0).expect("all zeros has check symbol 0");
        assert_eq!(r.as_str(), "0000000000");
        assert_eq!(Reference::parse("OOOOO-ooooo"), Some(r));
        let one = any_reference(0b00001);
        assert_eq!(Reference::parse(&one.as_str().replace('1', "l")), Some(one));
    }

    #[test]
    fn short_codes_round_trip() {
        let b = [0xde, 0xad, 0xbe, 0xef, 0x01];
        let c = short_code(&b);
        assert_eq!(c.len(), 9);
        assert_eq!(parse_short_code(&c), Some(b));
        assert_eq!(parse_short_code(&c.to_lowercase().replace('-', " ")), Some(b));
        assert_eq!(parse_short_code("ABC"), None);
        assert_eq!(parse_short_code("UUUU-UUUU"), None);
    }

    proptest! {
        #[test]
        fn every_single_typo_and_neighbour_swap_is_caught(bits in any::<u64>(), pos in 0usize..LEN, delta in 1u32..32) {
            let r = any_reference(bits);
            let s: Vec<char> = r.as_str().chars().collect();
            let mut typo = s.clone();
            let v = value(typo[pos]).expect("symbol");
            typo[pos] = ALPHABET[((v + delta) % 32) as usize] as char;
            prop_assert_eq!(Reference::parse(&typo.iter().collect::<String>()), None);
            if pos + 1 < LEN && s[pos] != s[pos + 1] {
                let mut swapped = s.clone();
                swapped.swap(pos, pos + 1);
                prop_assert_eq!(Reference::parse(&swapped.iter().collect::<String>()), None);
            }
        }
    }
}
