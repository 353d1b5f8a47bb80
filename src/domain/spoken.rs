//! Numbers, dates, times and telephone numbers in French as a person says them, for text read
//! aloud by a French text-to-speech voice (Twilio `<Say language="fr-FR">`, Polly "Léa").
//! [`super::wording`] writes for the eye ("9 h 30"); this module writes for the ear
//! ("9 heures 30", "zéro six, trente-neuf, …"). Always given local values: the caller converts
//! from UTC in the commune's time zone first.
//!
//! Numbers in words follow the traditional spelling (the rules in force before the 1990
//! rectifications): a hyphen only between tens and units below one hundred ("vingt-deux",
//! "quatre-vingt-dix-sept"), never where "et" joins them ("vingt et un", "soixante et onze") and
//! never around "cent" or "mille" ("deux cent un", "deux mille vingt-six"). "Vingt" (in
//! "quatre-vingts") and "cent" take an "s" when multiplied and ending the number, or followed by
//! the nouns "million" and "milliard" ("quatre-vingts", "deux cents millions"), but not before
//! the adjective "mille" ("deux cent mille") nor when another number follows ("deux cent un").

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use super::wording::{day_of_month, month_name, weekday_name};

/// Words from zero to nineteen ("zéro" is only said alone).
const UNITS: [&str; 20] = [
    "zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix", "onze",
    "douze", "treize", "quatorze", "quinze", "seize", "dix-sept", "dix-huit", "dix-neuf",
];

/// Tens by their digit; 70 and 90 are said "soixante-dix" and "quatre-vingt-dix", so they share
/// the word of 60 and 80.
const TENS: [&str; 10] = [
    "",
    "dix",
    "vingt",
    "trente",
    "quarante",
    "cinquante",
    "soixante",
    "soixante",
    "quatre-vingt",
    "quatre-vingt",
];

/// 1 to 99 in words. `plural` says whether a final "quatre-vingt" takes its "s" (80 ending the
/// number or before "million"), which it does not before "mille".
fn below_hundred(n: u32, plural: bool) -> String {
    debug_assert!((1..100).contains(&n));
    if n < 20 {
        return UNITS[n as usize].to_owned();
    }
    let ten = n / 10;
    let base = TENS[ten as usize];
    // What is said after the tens word: 0–9, or 10–19 after "soixante" and "quatre-vingt".
    let rest = if ten == 7 || ten == 9 {
        n % 10 + 10
    } else {
        n % 10
    };
    match rest {
        0 if ten == 8 && plural => "quatre-vingts".to_owned(),
        0 => base.to_owned(),
        // "vingt et un" … "soixante et onze", but "quatre-vingt-un", "quatre-vingt-onze".
        1 | 11 if ten < 8 => format!("{base} et {}", UNITS[rest as usize]),
        _ => format!("{base}-{}", UNITS[rest as usize]),
    }
}

/// 1 to 999 in words; `plural` as for [`below_hundred`], for "cent" as well.
fn below_thousand(n: u32, plural: bool) -> String {
    debug_assert!((1..1000).contains(&n));
    let (hundreds, rest) = (n / 100, n % 100);
    let mut words = match hundreds {
        0 => String::new(),
        1 => "cent".to_owned(),
        h if rest == 0 && plural => format!("{} cents", UNITS[h as usize]),
        h => format!("{} cent", UNITS[h as usize]),
    };
    if rest > 0 {
        if !words.is_empty() {
            words.push(' ');
        }
        words.push_str(&below_hundred(rest, plural));
    }
    words
}

/// A whole number in French words, traditional spelling (see the module documentation):
/// `number(2026)` is `"deux mille vingt-six"`.
///
/// Meant for 0 to 999 999; larger values are said with "million" and "milliard" up to
/// `u32::MAX`.
pub fn number(n: u32) -> String {
    if n == 0 {
        return UNITS[0].to_owned();
    }
    let mut parts: Vec<String> = Vec::new();
    for (scale, noun) in [(1_000_000_000, "milliard"), (1_000_000, "million")] {
        let count = n / scale % 1000;
        if count > 0 {
            let s = if count > 1 { "s" } else { "" };
            parts.push(format!("{} {noun}{s}", below_thousand(count, true)));
        }
    }
    match n / 1000 % 1000 {
        0 => {}
        1 => parts.push("mille".to_owned()),
        thousands => parts.push(format!("{} mille", below_thousand(thousands, false))),
    }
    let units = n % 1000;
    if units > 0 {
        parts.push(below_thousand(units, true));
    }
    parts.join(" ")
}

/// A time of day as said on the phone: `time(9:30)` is `"9 heures 30"`; also "1 heure",
/// "14 heures 5", "midi", "midi 15", "minuit". Seconds are not said.
pub fn time(t: NaiveTime) -> String {
    let hour = match t.hour() {
        0 => "minuit".to_owned(),
        12 => "midi".to_owned(),
        1 => "1 heure".to_owned(),
        h => format!("{h} heures"),
    };
    match t.minute() {
        0 => hour,
        m => format!("{hour} {m}"),
    }
}

/// A date without its year: `date(2026-12-03)` is `"jeudi 3 décembre"`; the first of the
/// month is "1er" ("lundi 1er juin"), which the voice says "premier".
pub fn date(d: NaiveDate) -> String {
    format!(
        "{} {} {}",
        weekday_name(d.weekday()),
        day_of_month(d.day()),
        month_name(d.month())
    )
}

/// A date and a time: `date_time(2026-12-03 09:30)` is `"jeudi 3 décembre à 9 heures 30"`.
pub fn date_time(dt: NaiveDateTime) -> String {
    format!("{} à {}", date(dt.date()), time(dt.time()))
}

/// A telephone number as people read it: `phone("+33639980077")` is
/// `"zéro six, trente-neuf, quatre-vingt-dix-huit, zéro zéro, soixante-dix-sept"`.
///
/// French numbers (`+33` followed by nine digits, `0033…`, or ten national digits starting
/// with 0; spaces, dots, dashes and brackets allowed, as is "+33 (0)6…") are read in the
/// national form, in pairs; a pair starting with 0 is "zéro" then its digit. Any other number
/// is read digit by digit, after "plus" when it has a country code.
pub fn phone(e164_or_national: &str) -> String {
    let cleaned: String = e164_or_national
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')' | '\u{a0}'))
        .collect();
    let cleaned = match cleaned.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => cleaned,
    };
    if let Some(national) = french_national(&cleaned) {
        return national
            .as_bytes()
            .chunks(2)
            .map(|pair| {
                let (tens, units) = (u32::from(pair[0] - b'0'), u32::from(pair[1] - b'0'));
                if tens == 0 {
                    format!("zéro {}", UNITS[units as usize])
                } else {
                    number(tens * 10 + units)
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
    }
    let one_by_one = digits(&cleaned);
    match (cleaned.starts_with('+'), one_by_one.is_empty()) {
        (true, false) => format!("plus, {one_by_one}"),
        (true, true) => "plus".to_owned(),
        (false, _) => one_by_one,
    }
}

/// The ten national digits ("0639980077") of a French number, if `cleaned` is one.
fn french_national(cleaned: &str) -> Option<String> {
    let national = match cleaned.strip_prefix("+33") {
        // "+33 (0)6 39 …": the trunk 0 written after the country code.
        Some(rest) if rest.len() == 10 && rest.starts_with('0') => rest.to_owned(),
        Some(rest) if rest.len() == 9 && !rest.starts_with('0') => format!("0{rest}"),
        Some(_) => return None,
        None if cleaned.len() == 10 && cleaned.starts_with('0') && !cleaned.starts_with("00") => {
            cleaned.to_owned()
        }
        None => return None,
    };
    national
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then_some(national)
}

/// Each digit said on its own, separated by commas, for reading back a code or a key:
/// `digits("123456")` is `"un, deux, trois, quatre, cinq, six"`.
///
/// The telephone keys `*` and `#` are said "étoile" and "dièse"; any other character (spaces,
/// dashes, letters) is skipped.
pub fn digits(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '0'..='9' => c.to_digit(10).map(|d| UNITS[d as usize]),
            '*' => Some("étoile"),
            '#' => Some("dièse"),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A number of people, in words and in the feminine ("personne" is feminine):
/// `persons(1)` is `"une personne"`; also "deux personnes", "vingt et une personnes",
/// "zéro personne".
pub fn persons(n: u32) -> String {
    let mut count = number(n);
    // "un" agrees with "personne": "une", "vingt et une", "quatre-vingt-une", "cent une".
    if count.ends_with("un") {
        count.push('e');
    }
    let s = if n > 1 { "s" } else { "" };
    format!("{count} personne{s}")
}

/// A duration as said on the phone: `duration_minutes(90)` is `"1 heure 30"`; also
/// "20 minutes", "1 minute", "1 heure", "2 heures", "2 heures 5".
pub fn duration_minutes(m: u32) -> String {
    let (hours, minutes) = (m / 60, m % 60);
    match (hours, minutes) {
        (0, 0 | 1) => format!("{minutes} minute"),
        (0, _) => format!("{minutes} minutes"),
        (1, 0) => "1 heure".to_owned(),
        (1, _) => format!("1 heure {minutes}"),
        (_, 0) => format!("{hours} heures"),
        (_, _) => format!("{hours} heures {minutes}"),
    }
}

/// How many words a prompt has: whitespace-separated tokens holding at least one letter or
/// digit, so lone punctuation does not count: `word_count("Bonjour, tapez 1.")` is `3`.
pub fn word_count(text: &str) -> usize {
    text.split_whitespace()
        .filter(|token| token.chars().any(char::is_alphanumeric))
        .count()
}

/// About how many seconds a prompt lasts when spoken at `words_per_minute`:
/// `spoken_seconds("un deux trois", 180.0)` is `1.0`.
///
/// Text without words lasts `0.0`; a rate that is not a positive number gives
/// `f64::INFINITY`, so a check like "the prompt lasts under 10 seconds" fails rather than
/// passes.
pub fn spoken_seconds(text: &str, words_per_minute: f64) -> f64 {
    let words = word_count(text);
    if words == 0 {
        return 0.0;
    }
    if words_per_minute.is_nan() || words_per_minute <= 0.0 {
        return f64::INFINITY;
    }
    words as f64 * 60.0 / words_per_minute
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn numbers_below_one_hundred() {
        let cases = [
            (0, "zéro"),
            (1, "un"),
            (10, "dix"),
            (11, "onze"),
            (16, "seize"),
            (17, "dix-sept"),
            (19, "dix-neuf"),
            (20, "vingt"),
            (21, "vingt et un"),
            (22, "vingt-deux"),
            (31, "trente et un"),
            (39, "trente-neuf"),
            (61, "soixante et un"),
            (69, "soixante-neuf"),
            (70, "soixante-dix"),
            (71, "soixante et onze"),
            (72, "soixante-douze"),
            (77, "soixante-dix-sept"),
            (79, "soixante-dix-neuf"),
            (80, "quatre-vingts"),
            (81, "quatre-vingt-un"),
            (89, "quatre-vingt-neuf"),
            (90, "quatre-vingt-dix"),
            (91, "quatre-vingt-onze"),
            (98, "quatre-vingt-dix-huit"),
            (99, "quatre-vingt-dix-neuf"),
        ];
        for (n, words) in cases {
            assert_eq!(number(n), words, "{n}");
        }
    }

    #[test]
    fn hundreds_and_thousands() {
        let cases = [
            (100, "cent"),
            (101, "cent un"),
            (111, "cent onze"),
            (121, "cent vingt et un"),
            (180, "cent quatre-vingts"),
            (200, "deux cents"),
            (201, "deux cent un"),
            (280, "deux cent quatre-vingts"),
            (999, "neuf cent quatre-vingt-dix-neuf"),
            (1000, "mille"),
            (1001, "mille un"),
            (1100, "mille cent"),
            (1980, "mille neuf cent quatre-vingts"),
            (2000, "deux mille"),
            (2026, "deux mille vingt-six"),
            (21_000, "vingt et un mille"),
            (71_071, "soixante et onze mille soixante et onze"),
            (80_000, "quatre-vingt mille"),
            (81_000, "quatre-vingt-un mille"),
            (100_000, "cent mille"),
            (200_000, "deux cent mille"),
            (200_200, "deux cent mille deux cents"),
            (
                999_999,
                "neuf cent quatre-vingt-dix-neuf mille neuf cent quatre-vingt-dix-neuf",
            ),
        ];
        for (n, words) in cases {
            assert_eq!(number(n), words, "{n}");
        }
    }

    #[test]
    fn millions_and_beyond_are_nouns() {
        assert_eq!(number(1_000_000), "un million");
        assert_eq!(number(2_000_001), "deux millions un");
        assert_eq!(number(80_000_000), "quatre-vingts millions");
        assert_eq!(number(200_000_000), "deux cents millions");
        assert_eq!(number(1_000_000_000), "un milliard");
        assert_eq!(
            number(u32::MAX),
            "quatre milliards deux cent quatre-vingt-quatorze millions \
             neuf cent soixante-sept mille deux cent quatre-vingt-quinze"
        );
    }

    #[test]
    fn times_of_day() {
        assert_eq!(time(t(9, 0)), "9 heures");
        assert_eq!(time(t(9, 30)), "9 heures 30");
        assert_eq!(time(t(14, 5)), "14 heures 5");
        assert_eq!(time(t(1, 0)), "1 heure");
        assert_eq!(time(t(1, 45)), "1 heure 45");
        assert_eq!(time(t(12, 0)), "midi");
        assert_eq!(time(t(12, 15)), "midi 15");
        assert_eq!(time(t(0, 0)), "minuit");
        assert_eq!(time(t(0, 10)), "minuit 10");
        assert_eq!(time(t(23, 59)), "23 heures 59");
        assert_eq!(
            time(NaiveTime::from_hms_opt(9, 30, 45).unwrap()),
            "9 heures 30"
        );
    }

    #[test]
    fn dates_without_year() {
        assert_eq!(date(d("2026-12-03")), "jeudi 3 décembre");
        assert_eq!(date(d("2026-06-01")), "lundi 1er juin");
        assert_eq!(date(d("2027-06-01")), "mardi 1er juin");
        assert_eq!(date(d("2026-08-15")), "samedi 15 août");
    }

    #[test]
    fn dates_with_times() {
        let at = |day: &str, h, m| d(day).and_time(t(h, m));
        assert_eq!(
            date_time(at("2026-12-03", 9, 30)),
            "jeudi 3 décembre à 9 heures 30"
        );
        assert_eq!(date_time(at("2026-06-01", 12, 0)), "lundi 1er juin à midi");
        assert_eq!(
            date_time(at("2026-06-01", 13, 0)),
            "lundi 1er juin à 13 heures"
        );
    }

    #[test]
    fn french_phone_numbers_in_pairs() {
        let said = "zéro six, trente-neuf, quatre-vingt-dix-huit, zéro zéro, soixante-dix-sept";
        for written in [
            "+33639980077",
            "0639980077",
            "06 39 98 00 77",
            "06.39.98.00.77",
            "0033639980077",
            "+33 6 39 98 00 77",
            "+33 (0)6 39 98 00 77",
        ] {
            assert_eq!(phone(written), said, "{written}");
        }
        assert_eq!(
            phone("+33465710105"),
            "zéro quatre, soixante-cinq, soixante et onze, zéro un, zéro cinq"
        );
        assert_eq!(
            phone("0180818091"),
            "zéro un, quatre-vingts, quatre-vingt-un, quatre-vingts, quatre-vingt-onze"
        );
    }

    #[test]
    fn other_phone_numbers_digit_by_digit() {
        assert_eq!(
            phone("+447700900123"),
            "plus, quatre, quatre, sept, sept, zéro, zéro, \
             neuf, zéro, zéro, un, deux, trois"
        );
        assert_eq!(
            phone("0041 21 123"),
            "plus, quatre, un, deux, un, un, deux, trois"
        );
        // Not a French number after all: wrong length.
        assert_eq!(
            phone("+3363998"),
            "plus, trois, trois, six, trois, neuf, neuf, huit"
        );
        assert_eq!(phone("3949"), "trois, neuf, quatre, neuf");
        assert_eq!(phone("+"), "plus");
        assert_eq!(phone(""), "");
    }

    #[test]
    fn digits_one_by_one() {
        assert_eq!(digits("123456"), "un, deux, trois, quatre, cinq, six");
        assert_eq!(digits("0 7-9"), "zéro, sept, neuf");
        assert_eq!(digits("1*#"), "un, étoile, dièse");
        assert_eq!(digits("7"), "sept");
        assert_eq!(digits(""), "");
    }

    #[test]
    fn persons_agree_in_gender_and_number() {
        assert_eq!(persons(0), "zéro personne");
        assert_eq!(persons(1), "une personne");
        assert_eq!(persons(2), "deux personnes");
        assert_eq!(persons(3), "trois personnes");
        assert_eq!(persons(11), "onze personnes");
        assert_eq!(persons(21), "vingt et une personnes");
        assert_eq!(persons(71), "soixante et onze personnes");
        assert_eq!(persons(81), "quatre-vingt-une personnes");
        assert_eq!(persons(80), "quatre-vingts personnes");
        assert_eq!(persons(101), "cent une personnes");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_minutes(0), "0 minute");
        assert_eq!(duration_minutes(1), "1 minute");
        assert_eq!(duration_minutes(20), "20 minutes");
        assert_eq!(duration_minutes(59), "59 minutes");
        assert_eq!(duration_minutes(60), "1 heure");
        assert_eq!(duration_minutes(65), "1 heure 5");
        assert_eq!(duration_minutes(90), "1 heure 30");
        assert_eq!(duration_minutes(120), "2 heures");
        assert_eq!(duration_minutes(150), "2 heures 30");
    }

    #[test]
    fn words_and_seconds() {
        assert_eq!(word_count(""), 0);
        assert_eq!(word_count("  , — ! "), 0);
        assert_eq!(word_count("Bonjour, tapez 1."), 3);
        assert_eq!(word_count("jeudi 3 décembre à 9 heures 30"), 7);
        assert_eq!(word_count("l'état-civil\n\tà\u{a0}Sallanches"), 3);
        assert_eq!(spoken_seconds("un deux trois", 180.0), 1.0);
        assert_eq!(spoken_seconds("", 150.0), 0.0);
        assert_eq!(spoken_seconds(" . ", 0.0), 0.0);
        assert_eq!(
            spoken_seconds("Pour prendre rendez-vous, tapez 1.", 150.0),
            2.0
        );
        assert_eq!(spoken_seconds("bonjour", 0.0), f64::INFINITY);
        assert_eq!(spoken_seconds("bonjour", -10.0), f64::INFINITY);
        assert_eq!(spoken_seconds("bonjour", f64::NAN), f64::INFINITY);
    }
}
