//! Staff search: what a reviewer types into `?q=`, matched against an application.
//!
//! One box takes an application number (the short reference, `7K3QX-M2P9D` in any case, with or
//! without its hyphen: looked up in the reference index by the listing), the first characters of
//! an application id, a phone number (any width,
//! with or without hyphens), an e-mail address, or a kana name (full or half width, hiragana or
//! katakana, with or without the space between family and given name), of the guardian or the
//! child.

use kyufu_domain::normalize::{digits_only, fold_width_and_space, is_kana_name, kana_key, normalize_kana};
use kyufu_ports::events::ApplicationEvent;
use kyufu_ports::ApplicationRecord;

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Digits only: a phone number, or the start of an application number.
    Digits(String),
    Email(String),
    /// A kana name as a matching key (no spaces).
    Kana(String),
    /// Anything else: the start of an application id (lower case, hyphens kept). A short
    /// reference is looked up in the reference index by the listing itself.
    Text(String),
}

impl Query {
    pub fn parse(q: &str) -> Option<Query> {
        let folded = fold_width_and_space(q);
        if folded.is_empty() {
            return None;
        }
        if folded.contains('@') {
            return Some(Query::Email(folded.to_lowercase()));
        }
        if let Some(d) = digits_only(&folded).filter(|d| !d.is_empty()) {
            return Some(Query::Digits(d));
        }
        let kana = normalize_kana(&folded);
        if is_kana_name(&kana) {
            return Some(Query::Kana(kana_key(&kana)));
        }
        Some(Query::Text(folded.to_lowercase()))
    }

    /// Whether this case answers the query. `event` is the application as submitted, when found.
    pub fn matches(&self, record: &ApplicationRecord, event: Option<&ApplicationEvent>) -> bool {
        let id = record.application_id.to_string();
        let app = event.map(|e| &e.application);
        match self {
            Query::Digits(d) => {
                id.starts_with(d.as_str())
                    || app.is_some_and(|a| digits_only(&a.guardian.phone).is_some_and(|p| p.len() >= 6 && p.contains(d.as_str()) && d.len() >= 4))
            }
            Query::Email(e) => app.is_some_and(|a| a.guardian.email.trim().to_lowercase() == *e),
            Query::Kana(k) => app.is_some_and(|a| {
                [
                    (&a.guardian.family_name_kana, &a.guardian.given_name_kana),
                    (&a.child.family_name_kana, &a.child.given_name_kana),
                ]
                .iter()
                .any(|(f, g)| {
                    let (f, g) = (kana_key(f), kana_key(g));
                    format!("{f}{g}").contains(k.as_str()) || format!("{g}{f}") == *k
                })
            }),
            Query::Text(t) => t.len() >= 4 && id.starts_with(t.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_told_apart_and_normalised() {
        assert_eq!(Query::parse("  "), None);
        assert_eq!(Query::parse("０９０－１２３４－５６７８"), Some(Query::Digits("09012345678".into())));
        assert_eq!(Query::parse("Taro@Example.JP"), Some(Query::Email("taro@example.jp".into())));
        // Hiragana, half-width katakana and full-width katakana are one name.
        let want = Some(Query::Kana("ヤマダタロウ".into()));
        assert_eq!(Query::parse("やまだ たろう"), want);
        assert_eq!(Query::parse("ﾔﾏﾀﾞ ﾀﾛｳ"), want);
        assert_eq!(Query::parse("ヤマダ　タロウ"), want);
        assert_eq!(Query::parse("3f2a9c1e"), Some(Query::Text("3f2a9c1e".into())));
    }
}
