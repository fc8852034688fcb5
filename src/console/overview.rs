//! An account's overview: balance and held credit, spend per day over 30 days (a chart with
//! its table), and tasks by model and state. Everything comes from the daily rollup and the
//! few unfinished tasks, so it costs the same for an account of ten tasks or a million.

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::error::ConsoleError;
use super::forms::day_label;
use super::i18n::Texts;
use super::layout::{self, money};
use super::session::Console;
use crate::accounts::usage::{self, DAY_MS, Day};
use crate::api::AppState;
use crate::db::now_ms;
use crate::money::Micros;

const DAYS: i64 = 30;

/// Bars of spend per day, described for screen readers by the table that follows it.
fn chart(t: &Texts, days: &[Day]) -> Markup {
    let (width, height, gap) = (600.0_f64, 160.0_f64, 2.0_f64);
    let top = days.iter().map(|d| d.spent.0).max().unwrap_or(0).max(1) as f64;
    let bar = width / days.len().max(1) as f64;
    html! {
        figure class="chart" {
            svg viewBox={ "0 0 " (width) " " (height + 20.0) } role="img" aria-labelledby="chart-title" preserveAspectRatio="none" {
                title id="chart-title" { (t.spend_chart) }
                @for (i, d) in days.iter().enumerate() {
                    @let h = (d.spent.0 as f64 / top * height).max(if d.spent.0 > 0 { 1.0 } else { 0.0 });
                    rect x=(i as f64 * bar + gap / 2.0) y=(height - h) width=(bar - gap) height=(h) class="bar" {
                        title { (day_label(d.day)) ": " (money(d.spent)) }
                    }
                }
                line x1="0" y1=(height) x2=(width) y2=(height) class="axis";
                text x="0" y=(height + 16.0) class="tick" { (days.first().map(|d| day_label(d.day)).unwrap_or_default()) }
                text x=(width) y=(height + 16.0) class="tick end" { (days.last().map(|d| day_label(d.day)).unwrap_or_default()) }
            }
            figcaption { (t.spend_chart_caption) }
        }
        details {
            summary { (t.spend_table) }
            table {
                thead { tr { th scope="col" { (t.col_day) } th scope="col" class="num" { (t.col_images) } th scope="col" class="num" { (t.col_spent) } } }
                tbody {
                    @for d in days.iter().rev() {
                        tr { td { (day_label(d.day)) } td class="num" { (d.images) } td class="num" { (money(d.spent)) } }
                    }
                }
            }
        }
    }
}

/// `GET /console`.
pub async fn page(State(state): State<AppState>, c: Console) -> Result<Response, ConsoleError> {
    let id = c.account()?.clone();
    let account = state.accounts.get(&id).await?;
    let today = now_ms().div_euclid(DAY_MS);
    let days = usage::daily(&state.db, &id, today, DAYS).await?;
    let models = usage::by_model(&state.db, &id).await?;
    let spent: i64 = days.iter().map(|d| d.spent.0).sum();
    let t = c.t;
    let body = html! {
        div class="cards" {
            div class="card" { p class="label" { (t.balance) } p class="value" id="balance" { (money(account.balance)) } }
            div class="card" { p class="label" { (t.held) } p class="value" id="held" { (money(account.held)) } }
            div class="card" { p class="label" { (t.spent_30_days) } p class="value" { (money(Micros(spent))) } }
        }
        section aria-labelledby="spend-h" {
            h2 id="spend-h" { (t.spend_per_day) }
            (chart(t, &days))
        }
        section aria-labelledby="models-h" {
            h2 id="models-h" { (t.tasks_by_model) }
            @if models.is_empty() {
                (layout::empty(t.tasks_none))
            } @else {
                div class="scroll" { table {
                    thead { tr {
                        th scope="col" { (t.field_model) }
                        th scope="col" class="num" { (t.state_pending) }
                        th scope="col" class="num" { (t.state_processing) }
                        th scope="col" class="num" { (t.state_success) }
                        th scope="col" class="num" { (t.state_failed) }
                        th scope="col" class="num" { (t.state_cancelled) }
                        th scope="col" class="num" { (t.col_images) }
                        th scope="col" class="num" { (t.col_spent) }
                    } }
                    tbody {
                        @for m in &models {
                            tr {
                                th scope="row" { a href={ "/console/tasks?model=" (m.model) } { (m.model) } }
                                td class="num" { (m.pending) }
                                td class="num" { (m.processing) }
                                td class="num" { (m.succeeded) }
                                td class="num" { (m.failed) }
                                td class="num" { (m.cancelled) }
                                td class="num" { (m.images) }
                                td class="num" { (money(m.spent)) }
                            }
                        }
                    }
                } }
            }
        }
        p { a href="/console/playground" class="button" { (t.try_playground) } }
    };
    Ok(layout::page(&c, None, t.nav_overview, body))
}
