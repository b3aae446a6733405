//! `GET /console/datastore/{store}/usage`: the datastore's usage over time, from the daily
//! samples of `GET admin/datastore/{store}/usage-history`. The charts are SVG drawn on the
//! server by plotters and placed inline: no script, and SVG presentation attributes are not
//! inline styles, so the page's Content-Security-Policy holds. A table under the charts gives
//! the same figures as text (screen readers, keyboard users, copying).

use maud::{html, Markup, PreEscaped};
use plotters::prelude::*;

use super::api_client::enc;
use super::format::{bytes, date};
use super::layout::{frame, Nav};
use super::{ConsoleError, Session};
use crate::datastore::{DailySample, UsageHistory};

/// Rows of the table under the charts (the newest days).
const TABLE_DAYS: usize = 31;

/// One line of a chart.
pub(crate) struct Series {
    pub label: &'static str,
    pub color: RGBColor,
    /// `(day, value)`, days (Unix seconds of the day's start) ascending.
    pub points: Vec<(i64, f64)>,
}

const DAY: i64 = 86_400;

/// How a chart writes its values on the y axis.
#[derive(Clone, Copy)]
pub(crate) enum Unit {
    Bytes,
    Count,
}

impl Unit {
    fn label(self, v: f64) -> String {
        match self {
            Unit::Bytes => bytes(v.max(0.0) as u64),
            Unit::Count => format!("{}", v.max(0.0).round() as u64),
        }
    }
}

/// A line chart of `series` as an SVG document (`title` names it in errors). The x axis counts
/// days, so that its labels fall on whole days.
pub(crate) fn line_chart(title: &str, series: &[Series], unit: Unit) -> Result<String, String> {
    let days = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0.div_euclid(DAY)));
    let (first, last) = days.fold((i64::MAX, i64::MIN), |(lo, hi), d| (lo.min(d), hi.max(d)));
    if first > last {
        return Err(format!("chart '{title}' has no data"));
    }
    // One day of room on each side, so that a single sample is a visible point.
    let x_range = (first - 1)..(last + 1);
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let y_range = 0.0..(top * 1.1).max(1.0);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 280)).into_drawing_area();
        let failed = |e: &dyn std::fmt::Display| format!("drawing chart '{title}': {e}");
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_right(48)
            .x_label_area_size(28)
            .y_label_area_size(84)
            .build_cartesian_2d(x_range, y_range)
            .map_err(|e| failed(&e))?;
        chart
            .configure_mesh()
            .x_labels(6)
            .x_label_formatter(&|d| date(*d * DAY))
            .y_labels(5)
            .y_label_formatter(&|v| unit.label(*v))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| failed(&e))?;
        for s in series {
            let color = s.color;
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|&(day, v)| (day.div_euclid(DAY), v)),
                    color.stroke_width(2),
                ))
                .map_err(|e| failed(&e))?
                .label(s.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|&(day, v)| Circle::new((day.div_euclid(DAY), v), 3, color.filled())),
                )
                .map_err(|e| failed(&e))?;
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
                .map_err(|e| failed(&e))?;
        }
        root.present().map_err(|e| failed(&e))?;
    }
    Ok(svg)
}

/// One chart of the page: its element id, its title, and the SVG (or why it could not be drawn).
type Chart = (&'static str, &'static str, Result<String, String>);

/// A chart of one line.
fn single(
    id: &'static str,
    title: &'static str,
    color: RGBColor,
    points: Vec<(i64, f64)>,
) -> Chart {
    let series = [Series {
        label: title,
        color,
        points,
    }];
    (id, title, line_chart(title, &series, Unit::Count))
}

/// The charts of the page: stored bytes, chunks and snapshots, and (for object storage) the
/// S3 requests per day.
pub(crate) fn charts(history: &UsageHistory) -> Vec<Chart> {
    let samples = history.samples();
    let points = |f: fn(&DailySample) -> u64| -> Vec<(i64, f64)> {
        samples.iter().map(|s| (s.day, f(s) as f64)).collect()
    };
    let bytes = [
        Series {
            label: "logical (as backed up)",
            color: RGBColor(0x2b, 0x6c, 0xb0),
            points: points(|s| s.logical_bytes),
        },
        Series {
            label: "physical (deduplicated, compressed)",
            color: RGBColor(0xc0, 0x56, 0x21),
            points: points(|s| s.physical_bytes),
        },
    ];
    let mut out = vec![
        (
            "chart-bytes",
            "Stored bytes",
            line_chart("Stored bytes", &bytes, Unit::Bytes),
        ),
        single(
            "chart-chunks",
            "Chunks",
            RGBColor(0x38, 0x8e, 0x3c),
            points(|s| s.chunks),
        ),
        single(
            "chart-snapshots",
            "Snapshots",
            RGBColor(0x6a, 0x1b, 0x9a),
            points(|s| s.snapshots),
        ),
    ];
    let per_day = history.requests_per_day();
    if samples.iter().any(|s| s.s3_requests > 0) && !per_day.is_empty() {
        out.push(single(
            "chart-requests",
            "S3 requests per day",
            RGBColor(0x55, 0x55, 0x55),
            per_day.iter().map(|&(d, n)| (d, n as f64)).collect(),
        ));
    }
    out
}

/// `GET /console/datastore/{store}/usage`.
pub(crate) async fn page(s: &Session, store: &str) -> Result<Markup, ConsoleError> {
    let e = enc(store);
    let answer = s
        .api
        .get(&format!("admin/datastore/{e}/usage-history"))
        .await?;
    let history: UsageHistory = serde_json::from_value(answer["samples"].clone())
        .map_err(|e| ConsoleError::BadRequest(format!("usage history unreadable: {e}")))?;
    let samples = history.samples();
    let per_day = history.requests_per_day();
    let body = html! {
        nav.breadcrumb aria-label="breadcrumb" {
            a href="/" { "Dashboard" } " › "
            a href={ "/console/datastore/" (e) } { (store) } " › usage"
        }
        h1 { "Usage of " (store) " over time" }
        @if samples.is_empty() {
            p.empty {
                "No samples yet. The server takes one whenever it writes the usage counters, "
                "and keeps one per day."
            }
        } @else {
            @for (id, title, svg) in charts(&history) {
                figure.card.chart id=(id) {
                    figcaption { h2 { (title) } }
                    @match svg {
                        Ok(svg) => div.plot role="img" aria-label=(title) { (PreEscaped(svg)) },
                        Err(e) => p.error { (e) },
                    }
                }
            }
            section.card {
                h2 { "Daily figures" }
                table.usage-history {
                    thead { tr { th { "Day (UTC)" } th { "Logical" } th { "Physical" } th { "Chunks" } th { "Snapshots" } th { "S3 requests" } } }
                    tbody {
                        @for sample in samples.iter().rev().take(TABLE_DAYS) {
                            tr {
                                td { (date(sample.day)) }
                                td { (bytes(sample.logical_bytes)) }
                                td { (bytes(sample.physical_bytes)) }
                                td { (sample.chunks) }
                                td { (sample.snapshots) }
                                td {
                                    (per_day.iter().find(|d| d.0 == sample.day).map_or(String::from("–"), |d| d.1.to_string()))
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(frame(
        &format!("Usage – {store}"),
        Nav::Content,
        Some(s),
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(samples: Vec<DailySample>) -> UsageHistory {
        let mut h = UsageHistory::default();
        samples.into_iter().for_each(|s| h.record(s));
        h
    }

    fn sample(day: i64, physical: u64) -> DailySample {
        DailySample {
            day: day * 86_400,
            physical_bytes: physical,
            logical_bytes: physical * 3,
            chunks: physical / 1000,
            snapshots: day as u64,
            s3_requests: 0,
        }
    }

    #[test]
    fn a_chart_is_an_svg_document_without_script_or_style() {
        let samples: Vec<_> = (20_000..20_010).map(|d| sample(d, 1 << 30)).collect();
        let charts = charts(&history(samples));
        assert_eq!(charts.len(), 3, "no request chart for a local store");
        for (id, _, svg) in charts {
            let svg = svg.unwrap_or_else(|e| panic!("{id}: {e}"));
            assert!(
                svg.starts_with("<svg"),
                "{id}: {}",
                &svg[..svg.len().min(80)]
            );
            assert!(svg.contains("viewBox"), "{id}: scalable");
            assert!(!svg.contains("<script"), "{id}");
            assert!(!svg.contains("style="), "{id}: inline styles break the CSP");
            assert!(
                svg.contains("<polyline") || svg.contains("<path"),
                "{id}: a line"
            );
        }
    }

    #[test]
    fn axis_labels_are_dates_and_sizes() {
        let samples = [sample(20_000, 1 << 30), sample(20_003, 2 << 30)];
        let (_, _, svg) = charts(&history(samples.to_vec())).remove(0);
        let svg = svg.unwrap();
        // 20_001 days after 1970-01-01 is 2024-10-04.
        assert!(svg.contains("2024-10-0"), "{svg}");
        assert!(svg.contains("GiB"), "{svg}");
        let labels: Vec<&str> = svg
            .match_indices("2024-10-")
            .map(|(i, _)| &svg[i..i + 10])
            .collect();
        let mut distinct = labels.clone();
        distinct.dedup();
        assert_eq!(labels, distinct, "a day labelled twice");
    }

    #[test]
    fn a_single_sample_still_draws() {
        let svg = line_chart(
            "one",
            &[Series {
                label: "x",
                color: BLACK,
                points: vec![(86_400 * 20_000, 5.0)],
            }],
            Unit::Count,
        )
        .unwrap();
        assert!(svg.contains("<circle"), "{svg}");
    }

    #[test]
    fn no_data_is_an_error_not_a_panic() {
        assert!(line_chart("none", &[], Unit::Count).is_err());
    }

    #[test]
    fn s3_stores_get_a_requests_chart() {
        let mut samples: Vec<_> = (20_000..20_003).map(|d| sample(d, 1 << 20)).collect();
        for (i, s) in samples.iter_mut().enumerate() {
            s.s3_requests = 100 * (i as u64 + 1);
        }
        let charts = charts(&history(samples));
        assert_eq!(charts.last().map(|c| c.0), Some("chart-requests"));
    }
}
