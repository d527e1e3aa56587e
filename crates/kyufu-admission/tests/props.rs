//! Property tests of ticket and pass decoding: any string is refused without a panic, and changing
//! any single character of a valid pass makes it invalid.

use kyufu_admission::{verify_pass, Keyring, PassClaims, Purpose};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_are_refused(s in any::<String>(), dotted in "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,60}") {
        let kr = Keyring::random();
        prop_assert!(verify_pass(&kr, &s, "ev", 0).is_err());
        prop_assert!(verify_pass(&kr, &dotted, "ev", 0).is_err());
        prop_assert!(kr.verify::<serde_json::Value>(Purpose::Ticket, &s).is_err());
    }

    #[test]
    fn any_single_change_breaks_a_pass(pos in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_.-]") {
        let kr = Keyring::random();
        let token = kr.sign(Purpose::Pass, &PassClaims::new("ev", 1, 100, 1000));
        let mut chars: Vec<char> = token.chars().collect();
        let i = pos.index(chars.len());
        let r = replacement.chars().next().unwrap_or('A');
        prop_assume!(chars[i] != r);
        chars[i] = r;
        let tampered: String = chars.into_iter().collect();
        prop_assert!(verify_pass(&kr, &tampered, "ev", 200).is_err());
    }
}
