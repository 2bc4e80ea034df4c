//! What people see of each other: user names, e-mail addresses, tenant names. One validation
//! each, used wherever the value is set (register, create, rename), so that no path accepts what
//! another refuses. Text is normalised to NFC; control and invisible characters are refused
//! (they make lookalike accounts: "anna" and "an\u{200b}na"); lengths count characters, as the
//! messages say.

use unicode_normalization::UnicodeNormalization;

/// Longest user or tenant name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest e-mail address, in characters (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// Characters that draw nothing or change how the text around them is drawn: Unicode's format
/// characters (Cf: zero-width spaces and joiners, bidirectional overrides, the BOM, tags …) and
/// the other blank fillers.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0E}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFFB}' | '\u{0600}'..='\u{0605}' | '\u{06DD}' | '\u{070F}' | '\u{08E2}'
        | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// A name (of a user or a tenant): NFC, trimmed, 1 to [`MAX_NAME_CHARS`] characters, no control
/// or invisible characters. `Err` is the message for the client.
pub fn name(raw: &str) -> Result<String, String> {
    let s: String = raw.nfc().collect::<String>().trim().to_owned();
    if let Some(c) = s.chars().find(|c| c.is_control() || invisible(*c)) {
        return Err(format!("name must not contain control or invisible characters (found U+{:04X})", c as u32));
    }
    let n = s.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(format!("name must be 1 to {MAX_NAME_CHARS} characters"));
    }
    Ok(s)
}

/// An e-mail address: NFC, trimmed, lower-cased; valid by RFC 5322 as `email_address` reads it
/// (dot-atom local part: no quoted forms, comments or display names) and with a domain of at
/// least two labels of letters, digits and inner hyphens (no IP literals), at most
/// [`MAX_EMAIL_CHARS`] characters.
pub fn email(raw: &str) -> Result<String, String> {
    const MSG: &str = "value is not a valid email address";
    let s: String = raw.nfc().collect::<String>().trim().to_lowercase();
    if s.chars().count() > MAX_EMAIL_CHARS || s.chars().any(|c| c.is_control() || c.is_whitespace() || invisible(c)) {
        return Err(MSG.into());
    }
    let options = email_address::Options::default().without_display_text().without_domain_literal();
    let parsed = email_address::EmailAddress::parse_with_options(&s, options).map_err(|_| MSG.to_owned())?;
    let (local, domain) = (parsed.local_part(), parsed.domain());
    let atext = |c: char| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if local.starts_with('"') || local.split('.').any(|atom| atom.is_empty() || !atom.chars().all(atext)) {
        return Err(MSG.into());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.chars().count() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if labels.len() < 2
        || !labels.iter().all(label_ok)
        || labels.last().is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(MSG.into());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookalike_and_broken_addresses_are_refused() {
        for bad in [
            "a\0b@example.org",
            "an\u{200b}na@example.org",
            "<script>@x.y",
            "a@-.-",
            "a@b..c",
            "a@b",
            "a b@example.org",
            "\"quoted\"@example.org",
            "a@[127.0.0.1]",
            "Anna <anna@example.org>",
            ".a@example.org",
            "a.@example.org",
            "a@example.123",
            "a@-example.org",
        ] {
            assert!(email(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(email("  Anna.Berg+home@Example.ORG ").unwrap(), "anna.berg+home@example.org");
        assert_eq!(email("jörg@bücher.de").unwrap(), "jörg@bücher.de");
        assert!(email(&format!("{}@example.org", "a".repeat(250))).is_err());
    }

    #[test]
    fn names_are_normalised_and_invisible_characters_refused() {
        for bad in ["", "   ", "an\u{200b}na", "evil\u{202e}gnp.exe", "bell\u{7}", "tab\there", "x\u{feff}"] {
            assert!(name(bad).is_err(), "{bad:?} accepted");
        }
        // NFD "Jörg" (o + combining diaeresis) becomes the NFC form
        assert_eq!(name("Jo\u{308}rg").unwrap(), "Jörg");
        assert_eq!(name("  Haushalt Müller ").unwrap(), "Haushalt Müller");
        assert!(name(&"ä".repeat(200)).is_ok(), "200 characters, 400 bytes");
        assert!(name(&"ä".repeat(201)).is_err());
    }
}
