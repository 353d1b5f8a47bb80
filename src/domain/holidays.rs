//! French public holidays ("jours fériés"), computed for any year — never a hard-coded list.
//!
//! Eleven holidays apply everywhere; three of them move with Easter (Easter Monday, Ascension,
//! Whit Monday). Alsace-Moselle (departments 57, 67, 68) adds Good Friday and Saint Stephen's day,
//! and each overseas department adds the day slavery was abolished there. The region is read from
//! the commune's INSEE code, so a commune needs no extra setting for its local holidays.

use chrono::{Datelike, Duration, NaiveDate};

/// Easter Sunday of the Gregorian calendar (the anonymous "Meeus/Jones/Butcher" computation).
pub fn easter_sunday(year: i32) -> NaiveDate {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32)
        .expect("the Easter computation always yields a valid March or April date")
}

/// One public holiday: its date and its French name (shown to citizens: "fermé : lundi de Pâques").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holiday {
    pub date: NaiveDate,
    pub name: &'static str,
}

/// Where a commune is, as far as public holidays go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolidayRegion {
    Metropole,
    AlsaceMoselle,
    Guadeloupe,
    Martinique,
    Guyane,
    Reunion,
    Mayotte,
}

impl HolidayRegion {
    /// The region of a commune from its INSEE code (e.g. `74010` Annecy, `67482` Strasbourg,
    /// `97411` Saint-Denis de La Réunion).
    pub fn from_insee(insee_code: &str) -> Self {
        match insee_code.get(..3) {
            Some("971") => Self::Guadeloupe,
            Some("972") => Self::Martinique,
            Some("973") => Self::Guyane,
            Some("974") => Self::Reunion,
            Some("976") => Self::Mayotte,
            _ => match insee_code.get(..2) {
                Some("57" | "67" | "68") => Self::AlsaceMoselle,
                _ => Self::Metropole,
            },
        }
    }
}

fn ymd(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("fixed holiday dates are valid every year")
}

/// Every public holiday of `year` in `region`, in date order.
pub fn holidays(year: i32, region: HolidayRegion) -> Vec<Holiday> {
    let easter = easter_sunday(year);
    let h = |date, name| Holiday { date, name };
    let mut days = vec![
        h(ymd(year, 1, 1), "jour de l'an"),
        h(easter + Duration::days(1), "lundi de Pâques"),
        h(ymd(year, 5, 1), "fête du Travail"),
        h(ymd(year, 5, 8), "Victoire 1945"),
        h(easter + Duration::days(39), "Ascension"),
        h(easter + Duration::days(50), "lundi de Pentecôte"),
        h(ymd(year, 7, 14), "fête nationale"),
        h(ymd(year, 8, 15), "Assomption"),
        h(ymd(year, 11, 1), "Toussaint"),
        h(ymd(year, 11, 11), "Armistice 1918"),
        h(ymd(year, 12, 25), "Noël"),
    ];
    match region {
        HolidayRegion::Metropole => {}
        HolidayRegion::AlsaceMoselle => {
            days.push(h(easter - Duration::days(2), "Vendredi saint"));
            days.push(h(ymd(year, 12, 26), "Saint-Étienne"));
        }
        HolidayRegion::Guadeloupe => days.push(h(ymd(year, 5, 27), "abolition de l'esclavage")),
        HolidayRegion::Martinique => days.push(h(ymd(year, 5, 22), "abolition de l'esclavage")),
        HolidayRegion::Guyane => days.push(h(ymd(year, 6, 10), "abolition de l'esclavage")),
        HolidayRegion::Reunion => days.push(h(ymd(year, 12, 20), "abolition de l'esclavage")),
        HolidayRegion::Mayotte => days.push(h(ymd(year, 4, 27), "abolition de l'esclavage")),
    }
    days.sort_by_key(|d| d.date);
    days
}

/// The holiday falling on `date`, if any.
pub fn holiday_on(date: NaiveDate, region: HolidayRegion) -> Option<Holiday> {
    holidays(date.year(), region)
        .into_iter()
        .find(|h| h.date == date)
}

/// Answers "is this day a holiday?" for a run of days without recomputing each year's list.
#[derive(Debug)]
pub struct HolidayCalendar {
    region: HolidayRegion,
    cached_year: Option<(i32, Vec<NaiveDate>)>,
}

impl HolidayCalendar {
    pub fn new(region: HolidayRegion) -> Self {
        Self {
            region,
            cached_year: None,
        }
    }

    pub fn is_holiday(&mut self, date: NaiveDate) -> bool {
        let year = date.year();
        let region = self.region;
        let (_, dates) = match &mut self.cached_year {
            Some(cached) if cached.0 == year => cached,
            slot => slot.insert((
                year,
                holidays(year, region).into_iter().map(|h| h.date).collect(),
            )),
        };
        dates.contains(&date)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn names(year: i32) -> Vec<(NaiveDate, &'static str)> {
        holidays(year, HolidayRegion::Metropole)
            .into_iter()
            .map(|h| (h.date, h.name))
            .collect()
    }

    #[test]
    fn easter_sundays_match_the_almanac() {
        for (year, date) in [
            (2024, "2024-03-31"),
            (2025, "2025-04-20"),
            (2026, "2026-04-05"),
            (2027, "2027-03-28"),
            (2030, "2030-04-21"),
            (2038, "2038-04-25"),
            (2285, "2285-03-22"),
        ] {
            assert_eq!(easter_sunday(year), d(date), "Easter {year}");
        }
    }

    #[test]
    fn movable_holidays_2026() {
        let days = names(2026);
        assert!(days.contains(&(d("2026-04-06"), "lundi de Pâques")));
        assert!(days.contains(&(d("2026-05-14"), "Ascension")));
        assert!(days.contains(&(d("2026-05-25"), "lundi de Pentecôte")));
        assert_eq!(days.len(), 11);
    }

    #[test]
    fn movable_holidays_2027_and_2030() {
        let days = names(2027);
        assert!(days.contains(&(d("2027-03-29"), "lundi de Pâques")));
        assert!(days.contains(&(d("2027-05-06"), "Ascension")));
        assert!(days.contains(&(d("2027-05-17"), "lundi de Pentecôte")));
        let days = names(2030);
        assert!(days.contains(&(d("2030-04-22"), "lundi de Pâques")));
        assert!(days.contains(&(d("2030-05-30"), "Ascension")));
        assert!(days.contains(&(d("2030-06-10"), "lundi de Pentecôte")));
    }

    #[test]
    fn fixed_holidays_every_year() {
        for year in [2026, 2031, 2049] {
            for (m, day) in [
                (1, 1),
                (5, 1),
                (5, 8),
                (7, 14),
                (8, 15),
                (11, 1),
                (11, 11),
                (12, 25),
            ] {
                assert!(
                    holiday_on(ymd(year, m, day), HolidayRegion::Metropole).is_some(),
                    "{year}-{m}-{day}"
                );
            }
        }
        assert_eq!(holiday_on(d("2026-12-26"), HolidayRegion::Metropole), None);
        assert_eq!(holiday_on(d("2026-04-03"), HolidayRegion::Metropole), None);
    }

    #[test]
    fn regional_holidays_follow_the_insee_code() {
        assert_eq!(HolidayRegion::from_insee("74010"), HolidayRegion::Metropole);
        assert_eq!(
            HolidayRegion::from_insee("67482"),
            HolidayRegion::AlsaceMoselle
        );
        assert_eq!(HolidayRegion::from_insee("97411"), HolidayRegion::Reunion);
        assert_eq!(HolidayRegion::from_insee("2A004"), HolidayRegion::Metropole);
        let strasbourg = HolidayRegion::AlsaceMoselle;
        assert_eq!(
            holiday_on(d("2026-04-03"), strasbourg).map(|h| h.name),
            Some("Vendredi saint")
        );
        assert!(holiday_on(d("2026-12-26"), strasbourg).is_some());
        assert!(holiday_on(d("2026-12-20"), HolidayRegion::Reunion).is_some());
    }

    #[test]
    fn calendar_answers_across_years() {
        let mut cal = HolidayCalendar::new(HolidayRegion::Metropole);
        assert!(cal.is_holiday(d("2026-12-25")));
        assert!(!cal.is_holiday(d("2026-12-28")));
        assert!(cal.is_holiday(d("2027-01-01")));
        assert!(cal.is_holiday(d("2026-05-25")));
    }
}
