//! Normalisation of what people type on phones: full-width and half-width characters, hiragana
//! versus katakana, stray spaces (including the ideographic space), old kanji variants, and dates in
//! the many ways Japanese forms write them. Matching and dedupe compare only normalised values.

use chrono::NaiveDate;
use unicode_normalization::UnicodeNormalization;

/// NFKC (full-width ASCII to ASCII, half-width katakana to full-width), every run of white space
/// (U+3000 included) folded to one ASCII space, trimmed.
pub fn fold_width_and_space(s: &str) -> String {
    let nfkc: String = s.nfkc().collect();
    let mut out = String::with_capacity(nfkc.len());
    let mut pending_space = false;
    for c in nfkc.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
    out
}

/// Hiragana to katakana (ぁ..ゖ, ゝ, ゞ shift by 0x60); other characters unchanged.
pub fn hiragana_to_katakana(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{3041}'..='\u{3096}' | '\u{309D}' | '\u{309E}' => {
                char::from_u32(c as u32 + 0x60).unwrap_or(c)
            }
            _ => c,
        })
        .collect()
}

/// A kana name as it is stored: width folded, katakana, single spaces, long-vowel marks unified.
pub fn normalize_kana(s: &str) -> String {
    let folded = hiragana_to_katakana(&fold_width_and_space(s));
    let chars: Vec<char> = folded.chars().collect();
    let mut out = String::with_capacity(folded.len());
    for (i, &c) in chars.iter().enumerate() {
        // People type the long-vowel mark as a hyphen, a dash or a minus after a kana.
        let after_kana = i > 0 && is_katakana(chars[i - 1]);
        match c {
            '-' | '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2015}'
            | '\u{2212}' | '\u{FF70}'
                if after_kana =>
            {
                out.push('ー')
            }
            _ => out.push(c),
        }
    }
    out
}

/// The kana name as a matching key: normalised and without spaces.
pub fn kana_key(s: &str) -> String {
    normalize_kana(s).chars().filter(|c| *c != ' ').collect()
}

fn is_katakana(c: char) -> bool {
    matches!(c, '\u{30A1}'..='\u{30FA}' | 'ー' | 'ヽ' | 'ヾ')
}

/// True when a normalised kana name has only katakana, the long-vowel mark, the middle dot and
/// single spaces.
pub fn is_kana_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| is_katakana(c) || c == ' ' || c == '・')
}

/// Old or variant kanji that registries and people write differently, mapped to the common form.
const KANJI_VARIANTS: &[(char, char)] = &[
    ('髙', '高'),
    ('﨑', '崎'),
    ('嵜', '崎'),
    ('邊', '辺'),
    ('邉', '辺'),
    ('澤', '沢'),
    ('齋', '斎'),
    ('齊', '斉'),
    ('濱', '浜'),
    ('櫻', '桜'),
    ('廣', '広'),
    ('國', '国'),
    ('德', '徳'),
];

/// A name in kanji (or any script) as a matching key: width folded, variants unified, no spaces.
pub fn name_key(s: &str) -> String {
    fold_width_and_space(s)
        .chars()
        .filter(|c| *c != ' ')
        .map(|c| KANJI_VARIANTS.iter().find(|(from, _)| *from == c).map_or(c, |(_, to)| *to))
        .collect()
}

/// Only the digits of a value (postal codes, phone numbers, resident ids), after width folding;
/// `None` if anything but digits, spaces and hyphens/dashes is present.
pub fn digits_only(s: &str) -> Option<String> {
    let folded = fold_width_and_space(s);
    let mut out = String::with_capacity(folded.len());
    for c in folded.chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '-' | '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}'
            | '\u{2015}' | '\u{2212}' | 'ー' => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Japanese eras that can appear on birth dates of living guardians and children.
const ERAS: &[(&str, &str, i32)] = &[
    ("令和", "R", 2018),
    ("平成", "H", 1988),
    ("昭和", "S", 1925),
];

/// Parses a date the way people write it: `2019-04-01`, `2019/4/1`, `2019.04.01`, `20190401`,
/// `2019年4月1日`, `令和元年5月1日`, `R1.5.1`; full-width digits accepted.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let folded = fold_width_and_space(s).replace(' ', "");
    if folded.is_empty() {
        return None;
    }
    if folded.len() == 8 && folded.bytes().all(|b| b.is_ascii_digit()) {
        let y = folded[0..4].parse().ok()?;
        let m = folded[4..6].parse().ok()?;
        let d = folded[6..8].parse().ok()?;
        return NaiveDate::from_ymd_opt(y, m, d);
    }
    let mut rest = folded.as_str();
    let mut era_base = None;
    for (kanji, letter, base) in ERAS {
        if let Some(r) = rest.strip_prefix(kanji) {
            rest = r;
            era_base = Some(*base);
            break;
        }
        if let Some(r) = rest.strip_prefix(letter).or_else(|| rest.strip_prefix(&letter.to_lowercase())) {
            if r.starts_with(|c: char| c.is_ascii_digit()) {
                rest = r;
                era_base = Some(*base);
                break;
            }
        }
    }
    let rest = rest.replacen("元", "1", 1);
    let parts: Vec<&str> = rest
        .split(['-', '/', '.', '年', '月', '日'])
        .filter(|p| !p.is_empty())
        .collect();
    if parts.len() != 3 || !parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 4) {
        return None;
    }
    let mut y: i32 = parts[0].parse().ok()?;
    let m: u32 = parts[1].parse().ok()?;
    let d: u32 = parts[2].parse().ok()?;
    match era_base {
        Some(base) if (1..=64).contains(&y) => y += base,
        Some(_) => return None,
        None if parts[0].len() != 4 => return None,
        None => {}
    }
    NaiveDate::from_ymd_opt(y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(y, m, d)
    }

    #[test]
    fn width_and_spaces_fold() {
        assert_eq!(fold_width_and_space("　山田　　太郎 "), "山田 太郎");
        assert_eq!(fold_width_and_space("ＡＢＣ１２３"), "ABC123");
        assert_eq!(fold_width_and_space("ﾔﾏﾀﾞ"), "ヤマダ");
    }

    #[test]
    fn kana_normalises_hiragana_halfwidth_and_long_vowels() {
        assert_eq!(normalize_kana("やまだ　たろう"), "ヤマダ タロウ");
        assert_eq!(normalize_kana("ﾔﾏﾀﾞ ﾀﾛｳ"), "ヤマダ タロウ");
        assert_eq!(normalize_kana("ユーコ"), "ユーコ");
        assert_eq!(normalize_kana("ユ-コ"), "ユーコ");
        assert_eq!(normalize_kana("ゆーこ"), "ユーコ");
        assert_eq!(kana_key("さとう  ゆうこ"), kana_key("ｻﾄｳﾕｳｺ"));
        assert!(is_kana_name(&normalize_kana("さとう ゆうこ")));
        assert!(!is_kana_name(&normalize_kana("佐藤")));
        assert!(!is_kana_name(&normalize_kana("sato")));
        assert!(!is_kana_name(""));
    }

    #[test]
    fn kanji_variants_match() {
        assert_eq!(name_key("髙橋 一郎"), name_key("高橋一郎"));
        assert_eq!(name_key("山﨑"), name_key("山崎"));
        assert_ne!(name_key("山田"), name_key("山本"));
    }

    #[test]
    fn digits_fold_and_reject_letters() {
        assert_eq!(digits_only("１２３－４５６７").as_deref(), Some("1234567"));
        assert_eq!(digits_only("090-1234-5678").as_deref(), Some("09012345678"));
        assert_eq!(digits_only("12a"), None);
    }

    #[test]
    fn dates_in_many_forms() {
        let d = date(2019, 4, 1);
        for s in ["2019-04-01", "2019/4/1", "2019.04.01", "20190401", "2019年4月1日", "２０１９－０４－０１", "平成31年4月1日", "H31.4.1"] {
            assert_eq!(parse_date(s), d, "{s}");
        }
        assert_eq!(parse_date("令和元年5月1日"), date(2019, 5, 1));
        assert_eq!(parse_date("R1.5.1"), date(2019, 5, 1));
        assert_eq!(parse_date("昭和60年12月31日"), date(1985, 12, 31));
        for bad in ["", "2019-02-30", "19-4-1", "2019-4", "abc", "2019-04-01T00:00", "令和99年1月1日"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
