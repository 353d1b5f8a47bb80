//! The platform's price list (SPEC.md, "The platform's price list"), as data, and the yearly
//! estimate the platform administrator reads for each commune.
//!
//! Money is in euro cents (`i64`), never floating point, so a total is exactly the sum of its
//! lines. Prices exclude VAT. Extra plannings are bought as the cheapest mix of packs of five and
//! single plannings that covers them — which can mean a pack for only four: in every band, four
//! single plannings cost more than a pack.

use super::charts::group_thousands;

/// Plannings included in the yearly subscription.
pub const INCLUDED_PLANNINGS: usize = 4;
/// Plannings in one pack of extra plannings.
pub const PACK_SIZE: usize = 5;
/// Price of one SMS (0.07 €). The SMS templates fit one segment, so one SMS is one segment.
pub const SMS_CENTS: i64 = 7;
/// The price list's rule of thumb: code, confirmation and reminder.
pub const SMS_PER_APPOINTMENT: i64 = 3;

/// Whole euros in cents, so the price list reads as it is printed.
pub const fn euros(amount: i64) -> i64 {
    amount * 100
}

pub const INSTALLATION_CENTS: i64 = euros(300);
pub const REMOTE_TRAINING_CENTS: i64 = euros(200);
pub const SETUP_PER_PLANNING_CENTS: i64 = euros(50);
pub const DATA_IMPORT_CENTS: i64 = euros(75);

/// One population band of the price list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Band {
    /// Largest population in the band; `None` for the last, open-ended band.
    pub max_population: Option<i64>,
    /// "de 5 001 à 10 000 habitants".
    pub label: &'static str,
    /// Yearly subscription, [`INCLUDED_PLANNINGS`] plannings included.
    pub subscription_cents: i64,
    /// Each extra planning, yearly.
    pub extra_planning_cents: i64,
    /// A pack of [`PACK_SIZE`] extra plannings, yearly.
    pub pack_cents: i64,
}

/// The bands in population order; the labels use no-break spaces as French writes thousands.
pub const BANDS: [Band; 5] = [
    Band {
        max_population: Some(5_000),
        label: "jusqu'à 5\u{a0}000 habitants",
        subscription_cents: euros(200),
        extra_planning_cents: euros(80),
        pack_cents: euros(300),
    },
    Band {
        max_population: Some(10_000),
        label: "de 5\u{a0}001 à 10\u{a0}000 habitants",
        subscription_cents: euros(350),
        extra_planning_cents: euros(90),
        pack_cents: euros(320),
    },
    Band {
        max_population: Some(20_000),
        label: "de 10\u{a0}001 à 20\u{a0}000 habitants",
        subscription_cents: euros(400),
        extra_planning_cents: euros(100),
        pack_cents: euros(350),
    },
    Band {
        max_population: Some(50_000),
        label: "de 20\u{a0}001 à 50\u{a0}000 habitants",
        subscription_cents: euros(500),
        extra_planning_cents: euros(120),
        pack_cents: euros(450),
    },
    Band {
        max_population: None,
        label: "plus de 50\u{a0}000 habitants",
        subscription_cents: euros(600),
        extra_planning_cents: euros(140),
        pack_cents: euros(500),
    },
];

/// The band of a commune. A population not yet filled in (zero or less) falls in the first band.
pub fn band_for(population: i64) -> &'static Band {
    BANDS
        .iter()
        .find(|b| b.max_population.is_none_or(|max| population <= max))
        .unwrap_or(&BANDS[BANDS.len() - 1])
}

/// One line of an estimate, as shown to the platform administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub label: String,
    pub quantity: i64,
    pub unit_cents: i64,
    pub amount_cents: i64,
}

impl Line {
    fn new(label: impl Into<String>, quantity: i64, unit_cents: i64) -> Self {
        Self {
            label: label.into(),
            quantity,
            unit_cents,
            amount_cents: quantity * unit_cents,
        }
    }
}

/// A commune's yearly cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    pub band: &'static Band,
    pub plannings: usize,
    /// Plannings beyond those the subscription includes.
    pub extra_plannings: usize,
    /// How the extra plannings are bought: `packs` × 5 + `single_plannings` ≥ `extra_plannings`.
    pub packs: usize,
    pub single_plannings: usize,
    pub subscription_cents: i64,
    pub extra_plannings_cents: i64,
    pub sms_segments: i64,
    pub sms_cents: i64,
    pub total_cents: i64,
    /// The same amounts line by line (lines of quantity zero left out), French labels.
    pub lines: Vec<Line>,
}

/// The cheapest (packs, single plannings) covering `extra` plannings in `band`; on a tie, the
/// fewer packs.
fn cheapest_extras(band: &Band, extra: usize) -> (usize, usize, i64) {
    (0..=extra.div_ceil(PACK_SIZE))
        .map(|packs| {
            let singles = extra.saturating_sub(packs * PACK_SIZE);
            let cost = packs as i64 * band.pack_cents + singles as i64 * band.extra_planning_cents;
            (packs, singles, cost)
        })
        .min_by_key(|&(packs, _, cost)| (cost, packs))
        .unwrap_or((0, 0, 0))
}

/// The yearly cost of a commune of `population` inhabitants with `plannings` plannings sending
/// `sms_segments_per_year` SMS segments (see [`SMS_PER_APPOINTMENT`] to estimate them).
pub fn yearly_estimate(population: i64, plannings: usize, sms_segments_per_year: i64) -> Estimate {
    let band = band_for(population);
    let extra = plannings.saturating_sub(INCLUDED_PLANNINGS);
    let (packs, singles, extra_cents) = cheapest_extras(band, extra);
    let sms_segments = sms_segments_per_year.max(0);
    let sms_cents = sms_segments * SMS_CENTS;

    let mut lines = vec![Line::new(
        format!(
            "Abonnement annuel, {INCLUDED_PLANNINGS} plannings inclus ({})",
            band.label
        ),
        1,
        band.subscription_cents,
    )];
    if packs > 0 {
        lines.push(Line::new(
            format!("Pack de {PACK_SIZE} plannings supplémentaires"),
            packs as i64,
            band.pack_cents,
        ));
    }
    if singles > 0 {
        lines.push(Line::new(
            "Planning supplémentaire",
            singles as i64,
            band.extra_planning_cents,
        ));
    }
    if sms_segments > 0 {
        lines.push(Line::new("SMS envoyés", sms_segments, SMS_CENTS));
    }
    let total_cents = lines.iter().map(|l| l.amount_cents).sum();
    Estimate {
        band,
        plannings,
        extra_plannings: extra,
        packs,
        single_plannings: singles,
        subscription_cents: band.subscription_cents,
        extra_plannings_cents: extra_cents,
        sms_segments,
        sms_cents,
        total_cents,
        lines,
    }
}

/// What a commune pays once, when it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOffFees {
    pub lines: Vec<Line>,
    pub total_cents: i64,
}

/// Installation, set-up of each planning, and the optional remote training and data import.
pub fn one_off_fees(plannings: usize, remote_training: bool, data_import: bool) -> OneOffFees {
    let mut lines = vec![Line::new("Installation", 1, INSTALLATION_CENTS)];
    if remote_training {
        lines.push(Line::new("Formation à distance", 1, REMOTE_TRAINING_CENTS));
    }
    if plannings > 0 {
        lines.push(Line::new(
            "Paramétrage d'un planning",
            plannings as i64,
            SETUP_PER_PLANNING_CENTS,
        ));
    }
    if data_import {
        lines.push(Line::new(
            "Import des données existantes",
            1,
            DATA_IMPORT_CENTS,
        ));
    }
    let total_cents = lines.iter().map(|l| l.amount_cents).sum();
    OneOffFees { lines, total_cents }
}

/// "1234,56": cents as a decimal number the way French spreadsheets read it (no thousands
/// separator, decimal comma, no currency sign).
pub fn decimal_euros(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{},{:02}", cents / 100, cents % 100)
}

/// "1 234,56 €" for people, with no-break spaces so the amount never splits over two lines.
pub fn format_euros(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!(
        "{sign}{},{:02}\u{a0}€",
        group_thousands(&(cents / 100).to_string()),
        cents % 100
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_band_ends_where_the_price_list_says() {
        let subscription = |population| yearly_estimate(population, 4, 0).subscription_cents;
        assert_eq!(subscription(0), euros(200), "population not filled in");
        assert_eq!(subscription(1), euros(200));
        assert_eq!(subscription(5_000), euros(200));
        assert_eq!(subscription(5_001), euros(350));
        assert_eq!(subscription(10_000), euros(350));
        assert_eq!(subscription(10_001), euros(400));
        assert_eq!(subscription(20_000), euros(400));
        assert_eq!(subscription(20_001), euros(500));
        assert_eq!(subscription(50_000), euros(500));
        assert_eq!(subscription(50_001), euros(600));
        assert_eq!(subscription(130_000), euros(600));
        assert_eq!(
            band_for(5_001).label,
            "de 5\u{a0}001 à 10\u{a0}000 habitants"
        );
    }

    #[test]
    fn extra_and_pack_prices_follow_the_band() {
        for (population, single, pack) in [
            (5_000, euros(80), euros(300)),
            (10_000, euros(90), euros(320)),
            (20_000, euros(100), euros(350)),
            (50_000, euros(120), euros(450)),
            (50_001, euros(140), euros(500)),
        ] {
            let one = yearly_estimate(population, 5, 0);
            assert_eq!(one.extra_plannings_cents, single, "{population}");
            let five = yearly_estimate(population, 9, 0);
            assert_eq!(five.extra_plannings_cents, pack, "{population}");
            assert_eq!((five.packs, five.single_plannings), (1, 0));
        }
    }

    #[test]
    fn extra_plannings_take_the_cheapest_mix_of_packs_and_singles() {
        // Band ≤ 5,000: single 80 €, pack of 5 300 €.
        let cost = |plannings| {
            let e = yearly_estimate(3_000, plannings, 0);
            (e.packs, e.single_plannings, e.extra_plannings_cents)
        };
        assert_eq!(cost(0), (0, 0, 0));
        assert_eq!(cost(4), (0, 0, 0), "four plannings are included");
        assert_eq!(cost(5), (0, 1, euros(80)));
        assert_eq!(cost(7), (0, 3, euros(240)));
        // Four singles (320 €) cost more than a pack (300 €) that leaves one planning spare.
        assert_eq!(cost(8), (1, 0, euros(300)));
        assert_eq!(cost(9), (1, 0, euros(300)));
        // Six extra: one pack and one single (380 €), not six singles (480 €) nor two packs (600 €).
        assert_eq!(cost(10), (1, 1, euros(380)));
        assert_eq!(
            cost(13),
            (2, 0, euros(600)),
            "9 extra: 2 packs beat 1 pack + 4 singles"
        );
        assert_eq!(cost(15), (2, 1, euros(680)));
    }

    #[test]
    fn the_total_is_the_sum_of_the_lines() {
        // 15,000 inhabitants, 10 plannings, 1,200 appointments a year → 3,600 SMS.
        let e = yearly_estimate(15_000, 10, 1_200 * SMS_PER_APPOINTMENT);
        assert_eq!(e.subscription_cents, euros(400));
        assert_eq!(e.extra_plannings, 6);
        assert_eq!(e.extra_plannings_cents, euros(350) + euros(100));
        assert_eq!(e.sms_cents, euros(252));
        assert_eq!(e.total_cents, euros(400) + euros(450) + euros(252));
        assert_eq!(
            e.lines.iter().map(|l| l.amount_cents).sum::<i64>(),
            e.total_cents
        );
        let labels: Vec<_> = e.lines.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "Abonnement annuel, 4 plannings inclus (de 10\u{a0}001 à 20\u{a0}000 habitants)",
                "Pack de 5 plannings supplémentaires",
                "Planning supplémentaire",
                "SMS envoyés",
            ]
        );
        assert_eq!(yearly_estimate(100, 2, -5).sms_cents, 0);
    }

    #[test]
    fn one_off_fees_add_up() {
        let fees = one_off_fees(3, true, true);
        assert_eq!(
            fees.total_cents,
            euros(300) + euros(200) + 3 * euros(50) + euros(75)
        );
        assert_eq!(one_off_fees(0, false, false).total_cents, euros(300));
    }

    #[test]
    fn amounts_are_written_in_french() {
        assert_eq!(decimal_euros(0), "0,00");
        assert_eq!(decimal_euros(7), "0,07");
        assert_eq!(decimal_euros(123_456), "1234,56");
        assert_eq!(decimal_euros(-250), "-2,50");
        assert_eq!(format_euros(123_456), "1\u{a0}234,56\u{a0}€");
        assert_eq!(format_euros(100_000_000), "1\u{a0}000\u{a0}000,00\u{a0}€");
        assert_eq!(format_euros(99_900), "999,00\u{a0}€");
        assert_eq!(format_euros(-123_456), "-1\u{a0}234,56\u{a0}€");
    }
}
