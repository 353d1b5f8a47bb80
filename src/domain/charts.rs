//! Charts drawn on the server as inline SVG, so statistics read without JavaScript.
//!
//! Each chart is an `<svg role="img">` named by its `<title>` and described by a `<desc>` that
//! carries the figures, because a screen reader reads a `role="img"` element by its name and
//! description only. The id of the title derives from the chart's title: a page shows each title
//! once (they sit under distinct headings), so the ids are unique on it. The drawing has a
//! `viewBox` and `width="100%"`, so it scales to a 360 px phone as to a desktop. Colours keep at
//! least the 4.5:1 contrast WCAG AA asks of text, on white. Every piece of text is XML-escaped.

use std::fmt::Write as _;

/// Text and outlines.
pub const TEXT_COLOUR: &str = "#1e1e1e";
/// Bars and lines.
pub const BAR_COLOUR: &str = "#1f4e99";
/// Axes and secondary labels.
pub const MUTED_COLOUR: &str = "#555555";

const WIDTH: f64 = 480.0;
const FONT: &str = r#"font-family="system-ui, sans-serif" font-size="14""#;
const TITLE_Y: f64 = 22.0;

/// Horizontal bar chart: one row per bar, its label on the left, its value after the bar.
const LABEL_RIGHT: f64 = 152.0;
const BAR_LEFT: f64 = 160.0;
const BAR_MAX_WIDTH: f64 = 220.0;
const ROW_HEIGHT: f64 = 28.0;
const BAR_HEIGHT: f64 = 18.0;
const FIRST_ROW_Y: f64 = 40.0;
/// Longer labels are cut in the drawing (they stay whole in the description).
const LABEL_MAX_CHARS: usize = 22;

/// Line chart plot area.
const PLOT_LEFT: f64 = 56.0;
const PLOT_RIGHT: f64 = 464.0;
const PLOT_TOP: f64 = 40.0;
const PLOT_BOTTOM: f64 = 170.0;
const LINE_HEIGHT: f64 = 200.0;
/// Beyond this many points, dots would merge into a smear: the line alone is drawn.
const MAX_DOTS: usize = 62;

/// Escapes text for XML content and attribute values.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// "1234567" → "1 234 567", with no-break spaces as French groups thousands.
pub fn group_thousands(digits: &str) -> String {
    let count = digits.chars().count();
    let mut out = String::with_capacity(digits.len() + count / 3 * 2);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (count - i).is_multiple_of(3) {
            out.push('\u{a0}');
        }
        out.push(c);
    }
    out
}

/// A number as French writes it: "1 234,5", rounded to `decimals`. A round result loses its
/// decimals ("12", not "12,0"): counts are the usual values.
pub fn french_number(value: f64, decimals: usize) -> String {
    let value = if value.is_finite() { value } else { 0.0 };
    let text = format!("{value:.decimals$}");
    let text = match text.split_once('.') {
        Some((whole, fraction)) if fraction.bytes().all(|b| b == b'0') => whole.to_owned(),
        _ => text,
    };
    // -0.01 rounds to "-0", which nobody writes.
    let text = if text == "-0" { "0".to_owned() } else { text };
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    match unsigned.split_once('.') {
        Some((whole, fraction)) => format!("{sign}{},{fraction}", group_thousands(whole)),
        None => format!("{sign}{}", group_thousands(unsigned)),
    }
}

/// "12 rendez-vous", "37,5 %": the value and its unit, joined by a no-break space.
fn with_unit(value: f64, unit: &str) -> String {
    let number = french_number(value, 1);
    if unit.is_empty() {
        number
    } else {
        format!("{number}\u{a0}{unit}")
    }
}

/// The id of a chart's title: "Rendez-vous par canal" → "graphique-rendez-vous-par-canal".
pub fn chart_id(title: &str) -> String {
    let mut slug = String::from("graphique");
    let mut dash = true;
    for c in title.chars().flat_map(char::to_lowercase) {
        let folded = match c {
            'à' | 'â' | 'ä' => "a",
            'ç' => "c",
            'é' | 'è' | 'ê' | 'ë' => "e",
            'î' | 'ï' => "i",
            'ô' | 'ö' => "o",
            'ù' | 'û' | 'ü' => "u",
            'ÿ' => "y",
            'œ' => "oe",
            'æ' => "ae",
            _ => "",
        };
        if c.is_ascii_alphanumeric() || !folded.is_empty() {
            if dash {
                slug.push('-');
                dash = false;
            }
            if folded.is_empty() {
                slug.push(c);
            } else {
                slug.push_str(folded);
            }
        } else {
            dash = true;
        }
    }
    slug
}

fn truncate(label: &str, max_chars: usize) -> String {
    if label.chars().count() <= max_chars {
        label.to_owned()
    } else {
        let kept: String = label.chars().take(max_chars - 1).collect();
        format!("{}…", kept.trim_end())
    }
}

fn clean(value: f64) -> f64 {
    if value.is_finite() {
        value.max(0.0)
    } else {
        0.0
    }
}

/// The opening of a chart: the `<svg>` element, its title and description, and the visible
/// title.
fn open_svg(out: &mut String, title: &str, description: &str, height: f64) {
    let id = chart_id(title);
    let title = xml_escape(title);
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" role="img" width="100%" viewBox="0 0 {WIDTH} {height}" aria-labelledby="{id}-titre {id}-desc" {FONT} fill="{TEXT_COLOUR}">"#
    );
    let _ = write!(
        out,
        r#"<title id="{id}-titre">{title}</title><desc id="{id}-desc">{}</desc>"#,
        xml_escape(description)
    );
    let _ = write!(
        out,
        r#"<text x="0" y="{TITLE_Y}" font-size="16" font-weight="bold">{title}</text>"#
    );
}

fn empty_chart(title: &str) -> String {
    let mut out = String::new();
    open_svg(&mut out, title, "Aucune donnée sur la période.", 64.0);
    let _ = write!(
        out,
        r#"<text x="0" y="52" fill="{MUTED_COLOUR}">Aucune donnée</text></svg>"#
    );
    out
}

/// A horizontal bar chart of `bars` (label, value), longest bar = largest value. Negative or
/// non-finite values are drawn as zero. `unit` follows each value ("rendez-vous", "%", "").
pub fn bar_chart(title: &str, bars: &[(String, f64)], unit: &str) -> String {
    if bars.is_empty() {
        return empty_chart(title);
    }
    let max = bars.iter().map(|(_, v)| clean(*v)).fold(0.0, f64::max);
    let description = bars
        .iter()
        .map(|(label, value)| format!("{label} : {}", with_unit(clean(*value), unit)))
        .collect::<Vec<_>>()
        .join(" ; ");
    let height = FIRST_ROW_Y + bars.len() as f64 * ROW_HEIGHT + 4.0;
    let mut out = String::new();
    open_svg(&mut out, title, &format!("{description}."), height);
    for (i, (label, value)) in bars.iter().enumerate() {
        let value = clean(*value);
        let top = FIRST_ROW_Y + i as f64 * ROW_HEIGHT;
        let width = if max > 0.0 {
            value / max * BAR_MAX_WIDTH
        } else {
            0.0
        };
        let baseline = top + BAR_HEIGHT - 4.0;
        let _ = write!(
            out,
            r#"<text x="{LABEL_RIGHT}" y="{baseline}" text-anchor="end">{}</text>"#,
            xml_escape(&truncate(label, LABEL_MAX_CHARS))
        );
        let _ = write!(
            out,
            r#"<rect x="{BAR_LEFT}" y="{top}" width="{width:.1}" height="{BAR_HEIGHT}" fill="{BAR_COLOUR}"/>"#
        );
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{baseline}">{}</text>"#,
            BAR_LEFT + width + 6.0,
            xml_escape(&with_unit(value, unit))
        );
    }
    out.push_str("</svg>");
    out
}

/// A line chart of a series (label, value) in order — bookings per day, for instance. The first
/// and last labels are written under the line, the largest value on the vertical axis.
pub fn line_chart(title: &str, points: &[(String, f64)], unit: &str) -> String {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return empty_chart(title);
    };
    let values: Vec<f64> = points.iter().map(|(_, v)| clean(*v)).collect();
    let total: f64 = values.iter().sum();
    let (peak_index, peak) =
        values.iter().copied().enumerate().fold(
            (0, 0.0),
            |best, (i, v)| if v > best.1 { (i, v) } else { best },
        );
    let description = format!(
        "Du {} au {} : total {}, maximum {} ({}).",
        first.0,
        last.0,
        with_unit(total, unit),
        with_unit(peak, unit),
        points[peak_index].0
    );
    let mut out = String::new();
    open_svg(&mut out, title, &description, LINE_HEIGHT);

    let x_of = |i: usize| {
        if points.len() == 1 {
            (PLOT_LEFT + PLOT_RIGHT) / 2.0
        } else {
            PLOT_LEFT + i as f64 / (points.len() - 1) as f64 * (PLOT_RIGHT - PLOT_LEFT)
        }
    };
    let y_of = |v: f64| {
        if peak > 0.0 {
            PLOT_BOTTOM - v / peak * (PLOT_BOTTOM - PLOT_TOP)
        } else {
            PLOT_BOTTOM
        }
    };
    // Axes, with the scale's two ends written out.
    let _ = write!(
        out,
        r#"<path d="M{PLOT_LEFT} {PLOT_TOP}V{PLOT_BOTTOM}H{PLOT_RIGHT}" fill="none" stroke="{MUTED_COLOUR}"/>"#
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end" fill="{MUTED_COLOUR}">{}</text>"#,
        PLOT_LEFT - 6.0,
        PLOT_TOP + 5.0,
        xml_escape(&french_number(peak, 1))
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end" fill="{MUTED_COLOUR}">0</text>"#,
        PLOT_LEFT - 6.0,
        PLOT_BOTTOM + 5.0
    );
    let coordinates = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x_of(i), y_of(*v)))
        .collect::<Vec<_>>()
        .join(" ");
    let _ = write!(
        out,
        r#"<polyline points="{coordinates}" fill="none" stroke="{BAR_COLOUR}" stroke-width="2"/>"#
    );
    if values.len() <= MAX_DOTS {
        for (i, v) in values.iter().enumerate() {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{BAR_COLOUR}"/>"#,
                x_of(i),
                y_of(*v)
            );
        }
    }
    let label_y = PLOT_BOTTOM + 22.0;
    let first_anchor = if points.len() == 1 { "middle" } else { "start" };
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{label_y}" text-anchor="{first_anchor}">{}</text>"#,
        x_of(0),
        xml_escape(&first.0)
    );
    if points.len() > 1 {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{label_y}" text-anchor="end">{}</text>"#,
            x_of(points.len() - 1),
            xml_escape(&last.0)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(items: &[(&str, f64)]) -> Vec<(String, f64)> {
        items.iter().map(|(l, v)| ((*l).to_owned(), *v)).collect()
    }

    /// WCAG 2 contrast ratio of a `#rrggbb` colour against white.
    fn contrast_on_white(hex: &str) -> f64 {
        let channel = |i: usize| {
            let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
            if c <= 0.03928 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        let luminance = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
        1.05 / (luminance + 0.05)
    }

    #[test]
    fn one_rect_per_bar_and_every_figure_written() {
        let svg = bar_chart(
            "Rendez-vous par canal",
            &bars(&[("En ligne", 12.0), ("Téléphone", 3.0), ("Agent", 0.0)]),
            "rendez-vous",
        );
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.starts_with("<svg "));
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains(r#"role="img""#));
        assert!(svg.contains(r#"width="100%""#));
        assert!(svg.contains(r#"viewBox="0 0 480 "#));
        assert!(svg.contains(
            r#"aria-labelledby="graphique-rendez-vous-par-canal-titre graphique-rendez-vous-par-canal-desc""#
        ));
        assert!(svg.contains(
            r#"<title id="graphique-rendez-vous-par-canal-titre">Rendez-vous par canal</title>"#
        ));
        assert!(svg.contains(">En ligne</text>"));
        assert!(svg.contains(">12\u{a0}rendez-vous</text>"));
        assert!(svg.contains(">0\u{a0}rendez-vous</text>"));
        assert!(svg.contains("En ligne : 12\u{a0}rendez-vous ; Téléphone : 3\u{a0}rendez-vous"));
        // The largest value takes the full width, the others in proportion.
        assert!(svg.contains(r#"width="220.0""#));
        assert!(svg.contains(r#"width="55.0""#));
        assert!(svg.contains(r#"width="0.0""#));
    }

    #[test]
    fn text_is_escaped() {
        let svg = bar_chart(
            "Motifs <b>&</b> \"lieux\"",
            &bars(&[("<script>alert('x')</script>", 1.0), ("A & B", 2.5)]),
            "%",
        );
        assert!(!svg.contains("<script>"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("&lt;script&gt;alert(&apos;x&apos;)&lt;/s…"));
        assert!(svg.contains(">A &amp; B</text>"));
        assert!(svg.contains("Motifs &lt;b&gt;&amp;&lt;/b&gt; &quot;lieux&quot;</title>"));
        assert!(svg.contains(">2,5\u{a0}%</text>"));
        let line = line_chart("a<b", &bars(&[("1 <janv.>", 1.0)]), "");
        assert!(line.contains(">1 &lt;janv.&gt;</text>"));
        assert!(line.contains("<title id=\"graphique-a-b-titre\">a&lt;b</title>"));
    }

    #[test]
    fn empty_input_says_there_is_no_data() {
        for svg in [
            bar_chart("Rendez-vous par lieu", &[], "rendez-vous"),
            line_chart("Rendez-vous par jour", &[], "rendez-vous"),
        ] {
            assert!(svg.contains(">Aucune donnée</text>"), "{svg}");
            assert_eq!(svg.matches("<rect").count(), 0);
            assert!(svg.contains(r#"role="img""#));
        }
    }

    #[test]
    fn odd_values_do_not_break_the_drawing() {
        let svg = bar_chart(
            "Valeurs",
            &bars(&[
                ("négatif", -4.0),
                ("sans fin", f64::INFINITY),
                ("nan", f64::NAN),
            ]),
            "",
        );
        assert_eq!(svg.matches(r#"width="0.0""#).count(), 3);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let long = bar_chart("Long", &bars(&[(&"x".repeat(40), 1.0)]), "");
        assert!(long.contains(&format!(">{}…</text>", "x".repeat(21))));
        assert!(
            long.contains(&format!("{} : 1.", "x".repeat(40))),
            "whole label in <desc>"
        );
    }

    #[test]
    fn line_chart_draws_the_series() {
        let points = bars(&[("01/06", 2.0), ("02/06", 0.0), ("03/06", 4.0)]);
        let svg = line_chart("Rendez-vous par jour", &points, "rendez-vous");
        assert!(svg.contains("<polyline points=\"56.0,105.0 260.0,170.0 464.0,40.0\""));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains(">01/06</text>") && svg.contains(">03/06</text>"));
        assert!(svg.contains(
            "Du 01/06 au 03/06 : total 6\u{a0}rendez-vous, maximum 4\u{a0}rendez-vous (03/06)."
        ));
        let many: Vec<_> = (0..365).map(|i| (i.to_string(), 1.0)).collect();
        assert_eq!(line_chart("Année", &many, "").matches("<circle").count(), 0);
    }

    #[test]
    fn colours_meet_wcag_aa_on_white() {
        for colour in [TEXT_COLOUR, BAR_COLOUR, MUTED_COLOUR] {
            let ratio = contrast_on_white(colour);
            assert!(ratio >= 4.5, "{colour}: {ratio:.2}");
        }
    }

    #[test]
    fn ids_and_numbers() {
        assert_eq!(
            chart_id("Taux d'occupation — été 2026"),
            "graphique-taux-d-occupation-ete-2026"
        );
        assert_eq!(chart_id("  "), "graphique");
        assert_eq!(french_number(1234567.0, 1), "1\u{a0}234\u{a0}567");
        assert_eq!(french_number(37.46, 1), "37,5");
        assert_eq!(french_number(-1234.5, 1), "-1\u{a0}234,5");
        assert_eq!(french_number(37.96, 1), "38");
        assert_eq!(french_number(-0.01, 1), "0");
        assert_eq!(french_number(f64::NAN, 1), "0");
        assert_eq!(group_thousands("999"), "999");
        assert_eq!(group_thousands("1000"), "1\u{a0}000");
    }
}
