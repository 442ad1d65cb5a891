//! Text from the file system and text for spreadsheets, kept exact.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// A file or folder name as text, exactly: valid UTF-8 as it is, every other byte as
/// `%XX` (a name is bytes on Linux, not always UTF-8).
pub fn exact_name(name: &OsStr) -> String {
    let mut text = String::new();
    for chunk in name.as_bytes().utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("%{byte:02X}"));
        }
    }
    text
}

/// `text` safe to print on a terminal: each control character (ESC, CR, ...) as its
/// Rust escape (`\u{1b}`, `\r`), so a name cannot move the cursor or colour the
/// screen; other text as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect(),
    )
}

/// What makes a spreadsheet read a cell as a formula (OWASP's CSV injection list).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `text` as a CSV cell a spreadsheet shows as text: one that would start a formula
/// gets a leading `'`, as spreadsheets themselves mark text.
pub fn cell(text: &str) -> Cow<'_, str> {
    if text.starts_with(FORMULA_STARTS) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The text a [`cell`] holds.
pub fn from_cell(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(FORMULA_STARTS) => rest,
        _ => cell,
    }
}

/// `#[serde(with = "rps_core::text::text_cell")]`: a text field written with [`cell`]
/// and read back with [`from_cell`].
pub mod text_cell {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::cell(text))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        let cell = String::deserialize(deserializer)?;
        Ok(super::from_cell(&cell).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_print_escaped() {
        assert_eq!(printable("rock"), "rock");
        assert_eq!(printable("\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(printable("\r\rFAKE"), "\\r\\rFAKE");
        assert_eq!(printable("pierre–papier"), "pierre–papier");
    }

    #[test]
    fn names_keep_every_byte() {
        let name = OsStr::from_bytes(b"rock\xff\xfe-1.png");
        assert_eq!(exact_name(name), "rock%FF%FE-1.png");
        assert_eq!(
            exact_name(OsStr::new("papier-mâché.png")),
            "papier-mâché.png"
        );
    }

    #[test]
    fn formulas_become_text_and_read_back() {
        for text in ["=1+1", "+cmd", "-2", "@SUM(A1)"] {
            assert_eq!(cell(text), format!("'{text}"));
            assert_eq!(from_cell(&cell(text)), text);
        }
        assert_eq!(cell("rock/a.png"), "rock/a.png");
        assert_eq!(from_cell("'quoted"), "'quoted");
    }
}
