//! Dates and times written in French the way a town hall writes them ("jeudi 3 décembre 2026 à
//! 9 h 30", "le 1er juin"). Always given local values: the caller converts from UTC in the
//! commune's time zone first.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Weekday};

pub fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "lundi",
        Weekday::Tue => "mardi",
        Weekday::Wed => "mercredi",
        Weekday::Thu => "jeudi",
        Weekday::Fri => "vendredi",
        Weekday::Sat => "samedi",
        Weekday::Sun => "dimanche",
    }
}

pub fn month_name(month: u32) -> &'static str {
    const MONTHS: [&str; 12] = [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ];
    MONTHS[(month.clamp(1, 12) - 1) as usize]
}

/// "1er" for the first of the month, the number otherwise.
pub fn day_of_month(day: u32) -> String {
    if day == 1 {
        "1er".to_owned()
    } else {
        day.to_string()
    }
}

/// "jeudi 3 décembre 2026".
pub fn written_date(date: NaiveDate) -> String {
    format!(
        "{} {} {} {}",
        weekday_name(date.weekday()),
        day_of_month(date.day()),
        month_name(date.month()),
        date.year()
    )
}

/// "9 h 30", "14 h".
pub fn written_time(time: NaiveTime) -> String {
    match time.minute() {
        0 => format!("{} h", time.hour()),
        m => format!("{} h {m:02}", time.hour()),
    }
}

/// "jeudi 3 décembre 2026 à 9 h 30".
pub fn written_date_time(at: NaiveDateTime) -> String {
    format!("{} à {}", written_date(at.date()), written_time(at.time()))
}

/// "de Sallanches", "d'Annecy": the elision French writes before a vowel.
pub fn de(name: &str) -> String {
    let elides = name
        .chars()
        .next()
        .is_some_and(|c| "AEIOUYÂÉÈÊÎÏÔÛaeiouyâéèêîïôû".contains(c));
    if elides {
        format!("d'{name}")
    } else {
        format!("de {name}")
    }
}

/// Lower case without accents nor hyphens, so that "thonon les bains" finds
/// "Thonon-les-Bains" and "elodie" finds "Élodie": what searches compare.
pub fn folded(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let folded: &[char] = match c {
                'à' | 'â' | 'ä' | 'á' | 'À' | 'Â' | 'Ä' | 'Á' => &['a'],
                'é' | 'è' | 'ê' | 'ë' | 'É' | 'È' | 'Ê' | 'Ë' => &['e'],
                'î' | 'ï' | 'í' | 'Î' | 'Ï' | 'Í' => &['i'],
                'ô' | 'ö' | 'ó' | 'Ô' | 'Ö' | 'Ó' => &['o'],
                'ù' | 'û' | 'ü' | 'ú' | 'Ù' | 'Û' | 'Ü' | 'Ú' => &['u'],
                'ç' | 'Ç' => &['c'],
                'ñ' | 'Ñ' => &['n'],
                'ÿ' | 'Ÿ' => &['y'],
                'œ' | 'Œ' => &['o', 'e'],
                'æ' | 'Æ' => &['a', 'e'],
                '-' | '\'' | '’' => &[' '],
                _ => &[],
            };
            if folded.is_empty() {
                c.to_lowercase().collect::<Vec<_>>()
            } else {
                folded.to_vec()
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn french_dates() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(written_date(d("2026-12-03")), "jeudi 3 décembre 2026");
        assert_eq!(written_date(d("2027-06-01")), "mardi 1er juin 2027");
        let at = d("2026-12-03").and_hms_opt(9, 30, 0).unwrap();
        assert_eq!(written_date_time(at), "jeudi 3 décembre 2026 à 9 h 30");
        assert_eq!(
            written_time(NaiveTime::from_hms_opt(14, 0, 0).unwrap()),
            "14 h"
        );
        assert_eq!(
            written_time(NaiveTime::from_hms_opt(8, 5, 0).unwrap()),
            "8 h 05"
        );
    }

    #[test]
    fn folding_for_searches() {
        assert_eq!(folded("Élodie  Lefèvre-Œuvray"), "elodie lefevre oeuvray");
        assert_eq!(folded("Thonon-les-Bains"), "thonon les bains");
        assert_eq!(folded("D’Artagnan"), "d artagnan");
    }
}
