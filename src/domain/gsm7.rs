//! The GSM-7 alphabet of SMS. A message written only with it carries 160 characters in one
//! segment (153 per segment when split); a single character outside it turns the whole message
//! into UCS-2, 70 characters a segment — so a French SMS with one "ç" costs double. The price list
//! counts one segment per message: templates are written in GSM-7 and the names that go into them
//! (communes, services, places) are transliterated first.

/// Characters of the basic GSM 03.38 table (one septet each).
const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the extension table (an escape plus one septet: two each).
const EXTENSION: &str = "^{}\\[~]|€\u{c}";

pub const SINGLE_SEGMENT: usize = 160;

/// Septets a GSM-7 text takes, or `None` if a character is not in GSM-7.
pub fn septets(text: &str) -> Option<usize> {
    text.chars().try_fold(0, |n, c| {
        if BASIC.contains(c) {
            Some(n + 1)
        } else if EXTENSION.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    })
}

pub fn is_gsm7(text: &str) -> bool {
    septets(text).is_some()
}

/// How many SMS segments a text is billed as.
pub fn segments(text: &str) -> u32 {
    match septets(text) {
        Some(0) => 1,
        Some(n) if n <= 160 => 1,
        Some(n) => n.div_ceil(153) as u32,
        None => {
            let units = text.encode_utf16().count();
            if units <= 70 {
                1
            } else {
                units.div_ceil(67) as u32
            }
        }
    }
}

/// Whether a text is GSM-7 and fits one segment.
pub fn fits_one_segment(text: &str) -> bool {
    septets(text).is_some_and(|n| n <= SINGLE_SEGMENT)
}

/// Rewrites a text into GSM-7 as a French reader would accept it: "Hôtel" → "Hotel",
/// "ç" → "c", typographic quotes and apostrophes → straight ones, "œ" → "oe". Anything with no
/// sensible equivalent becomes "?".
pub fn transliterate(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if BASIC.contains(c) || EXTENSION.contains(c) {
            out.push(c);
            continue;
        }
        let replacement = match c {
            'â' | 'á' | 'ã' => "a",
            'ê' | 'ë' => "e",
            'î' | 'ï' | 'í' => "i",
            'ô' | 'ó' | 'õ' => "o",
            'û' | 'ú' => "u",
            'ÿ' | 'ý' => "y",
            'ç' => "c",
            'À' | 'Â' | 'Á' | 'Ã' => "A",
            'È' | 'Ê' | 'Ë' => "E",
            'Î' | 'Ï' | 'Í' => "I",
            'Ô' | 'Ó' | 'Õ' => "O",
            'Ù' | 'Û' | 'Ú' => "U",
            'Ÿ' | 'Ý' => "Y",
            'œ' => "oe",
            'Œ' => "OE",
            '’' | '‘' | '´' | '`' => "'",
            '«' | '»' | '“' | '”' | '„' => "\"",
            '…' => "...",
            '–' | '—' | '‐' | '−' => "-",
            '°' => "o",
            '\u{a0}' | '\u{202f}' | '\t' => " ",
            _ => "?",
        };
        out.push_str(replacement);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn french_letters() {
        assert!(is_gsm7("é è à ù Ç É @ £ € [ ]"));
        for c in ["ç", "ê", "â", "î", "ô", "û", "œ", "’", "À", "È", "«", "…"] {
            assert!(!is_gsm7(c), "{c} is not GSM-7");
        }
        assert_eq!(
            transliterate("Hôtel de ville, Thônes : l’accueil « à côté »… Œuvre façade"),
            "Hotel de ville, Thones : l'accueil \" à coté \"... OEuvre facade"
        );
        assert!(is_gsm7(&transliterate("ÂÊÎÔÛ âêîôû ëïÿ ç œ — °")));
    }

    #[test]
    fn segments_are_counted_like_the_operators_do() {
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        // The euro sign takes two septets.
        assert_eq!(septets("€"), Some(2));
        assert_eq!(segments(&format!("{}€", "a".repeat(159))), 2);
        // One "ç" and the message is UCS-2: 70 characters a segment.
        assert_eq!(segments(&format!("ç{}", "a".repeat(69))), 1);
        assert_eq!(segments(&format!("ç{}", "a".repeat(70))), 2);
        assert!(fits_one_segment(&"é".repeat(160)));
        assert!(!fits_one_segment(&"é".repeat(161)));
    }
}
