//! The playground: a form built from a model's entry in the catalog (prompt, size or tier and
//! aspect ratio, count, quality, format, reference images by upload or URL, a mask where the
//! model takes one), its price before it is sent, and the task's own page (live progress, then
//! the images) after. The fields are checked by the same catalog rules as the APIs'.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::ConsoleError;
use super::forms::{self, given};
use super::i18n::Texts;
use super::layout::{self, csrf, money};
use super::session::{CSRF_FIELD, CSRF_HEADER, Console};
use crate::api::AppState;
use crate::api::create::Creation;
use crate::api::error::ApiError;
use crate::api::uploads::{self, MAX_UPLOAD_BYTES, Upload};
use crate::catalog::fields::{Fields, http_url, invalid, prompt};
use crate::catalog::{Capability, Model, Quality, Routing, TaskSpec, ValidationError};
use crate::ids::random_hex;
use crate::tasks::Dialect;

/// What the form sent: its text fields, and the files chosen for references and the mask.
#[derive(Default)]
struct Filled {
    fields: Map<String, Value>,
    images: Vec<(String, Vec<u8>)>,
    mask: Option<Vec<u8>>,
}

impl Filled {
    fn text(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty())
    }

    fn checked(&self, name: &str) -> bool {
        self.text(name).is_some()
    }
}

fn bad(e: impl std::fmt::Display) -> ConsoleError {
    ConsoleError::Api(ApiError::BadRequest(e.to_string()))
}

/// Reads the multipart form; files of a field left empty are skipped.
async fn read(form: Result<Multipart, MultipartRejection>) -> Result<Filled, ConsoleError> {
    let mut form = form.map_err(bad)?;
    let mut filled = Filled::default();
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        let is_file = field.file_name().is_some();
        let bytes = field.bytes().await.map_err(bad)?;
        if is_file {
            if bytes.is_empty() {
                continue;
            }
            if bytes.len() > MAX_UPLOAD_BYTES {
                return Err(ConsoleError::Api(ApiError::PayloadTooLarge(format!("{name} is larger than 10 MiB"))));
            }
            match name.as_str() {
                "mask" => filled.mask = Some(bytes.to_vec()),
                _ => filled.images.push((format!("image-{}", filled.images.len() + 1), bytes.to_vec())),
            }
        } else {
            let text = String::from_utf8(bytes.to_vec()).map_err(|_| bad(format!("{name} must be UTF-8 text")))?;
            filled.fields.insert(name, Value::String(text));
        }
    }
    Ok(filled)
}

/// The task the form asks for, checked as the APIs check theirs; `uploads` stand for the
/// chosen files among the references (and the mask).
fn spec_of(
    model: &Model,
    filled: &Filled,
    uploads: &[String],
    mask_upload: Option<String>,
) -> Result<(TaskSpec, Value), ValidationError> {
    let mut body = json!({ "model": model.id });
    for name in ["prompt", "size", "aspect_ratio", "output_format", "quality"] {
        if let Some(v) = filled.text(name) {
            body[name] = json!(v);
        }
    }
    if let Some(n) = filled.text("n") {
        body["n"] = n.parse::<i64>().map_or_else(|_| json!(n), |n| json!(n));
    }
    let f = Fields::of("", &body)?;
    let prompt = prompt(&f, model.limits.max_prompt_chars)?;
    let size = model.family.unified_size(model, &f)?;
    let images = f.int_in("n", 1, i64::from(model.limits.max_images))?.unwrap_or(1) as u32;
    let format = model.format_field(&f, "output_format")?;
    let quality = match model.qualities.is_empty() {
        true => None,
        false => {
            let names: Vec<&str> = ["auto"].into_iter().chain(model.qualities.iter().map(|q| q.as_str())).collect();
            Quality::parse(f.choice("quality", &names, Some("auto"))?)
        }
    };
    let mut references = Vec::new();
    for (i, line) in
        filled.text("image_urls").unwrap_or_default().lines().map(str::trim).filter(|l| !l.is_empty()).enumerate()
    {
        references.push(http_url(&format!("image_urls line {}", i + 1), line)?.to_string());
    }
    references.extend(uploads.iter().cloned());
    if references.len() > model.limits.max_references {
        return invalid(format!("{} takes at most {} reference images", model.id, model.limits.max_references));
    }
    let mask = match (mask_upload, filled.text("mask_url")) {
        (Some(upload), _) => Some(upload),
        (None, Some(url)) => Some(http_url("mask_url", url)?.to_string()),
        (None, None) => None,
    };
    if mask.is_some() && !model.can(Capability::Mask) {
        return invalid(format!("{} takes no mask", model.id));
    }
    if mask.is_some() && references.is_empty() {
        return invalid("a mask needs a reference image to apply to");
    }
    if !references.is_empty() {
        body["image_url"] = json!(references);
    }
    let spec = TaskSpec {
        mask,
        quality,
        transparent_background: model.can(Capability::TransparentBackground)
            && filled.checked("transparent_background"),
        web_search: model.can(Capability::WebSearch) && filled.checked("web_search"),
        sequential: model.can(Capability::Sequential) && filled.checked("sequential"),
        ..TaskSpec::new(model, prompt, images, size, format, references)
    };
    Ok((spec, body))
}

/// The price line: what the task holds at most, and per image.
fn quote_line(t: &Texts, model: &Model, spec: &TaskSpec) -> Markup {
    match model.tariff_for(spec) {
        Ok((_, per_image)) => html! {
            span id="price-value" { (money(per_image.times(spec.images))) }
            " " (t.price_detail.replace("{n}", &spec.images.to_string()).replace("{each}", &money(per_image)))
        },
        Err(e) => html! { span class="error" { (e.to_string()) } },
    }
}

fn model_of<'s>(state: &'s AppState, name: Option<&str>) -> Result<&'s Model, ConsoleError> {
    let models = state.catalog.models();
    match name {
        Some(name) => state.catalog.get(name).ok_or_else(|| bad(format!("no model {name:?} in the catalog"))),
        None => models.first().ok_or(ConsoleError::NotFound),
    }
}

fn select(name: &str, label: &str, options: &[String], chosen: Option<&str>) -> Markup {
    html! {
        label { (label)
            select name=(name) class="priced" {
                @for o in options { option value=(o) selected[chosen == Some(o.as_str())] { (o) } }
            }
        }
    }
}

fn fields_form(state: &AppState, c: &Console, model: &Model, filled: &Filled, problem: Option<&str>) -> Markup {
    let t = c.t;
    let sizes = &model.sizes;
    let (size_options, size_default): (Vec<String>, Option<String>) = if sizes.tiers.is_empty() {
        (sizes.fixed.iter().map(ToString::to_string).collect(), sizes.default_size.map(|s| s.to_string()))
    } else {
        (sizes.tiers.clone(), sizes.default_tier.clone())
    };
    let chosen = |name: &str, default: Option<String>| filled.text(name).map(str::to_owned).or(default);
    let quote = spec_of(model, filled, &[], None).ok();
    html! {
        form method="get" action="/console/playground" class="filters" aria-label=(t.choose_model) {
            label { (t.field_model)
                select name="model" id="model-choice" data-autosubmit {
                    @for m in state.catalog.models() {
                        option value=(m.id) selected[m.id == model.id] { (m.name) " (" (m.id) ")" }
                    }
                }
            }
            noscript { button type="submit" { (t.choose_model) } }
        }
        @if !model.description.is_empty() { p class="hint" { (model.description) } }
        @if let Some(problem) = problem { (layout::notice(problem, true)) }
        form method="post" action="/console/playground" enctype="multipart/form-data" class="stack playground"
            hx-post="/console/playground/quote" hx-trigger="change, input delay:500ms from:#prompt"
            hx-target="#price" hx-swap="innerHTML" hx-encoding="multipart/form-data" {
            (csrf(c))
            input type="hidden" name="model" value=(model.id);
            label for="prompt" { (t.field_prompt) }
            textarea id="prompt" name="prompt" rows="4" required maxlength=(model.limits.max_prompt_chars) {
                (filled.text("prompt").unwrap_or_default())
            }
            div class="row" {
                @if !size_options.is_empty() {
                    (select("size", if sizes.tiers.is_empty() { t.field_size } else { t.field_tier }, &size_options,
                        chosen("size", size_default).as_deref()))
                }
                @if !sizes.tiers.is_empty() && sizes.aspect_ratios.len() > 1 {
                    (select("aspect_ratio", t.field_aspect, &sizes.aspect_ratios,
                        chosen("aspect_ratio", Some(sizes.default_aspect_ratio.clone())).as_deref()))
                }
                label { (t.field_count)
                    input type="number" name="n" class="priced" min="1" max=(model.limits.max_images)
                        value=(filled.text("n").unwrap_or("1"));
                }
                @if !model.qualities.is_empty() {
                    @let q: Vec<String> = ["auto"].into_iter().chain(model.qualities.iter().map(|q| q.as_str())).map(String::from).collect();
                    (select("quality", t.field_quality, &q, chosen("quality", Some("auto".into())).as_deref()))
                }
                @let formats: Vec<String> = model.formats.iter().map(|f| f.extension().to_owned()).collect();
                (select("output_format", t.field_format, &formats, chosen("output_format", Some(model.default_format.extension().into())).as_deref()))
            }
            @for (cap, label) in [(Capability::TransparentBackground, t.field_transparent), (Capability::WebSearch, t.field_web_search), (Capability::Sequential, t.field_sequential)] {
                @if model.can(cap) {
                    label class="check" { input type="checkbox" name=(cap.as_str()) value="on" checked[filled.checked(cap.as_str())]; " " (label) }
                }
            }
            @if model.limits.max_references > 0 {
                fieldset {
                    legend { (t.field_references) " " span class="hint" { (t.references_hint.replace("{max}", &model.limits.max_references.to_string())) } }
                    label { (t.upload_images) input type="file" name="images" accept="image/png,image/jpeg,image/webp,image/gif" multiple; }
                    label { (t.reference_urls) textarea name="image_urls" rows="2" placeholder="https://…" { (filled.text("image_urls").unwrap_or_default()) } }
                    @if model.can(Capability::Mask) {
                        label { (t.upload_mask) input type="file" name="mask" accept="image/png"; }
                        label { (t.mask_url) input type="url" name="mask_url" value=[filled.text("mask_url")]; }
                    }
                }
            }
            p class="price" { (t.price) ": " output id="price" for="prompt" aria-live="polite" {
                @if let Some((spec, _)) = &quote { (quote_line(t, model, spec)) } @else { "—" }
            } }
            button type="submit" id="generate" { (t.generate) }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct PlaygroundQuery {
    model: Option<String>,
}

/// `GET /console/playground?model=…`.
pub async fn page(
    State(state): State<AppState>,
    c: Console,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    c.account()?;
    let q: PlaygroundQuery = forms::query(raw)?;
    let model = model_of(&state, given(&q.model))?;
    let body = fields_form(&state, &c, model, &Filled::default(), None);
    Ok(layout::page(&c, None, c.t.nav_playground, body))
}

fn check_csrf(c: &Console, headers: &HeaderMap, filled: &Filled) -> Result<(), ConsoleError> {
    let header = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    c.session.check_csrf(filled.text(CSRF_FIELD).or(header))
}

/// `POST /console/playground/quote`: the price line for the form as it stands (htmx).
pub async fn quote(
    State(state): State<AppState>,
    c: Console,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ConsoleError> {
    let filled = read(form).await?;
    check_csrf(&c, &headers, &filled)?;
    let model = model_of(&state, filled.text("model"))?;
    let uploads: Vec<String> = filled.images.iter().map(|(name, _)| format!("upload:{name}")).collect();
    let markup = match spec_of(model, &filled, &uploads, None) {
        Ok((spec, _)) => quote_line(c.t, model, &spec),
        Err(e) => html! { span class="error" { (e.0) } },
    };
    Ok(markup.into_response())
}

/// `POST /console/playground`: stores the uploads, creates the task (held and limited like
/// any other) and goes to its page; a refused form comes back with its values and the reason.
pub async fn submit(
    State(state): State<AppState>,
    c: Console,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ConsoleError> {
    let account = c.account()?.clone();
    let filled = read(form).await?;
    check_csrf(&c, &headers, &filled)?;
    let model = model_of(&state, filled.text("model"))?;
    let refused = |problem: String| {
        let mut page =
            layout::page(&c, None, c.t.nav_playground, fields_form(&state, &c, model, &filled, Some(&problem)));
        *page.status_mut() = StatusCode::BAD_REQUEST;
        page
    };
    let batch = random_hex::<12>();
    let mut files = Vec::new();
    for (name, bytes) in &filled.images {
        match Upload::check(&batch, name, bytes.clone()) {
            Ok(u) => files.push(u),
            Err(e) => return Ok(refused(e.to_string())),
        }
    }
    let mask = match &filled.mask {
        Some(bytes) => match Upload::check(&batch, "mask", bytes.clone()) {
            Ok(u) => Some(u),
            Err(e) => return Ok(refused(e.to_string())),
        },
        None => None,
    };
    let references: Vec<String> = files.iter().map(Upload::reference).collect();
    let (spec, body) = match spec_of(model, &filled, &references, mask.as_ref().map(Upload::reference)) {
        Ok(parsed) => parsed,
        Err(e) => return Ok(refused(e.0)),
    };
    let creation = Creation { dialect: Dialect::Unified, model, spec, routing: Routing::Auto, callback_url: None };
    let new = match state.new_task(&account, &HeaderMap::new(), creation, body.to_string()) {
        Ok(new) => new,
        Err(e) => return Ok(refused(e.to_string())),
    };
    let stored = uploads::store(&state, files.into_iter().chain(mask).collect()).await?;
    match state.create_claimed(&new, model, None).await {
        Ok(id) => Ok(Redirect::to(&format!("/console/tasks/{id}")).into_response()),
        Err(e) => {
            uploads::discard(&state, &stored).await;
            match e {
                ApiError::InsufficientCredits => Ok(refused(c.t.err_insufficient_credits.into())),
                ApiError::Internal(_) | ApiError::Unavailable { .. } => Err(ConsoleError::Api(e)),
                other => Ok(refused(other.to_string())),
            }
        }
    }
}
