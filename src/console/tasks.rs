//! An account's tasks: the filtered, paged table with thumbnails, and a task's page (its
//! parameters, live timeline, images, callbacks and ledger lines, with cancel and retry).

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::error::ConsoleError;
use super::forms::{self, given};
use super::i18n::Texts;
use super::layout::{self, badge, csrf, money, when};
use super::session::{Console, Nothing, Posted};
use crate::accounts::ledger;
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::events::{events_of, last_event_id};
use crate::api::tasks::{stop, task_of};
use crate::ids::TaskId;
use crate::tasks::events::{EventKind, TaskEvent};
use crate::tasks::store::TaskFilter;
use crate::tasks::{LifeState, Task};
use crate::webhooks::store::{self as deliveries, RetryOutcome};

pub const PAGE_SIZE: i64 = 50;

/// Signed links to a task's thumbnails (its images where it has none), or none once deleted.
pub fn thumbnails(state: &AppState, task: &Task) -> Vec<String> {
    if task.files_purged_at.is_some() { Vec::new() } else { state.links.thumbnails(task) }
}

/// Signed links to a task's images, or none once deleted.
pub fn images(state: &AppState, task: &Task) -> Vec<String> {
    if task.files_purged_at.is_some() { Vec::new() } else { state.result_urls(task) }
}

/// The origin of result links, for the pages' image policy.
pub fn image_origin(state: &AppState) -> Option<String> {
    let url = url::Url::parse(state.storage.public_url()).ok()?;
    Some(url.origin().ascii_serialization())
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    state: Option<String>,
    model: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before: Option<String>,
}

impl ListQuery {
    fn filter(&self) -> Result<TaskFilter<'_>, ConsoleError> {
        let bad = |m: String| ConsoleError::Api(ApiError::BadRequest(m));
        let state = given(&self.state)
            .map(|s| LifeState::parse(s).ok_or_else(|| bad(format!("state must be a task state, not {s:?}"))))
            .transpose()?;
        Ok(TaskFilter {
            state,
            model: given(&self.model),
            since: given(&self.from).map(|d| forms::day_start("from", d)).transpose()?,
            until: given(&self.to).map(|d| forms::day_end("to", d)).transpose()?,
        })
    }

    /// This list's filters, with `before` for the page after.
    fn link(&self, before: Option<&str>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [("state", &self.state), ("model", &self.model), ("from", &self.from), ("to", &self.to)] {
            if let Some(v) = given(value) {
                q.append_pair(name, v);
            }
        }
        if let Some(b) = before {
            q.append_pair("before", b);
        }
        format!("/console/tasks?{}", q.finish())
    }
}

const STATES: [LifeState; 5] =
    [LifeState::Pending, LifeState::Processing, LifeState::Success, LifeState::Failed, LifeState::Cancelled];

fn filters(state: &AppState, t: &Texts, q: &ListQuery) -> Markup {
    let chosen_state = given(&q.state).unwrap_or_default();
    let chosen_model = given(&q.model).unwrap_or_default();
    html! {
        form method="get" action="/console/tasks" class="filters" role="search" aria-label=(t.tasks_filters) {
            label { (t.field_state)
                select name="state" {
                    option value="" { (t.any) }
                    @for s in STATES {
                        option value=(layout::state_name(s)) selected[chosen_state == layout::state_name(s)] {
                            (layout::state_label(t, s))
                        }
                    }
                }
            }
            label { (t.field_model)
                select name="model" {
                    option value="" { (t.any) }
                    @for m in state.catalog.models() {
                        option value=(m.id) selected[chosen_model == m.id] { (m.id) }
                    }
                }
            }
            label { (t.field_from) input type="date" name="from" value=[given(&q.from)]; }
            label { (t.field_to) input type="date" name="to" value=[given(&q.to)]; }
            button type="submit" { (t.apply_filters) }
        }
    }
}

/// The table of tasks, shared by the account's list and the operator's account page.
pub fn table(state: &AppState, t: &Texts, tasks: &[Task]) -> Markup {
    html! {
        div class="scroll" {
            table class="tasks" {
                caption class="visually-hidden" { (t.nav_tasks) }
                thead { tr {
                    th scope="col" { span class="visually-hidden" { (t.col_preview) } }
                    th scope="col" { (t.col_task) }
                    th scope="col" { (t.field_model) }
                    th scope="col" { (t.field_state) }
                    th scope="col" class="num" { (t.col_images) }
                    th scope="col" class="num" { (t.col_cost) }
                    th scope="col" { (t.col_created) }
                } }
                tbody {
                    @for task in tasks {
                        @let life = LifeState::of(task);
                        tr {
                            td class="thumb" {
                                @if let Some(thumb) = thumbnails(state, task).first() {
                                    img src=(thumb) alt="" width="48" height="48" loading="lazy";
                                }
                            }
                            td { a href={ "/console/tasks/" (task.id) } { code { (task.id) } } }
                            td { (task.model) }
                            td { (badge(t, life)) }
                            td class="num" { (task.delivered_images.unwrap_or(0)) " / " (task.requested_images) }
                            td class="num" {
                                @match (task.state.is_terminal(), task.charged) {
                                    (true, Some(c)) => (money(c)),
                                    (true, None) => (money(task.price.times(task.delivered_images.unwrap_or(0)))),
                                    (false, _) => span title=(t.held) { (money(task.held())) "*" },
                                }
                            }
                            td { (when(task.created_at)) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/tasks`.
pub async fn list(
    State(state): State<AppState>,
    c: Console,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let account = c.account()?.clone();
    let q: ListQuery = forms::query(raw)?;
    let filter = q.filter()?;
    let before = given(&q.before)
        .map(|b| {
            TaskId::parse(b).ok_or_else(|| ConsoleError::Api(ApiError::BadRequest("before must be a task id".into())))
        })
        .transpose()?;
    let tasks = state.tasks.list_filtered(&account, &filter, PAGE_SIZE, before.as_ref()).await?;
    let t = c.t;
    let body = html! {
        (filters(&state, t, &q))
        @if tasks.is_empty() {
            (layout::empty(t.tasks_none))
        } @else {
            (table(&state, t, &tasks))
        }
        nav class="pager" aria-label=(t.pages) {
            @if before.is_some() { a href=(q.link(None)) { (t.newest) } }
            @if tasks.len() as i64 == PAGE_SIZE {
                @if let Some(last) = tasks.last() { a href=(q.link(Some(last.id.as_str()))) rel="next" { (t.older) } }
            }
        }
    };
    Ok(layout::page(&c, image_origin(&state).as_deref(), t.nav_tasks, body))
}

/// An event type's name in the reader's language.
fn event_label(t: &Texts, kind: EventKind) -> &'static str {
    match kind {
        EventKind::Created => t.ev_created,
        EventKind::Started => t.ev_started,
        EventKind::Progress => t.ev_progress,
        EventKind::Image => t.ev_image,
        EventKind::Succeeded => t.ev_succeeded,
        EventKind::Failed => t.ev_failed,
        EventKind::Cancelled => t.ev_cancelled,
    }
}

/// The names of every event type, for the script's live lines.
fn event_labels(t: &Texts) -> String {
    let kinds = [
        EventKind::Created,
        EventKind::Started,
        EventKind::Progress,
        EventKind::Image,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::Cancelled,
    ];
    let map: serde_json::Map<String, serde_json::Value> =
        kinds.iter().map(|k| (k.as_str().to_owned(), serde_json::Value::from(event_label(t, *k)))).collect();
    serde_json::Value::Object(map).to_string()
}

/// A stored event as a line of the timeline (the script adds live ones the same way).
fn event_line(t: &Texts, event: &TaskEvent) -> Markup {
    let d = &event.data;
    let detail = match event.kind {
        EventKind::Created => format!("{} × {}", d["model"].as_str().unwrap_or_default(), d["imagesRequested"]),
        EventKind::Started => format!("{} {}", t.on_channel, d["channel"].as_str().unwrap_or_default()),
        EventKind::Progress => match d["percent"].as_u64() {
            Some(p) => format!("{p}%"),
            None => String::new(),
        },
        EventKind::Image => format!("#{}", d["index"].as_u64().unwrap_or(0) + 1),
        EventKind::Succeeded | EventKind::Failed | EventKind::Cancelled => {
            let mut s = format!("{} {}", d["imagesDelivered"], t.col_images.to_lowercase());
            if let Some(msg) = d["failMsg"].as_str() {
                s.push_str(" · ");
                s.push_str(msg);
            }
            s
        }
    };
    html! {
        li data-seq=(event.seq) {
            span class={ "event " (event.kind.as_str()) } { (event_label(t, event.kind)) }
            " " (when(event.at)) " "
            span { (detail) }
        }
    }
}

/// `GET /console/tasks/{id}`.
pub async fn show(State(state): State<AppState>, c: Console, Path(id): Path<String>) -> Result<Response, ConsoleError> {
    let account = c.account()?.clone();
    let task = task_of(&state, &account, &id).await.map_err(ConsoleError::or_not_found)?;
    let events = state.tasks.events_after(&task.id, 0).await?;
    let callbacks = deliveries::list_for_task(&state.db, &task.id, &account).await?;
    let entries = ledger::for_task(&state.db, &account, &task.id).await?;
    let urls = images(&state, &task);
    let life = LifeState::of(&task);
    let t = c.t;
    let last_seq = events.last().map_or(0, |e| e.seq);
    let spec = &task.spec;
    let body = html! {
        div class="task-head" {
            p { (badge(t, life)) " " code { (task.id) } " · " (task.model) }
            @if !task.state.is_terminal() {
                form method="post" action={ "/console/tasks/" (task.id) "/cancel" } class="inline" {
                    (csrf(&c))
                    button type="submit" class="danger" id="cancel" { (t.cancel_task) }
                }
            }
        }
        @if let Some(msg) = &task.fail_msg {
            (layout::notice(&format!("{} {}", task.fail_code.as_deref().unwrap_or_default(), msg), true))
        }
        section aria-labelledby="params-h" {
            h2 id="params-h" { (t.parameters) }
            dl class="facts" {
                dt { (t.field_prompt) } dd { (spec.prompt) }
                dt { (t.field_size) } dd { (spec.size.width) "×" (spec.size.height) }
                dt { (t.field_count) } dd { (task.requested_images) }
                dt { (t.field_format) } dd { (spec.output_format.extension()) }
                @if let Some(q) = spec.quality { dt { (t.field_quality) } dd { (q.as_str()) } }
                @if !spec.references.is_empty() {
                    dt { (t.field_references) } dd { (spec.references.len()) }
                }
                dt { (t.api) } dd { (task.dialect.as_str()) }
                dt { (t.held) } dd { (money(task.price)) " × " (task.requested_images) }
                @if let Some(c) = task.charged { dt { (t.charged) } dd { (money(c)) } }
                dt { (t.col_created) } dd { (when(task.created_at)) }
                @if let Some(at) = task.completed_at { dt { (t.ended) } dd { (when(at)) } }
                @if let Some(at) = task.cancel_at { dt { (t.cancel_at) } dd { (when(at)) } }
            }
            details { summary { (t.request_as_sent) } (layout::pretty(&task.param)) }
        }
        section aria-labelledby="timeline-h" {
            h2 id="timeline-h" { (t.timeline) }
            @let live = (!task.state.is_terminal()).then(|| format!("/console/tasks/{}/events?after={last_seq}", task.id));
            ol id="timeline" class="timeline" aria-live="polite" data-events=[live] data-labels=(event_labels(t)) {
                @for e in &events { (event_line(t, e)) }
            }
            @if !task.state.is_terminal() {
                p class="hint" id="live-note" { (t.timeline_live) }
            }
        }
        section aria-labelledby="images-h" {
            h2 id="images-h" { (t.images) }
            @if urls.is_empty() {
                (layout::empty(if task.files_purged_at.is_some() { t.images_deleted } else { t.images_none }))
            } @else {
                div class="results" {
                    @for (i, url) in urls.iter().enumerate() {
                        figure {
                            a href=(url) { img src=(url) alt={ (t.image) " " (i + 1) } loading="lazy"; }
                            figcaption { a href=(url) download { (t.download) " #" (i + 1) } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="callbacks-h" {
            h2 id="callbacks-h" { (t.callbacks) }
            @if callbacks.is_empty() {
                (layout::empty(t.callbacks_none))
            } @else {
                div class="scroll" { table {
                    thead { tr { th scope="col" { (t.col_event) } th scope="col" { "URL" } th scope="col" { (t.field_state) }
                        th scope="col" class="num" { (t.attempts) } th scope="col" { (t.last_answer) } th scope="col" { span class="visually-hidden" { (t.actions) } } } }
                    tbody {
                        @for (d, attempts) in &callbacks {
                            tr {
                                td { (d.event.as_deref().unwrap_or("end")) }
                                td { code { (d.url) } }
                                td { (d.state) }
                                td class="num" { (d.attempts) }
                                td {
                                    @if let Some(a) = attempts.last() {
                                        (a.status.map(|s| s.to_string()).or_else(|| a.error.clone()).unwrap_or_default())
                                    }
                                }
                                td {
                                    @if d.state == "failed" {
                                        form method="post" action={ "/console/callbacks/" (d.id) "/retry" } class="inline" {
                                            (csrf(&c))
                                            input type="hidden" name="task" value=(task.id);
                                            button type="submit" { (t.retry) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                } }
            }
        }
        section aria-labelledby="ledger-h" {
            h2 id="ledger-h" { (t.ledger) }
            @if entries.is_empty() {
                (layout::empty(t.ledger_none))
            } @else {
                table {
                    thead { tr { th scope="col" { (t.col_kind) } th scope="col" class="num" { (t.col_amount) } th scope="col" { (t.col_time) } } }
                    tbody {
                        @for e in &entries {
                            tr { td { (e.kind) } td class="num" { (money(e.amount)) } td { (when(e.created_at)) } }
                        }
                    }
                }
            }
        }
    };
    let title = format!("{} {}", t.task, task.id);
    Ok(layout::page(&c, image_origin(&state).as_deref(), &title, body))
}

/// `POST /console/tasks/{id}/cancel`: stops it, then back to its page.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted(c, _): Posted<Nothing>,
) -> Result<Response, ConsoleError> {
    let account = c.account()?.clone();
    let task = task_of(&state, &account, &id).await.map_err(ConsoleError::or_not_found)?;
    stop(&state, task, &account).await?;
    Ok(Redirect::to(&format!("/console/tasks/{id}")).into_response())
}

#[derive(Deserialize)]
pub struct AfterQuery {
    after: Option<i64>,
}

/// `GET /console/tasks/{id}/events`: the task's event stream for the page's timeline, from
/// after `?after=` (or the browser's `Last-Event-ID` when it reconnects).
pub async fn events(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let account = c.account()?.clone();
    let task = task_of(&state, &account, &id).await.map_err(ConsoleError::or_not_found)?;
    let q: AfterQuery = forms::query(raw)?;
    let after = match headers.get("last-event-id") {
        Some(_) => last_event_id(&headers)?,
        None => q.after.unwrap_or(0).max(0),
    };
    Ok(events_of(&state, task, after).into_response())
}

#[derive(Deserialize)]
pub struct RetryForm {
    task: Option<String>,
}

/// `POST /console/callbacks/{id}/retry`: sends a failed delivery again.
pub async fn retry_callback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted(c, form): Posted<RetryForm>,
) -> Result<Response, ConsoleError> {
    let account = c.account()?.clone();
    match deliveries::retry(&state.db, &state.bus, &id, &account).await? {
        RetryOutcome::NotFound => return Err(ConsoleError::NotFound),
        RetryOutcome::Queued | RetryOutcome::AlreadyDelivered | RetryOutcome::StillTrying => {}
    }
    let back = match given(&form.task).and_then(TaskId::parse) {
        Some(task) => format!("/console/tasks/{task}"),
        None => "/console/webhooks".into(),
    };
    Ok(Redirect::to(&back).into_response())
}
