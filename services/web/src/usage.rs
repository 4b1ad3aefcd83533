//! Usage in the control plane: the monthly report per customer (messages accepted,
//! accepted by Microsoft, bounced, failed, recipients, bytes, active devices) as a
//! page, as CSV and through the API (`/api/v1/usage?month=YYYY-MM`), for billing;
//! and the volume and failure charts (the last 24 hours by hour, the last 30 days by
//! day), MSP-wide and per customer — plain SVG drawn here, readable without
//! JavaScript. All of it reads the aggregates of `mailbridge_core::usage`, which
//! outlive the purged message records.

use mailbridge_core::ids::TenantId;
use std::fmt::Write as _;

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use mailbridge_core::usage::{self, Bucket, Month, MonthLine};
use serde::{Deserialize, Serialize};

use crate::{
    WebState,
    error::{Error, Result},
    i18n::{Lang, Tr},
    layout::Nav,
    roles::{Actor, Permission},
    tr,
};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MonthQuery {
    /// YYYY-MM (UTC; default: this month).
    month: Option<String>,
}

fn month_of(query: &MonthQuery) -> Result<Month> {
    match query
        .month
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        None => Ok(Month::current()),
        Some(text) => Month::parse(text).ok_or_else(|| Error::InvalidValue {
            text: tr!("{} is not a month (YYYY-MM)."),
            value: text.to_owned(),
        }),
    }
}

async fn report(state: &WebState, actor: &Actor, month: Month) -> Result<Vec<MonthLine>> {
    actor.require(Permission::View)?;
    Ok(usage::month_report(&state.pool, month, actor.customers.only()).await?)
}

/// Both charts of one customer (or, `None`, of every customer the actor sees).
pub async fn charts(state: &WebState, actor: &Actor, tenant: Option<TenantId>) -> Result<Charts> {
    let only = actor.customers.only();
    let day = usage::last_day(&state.pool, tenant, only).await?;
    let month = usage::last_month(&state.pool, tenant, only).await?;
    let lang = actor.tr.lang();
    Ok(Charts {
        day: chart(&day, Span::Hours, lang),
        month: chart(&month, Span::Days, lang),
    })
}

/// The two charts as SVG markup.
pub struct Charts {
    pub day: String,
    pub month: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "usage.html")]
struct UsagePage {
    t: Tr,
    nav: Nav,
    month: String,
    previous: String,
    next: String,
    lines: Vec<MonthLine>,
    total: usage::Counts,
    total_devices: i64,
    charts: Charts,
}

async fn page(
    State(state): State<WebState>,
    actor: Actor,
    Query(query): Query<MonthQuery>,
) -> Result<Response> {
    let month = month_of(&query)?;
    let lines = report(&state, &actor, month).await?;
    let mut total = usage::Counts::default();
    for l in &lines {
        total.accepted += l.counts.accepted;
        total.accepted_by_microsoft += l.counts.accepted_by_microsoft;
        total.bounced += l.counts.bounced;
        total.failed += l.counts.failed;
        total.recipients += l.counts.recipients;
        total.bytes += l.counts.bytes;
    }
    Ok(UsagePage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "usage"),
        month: month.to_string(),
        previous: month.previous().to_string(),
        next: month.next().to_string(),
        total_devices: lines.iter().map(|l| l.active_devices).sum(),
        total,
        lines,
        charts: charts(&state, &actor, None).await?,
    }
    .into_response())
}

async fn csv(
    State(state): State<WebState>,
    actor: Actor,
    Query(query): Query<MonthQuery>,
) -> Result<Response> {
    let month = month_of(&query)?;
    let lines = report(&state, &actor, month).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"mailbridge-usage-{month}.csv\""),
            ),
        ],
        usage::csv(month, &lines),
    )
        .into_response())
}

/// A customer's charts and the last twelve months of its usage.
#[derive(Template, WebTemplate)]
#[template(path = "customer_usage.html")]
struct CustomerUsagePage {
    t: Tr,
    nav: Nav,
    customer_id: TenantId,
    customer: String,
    charts: Charts,
    /// The last twelve months, this one first.
    lines: Vec<(String, MonthLine)>,
}

async fn customer_page(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    let tenant = crate::customers::load(&state.pool, id).await?;
    let mut lines = Vec::new();
    let mut month = Month::current();
    for _ in 0..12 {
        let line = usage::month_report(&state.pool, month, Some(&[id]))
            .await?
            .pop()
            .ok_or(Error::NotFound)?;
        lines.push((month.to_string(), line));
        month = month.previous();
    }
    Ok(CustomerUsagePage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "customers"),
        customer_id: id,
        customer: tenant.name,
        charts: charts(&state, &actor, Some(id)).await?,
        lines,
    }
    .into_response())
}

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/usage", get(page))
        .route("/usage.csv", get(csv))
        .route("/customers/{id}/usage", get(customer_page))
}

/// Usage per customer for a month.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Usage)]
struct UsageReport {
    /// YYYY-MM.
    month: String,
    customers: Vec<MonthLine>,
}

#[utoipa::path(
    get,
    path = "/usage",
    operation_id = "getUsage",
    summary = "Usage per customer for a month (UTC), for billing",
    params(MonthQuery),
    responses((status = 200, description = "The month's usage", body = UsageReport)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
async fn api_usage(
    State(state): State<WebState>,
    actor: Actor,
    Query(query): Query<MonthQuery>,
) -> Result<Json<UsageReport>> {
    let month = month_of(&query)?;
    let customers = report(&state, &actor, month).await?;
    Ok(Json(UsageReport {
        month: month.to_string(),
        customers,
    }))
}

/// `GET /api/v1/usage?month=YYYY-MM` (merged into `/api/v1`).
pub fn api_router() -> Router<WebState> {
    Router::new().route("/usage", get(api_usage))
}

#[derive(Clone, Copy, PartialEq)]
enum Span {
    Hours,
    Days,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 30.0;

/// A stacked bar chart of `buckets`: accepted by Microsoft (bottom), failed and
/// bounced (on top), with a y axis, hour or day labels, a legend and a title and
/// table of figures for screen readers (`<title>`, `<desc>`).
fn chart(buckets: &[Bucket], span: Span, lang: Lang) -> String {
    let t = Tr::new(lang);
    let title = match span {
        Span::Hours => t.t("Messages, last 24 hours (by hour, UTC)"),
        Span::Days => t.t("Messages, last 30 days (by day, UTC)"),
    };
    let (ok_label, failed_label, bounced_label) =
        (t.t("accepted by Microsoft"), t.t("failed"), t.t("bounced"));
    let max = buckets
        .iter()
        .map(|b| b.accepted_by_microsoft + b.failed + b.bounced.min(b.accepted_by_microsoft))
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = nice_ceiling(max);
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / buckets.len().max(1) as f64;
    let bar = (slot * 0.7).max(1.0);
    let mut svg = String::new();
    let total: i64 = buckets.iter().map(|b| b.accepted).sum();
    let failed: i64 = buckets.iter().map(|b| b.failed).sum();
    let bounced: i64 = buckets.iter().map(|b| b.bounced).sum();
    let _ = write!(
        svg,
        "<svg class=\"chart\" role=\"img\" viewBox=\"0 0 {WIDTH} {h}\" width=\"100%\" xmlns=\"http://www.w3.org/2000/svg\" aria-labelledby=\"{id}-t {id}-d\">\
         <title id=\"{id}-t\">{title}</title>\
         <desc id=\"{id}-d\">{total} · {ok_label}: {ok} · {failed_label}: {failed} · {bounced_label}: {bounced}</desc>",
        h = HEIGHT + 22.0,
        id = if span == Span::Hours {
            "chart-24h"
        } else {
            "chart-30d"
        },
        ok = total - failed,
    );
    // The title, visible too.
    let _ = write!(
        svg,
        "<text x=\"{LEFT}\" y=\"14\" font-size=\"13\" font-weight=\"600\" fill=\"#222\">{title}</text>"
    );
    // Grid lines and the y axis.
    for step in 0..=4 {
        let value = scale * step / 4;
        let y = TOP + plot_h - plot_h * (value as f64) / (scale as f64);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\" stroke=\"#d0d4da\" stroke-width=\"0.5\"/>\
             <text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\" font-size=\"10\" fill=\"#444\">{value}</text>",
            x2 = WIDTH - 8.0,
            tx = LEFT - 4.0,
            ty = y + 3.0,
        );
    }
    for (i, b) in buckets.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let mut base = TOP + plot_h;
        let label = match span {
            Span::Hours => b.start.format("%H:00").to_string(),
            Span::Days => b.start.format("%Y-%m-%d").to_string(),
        };
        for (value, class, colour, name) in [
            (
                b.accepted_by_microsoft - b.bounced.min(b.accepted_by_microsoft),
                "ok",
                "#2e7d4f",
                ok_label,
            ),
            (
                b.bounced.min(b.accepted_by_microsoft),
                "bounced",
                "#b26a00",
                bounced_label,
            ),
            (b.failed, "failed", "#b3261e", failed_label),
        ] {
            if value <= 0 {
                continue;
            }
            let height = plot_h * value as f64 / scale as f64;
            base -= height;
            let _ = write!(
                svg,
                "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{base:.1}\" width=\"{bar:.1}\" height=\"{height:.1}\" fill=\"{colour}\"><title>{label}: {value} {name}</title></rect>"
            );
        }
        let every = if span == Span::Hours { 3 } else { 5 };
        if i % every == 0 || i + 1 == buckets.len() {
            let short = match span {
                Span::Hours => b.start.format("%H").to_string(),
                Span::Days => b.start.format("%d.%m").to_string(),
            };
            let _ = write!(
                svg,
                "<text x=\"{cx:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" font-size=\"10\" fill=\"#444\">{short}</text>",
                cx = x + bar / 2.0,
                y = TOP + plot_h + 14.0,
            );
        }
    }
    // The legend.
    let y = HEIGHT + 12.0;
    let mut x = LEFT;
    for (colour, name) in [
        ("#2e7d4f", ok_label),
        ("#b26a00", bounced_label),
        ("#b3261e", failed_label),
    ] {
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{ry}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{tx}\" y=\"{ty}\" font-size=\"11\" fill=\"#222\">{name}</text>",
            ry = y - 9.0,
            tx = x + 14.0,
            ty = y,
        );
        x += 30.0 + name.len() as f64 * 6.0;
    }
    svg.push_str("</svg>");
    svg
}

/// The smallest of 1, 2, 5 × 10ⁿ (and its quarters whole) at or above `value`.
fn nice_ceiling(value: i64) -> i64 {
    let mut magnitude = 1;
    loop {
        for step in [1, 2, 5] {
            let candidate = step * magnitude;
            if candidate >= value && (candidate % 4 == 0 || candidate < 4) {
                return candidate.max(4);
            }
        }
        magnitude *= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(hour: u32, ok: i64, failed: i64) -> Bucket {
        use chrono::TimeZone;
        Bucket {
            start: chrono::Utc
                .with_ymd_and_hms(2026, 12, 3, hour, 0, 0)
                .unwrap(),
            accepted: ok + failed,
            accepted_by_microsoft: ok,
            bounced: 0,
            failed,
        }
    }

    #[test]
    fn charts_draw_one_bar_per_bucket_with_its_figures() {
        let buckets: Vec<Bucket> = (0..24)
            .map(|h| bucket(h, i64::from(h % 3), i64::from(h == 5)))
            .collect();
        let svg = chart(&buckets, Span::Hours, Lang::En);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("<title id=\"chart-24h-t\">Messages, last 24 hours"));
        assert_eq!(svg.matches("class=\"failed\"").count(), 1);
        assert!(svg.contains("05:00: 1 failed"));
        let german = chart(&buckets, Span::Hours, Lang::De);
        assert!(german.contains("fehlgeschlagen"));
    }

    #[test]
    fn the_scale_is_round() {
        assert_eq!(nice_ceiling(1), 4);
        assert_eq!(nice_ceiling(7), 20);
        assert_eq!(nice_ceiling(180), 200);
        assert_eq!(nice_ceiling(1_001), 2_000);
    }
}
