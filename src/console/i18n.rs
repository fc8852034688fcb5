//! The console's languages: English and Simplified Chinese, every string of each in one file
//! (`i18n/en.rs`, `i18n/zh_cn.rs`); a string missing from either does not compile. The reader's
//! choice (the `easel_lang` cookie, set by the switch) wins over `Accept-Language`.

mod en;
mod zh_cn;

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::error::ConsoleError;
use super::forms;

const LANG_COOKIE: &str = "easel_lang";

macro_rules! texts {
    ($($name:ident),* $(,)?) => {
        /// Every string the console shows, in one language.
        pub struct Texts { $(pub $name: &'static str,)* }
    };
}

texts!(
    accounts_none,
    actions,
    active,
    add_credits,
    amount_usd,
    any,
    api,
    apply_filters,
    attempts,
    back_to_console,
    balance,
    brand,
    callbacks,
    callbacks_none,
    cancel_at,
    cancel_task,
    charged,
    choose_model,
    close,
    col_account,
    col_amount,
    col_breaker,
    col_channel,
    col_code,
    col_cost,
    col_created,
    col_day,
    col_enabled,
    col_event,
    col_family,
    col_hint,
    col_images,
    col_key,
    col_kind,
    col_last_seen,
    col_last_test,
    col_message,
    col_name,
    col_node,
    col_origin,
    col_preview,
    col_role,
    col_spent,
    col_started,
    col_task,
    col_tasks,
    col_time,
    col_version,
    concurrency,
    create_account,
    create_key,
    credits_added,
    disable,
    disabled,
    download,
    enable,
    enabled,
    ended,
    ev_cancelled,
    ev_created,
    ev_failed,
    ev_image,
    ev_progress,
    ev_started,
    ev_succeeded,
    err_choose_account,
    err_csrf,
    err_insufficient_credits,
    err_internal,
    err_not_found,
    err_operator_only,
    err_session_ended,
    err_too_many_sign_ins,
    error_title,
    errors_none,
    field_aspect,
    field_count,
    field_format,
    field_from,
    field_model,
    field_prompt,
    field_quality,
    field_references,
    field_sequential,
    field_size,
    field_state,
    field_tier,
    field_to,
    field_transparent,
    field_web_search,
    gallery_none,
    generate,
    held,
    image,
    images,
    images_deleted,
    images_none,
    in_flight,
    keys_hint,
    language,
    last_answer,
    ledger,
    ledger_none,
    limits,
    limits_set,
    mask_url,
    models_hint,
    nav_account,
    nav_accounts,
    nav_channels,
    nav_gallery,
    nav_keys,
    nav_models,
    nav_operator,
    nav_overview,
    nav_playground,
    nav_system,
    nav_tasks,
    nav_webhooks,
    new_key,
    new_webhook_secret,
    newest,
    node_gone,
    node_up,
    nodes,
    older,
    on_channel,
    open_account,
    open_task,
    opening_credits,
    origin_added,
    origin_builtin,
    origin_overridden,
    p50_latency,
    pages,
    parameters,
    price,
    price_detail,
    price_rows,
    queue_depth,
    queue_empty,
    recent_deliveries,
    recent_errors,
    recent_tasks,
    reference_urls,
    references_hint,
    request_as_sent,
    resting,
    retry,
    revoke,
    revoked,
    rotate_secret,
    rpm,
    search,
    search_accounts,
    set_limits,
    shown_once,
    sign_in,
    sign_in_intro,
    sign_in_key,
    sign_in_key_help,
    sign_in_refused,
    sign_in_title,
    sign_out,
    skip_to_content,
    spend_chart,
    spend_chart_caption,
    spend_per_day,
    spend_table,
    spent_30_days,
    state_cancelled,
    state_failed,
    state_pending,
    state_processing,
    state_success,
    stop_viewing,
    success_rate,
    task,
    tasks_by_model,
    tasks_filters,
    tasks_none,
    test,
    test_failed,
    test_ok,
    this_session,
    timeline,
    timeline_live,
    try_playground,
    upload_images,
    upload_mask,
    view_as_user,
    viewing_as,
    webhooks_intro,
    withdrawn_models,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    ZhCn,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::ZhCn];

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::En => &en::TEXTS,
            Lang::ZhCn => &zh_cn::TEXTS,
        }
    }

    /// Its BCP 47 tag, as `lang` attributes and the switch spell it.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhCn => "zh-CN",
        }
    }

    /// Its name in itself, for the switch.
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::ZhCn => "简体中文",
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        let tag = tag.trim().to_ascii_lowercase();
        if tag == "en" || tag.starts_with("en-") {
            Some(Lang::En)
        } else if tag == "zh" || tag.starts_with("zh-") {
            // Traditional Chinese readers still read Simplified better than English.
            Some(Lang::ZhCn)
        } else {
            None
        }
    }

    /// The reader's language: their switch's cookie, else the best of `Accept-Language`.
    pub fn of(headers: &HeaderMap) -> Self {
        let cookie = super::session::cookie_value(headers, LANG_COOKIE).and_then(Self::from_tag);
        cookie.or_else(|| Self::accepted(headers)).unwrap_or(Lang::En)
    }

    fn accepted(headers: &HeaderMap) -> Option<Self> {
        let list = headers.get(header::ACCEPT_LANGUAGE)?.to_str().ok()?;
        let mut best: Option<(f32, Lang)> = None;
        for item in list.split(',') {
            let mut parts = item.split(';');
            let Some(lang) = parts.next().and_then(Self::from_tag) else { continue };
            let q =
                parts.filter_map(|p| p.trim().strip_prefix("q=")).find_map(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
            if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, lang)| lang)
    }
}

#[derive(Deserialize, Default)]
pub struct SwitchQuery {
    back: Option<String>,
}

/// `GET /console/lang/{tag}?back=…`: remembers the choice for a year and goes back.
pub async fn switch(Path(tag): Path<String>, RawQuery(raw): RawQuery) -> Result<Response, ConsoleError> {
    let lang = Lang::from_tag(&tag).ok_or(ConsoleError::NotFound)?;
    let q: SwitchQuery = forms::query(raw)?;
    let back =
        q.back.filter(|b| b.starts_with("/console") && !b.starts_with("//")).unwrap_or_else(|| "/console".into());
    let mut response = Redirect::to(&back).into_response();
    let cookie = format!("{LANG_COOKIE}={}; Path=/console; Max-Age=31536000; SameSite=Strict", lang.tag());
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII cookie"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn the_best_accepted_language_wins_and_the_cookie_over_it() {
        assert_eq!(Lang::of(&HeaderMap::new()), Lang::En);
        assert_eq!(Lang::of(&with(header::ACCEPT_LANGUAGE, "zh-CN,zh;q=0.9,en;q=0.8")), Lang::ZhCn);
        assert_eq!(Lang::of(&with(header::ACCEPT_LANGUAGE, "fr, en;q=0.5, zh;q=0.4")), Lang::En);
        assert_eq!(Lang::of(&with(header::ACCEPT_LANGUAGE, "zh-TW")), Lang::ZhCn);
        assert_eq!(Lang::of(&with(header::COOKIE, "a=b; easel_lang=zh-CN")), Lang::ZhCn);
    }
}
