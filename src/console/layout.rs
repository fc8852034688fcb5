//! The console's page shell (head, navigation, language switch) and the small pieces every
//! page shares: money, times, state badges, the CSRF field, the security headers.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::assets;
use super::i18n::{Lang, Texts};
use super::session::{CSRF_FIELD, Console, Who};
use crate::money::Micros;
use crate::tasks::LifeState;

/// Scripts and styles come from this server only; images from it (result links may name the
/// public URL's origin); nothing may frame the console.
fn policy(image_origin: Option<&str>) -> String {
    let images = image_origin.map(|o| format!(" {o}")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:{images}; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

fn respond(markup: Markup, image_origin: Option<&str>) -> Response {
    let mut response = markup.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_str(&policy(image_origin)).expect("ASCII policy"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn head(lang: Lang, title: &str, csrf: Option<&str>) -> Markup {
    let t = lang.texts();
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx may not add inline styles (the policy forbids them) nor evaluate code.
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
            @if let Some(csrf) = csrf {
                meta name="csrf-token" content=(csrf);
            }
            title { (title) " · " (t.brand) }
            link rel="stylesheet" href=(assets::href("console.css"));
            script src=(assets::href("htmx.min.js")) defer {}
            script src=(assets::href("console.js")) defer {}
        }
    }
}

fn language_switch(lang: Lang, back: &str) -> Markup {
    let t = lang.texts();
    let back = url::form_urlencoded::Serializer::new(String::new()).append_pair("back", back).finish();
    html! {
        nav class="lang" aria-label=(t.language) {
            @for other in Lang::ALL {
                @if other == lang {
                    span aria-current="true" lang=(other.tag()) { (other.name()) }
                } @else {
                    a href={ "/console/lang/" (other.tag()) "?" (back) } lang=(other.tag()) hreflang=(other.tag()) { (other.name()) }
                }
            }
        }
    }
}

/// A page outside a session: sign-in and errors.
pub fn bare(lang: Lang, title: &str, body: Markup) -> Response {
    let t = lang.texts();
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.tag()) {
            (head(lang, title, None))
            body class="bare" {
                header class="top" {
                    a class="brand" href="/console" { (t.brand) }
                    (language_switch(lang, "/console/login"))
                }
                main id="main" class="narrow" { (body) }
            }
        }
    };
    respond(markup, None)
}

struct NavItem {
    href: &'static str,
    label: &'static str,
}

fn user_nav(t: &Texts) -> [NavItem; 6] {
    [
        NavItem { href: "/console", label: t.nav_overview },
        NavItem { href: "/console/tasks", label: t.nav_tasks },
        NavItem { href: "/console/gallery", label: t.nav_gallery },
        NavItem { href: "/console/playground", label: t.nav_playground },
        NavItem { href: "/console/keys", label: t.nav_keys },
        NavItem { href: "/console/webhooks", label: t.nav_webhooks },
    ]
}

fn operator_nav(t: &Texts) -> [NavItem; 4] {
    [
        NavItem { href: "/console/admin/accounts", label: t.nav_accounts },
        NavItem { href: "/console/admin/channels", label: t.nav_channels },
        NavItem { href: "/console/admin/models", label: t.nav_models },
        NavItem { href: "/console/admin/system", label: t.nav_system },
    ]
}

/// Whether `href` is the page at `path` (a task's page belongs to Tasks).
fn is_current(href: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    if href == "/console" { path == "/console" } else { path == href || path.starts_with(&format!("{href}/")) }
}

fn nav_list(items: &[NavItem], path: &str) -> Markup {
    html! {
        ul {
            @for item in items {
                li {
                    @if is_current(item.href, path) {
                        a href=(item.href) aria-current="page" { (item.label) }
                    } @else {
                        a href=(item.href) { (item.label) }
                    }
                }
            }
        }
    }
}

/// A page of a signed-in reader: the navigation of their role, then `body`.
pub fn page(c: &Console, image_origin: Option<&str>, title: &str, body: Markup) -> Response {
    let t = c.t;
    let markup = html! {
        (DOCTYPE)
        html lang=(c.lang.tag()) {
            (head(c.lang, title, Some(&c.session.csrf)))
            body {
                a class="skip" href="#main" { (t.skip_to_content) }
                header class="top" {
                    a class="brand" href=(if c.is_operator() { "/console/admin" } else { "/console" }) { (t.brand) }
                    (language_switch(c.lang, &c.path))
                    form method="post" action="/console/logout" class="inline" {
                        (csrf(c))
                        button type="submit" class="link" { (t.sign_out) }
                    }
                }
                @match &c.session.who {
                    Who::Operator { viewing } => {
                        nav class="main" aria-label=(t.nav_operator) { (nav_list(&operator_nav(t), &c.path)) }
                        @if let Some(account) = viewing {
                            div class="viewing" role="status" {
                                span { (t.viewing_as) " " code { (account.as_str()) } }
                                form method="post" action="/console/admin/leave" class="inline" {
                                    (csrf(c))
                                    button type="submit" class="link" { (t.stop_viewing) }
                                }
                            }
                            nav class="main sub" aria-label=(t.nav_account) { (nav_list(&user_nav(t), &c.path)) }
                        }
                    }
                    Who::User { .. } => {
                        nav class="main" aria-label=(t.nav_account) { (nav_list(&user_nav(t), &c.path)) }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    respond(markup, image_origin)
}

/// The hidden field that carries the session's CSRF token in a form.
pub fn csrf(c: &Console) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(c.session.csrf); }
}

/// USD, as many decimals as it has (at least two): `$0.032`, `$12.50`.
pub fn money(m: Micros) -> String {
    let sign = if m.0 < 0 { "-" } else { "" };
    let abs = m.0.unsigned_abs();
    let (dollars, micros) = (abs / 1_000_000, abs % 1_000_000);
    let mut frac = format!("{micros:06}");
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{sign}${dollars}.{frac}")
}

/// A Unix-millisecond time as `2026-12-01 22:16:07 UTC`.
pub fn time(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let text = humantime::format_rfc3339_seconds(at).to_string();
    format!("{} UTC", text.trim_end_matches('Z').replace('T', " "))
}

/// A `<time>` element for a Unix-millisecond time.
pub fn when(ms: i64) -> Markup {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    html! { time datetime=(humantime::format_rfc3339_seconds(at).to_string()) { (time(ms)) } }
}

pub fn state_label(t: &Texts, state: LifeState) -> &'static str {
    match state {
        LifeState::Pending => t.state_pending,
        LifeState::Processing => t.state_processing,
        LifeState::Success => t.state_success,
        LifeState::Failed => t.state_failed,
        LifeState::Cancelled => t.state_cancelled,
    }
}

pub fn state_name(state: LifeState) -> &'static str {
    match state {
        LifeState::Pending => "pending",
        LifeState::Processing => "processing",
        LifeState::Success => "success",
        LifeState::Failed => "failed",
        LifeState::Cancelled => "cancelled",
    }
}

pub fn badge(t: &Texts, state: LifeState) -> Markup {
    html! { span class={ "badge " (state_name(state)) } { (state_label(t, state)) } }
}

/// A notice for the result of a form (`role=status`) or a problem with it (`role=alert`).
pub fn notice(text: &str, problem: bool) -> Markup {
    if problem {
        html! { p class="notice error" role="alert" { (text) } }
    } else {
        html! { p class="notice ok" role="status" { (text) } }
    }
}

/// A secret shown once (a new key, a new webhook secret), ready to copy.
pub fn shown_once(label: &str, warning: &str, secret: &str) -> Markup {
    html! {
        div class="once" role="status" {
            p { strong { (label) } }
            p { code class="secret" id="secret" { (secret) } }
            p class="hint" { (warning) }
        }
    }
}

/// JSON pretty-printed for a `<pre>`.
pub fn pretty(json: &str) -> Markup {
    let text = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| json.to_owned());
    html! { pre { code { (text) } } }
}

/// An empty-table line.
pub fn empty(text: &str) -> Markup {
    html! { p class="empty" { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_keeps_every_micro_dollar() {
        assert_eq!(money(Micros(32_000)), "$0.032");
        assert_eq!(money(Micros(12_500_000)), "$12.50");
        assert_eq!(money(Micros(1)), "$0.000001");
        assert_eq!(money(Micros(0)), "$0.00");
        assert_eq!(money(Micros(-40_000)), "-$0.04");
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(time(1_764_627_367_000), "2025-12-01 22:16:07 UTC");
    }

    #[test]
    fn a_task_page_belongs_to_tasks() {
        assert!(is_current("/console/tasks", "/console/tasks/task_1?x=1"));
        assert!(is_current("/console", "/console"));
        assert!(!is_current("/console", "/console/tasks"));
    }
}
