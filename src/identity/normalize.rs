//! Identifier normalisation: every identifier has one stable stored form.
//!
//! # Profile
//!
//! Case-insensitive identifiers ([`IdentifierCase::Insensitive`], the default) use
//! **Unicode NFKC_Casefold** (`toNFKC_Casefold`, Unicode §3.13, the mapping UAX #31
//! recommends for caseless identifier matching): the string is trimmed and taken to
//! the fixed point of `NFKC(toCasefold(NFKC(x)))`, where `toCasefold` is full default
//! case folding (`CaseFolding.txt` statuses C + F, no Turkic tailoring). That is how
//! Unicode derives the `NFKC_Casefold` property, so the result is the
//! `toNFKC_Casefold` form, with one deliberate difference: default-ignorable code
//! points are *refused* (400 `VALIDATION_ERROR`) instead of silently removed.
//!
//! Case-sensitive identifiers ([`IdentifierCase::Sensitive`]) keep their documented
//! behaviour: trim + NFKC, case kept.
//!
//! Either way the function is computed to a fixed point, so it is idempotent:
//! `normalize_identifier(normalize_identifier(x)?) == normalize_identifier(x)` for every
//! `x` it accepts, and two identifiers are the same account exactly when their normal
//! forms are equal byte for byte.
//!
//! # Addresses
//!
//! An identifier with a non-empty local part and a non-empty domain around its last `@`
//! is an address, and is compared as the mail system compares addresses: the **local
//! part** by the profile above, the **domain** through IDNA (UTS #46, non-transitional)
//! to its ASCII form ([`normalize_address_domain`]). So `bob@BÜCHER.test`,
//! `bob@bücher.test` and `bob@xn--bcher-kva.test` are one identifier, while
//! `bob@straße.test` (`bob@xn--strae-oqa.test`) and `bob@strasse.test` stay two: no
//! case fold ever merges two domains. A domain IDNA refuses is a `VALIDATION_ERROR`.
//!
//! Identifiers stored by an older normalisation (trim, NFKC, `to_lowercase`) are
//! brought to this form by [`Database::renormalize_identifiers`](crate::db::Database::renormalize_identifiers),
//! which refuses (and changes nothing) when two accounts would merge.

use std::collections::BTreeMap;

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;

use crate::core::error::{Result, SentriError};

/// Longest identifier accepted, in bytes (an e-mail address is at most 320).
pub const MAX_IDENTIFIER_BYTES: usize = 320;

/// How identifiers are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentifierCase {
    /// NFKC_Casefold (default): `Bob@Example.com` and `bob@example.com` are one user
    /// (see [`normalize_identifier`]).
    #[default]
    Insensitive,
    /// Kept as typed (after trim + NFKC).
    Sensitive,
}

/// How many extra rounds of the mapping are tried before an input is declared to have
/// no stable form. Every input seen so far is stable after at most one extra round.
const MAX_ROUNDS: usize = 4;

/// Normalises and checks an identifier (NFKC_Casefold; the profile is described in
/// `docs/SECURITY.md`).
///
/// Errors are `VALIDATION_ERROR`s with fixed messages (never the input): empty after
/// trimming, longer than [`MAX_IDENTIFIER_BYTES`] once normalised, or containing control,
/// invisible (default-ignorable) or bidirectional formatting characters.
///
/// ```
/// use sentri::identity::normalize_identifier;
/// use sentri::IdentifierCase::Insensitive;
/// // "W" + combining ring above folds to the precomposed U+1E98, whichever way it is typed.
/// let once = normalize_identifier("W\u{30A}@example.com", Insensitive)?;
/// assert_eq!(once, "\u{1E98}@example.com");
/// assert_eq!(normalize_identifier(&once, Insensitive)?, once);
/// assert_eq!(normalize_identifier("Straße", Insensitive)?, "strasse");
/// # Ok::<(), sentri::SentriError>(())
/// ```
pub fn normalize_identifier(identifier: &str, case: IdentifierCase) -> Result<String> {
    if identifier.len() > MAX_IDENTIFIER_BYTES * 4 {
        return Err(too_long());
    }
    // NFKC first (no case folding): what is typed as `＠` is an `@`, and the domain
    // must not be case-folded (`ß` would become `ss`) before IDNA sees it.
    let typed = stable_form(identifier, IdentifierCase::Sensitive)?;
    let normalized = match address_parts(&typed) {
        Some((local, domain)) => {
            let local = stable_form(local, case)?;
            let domain = domain_to_ascii(domain)?;
            let joined = format!("{local}@{domain}");
            if joined.len() > MAX_IDENTIFIER_BYTES {
                return Err(too_long());
            }
            joined
        }
        None => stable_form(identifier, case)?,
    };
    check_normalized(&normalized)?;
    Ok(normalized)
}

/// An identifier is an address when it has a non-empty local part and a non-empty
/// domain around its last `@`: `(local part, domain)`.
fn address_parts(typed: &str) -> Option<(&str, &str)> {
    let (local, domain) = typed.rsplit_once('@')?;
    (!local.trim().is_empty() && !domain.trim().is_empty()).then_some((local, domain))
}

/// The domain of an address as the mail system compares it: UTS #46 (IDNA) processing,
/// **non-transitional** (`ß`, `ς`, ZWJ and ZWNJ are kept, so `straße.test` and
/// `strasse.test` stay two domains), to its ASCII (`xn--`) form, lower case. Spaces,
/// control characters and the URL's forbidden code points (`%#/:<>?@[\]^|`) are
/// refused; hyphen positions and DNS lengths are not checked here (the mail layer
/// checks what it sends to). An IDNA error is a `VALIDATION_ERROR` with a fixed message.
///
/// ```
/// use sentri::identity::normalize_address_domain as d;
/// assert_eq!(d("BÜCHER.test")?, "xn--bcher-kva.test");
/// assert_eq!(d("xn--bcher-kva.test")?, "xn--bcher-kva.test");
/// assert_eq!(d("straße.test")?, "xn--strae-oqa.test");
/// assert_ne!(d("straße.test")?, d("strasse.test")?);
/// assert!(d("bad domain.test").is_err());
/// # Ok::<(), sentri::SentriError>(())
/// ```
pub fn normalize_address_domain(domain: &str) -> Result<String> {
    domain_to_ascii(domain)
}

fn domain_to_ascii(domain: &str) -> Result<String> {
    use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::URL,
            Hyphens::Allow,
            DnsLength::Ignore,
        )
        .map_err(|_| SentriError::validation("the address has an invalid domain"))?;
    if ascii.is_empty() {
        return Err(SentriError::validation("the address has an invalid domain"));
    }
    Ok(ascii.into_owned())
}

/// The fixed point of [`map_once`] starting from `input`.
fn stable_form(input: &str, case: IdentifierCase) -> Result<String> {
    let mut current = map_once(input, case)?;
    for _ in 0..MAX_ROUNDS {
        let next = map_once(&current, case)?;
        if next == current {
            return Ok(current);
        }
        current = next;
    }
    Err(SentriError::validation(
        "identifier has no stable normal form",
    ))
}

/// One round of the mapping: trim, NFKC, then (case-insensitive) full case folding and
/// NFKC again, then trim. Refuses results longer than the limit, so each round works on
/// bounded input.
fn map_once(input: &str, case: IdentifierCase) -> Result<String> {
    let nfkc = input.trim().nfkc();
    let mapped: String = match case {
        IdentifierCase::Insensitive => nfkc.default_case_fold().nfkc().collect(),
        IdentifierCase::Sensitive => nfkc.collect(),
    };
    let trimmed = mapped.trim();
    if trimmed.len() > MAX_IDENTIFIER_BYTES {
        return Err(too_long());
    }
    Ok(trimmed.to_owned())
}

fn too_long() -> SentriError {
    SentriError::validation("identifier is too long")
}

/// The checks on a normalised identifier.
fn check_normalized(normalized: &str) -> Result<()> {
    if normalized.is_empty() {
        return Err(SentriError::validation("identifier is required"));
    }
    if normalized.chars().any(char::is_control) {
        return Err(SentriError::validation(
            "identifier must not contain control characters",
        ));
    }
    if normalized.chars().any(is_invisible) {
        return Err(SentriError::validation(
            "identifier must not contain invisible or bidirectional formatting characters",
        ));
    }
    Ok(())
}

/// Unicode default-ignorable code points (zero-width characters, bidi controls, soft
/// hyphen, variation selectors, tags…): NFKC keeps them, they render as nothing, so
/// `admin\u{200B}` would look exactly like `admin`.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

// ---- migration of stored identifiers -------------------------------------------------

/// What [`Database::renormalize_identifiers`](crate::db::Database::renormalize_identifiers)
/// did. Carries user ids only, never identifiers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentifierMigrationReport {
    /// How many users were scanned.
    pub scanned: u64,
    /// The ids of the users whose stored identifier was rewritten to its normal form.
    pub updated: Vec<String>,
    /// The ids of the users whose stored identifier the profile refuses (for example an
    /// invisible character stored by an older version). They are left unchanged: such
    /// an identifier cannot be typed at login, so an operator has to decide.
    pub unnormalizable: Vec<String>,
}

/// Why a migration of stored identifiers was refused: these groups of users would end
/// up with one identifier. Attached as the `source` of the `CONFIGURATION_ERROR` that
/// [`Database::renormalize_identifiers`](crate::db::Database::renormalize_identifiers)
/// returns; user ids only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} group(s) of users would share one identifier", groups.len())]
pub struct IdentifierCollision {
    /// Each group: the ids of users whose identifiers normalise equal (sorted).
    pub groups: Vec<Vec<String>>,
}

/// How many colliding groups are listed in the error message (all are in the source).
const GROUPS_IN_MESSAGE: usize = 20;

impl IdentifierCollision {
    /// The collision behind an error returned by
    /// [`Database::renormalize_identifiers`](crate::db::Database::renormalize_identifiers),
    /// if that is what the error is.
    pub fn of(err: &SentriError) -> Option<&IdentifierCollision> {
        err.source_error()?.downcast_ref()
    }

    /// The `CONFIGURATION_ERROR` reporting this collision (ids only), with `self` as its
    /// source.
    pub(crate) fn into_error(self) -> SentriError {
        let listed: Vec<String> = self
            .groups
            .iter()
            .take(GROUPS_IN_MESSAGE)
            .map(|g| g.join(", "))
            .collect();
        let more = self.groups.len().saturating_sub(GROUPS_IN_MESSAGE);
        let tail = if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        };
        let message = format!(
            "identifier migration refused, nothing was changed: {} group(s) of users would share one identifier (user ids: [{}]{tail})",
            self.groups.len(),
            listed.join("]; ["),
        );
        SentriError::configuration(message).with_source(self)
    }
}

/// The rows a migration rewrites: `(user id, old identifier, new identifier)`, plus the
/// ids left alone because the profile refuses their identifier.
#[derive(Debug, Default)]
pub(crate) struct RenormalizePlan {
    pub(crate) changes: Vec<(String, String, String)>,
    pub(crate) unnormalizable: Vec<String>,
}

/// Plans the migration of `rows` (`(id, stored identifier)`): every row whose identifier
/// is not in normal form is rewritten, unless two rows would then share an identifier,
/// in which case nothing is planned and the colliding ids are returned.
pub(crate) fn plan_renormalization(
    rows: Vec<(String, String)>,
    case: IdentifierCase,
) -> std::result::Result<RenormalizePlan, IdentifierCollision> {
    let mut plan = RenormalizePlan::default();
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, stored) in rows {
        let target = match normalize_identifier(&stored, case) {
            Ok(normal) => normal,
            Err(_) => {
                plan.unnormalizable.push(id.clone());
                stored.clone()
            }
        };
        if target != stored {
            plan.changes.push((id.clone(), stored, target.clone()));
        }
        owners.entry(target).or_default().push(id);
    }
    let groups: Vec<Vec<String>> = owners
        .into_values()
        .filter(|ids| ids.len() > 1)
        .map(|mut ids| {
            ids.sort();
            ids
        })
        .collect();
    if groups.is_empty() {
        Ok(plan)
    } else {
        Err(IdentifierCollision { groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdentifierCase::{Insensitive, Sensitive};

    fn n(s: &str) -> Result<String> {
        normalize_identifier(s, Insensitive)
    }

    #[test]
    fn identifiers_are_normalised() {
        assert_eq!(n("  Bob@Example.COM ").unwrap(), "bob@example.com");
        // Fullwidth letters fold to ASCII under NFKC.
        assert_eq!(n("ＢＯＢ").unwrap(), "bob");
        assert!(n("   ").is_err());
        assert!(n("a\u{0}b").is_err());
        assert!(n("a\nb").is_err());
        assert!(n(&"x".repeat(321)).is_err());
        assert!(n("admin\u{200B}").is_err(), "zero-width space");
        assert!(n("\u{202E}nimda").is_err(), "bidi override");
        assert_eq!(normalize_identifier("Zoë", Sensitive).unwrap(), "Zoë");
    }

    /// The cases of issue #23: lower-casing produced a string that NFKC changes again.
    #[test]
    fn lookalikes_reach_one_form() {
        for (decomposed, precomposed) in [
            ("W\u{30A}", "\u{1E98}"),
            ("J\u{30C}", "\u{1F0}"),
            ("H\u{331}", "\u{1E96}"),
            ("T\u{308}", "\u{1E97}"),
            ("Y\u{30A}", "\u{1E99}"),
        ] {
            let a = n(&format!("{decomposed}x")).unwrap();
            let b = n(&format!("{precomposed}x")).unwrap();
            assert_eq!(a, b, "{decomposed:?}");
            assert_eq!(n(&a).unwrap(), a, "{decomposed:?} idempotent");
        }
        // İ folds to i + combining dot above; with a further mark it stays stable.
        let dotted = n("\u{130}\u{301}x").unwrap();
        assert_eq!(dotted, "i\u{307}\u{301}x");
        assert_eq!(n(&dotted).unwrap(), dotted);
        assert_eq!(n("STRASSE").unwrap(), n("straße").unwrap());
        assert_eq!(n("ﬁle").unwrap(), "file");
    }

    #[test]
    fn sensitive_mode_keeps_case_and_is_stable() {
        let s = normalize_identifier("  W\u{30A}x ", Sensitive).unwrap();
        assert_eq!(s, "W\u{30A}x");
        assert_eq!(normalize_identifier(&s, Sensitive).unwrap(), s);
        assert_eq!(normalize_identifier("ＢＯＢ", Sensitive).unwrap(), "BOB");
    }

    #[test]
    fn expansion_past_the_limit_is_refused() {
        // U+FDFA expands to 18 characters (33 bytes) under NFKC.
        assert_eq!(
            n(&"\u{FDFA}".repeat(12)).unwrap_err().message(),
            "identifier is too long"
        );
    }

    /// Addresses compare as mail does: the local part by the identifier profile, the
    /// domain through IDNA (UTS #46, non-transitional) to ASCII; no fold merges two
    /// domains.
    #[test]
    fn addresses_compare_as_mail_does() {
        let same = [
            ("Bob@Example.COM", "bob@example.com"),
            ("  bob@example.com ", "bob@example.com"),
            ("bob@BÜCHER.test", "bob@xn--bcher-kva.test"),
            ("bob@bücher.test", "bob@xn--bcher-kva.test"),
            ("bob@xn--bcher-kva.test", "bob@xn--bcher-kva.test"),
            ("bob@XN--BCHER-KVA.test", "bob@xn--bcher-kva.test"),
            // Non-transitional: ß stays ß in the domain (and is `ss` in the local part).
            ("bob@straße.test", "bob@xn--strae-oqa.test"),
            ("bob@STRASSE.test", "bob@strasse.test"),
            ("Straße@strasse.test", "strasse@strasse.test"),
            // Fullwidth letters and at sign (NFKC), in both parts.
            ("ＢＯＢ＠ＥＸＡＭＰＬＥ.com", "bob@example.com"),
            // The last `@` separates the domain.
            ("a@b@Example.com", "a@b@example.com"),
        ];
        for (typed, want) in same {
            let got = n(typed).unwrap_or_else(|e| panic!("{typed:?}: {}", e.message()));
            assert_eq!(got, want, "{typed:?}");
            assert_eq!(n(&got).unwrap(), got, "{typed:?} idempotent");
        }
        assert_ne!(
            n("bob@straße.test").unwrap(),
            n("bob@strasse.test").unwrap()
        );
        // Final sigma is kept by non-transitional processing: two domains.
        assert_ne!(n("x@σοφος.test").unwrap(), n("x@σοφοσ.test").unwrap());
        assert_eq!(n("x@ΣΟΦΟΣ.test").unwrap(), n("x@σοφοσ.test").unwrap());
        assert_eq!(
            n("bob@BÜCHER.test").unwrap(),
            n("bob@xn--bcher-kva.test").unwrap()
        );
        // Case-sensitive identifiers keep the local part's case; the domain is folded.
        assert_eq!(
            normalize_identifier("Bob@BÜCHER.test", Sensitive).unwrap(),
            "Bob@xn--bcher-kva.test"
        );
        // Not addresses: no local part or no domain; identifier rules only.
        assert_eq!(n("@Handle").unwrap(), "@handle");
        assert_eq!(n("Handle@").unwrap(), "handle@");
        // IDNA errors: a fixed message, never the input.
        for bad in [
            "bob@bad domain.test",
            "bob@exa%mple.test",
            "bob@xn--a.test",
            "bob@exa:mple.test",
        ] {
            let err = n(bad).unwrap_err();
            assert_eq!(err.code().as_str(), "VALIDATION_ERROR", "{bad:?}");
            assert_eq!(
                err.message(),
                "the address has an invalid domain",
                "{bad:?}"
            );
        }
    }

    /// A migration from the earlier form (the whole address case-folded) rewrites a
    /// Unicode domain to its ASCII form and refuses when that merges two accounts.
    #[test]
    fn plan_moves_unicode_domains_to_ascii() {
        let plan = plan_renormalization(
            rows(&[("1", "bob@bücher.test"), ("2", "bob@strasse.test")]),
            Insensitive,
        )
        .unwrap();
        assert_eq!(
            plan.changes,
            vec![(
                "1".into(),
                "bob@bücher.test".into(),
                "bob@xn--bcher-kva.test".into()
            )]
        );
        let err = plan_renormalization(
            rows(&[("1", "bob@bücher.test"), ("2", "bob@xn--bcher-kva.test")]),
            Insensitive,
        )
        .unwrap_err();
        assert_eq!(err.groups, vec![vec!["1".to_owned(), "2".to_owned()]]);
    }

    fn rows(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(id, ident)| ((*id).to_owned(), (*ident).to_owned()))
            .collect()
    }

    #[test]
    fn plan_rewrites_non_normal_rows_only() {
        let plan = plan_renormalization(
            rows(&[("1", "w\u{30A}"), ("2", "bob"), ("3", "a\u{200B}")]),
            Insensitive,
        )
        .unwrap();
        assert_eq!(
            plan.changes,
            vec![("1".into(), "w\u{30A}".into(), "\u{1E98}".into())]
        );
        assert_eq!(plan.unnormalizable, vec!["3".to_owned()]);
    }

    #[test]
    fn plan_refuses_merges_and_names_ids_only() {
        let err = plan_renormalization(
            rows(&[
                ("b", "w\u{30A}"),
                ("a", "\u{1E98}"),
                ("c", "Bob"),
                ("d", "BOB"),
                ("e", "eve"),
            ]),
            Insensitive,
        )
        .unwrap_err();
        assert_eq!(
            err.groups,
            vec![
                vec!["c".to_owned(), "d".to_owned()],
                vec!["a".into(), "b".into()]
            ]
        );
        let e = err.into_error();
        assert_eq!(e.code().as_str(), "CONFIGURATION_ERROR");
        assert!(e.message().contains("[c, d]; [a, b]"), "{}", e.message());
        assert!(!e.message().to_lowercase().contains("bob"));
    }
}
