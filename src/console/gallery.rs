//! The account's images, newest first, as a grid of thumbnails; each opens full size in a
//! lightbox (a `<dialog>` the script fills) or, without the script, on its own.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::error::ConsoleError;
use super::forms::{self, given};
use super::layout;
use super::session::Console;
use super::tasks::{image_origin, images, thumbnails};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::ids::TaskId;
use crate::tasks::LifeState;
use crate::tasks::store::TaskFilter;

/// Tasks per page (each with one or more images).
const TASKS_PER_PAGE: i64 = 24;

#[derive(Deserialize, Default)]
pub struct GalleryQuery {
    before: Option<String>,
}

/// `GET /console/gallery`.
pub async fn page(
    State(state): State<AppState>,
    c: Console,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let account = c.account()?.clone();
    let q: GalleryQuery = forms::query(raw)?;
    let before = given(&q.before)
        .map(|b| {
            TaskId::parse(b).ok_or_else(|| ConsoleError::Api(ApiError::BadRequest("before must be a task id".into())))
        })
        .transpose()?;
    let filter = TaskFilter { state: Some(LifeState::Success), ..TaskFilter::default() };
    let tasks = state.tasks.list_filtered(&account, &filter, TASKS_PER_PAGE, before.as_ref()).await?;
    let t = c.t;
    let shown: Vec<_> = tasks.iter().filter(|task| task.files_purged_at.is_none()).collect();
    let body = html! {
        @if shown.is_empty() {
            (layout::empty(t.gallery_none))
        } @else {
            ul class="gallery" {
                @for task in &shown {
                    @let thumbs = thumbnails(&state, task);
                    @for (i, full) in images(&state, task).iter().enumerate() {
                        li {
                            a href=(full) data-lightbox=(full) data-task={ "/console/tasks/" (task.id) } {
                                img src=(thumbs.get(i).unwrap_or(full)) loading="lazy" width="256" height="256"
                                    alt={ (task.spec.prompt.chars().take(120).collect::<String>()) };
                            }
                        }
                    }
                }
            }
        }
        nav class="pager" aria-label=(t.pages) {
            @if before.is_some() { a href="/console/gallery" { (t.newest) } }
            @if tasks.len() as i64 == TASKS_PER_PAGE {
                @if let Some(last) = tasks.last() { a href={ "/console/gallery?before=" (last.id) } rel="next" { (t.older) } }
            }
        }
        dialog id="lightbox" aria-label=(t.image) {
            form method="dialog" { button type="submit" class="close" aria-label=(t.close) { "×" } }
            img id="lightbox-image" alt="";
            p { a id="lightbox-task" href="#" { (t.open_task) } }
        }
    };
    Ok(layout::page(&c, image_origin(&state).as_deref(), t.nav_gallery, body))
}
