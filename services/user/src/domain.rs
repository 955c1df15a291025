//! Valid-by-construction account fields: an `Email`, `Password` or `Name` exists only once it
//! passed the rules of docs/api.md.

use std::fmt;

use souk_contract::api::{PASSWORD_CHARS, USER_NAME_CHARS};
use souk_shared::Error;
use unicode_normalization::UnicodeNormalization as _;

/// An email address: trimmed, in Unicode NFKC form; compared case-insensitively (the store
/// lower-cases for lookups).
///
/// The policy against look-alike accounts (README, "Limits"):
/// - the address is normalised to NFKC, so NFD and NFC spellings, full-width letters and
///   ligatures are one account;
/// - invisible and default-ignorable characters (zero-width space and joiners, soft hyphen,
///   bidirectional controls, variation selectors, tags...) are refused, as are controls and
///   whitespace;
/// - within the local part and within each domain label, letters come from one script: Latin,
///   Greek, Cyrillic and every other script do not mix (`аdmin` with a Cyrillic `а` is
///   refused); Han, kana and Hangul may mix with each other and with Latin, as Japanese,
///   Chinese and Korean addresses do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let invalid = || Error::invalid("email", "must be a valid email address");
        if raw.chars().any(is_invisible) {
            return Err(Error::invalid(
                "email",
                "must not contain invisible characters",
            ));
        }
        let normalised: String = raw.trim().nfkc().collect();
        let email = normalised.as_str();
        if email.is_empty()
            || email.len() > 254
            || email
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
        {
            return Err(invalid());
        }
        let (local, domain) = email.rsplit_once('@').ok_or_else(invalid)?;
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && !label.contains('@')
            });
        if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
            return Err(invalid());
        }
        if !single_script(local) || !domain.split('.').all(single_script) {
            return Err(Error::invalid(
                "email",
                "must not mix letters of different scripts",
            ));
        }
        Ok(Self(email.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Unicode's `Default_Ignorable_Code_Point` (and the other format characters that render as
/// nothing): characters that would make two addresses look the same.
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFFB | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

/// The script of a letter, as far as look-alikes go. Digits and punctuation have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    Latin,
    Greek,
    Cyrillic,
    /// Han, Hiragana, Katakana, Bopomofo and Hangul: mixed with each other and with Latin in
    /// ordinary East Asian text.
    EastAsian,
    /// Any other script, told apart by its 256-code-point block (an approximation of the
    /// Unicode Script property good enough to keep two scripts from mixing).
    Other(u32),
}

fn script(c: char) -> Option<Script> {
    if !c.is_alphabetic() {
        return None;
    }
    let code = c as u32;
    Some(match code {
        0x0000..=0x024F | 0x1E00..=0x1EFF | 0x2C60..=0x2C7F | 0xA720..=0xA7FF | 0xFF00..=0xFFEF => {
            Script::Latin
        }
        0x0370..=0x03FF | 0x1F00..=0x1FFF => Script::Greek,
        0x0400..=0x052F | 0x1C80..=0x1C8F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F => Script::Cyrillic,
        0x1100..=0x11FF
        | 0x2E80..=0x2FDF
        | 0x3040..=0x31FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xAC00..=0xD7AF
        | 0xF900..=0xFAFF
        | 0x20000..=0x3FFFF => Script::EastAsian,
        _ => Script::Other(code >> 8),
    })
}

/// Whether the letters of `text` come from one script (East Asian scripts may join Latin).
fn single_script(text: &str) -> bool {
    let mut seen: Option<Script> = None;
    for found in text.chars().filter_map(script) {
        seen = match (seen, found) {
            (None, s) => Some(s),
            (Some(a), b) if a == b => Some(a),
            (Some(Script::Latin), Script::EastAsian) | (Some(Script::EastAsian), Script::Latin) => {
                Some(Script::EastAsian)
            }
            _ => return false,
        };
    }
    true
}

/// A password of 8 to 128 characters (not bytes); never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let chars = PASSWORD_CHARS;
        if chars.contains(&raw.chars().count()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Error::invalid(
                "password",
                format!("must be {} to {} characters", chars.start(), chars.end()),
            ))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A display name: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let name = raw.trim();
        let chars = USER_NAME_CHARS;
        if !chars.contains(&name.chars().count()) {
            return Err(Error::invalid(
                "name",
                format!("must be {} to {} characters", chars.start(), chars.end()),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "name",
                "must not contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_keep_their_case() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").expect("valid").as_str(),
            "Ada@Example.COM"
        );
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad in [
            "",
            "   ",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@example..com",
            "ada@-example.com",
            "ada@exa\u{7}mple.com",
            &format!("{}@example.com", "a".repeat(65)),
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn emails_are_normalised_to_nfkc() {
        let nfc = Email::parse("jos\u{e9}@example.com").expect("nfc");
        let nfd = Email::parse("jose\u{301}@example.com").expect("nfd");
        assert_eq!(nfc, nfd);
        // Full-width letters are their ASCII selves.
        assert_eq!(
            Email::parse("\u{ff41}da@example.com")
                .expect("full width")
                .as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn invisible_characters_are_refused() {
        for bad in [
            "ad\u{200b}min@example.com",
            "ad\u{ad}min@example.com",
            "admin\u{200d}@example.com",
            "admin@exam\u{2060}ple.com",
            "\u{feff}admin@example.com",
            "admin@example.com\u{202e}",
            "adm\u{fe0f}in@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn mixed_script_look_alikes_are_refused() {
        for bad in [
            "\u{430}dmin@example.com",    // Cyrillic а
            "admin@ex\u{430}mple.com",    // in the domain
            "p\u{3bf}st@example.com",     // Greek ο
            "\u{430}\u{3b1}@example.com", // Cyrillic and Greek
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        for good in [
            "\u{430}\u{434}\u{43c}\u{438}\u{43d}@example.com", // all Cyrillic
            "\u{3b1}\u{3b2}@example.gr",
            "taro\u{5c71}\u{7530}\u{3067}\u{3059}@example.jp",
            "ren\u{e9}e+shop_1@example.com",
        ] {
            assert!(Email::parse(good).is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn passwords_count_characters_not_bytes() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"é".repeat(128)).is_ok());
        assert!(Password::parse(&"x".repeat(129)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("secret-password").expect("valid")),
            "Password([redacted])"
        );
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            Name::parse("  Ada Lovelace ").expect("valid").as_str(),
            "Ada Lovelace"
        );
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse(&"n".repeat(100)).is_ok());
        assert!(Name::parse(&"n".repeat(101)).is_err());
        assert!(Name::parse("Ada\u{0}").is_err());
    }
}
