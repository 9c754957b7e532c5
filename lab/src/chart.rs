//! Grouped bar charts as SVG, for `lab bench` and the chapter that embeds them.
//!
//! A [`BarChart`] has groups along the x axis (one per bench case, e.g.
//! "2 B, 1 worker") and, in each group, one bar per series ("direct",
//! "proxy", "nginx", "haproxy"). [`to_svg`] stacks several charts (say,
//! throughput and p99 latency) in one SVG.
//!
//! # Why plotters without fonts works
//! The chart is drawn with [`plotters`] and its SVG backend only
//! (`default-features = false, features = ["svg_backend"]`). An SVG holds text
//! as `<text>` elements that the viewer lays out with its own fonts, so the
//! renderer needs no glyphs. Without its `ttf` feature (font-kit, which wants
//! fontconfig and system fonts) or `ab_glyph` (which wants a font file
//! registered at run time) plotters only *estimates* text sizes, from the
//! font size and the number of characters. Estimates are enough here: every
//! place where text could collide (bar width, legend spacing, label areas)
//! has room to spare, so the chart renders the same on a machine with no
//! fonts installed, in CI included.
//!
//! # Colours
//! A series keeps its colour in every group and every chart: the four the lab
//! knows have fixed colours, any other name takes the next colour of a
//! palette in the order names first appear.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One chart: a title, the unit of its values (the y axis) and its groups.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// Shown above the chart, e.g. "Throughput".
    pub title: String,
    /// The y axis legend, e.g. "requests/s" or "p99 latency (ms)".
    pub unit: String,
    /// Left to right along the x axis.
    pub groups: Vec<Group>,
}

/// One position on the x axis: a label and one bar per series measured there.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Written under the group, e.g. "2 B, 1 worker".
    pub label: String,
    /// At most one bar per series; a series missing here leaves an empty slot.
    pub bars: Vec<Bar>,
}

/// One measured value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Which path the requests took: "direct", "proxy", "nginx", "haproxy"...
    pub series: String,
    /// Finite and not negative: bars start at 0.
    pub value: f64,
}

/// Draws `charts` stacked vertically in one SVG document.
///
/// Errors on an empty list (there is nothing to size the picture by), on a
/// chart without groups, on a negative or non-finite value and on a series
/// given twice in one group.
pub fn to_svg(charts: &[BarChart]) -> Result<String, String> {
    if charts.is_empty() {
        return Err("no chart to draw".to_string());
    }
    for chart in charts {
        validate(chart)?;
    }
    let series = series_order(charts);
    let colours = series_colours(&series);

    // Every chart gets the same width: the one the widest chart needs.
    let width = charts
        .iter()
        .map(|c| plot_width(c, chart_series(c, &series).len()))
        .max()
        .unwrap_or(MIN_WIDTH)
        .max(MIN_WIDTH);
    let height = CHART_HEIGHT * charts.len() as u32;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        for (chart, area) in charts.iter().zip(root.split_evenly((charts.len(), 1))) {
            let names = chart_series(chart, &series);
            draw_chart(&area, chart, &names, &colours)?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Rounds to three significant digits and uses k and M suffixes, the way a
/// person reads numbers off a chart: 12345 → "12.3k", 0.84 → "0.84", 5 → "5".
pub fn format_value(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return if value.is_finite() {
            "0".to_string()
        } else {
            value.to_string()
        };
    }
    // Round first, so that 999.96 becomes "1k" rather than "1000".
    let rounded = round_significant(value, 3);
    let (scaled, suffix) = match rounded.abs() {
        a if a >= 1e9 => (rounded / 1e9, "G"),
        a if a >= 1e6 => (rounded / 1e6, "M"),
        a if a >= 1e3 => (rounded / 1e3, "k"),
        _ => (rounded, ""),
    };
    let digits = scaled.abs().log10().floor() as i32 + 1;
    let decimals = (3 - digits).max(0) as usize;
    let mut text = format!("{scaled:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    text + suffix
}

fn round_significant(value: f64, digits: i32) -> f64 {
    let magnitude = value.abs().log10().floor() as i32;
    let factor = 10f64.powi(digits - 1 - magnitude);
    (value * factor).round() / factor
}

// Layout, in pixels. Font sizes are plotters sizes: its SVG backend writes
// `font-size` as size / 1.24, so 15 gives 12px text.
const MIN_WIDTH: u32 = 640;
const CHART_HEIGHT: u32 = 400;
/// Title and legend above each chart.
const HEAD_HEIGHT: u32 = 64;
/// Room for the y labels and the unit left of the axis.
const Y_LABEL_AREA: u32 = 80;
/// Room for the group labels under the axis.
const X_LABEL_AREA: u32 = 36;
const MARGIN: u32 = 16;
/// Horizontal room for one bar, wide enough for a value label such as "12.3k".
const BAR_SLOT: u32 = 50;
/// Narrowest group, so that its label fits under it.
const MIN_GROUP: u32 = 150;
/// A generous width of one character of a 12px label.
const LABEL_CHAR: u32 = 8;
/// Share of a group's width its bars take; the rest separates the groups.
const GROUP_FILL: f64 = 0.8;
/// Share of a slot its bar takes; the rest separates neighbouring bars.
const BAR_FILL: f64 = 0.86;

const TEXT: RGBColor = RGBColor(0x33, 0x33, 0x33);
const GRID: RGBColor = RGBColor(0xDD, 0xDD, 0xDD);
const FONT: &str = "sans-serif";

/// The colours the lab's own series always get.
const KNOWN: [(&str, RGBColor); 4] = [
    ("direct", RGBColor(0x8C, 0x8C, 0x8C)),
    ("proxy", RGBColor(0xE8, 0x71, 0x0A)),
    ("nginx", RGBColor(0x2C, 0xA0, 0x2C)),
    ("haproxy", RGBColor(0x1F, 0x77, 0xB4)),
];
/// Handed out in turn to any other series.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0x94, 0x67, 0xBD),
    RGBColor(0xD6, 0x27, 0x28),
    RGBColor(0x8C, 0x56, 0x4B),
    RGBColor(0xE3, 0x77, 0xC2),
    RGBColor(0x17, 0xBE, 0xCF),
    RGBColor(0xBC, 0xBD, 0x22),
];

fn validate(chart: &BarChart) -> Result<(), String> {
    if chart.groups.is_empty() {
        return Err(format!("chart {:?} has no groups", chart.title));
    }
    for group in &chart.groups {
        for (i, bar) in group.bars.iter().enumerate() {
            if !bar.value.is_finite() || bar.value < 0.0 {
                return Err(format!(
                    "chart {:?}, group {:?}: {} = {} (bars need a finite value >= 0)",
                    chart.title, group.label, bar.series, bar.value
                ));
            }
            if group.bars[..i].iter().any(|b| b.series == bar.series) {
                return Err(format!(
                    "chart {:?}, group {:?}: series {:?} given twice",
                    chart.title, group.label, bar.series
                ));
            }
        }
    }
    Ok(())
}

/// Every series name, in the order it first appears across all charts.
fn series_order(charts: &[BarChart]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let bars = charts.iter().flat_map(|c| &c.groups).flat_map(|g| &g.bars);
    for bar in bars {
        if !names.contains(&bar.series) {
            names.push(bar.series.clone());
        }
    }
    names
}

/// The series one chart shows, in the global order: they fix its bar slots.
fn chart_series(chart: &BarChart, order: &[String]) -> Vec<String> {
    order
        .iter()
        .filter(|name| {
            chart
                .groups
                .iter()
                .any(|g| g.bars.iter().any(|b| &b.series == *name))
        })
        .cloned()
        .collect()
}

fn series_colours(names: &[String]) -> Vec<(String, RGBColor)> {
    let mut spare = PALETTE.iter().cycle();
    names
        .iter()
        .map(|name| {
            let known = KNOWN.iter().find(|(k, _)| k == name).map(|(_, c)| *c);
            let colour = known.unwrap_or_else(|| *spare.next().expect("a cycle never ends"));
            (name.clone(), colour)
        })
        .collect()
}

fn colour_of(colours: &[(String, RGBColor)], name: &str) -> RGBColor {
    colours
        .iter()
        .find(|(n, _)| n == name)
        .map_or(TEXT, |(_, c)| *c)
}

/// Wide enough for every bar's value label and every group's label.
fn plot_width(chart: &BarChart, series: usize) -> u32 {
    let bars = (series as f64 * f64::from(BAR_SLOT) / GROUP_FILL).ceil() as u32;
    let label = chart
        .groups
        .iter()
        .map(|g| g.label.chars().count() as u32 * LABEL_CHAR + 2 * LABEL_CHAR)
        .max()
        .unwrap_or(0);
    let group = bars.max(label).max(MIN_GROUP);
    Y_LABEL_AREA + 2 * MARGIN + group * chart.groups.len() as u32
}

fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &BarChart,
    series: &[String],
    colours: &[(String, RGBColor)],
) -> Result<(), String> {
    let (head, body) = area.split_vertically(HEAD_HEIGHT);
    draw_head(&head, &chart.title, series, colours)?;

    let max = chart
        .groups
        .iter()
        .flat_map(|g| &g.bars)
        .map(|b| b.value)
        .fold(0.0, f64::max);
    // Headroom above the tallest bar for its value label.
    let top = if max > 0.0 { max * 1.15 } else { 1.0 };

    let mut ctx = ChartBuilder::on(&body)
        .margin_left(MARGIN)
        .margin_right(MARGIN)
        .margin_bottom(8)
        .set_label_area_size(LabelAreaPosition::Left, Y_LABEL_AREA)
        .set_label_area_size(LabelAreaPosition::Bottom, X_LABEL_AREA)
        .build_cartesian_2d(GroupAxis(chart.groups.len()), 0.0..top)
        .map_err(|e| e.to_string())?;

    let group_label = |x: &f64| {
        let i = x.floor() as usize;
        chart
            .groups
            .get(i)
            .map(|g| g.label.clone())
            .unwrap_or_default()
    };
    let y_label = |y: &f64| format_value(*y);
    ctx.configure_mesh()
        .disable_x_mesh()
        .y_max_light_lines(0)
        .bold_line_style(GRID)
        .axis_style(TEXT)
        .x_label_formatter(&group_label)
        .y_label_formatter(&y_label)
        .y_labels(8)
        .x_label_style((FONT, 15).into_font().color(&TEXT))
        .y_label_style((FONT, 14).into_font().color(&TEXT))
        .y_desc(chart.unit.as_str())
        .axis_desc_style((FONT, 15).into_font().color(&TEXT))
        .draw()
        .map_err(|e| e.to_string())?;

    // Slot s of group g spans [g + pad + s*slot, g + pad + (s+1)*slot].
    let slot = GROUP_FILL / series.len().max(1) as f64;
    let pad = (1.0 - GROUP_FILL) / 2.0;
    let value_style = (FONT, 14)
        .into_font()
        .color(&TEXT)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    for (s, name) in series.iter().enumerate() {
        let colour = colour_of(colours, name);
        let bars: Vec<(f64, f64)> = chart
            .groups
            .iter()
            .enumerate()
            .filter_map(|(g, group)| {
                let bar = group.bars.iter().find(|b| &b.series == name)?;
                Some((g as f64 + pad + (s as f64 + 0.5) * slot, bar.value))
            })
            .collect();
        let half = slot * BAR_FILL / 2.0;
        ctx.draw_series(
            bars.iter()
                .map(|&(x, v)| Rectangle::new([(x - half, 0.0), (x + half, v)], colour.filled())),
        )
        .map_err(|e| e.to_string())?;
        ctx.draw_series(bars.iter().map(|&(x, v)| {
            EmptyElement::at((x, v)) + Text::new(format_value(v), (0, -3), value_style.clone())
        }))
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The title, centred, and under it one legend entry (dot and name) per
/// series, in a row. The dot is a circle, so bars are the only coloured rects.
fn draw_head<DB: DrawingBackend>(
    head: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    series: &[String],
    colours: &[(String, RGBColor)],
) -> Result<(), String> {
    let (width, _) = head.dim_in_pixel();
    let centre = (width / 2) as i32;
    let title_style = (FONT, 20)
        .into_font()
        .style(FontStyle::Bold)
        .color(&TEXT)
        .pos(Pos::new(HPos::Center, VPos::Top));
    head.draw_text(title, &title_style, (centre, 10))
        .map_err(|e| e.to_string())?;

    let legend_style = (FONT, 15)
        .into_font()
        .color(&TEXT)
        .pos(Pos::new(HPos::Left, VPos::Center));
    const DOT: i32 = 6;
    const DOT_GAP: i32 = 6;
    const ENTRY_GAP: i32 = 24;
    let widths = series
        .iter()
        .map(|name| {
            let (w, _) = head
                .estimate_text_size(name, &legend_style)
                .map_err(|e| e.to_string())?;
            Ok(2 * DOT + DOT_GAP + w as i32)
        })
        .collect::<Result<Vec<i32>, String>>()?;
    let total: i32 = widths.iter().sum::<i32>() + ENTRY_GAP * (widths.len() as i32 - 1).max(0);
    let y = 46;
    let mut x = centre - total / 2;
    for (name, w) in series.iter().zip(widths) {
        let colour = colour_of(colours, name);
        head.draw(&Circle::new((x + DOT, y), DOT, colour.filled()))
            .map_err(|e| e.to_string())?;
        head.draw_text(name, &legend_style, (x + 2 * DOT + DOT_GAP, y))
            .map_err(|e| e.to_string())?;
        x += w + ENTRY_GAP;
    }
    Ok(())
}

/// The x axis: group i spans [i, i + 1], and its label sits at i + 0.5.
///
/// plotters' own numeric axes put ticks at round numbers; a bar chart wants
/// exactly one tick per group, in its middle, which this [`Ranged`] gives.
struct GroupAxis(usize);

impl Ranged for GroupAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let share = value / self.0.max(1) as f64;
        limit.0 + (share * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold points carry the labels; light points would only add grid lines.
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        (0..self.0).map(|i| i as f64 + 0.5).collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.0 as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(series: &str, value: f64) -> Bar {
        Bar {
            series: series.to_string(),
            value,
        }
    }

    fn group(label: &str, bars: Vec<Bar>) -> Group {
        Group {
            label: label.to_string(),
            bars,
        }
    }

    fn throughput() -> BarChart {
        BarChart {
            title: "Throughput".to_string(),
            unit: "requests/s".to_string(),
            groups: vec![
                group(
                    "2 B, 1 worker",
                    vec![
                        bar("direct", 41234.0),
                        bar("proxy", 12345.0),
                        bar("nginx", 30100.0),
                    ],
                ),
                group(
                    "64 KiB, 4 workers",
                    vec![
                        bar("direct", 9000.0),
                        bar("proxy", 4567.0),
                        bar("nginx", 8000.0),
                    ],
                ),
            ],
        }
    }

    /// `fill="#RRGGBB"` as the SVG backend writes it.
    fn fill(colour: RGBColor) -> String {
        format!("fill=\"#{:02X}{:02X}{:02X}\"", colour.0, colour.1, colour.2)
    }

    /// Rects filled with a series' colour: the bars, as legend entries are circles.
    fn bars_of(svg: &str, series: &str) -> usize {
        let fill = fill(colour_of(&series_colours(&[series.to_string()]), series));
        svg.lines()
            .filter(|l| l.trim_start().starts_with("<rect") && l.contains(&fill))
            .count()
    }

    /// Every opened tag is closed, in order: enough to catch a broken document.
    fn assert_balanced(svg: &str) {
        let mut stack = Vec::new();
        for tag in svg.split('<').skip(1) {
            let tag = tag.split('>').next().expect("split yields one item");
            let name = tag
                .trim_start_matches('/')
                .split_whitespace()
                .next()
                .unwrap_or_default();
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            if tag.starts_with('/') {
                assert_eq!(stack.pop(), Some(name), "closing </{name}>");
            } else {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    }

    #[test]
    fn chart_draws_one_bar_per_value_with_labels_and_legend() {
        let svg = to_svg(&[throughput()]).expect("valid chart");
        assert!(svg.trim_start().starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_balanced(&svg);
        for series in ["direct", "proxy", "nginx"] {
            assert_eq!(bars_of(&svg, series), 2, "bars of {series}");
            assert!(
                svg.contains(&format!(">\n{series}\n</text>")),
                "legend {series}"
            );
        }
        for text in [
            "Throughput",
            "requests/s",
            "2 B, 1 worker",
            "64 KiB, 4 workers",
            "41.2k",
            "12.3k",
            "30.1k",
            "9k",
            "4.57k",
            "8k",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        // One legend dot per series, in its colour.
        let dots = svg.lines().filter(|l| l.contains("<circle")).count();
        assert_eq!(dots, 3);
    }

    #[test]
    fn missing_series_leaves_no_bar() {
        let mut chart = throughput();
        chart.groups[1].bars.retain(|b| b.series != "nginx");
        let svg = to_svg(&[chart]).expect("valid chart");
        assert_eq!(bars_of(&svg, "nginx"), 1);
        assert_eq!(bars_of(&svg, "proxy"), 2);
        assert_eq!(bars_of(&svg, "haproxy"), 0);
        assert!(!svg.contains(">8k"), "no label for the missing bar");
    }

    #[test]
    fn series_keep_their_colour_across_charts() {
        let mut latency = throughput();
        latency.title = "p99 latency".to_string();
        latency.unit = "ms".to_string();
        latency.groups[0].bars.insert(0, bar("mystery", 3.0));
        let svg = to_svg(&[throughput(), latency]).expect("valid charts");
        assert_balanced(&svg);
        assert_eq!(bars_of(&svg, "proxy"), 4);
        assert_eq!(bars_of(&svg, "direct"), 4);
        assert_eq!(bars_of(&svg, "mystery"), 1);
        assert!(svg.contains("p99 latency") && svg.contains("Throughput"));
    }

    #[test]
    fn zero_values_draw() {
        let chart = BarChart {
            title: "idle".to_string(),
            unit: "requests/s".to_string(),
            groups: vec![group("only", vec![bar("direct", 0.0), bar("proxy", 0.0)])],
        };
        let svg = to_svg(&[chart]).expect("zeros are valid");
        assert_eq!(bars_of(&svg, "direct"), 1);
        assert_balanced(&svg);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(to_svg(&[]).is_err(), "no chart");
        let mut chart = throughput();
        chart.groups.clear();
        assert!(to_svg(&[chart]).is_err(), "no group");
        for value in [-1.0, f64::NAN, f64::INFINITY] {
            let mut chart = throughput();
            chart.groups[0].bars[0].value = value;
            assert!(to_svg(&[chart]).is_err(), "{value}");
        }
        let mut chart = throughput();
        chart.groups[0].bars.push(bar("proxy", 1.0));
        assert!(to_svg(&[chart]).is_err(), "series twice");
    }

    #[test]
    fn values_read_like_a_person_writes_them() {
        let cases = [
            (0.0, "0"),
            (0.84, "0.84"),
            (0.001234, "0.00123"),
            (5.0, "5"),
            (12.34, "12.3"),
            (123.4, "123"),
            (999.96, "1k"),
            (12345.0, "12.3k"),
            (123456.0, "123k"),
            (1_500_000.0, "1.5M"),
        ];
        for (value, text) in cases {
            assert_eq!(format_value(value), text, "{value}");
        }
    }

    /// Writes a sample to /tmp/chart-sample.svg to look at:
    /// `cargo test -p lab --lib chart::tests::sample -- --ignored`.
    #[test]
    #[ignore = "writes a file for a person to look at"]
    fn sample() {
        let groups = |scale: f64| {
            vec![
                group(
                    "2 B, 1 worker",
                    vec![
                        bar("direct", 52000.0 * scale),
                        bar("proxy", 31000.0 * scale),
                        bar("nginx", 38500.0 * scale),
                        bar("haproxy", 44100.0 * scale),
                    ],
                ),
                group(
                    "2 B, 4 workers",
                    vec![
                        bar("direct", 121000.0 * scale),
                        bar("proxy", 80500.0 * scale),
                        bar("nginx", 99000.0 * scale),
                        bar("haproxy", 104000.0 * scale),
                    ],
                ),
                group(
                    "64 KiB, 4 workers, no keep-alive",
                    vec![
                        bar("direct", 20100.0 * scale),
                        bar("proxy", 12345.0 * scale),
                        bar("nginx", 15200.0 * scale),
                    ],
                ),
            ]
        };
        let charts = [
            BarChart {
                title: "Throughput (higher is better)".to_string(),
                unit: "requests/s".to_string(),
                groups: groups(1.0),
            },
            BarChart {
                title: "p99 latency (lower is better)".to_string(),
                unit: "ms".to_string(),
                groups: groups(0.00002),
            },
        ];
        let svg = to_svg(&charts).expect("valid charts");
        std::fs::write("/tmp/chart-sample.svg", svg).expect("write /tmp/chart-sample.svg");
    }
}
