//! An OpenAI-compatible Images API under `/v1`, so that OpenAI SDKs work by changing
//! `base_url`. Each request becomes a normal task (billed and limited like any other) that the
//! handler waits for, then answers in OpenAI's shape.

use std::time::Duration;

use axum::Json;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::{IntoResponses, ToSchema};

use super::AppState;
use super::create::Creation;
use super::error::{ApiError, render_error};
use super::extract::{Caller, JsonBody};
use super::openai_stream::{self, Operation};
use super::openapi::examples;
use super::openapi::schemas::{ImageEditForm, ImageGenerationRequest, ImageStreamMessage, OpenAiCreateHeaders};
use super::sdk_retry::{self, Origin};
use super::uploads::{self, MAX_UPLOAD_BYTES, Upload};
use crate::catalog::fields::{Checked, Fields, invalid, prompt};
use crate::catalog::{Api, Capability, Model, OutputFormat, Quality, Routing, TaskSpec, ValidationError};
use crate::db::now_ms;
use crate::ids::{TaskId, random_hex};
use crate::listener::body::timed_out;
use crate::tasks::idempotency::Idempotency;
use crate::tasks::{Dialect, FailCode, Task, TaskState};

/// Largest multipart body of an edit: up to 16 images of 10 MiB would be more than any client
/// sends; 64 MB bounds memory.
pub const MAX_EDIT_BYTES: usize = 64 * 1024 * 1024;
/// Most images of one edit.
const MAX_IMAGES: usize = 16;
/// How long the rest of a refused edit's body is read and thrown away before the 413.
const DRAIN_FOR: Duration = Duration::from_secs(2);
/// Largest text field of an edit form, as large as a whole JSON body elsewhere.
const MAX_FORM_FIELD_BYTES: usize = super::MAX_BODY_BYTES;

/// OpenAI's error body.
#[derive(Serialize, ToSchema)]
#[schema(as = OpenAiError)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
#[schema(as = OpenAiErrorDetail)]
pub struct ErrorDetail {
    message: String,
    /// `invalid_request_error`, `insufficient_quota`, `requests`, `image_generation_user_error` or
    /// `server_error`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    r#type: &'static str,
    param: Option<String>,
    /// `invalid_api_key`, `insufficient_quota`, `rate_limit_exceeded`, `moderation_blocked`,
    /// `timeout` or null.
    #[schema(value_type = Option<String>)]
    code: Option<&'static str>,
}

/// What every OpenAI-compatible route may also answer.
#[derive(IntoResponses)]
pub enum OpenAiAuthErrors {
    /// Missing, malformed or revoked API key (`invalid_api_key`)
    #[response(status = 401)]
    Unauthorized(ErrorBody),
}

/// What the image routes answer besides images: each request is a task, and its end decides.
#[derive(IntoResponses)]
pub enum ImageErrors {
    /// Invalid parameters; or the task failed on the prompt (`moderation_blocked`) or on a
    /// reference image, and `x-easel-task-id` names it
    #[response(status = 400, headers(("x-easel-task-id" = String, description = "The failed task, if one was created")))]
    BadRequest(ErrorBody),
    /// A request with this `Idempotency-Key` is still creating its task
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// This `Idempotency-Key` was already used with a different request
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// Too many task creations per minute or unfinished tasks (`rate_limit_exceeded`, with
    /// `Retry-After`), or insufficient credits (`insufficient_quota`)
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait, when rate limited")))]
    TooMany(ErrorBody),
    /// Internal error, or the task failed upstream (`x-easel-task-id` names it)
    #[response(status = 500, headers(("x-easel-task-id" = String, description = "The failed task, if one was created")))]
    Failed(ErrorBody),
    /// The task outlived the server's wait; it goes on, and `x-easel-task-id` names it for
    /// `GET /api/v1/statusTask/{model}`
    #[response(status = 504, example = json!(examples::openai_timeout()),
        headers(("x-easel-task-id" = String, description = "The task, still running")))]
    Timeout(ErrorBody),
}

/// OpenAI's images answer.
#[derive(Serialize, ToSchema)]
#[schema(example = json!(examples::openai_images()))]
pub struct ImagesResponse {
    /// When the task ended, in Unix seconds.
    created: i64,
    data: Vec<Image>,
    #[schema(value_type = String, example = "opaque")]
    background: &'static str,
    /// `png`, `jpeg` or `webp`.
    #[schema(value_type = String)]
    output_format: &'static str,
    /// `WIDTHxHEIGHT`.
    size: String,
    #[schema(value_type = String, example = "auto")]
    quality: &'static str,
    /// Easel bills per image and measures no tokens: all counts are 0.
    usage: Usage,
}

/// One image, as `response_format` asked: base64 PNG/JPEG/WebP bytes or a signed link.
#[derive(Serialize, ToSchema)]
pub struct Image {
    #[serde(skip_serializing_if = "Option::is_none")]
    b64_json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

#[derive(Serialize, ToSchema, Default)]
pub struct Usage {
    input_tokens: u64,
    input_tokens_details: TokenDetails,
    output_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize, ToSchema, Default)]
pub struct TokenDetails {
    image_tokens: u64,
    text_tokens: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    #[schema(value_type = String, example = "list")]
    object: &'static str,
    data: Vec<ModelEntry>,
}

/// A model in OpenAI's shape.
#[derive(Serialize, ToSchema)]
#[schema(as = OpenAiModel)]
pub struct ModelEntry {
    #[schema(example = "gpt-image-1")]
    id: String,
    #[schema(value_type = String, example = "model")]
    object: &'static str,
    created: i64,
    /// The maker of the model's family.
    #[schema(value_type = String, example = "openai")]
    owned_by: &'static str,
}

/// Statuses and codes as OpenAI's API uses them (a short balance is its 429 `insufficient_quota`).
fn openai_error(error: &ApiError) -> (StatusCode, ErrorBody) {
    let (status, r#type, code) = match error {
        ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "invalid_request_error", Some("invalid_api_key")),
        ApiError::InsufficientCredits => {
            (StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", Some("insufficient_quota"))
        }
        ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "requests", Some("rate_limit_exceeded")),
        ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("service_unavailable")),
        ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        other => (other.status(), "invalid_request_error", None),
    };
    let body = ErrorDetail { message: error.to_string(), r#type, param: None, code };
    (status, ErrorBody { error: body })
}

pub async fn envelope(response: Response) -> Response {
    render_error(response, openai_error)
}

/// A finished task that did not succeed, or one that outlived the wait, in OpenAI's words.
fn task_error(task: &Task) -> Response {
    let (status, r#type, code, message) = failure(task);
    let body = ErrorBody { error: ErrorDetail { message, r#type, param: None, code } };
    let mut response = axum::response::IntoResponse::into_response((status, Json(body)));
    if let Ok(value) = task.id.as_str().parse() {
        response.headers_mut().insert("x-easel-task-id", value);
    }
    response
}

/// OpenAI's error `type`, `code` and message for a task that did not succeed (in a stream).
pub(super) fn failure_detail(task: &Task) -> (&'static str, Option<&'static str>, String) {
    let (_, r#type, code, message) = failure(task);
    (r#type, code, message)
}

fn failure(task: &Task) -> (StatusCode, &'static str, Option<&'static str>, String) {
    match task.fail_code.as_deref() {
        _ if !task.state.is_terminal() => (
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            Some("timeout"),
            format!("the image is not ready yet; poll task {} on /api/v1/statusTask/{}", task.id, task.model),
        ),
        Some(c) if c == FailCode::ContentViolation.as_str() => (
            StatusCode::BAD_REQUEST,
            "image_generation_user_error",
            Some("moderation_blocked"),
            task.fail_msg.clone().unwrap_or_default(),
        ),
        Some(c) if c == FailCode::InvalidImageUrl.as_str() => {
            (StatusCode::BAD_REQUEST, "invalid_request_error", None, task.fail_msg.clone().unwrap_or_default())
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, task.fail_msg.clone().unwrap_or_default()),
    }
}

/// The settings OpenAI's answers repeat beside the images: background, format, size, quality.
struct Settings {
    background: &'static str,
    output_format: &'static str,
    size: String,
    quality: &'static str,
}

fn settings(task: &Task) -> Settings {
    Settings {
        background: if task.spec.transparent_background { "transparent" } else { "opaque" },
        output_format: task.spec.output_format.extension(),
        size: task.spec.size.to_string(),
        quality: task.spec.quality.unwrap_or(Quality::Auto).as_str(),
    }
}

/// [`Settings`] as the fields of a streamed image event.
pub(super) fn image_settings(task: &Task) -> Value {
    let s = settings(task);
    json!({"background": s.background, "output_format": s.output_format, "size": s.size, "quality": s.quality})
}

/// What the client asked for.
struct ImageRequest<'c> {
    model: &'c Model,
    spec: TaskSpec,
    /// Answer with `b64_json` (GPT image models' only form at OpenAI) rather than a `url`.
    b64: bool,
    /// Answer as a stream of events (`stream: true`), with `spec.partial_images` previews.
    stream: bool,
}

/// OpenAI's most images per request.
const MAX_N: u32 = 10;
/// OpenAI's most previews of a streamed answer.
const MAX_PARTIAL_IMAGES: i64 = 3;

/// The fields generations and edits share, from a JSON object (edits' form fields are turned
/// into one first).
fn parse_request<'c>(
    state: &'c AppState,
    body: &Value,
    references: Vec<String>,
    mask: Option<String>,
) -> Checked<ImageRequest<'c>> {
    let f = Fields::of("", body)?;
    let model = match f.str("model")? {
        Some(id) => state.catalog.offered(id, Api::Openai),
        None => state.catalog.openai_default(),
    };
    let model = model.ok_or_else(|| {
        let id = f.str("model").ok().flatten().unwrap_or_default();
        ValidationError(format!("The model `{id}` does not exist; GET /v1/models lists them"))
    })?;
    let prompt = prompt(&f, model.limits.max_prompt_chars)?;
    let images = f.int_in("n", 1, i64::from(MAX_N.min(model.limits.max_images)))?.unwrap_or(1) as u32;
    let size = model.family.openai_size(model, f.str("size")?)?;
    // OpenAI's older names for quality levels (DALL·E's) are taken as the nearest level.
    let quality = match f.choice("quality", &["auto", "low", "medium", "high", "standard", "hd"], Some("auto"))? {
        "standard" => Quality::Medium,
        "hd" => Quality::High,
        other => Quality::parse(other).expect("listed qualities parse"),
    };
    // A model without quality levels renders at its one quality, whatever is asked.
    let quality = Some(quality).filter(|q| *q != Quality::Auto && model.qualities.contains(q));
    let output_format = match f.str("output_format")? {
        // OpenAI's SDKs also spell it `jpg`.
        Some("jpg") if model.formats.contains(&OutputFormat::Jpeg) => OutputFormat::Jpeg,
        _ => model.format_field(&f, "output_format")?,
    };
    let transparent_background = match f.choice("background", &["auto", "opaque", "transparent"], Some("auto"))? {
        "transparent" if !model.can(Capability::TransparentBackground) => {
            return invalid(format!("background transparent is not supported by {}", model.id));
        }
        "transparent" if output_format == OutputFormat::Jpeg => {
            return invalid("background transparent needs output_format png or webp");
        }
        chosen => chosen == "transparent",
    };
    if references.len() > model.limits.max_references {
        return invalid(format!("at most {} images may be sent to {}", model.limits.max_references, model.id));
    }
    if mask.is_some() && !model.can(Capability::Mask) {
        return invalid(format!("mask is not supported by {}", model.id));
    }
    let b64 = match f.str("response_format")? {
        None => model.family.answers_in_base64(),
        Some("b64_json") => true,
        Some("url") => false,
        Some(_) => return invalid("response_format must be url or b64_json"),
    };
    let stream = f.bool("stream")?.unwrap_or(false);
    let partial_images = f.int_in("partial_images", 0, MAX_PARTIAL_IMAGES)?.unwrap_or(0) as u32;
    let spec = TaskSpec {
        mask,
        quality,
        transparent_background,
        // Previews only go to a client that streams.
        partial_images: if stream { partial_images } else { 0 },
        ..TaskSpec::new(model, prompt, images, size, output_format, references)
    };
    Ok(ImageRequest { model, spec, b64, stream })
}

/// Submits the request as a task (billed and limited like any other), recorded under `key`.
async fn create(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: ImageRequest<'_>,
    param: String,
    key: Option<&Idempotency>,
) -> Result<TaskId, ApiError> {
    let model = request.model;
    let creation =
        Creation { dialect: Dialect::OpenAi, model, spec: request.spec, routing: Routing::Auto, callback_url: None };
    let new = state.new_task(&caller.0.account_id, headers, creation, param)?;
    state.create_claimed(&new, model, key).await
}

/// Waits for the task to end and answers with its images, or OpenAI's error for its failure.
/// `x-easel-task-id` names the task, and `idempotent-replayed: true` says that an earlier
/// request created it (an `Idempotency-Key` replay or an SDK retry).
async fn answer(
    state: &AppState,
    caller: &Caller,
    id: &TaskId,
    form: Answer,
    earlier: bool,
) -> Result<Response, ApiError> {
    let mut response = match form {
        Answer::Stream(op) => openai_stream::respond(state, &caller.0.account_id, id, op).await?,
        Answer::Images { b64 } => images(state, caller, id, b64).await?,
    };
    let headers = response.headers_mut();
    if let Ok(value) = id.as_str().parse() {
        headers.insert("x-easel-task-id", value);
    }
    if earlier {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// How the images are answered.
#[derive(Clone, Copy)]
enum Answer {
    /// One JSON body once the task ends, with base64 bytes or links.
    Images {
        b64: bool,
    },
    Stream(Operation),
}

impl ImageRequest<'_> {
    fn answer(&self, op: Operation) -> Answer {
        if self.stream { Answer::Stream(op) } else { Answer::Images { b64: self.b64 } }
    }
}

async fn images(state: &AppState, caller: &Caller, id: &TaskId, b64: bool) -> Result<Response, ApiError> {
    let wait = Duration::from_secs(state.config.server.openai_wait_secs);
    let task = state.wait_for_end(id, &caller.0.account_id, wait).await?;
    if task.state != TaskState::Success {
        return Ok(task_error(&task));
    }
    let mut data = Vec::with_capacity(task.result_keys.len());
    if b64 {
        for key in &task.result_keys {
            let bytes = state.storage.read(key).await.map_err(ApiError::internal)?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            data.push(Image { b64_json: Some(b64), url: None });
        }
    } else {
        data.extend(state.result_urls(&task).into_iter().map(|url| Image { b64_json: None, url: Some(url) }));
    }
    let Settings { background, output_format, size, quality } = settings(&task);
    let body = ImagesResponse {
        created: task.completed_at.unwrap_or_else(now_ms) / 1000,
        data,
        background,
        output_format,
        size,
        quality,
        usage: Usage::default(),
    };
    Ok(axum::response::IntoResponse::into_response(Json(body)))
}

/// Create images (OpenAI's `images.generate`).
///
/// The request becomes a task, billed and limited like any other, and the answer waits for it.
#[utoipa::path(
    post,
    path = "/v1/images/generations",
    operation_id = "createImage",
    tag = "OpenAI-compatible",
    params(OpenAiCreateHeaders),
    request_body(content = ImageGenerationRequest, examples(
        ("gpt-image-1" = (value = json!(examples::openai_generation()))),
        ("seedream-5-0, as a link" = (value = json!(examples::openai_generation_seedream()))),
    )),
    responses(
        (status = 200, description = "The images; with `stream`, OpenAI's image events",
            content((ImagesResponse = "application/json"), (ImageStreamMessage = "text/event-stream")), headers(
            ("x-easel-task-id" = String, description = "The task that made them"),
            ("idempotent-replayed" = String, description = "`true` when an earlier request made the task: \
                a replay of its Idempotency-Key, or a retry of the same SDK call"),
        )),
        (status = 413, description = "The body is larger than 1 MiB", body = ErrorBody),
        ImageErrors,
        OpenAiAuthErrors,
    ),
)]
#[tracing::instrument(skip_all, fields(account = %caller.0.account_id))]
pub async fn generations(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = parse_request(&state, &body, Vec::new(), None)?;
    let form = request.answer(Operation::Generation);
    let id = match sdk_retry::origin(&state, &caller.0, &headers, "openai/images/generations", &body).await? {
        Origin::Earlier(id) => return answer(&state, &caller, &id, form, true).await,
        Origin::New(key) => create(&state, &caller, &headers, request, body.to_string(), key.as_ref()).await?,
    };
    answer(&state, &caller, &id, form, false).await
}

/// An edit's parts, each read only up to its limit.
struct EditForm {
    images: Vec<Upload>,
    mask: Option<Upload>,
    fields: serde_json::Map<String, Value>,
}

async fn read_form(form: &mut Multipart, batch: &str) -> Result<EditForm, ApiError> {
    let (mut images, mut mask, mut fields) = (Vec::new(), None, serde_json::Map::new());
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "image" | "image[]" => {
                if images.len() == MAX_IMAGES {
                    return Err(ApiError::BadRequest(format!("at most {MAX_IMAGES} images may be sent")));
                }
                let label = format!("image{}", images.len());
                let bytes = read_part(&mut field, &label, MAX_UPLOAD_BYTES).await?;
                images.push(Upload::check(batch, &label, bytes)?);
            }
            "mask" => {
                let bytes = read_part(&mut field, "mask", MAX_UPLOAD_BYTES).await?;
                mask = Some(Upload::check(batch, "mask", bytes)?);
            }
            _ => {
                let bytes = read_part(&mut field, &name, MAX_FORM_FIELD_BYTES).await?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| ApiError::BadRequest(format!("the form field {name} is not UTF-8 text")))?;
                // Form fields are text; numbers and flags are numbers and flags in the JSON this
                // becomes.
                let value = match (name.as_str(), text.as_str()) {
                    ("n" | "partial_images", _) if text.parse::<i64>().is_ok() => {
                        Value::from(text.parse::<i64>().unwrap_or(0))
                    }
                    ("stream", "true") => Value::Bool(true),
                    ("stream", "false") => Value::Bool(false),
                    _ => Value::String(text),
                };
                fields.insert(name, value);
            }
        }
    }
    Ok(EditForm { images, mask, fields })
}

/// Reads one part, refusing it as soon as it passes `limit` instead of after buffering it all.
async fn read_part(field: &mut Field<'_>, name: &str, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!("{name} is larger than {}", megabytes(limit))));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Reads the rest of a form, discarding it, until it ends or fails.
async fn drain(form: &mut Multipart) {
    while let Ok(Some(mut field)) = form.next_field().await {
        while let Ok(Some(_)) = field.chunk().await {}
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("the request body is larger than {}", megabytes(MAX_EDIT_BYTES)))
    } else if timed_out(&e) {
        ApiError::RequestTimeout
    } else {
        ApiError::BadRequest(format!("bad multipart body: {e}"))
    }
}

/// A limit as the messages name it (the limits are whole MiB).
fn megabytes(bytes: usize) -> String {
    format!("{} MiB", bytes >> 20)
}

/// Edit images (OpenAI's `images.edit`).
///
/// Multipart: `image` (or `image[]`) files, an optional `mask`, and the generation fields as
/// form fields. The uploads become the task's reference images.
#[utoipa::path(
    post,
    path = "/v1/images/edits",
    operation_id = "createImageEdit",
    tag = "OpenAI-compatible",
    params(OpenAiCreateHeaders),
    request_body(content = ImageEditForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The images; with `stream`, OpenAI's image events",
            content((ImagesResponse = "application/json"), (ImageStreamMessage = "text/event-stream")), headers(
            ("x-easel-task-id" = String, description = "The task that made them"),
            ("idempotent-replayed" = String, description = "`true` when an earlier request made the task"),
        )),
        (status = 413, description = "An image is larger than 10 MiB, or the body larger than 64 MiB", body = ErrorBody),
        ImageErrors,
        OpenAiAuthErrors,
    ),
)]
#[tracing::instrument(skip_all, fields(account = %caller.0.account_id))]
pub async fn edits(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut form = form.map_err(|e| ApiError::BadRequest(format!("bad multipart body: {}", e.body_text())))?;
    let batch = random_hex::<12>();
    let read = read_form(&mut form, &batch).await;
    if read.as_ref().is_err_and(|e| !matches!(e, ApiError::RequestTimeout)) {
        // Reads (without keeping) what the client may still be sending, so that it reads the
        // refusal rather than a reset connection; a client slow to finish is not waited for.
        let _ = tokio::time::timeout(DRAIN_FOR, drain(&mut form)).await;
    }
    let EditForm { images, mask, fields } = read?;
    if images.is_empty() {
        return Err(ApiError::BadRequest("image is required: send one or more image files".into()));
    }
    // Everything is checked before anything is stored, and a task that is refused (credits,
    // limits) takes its uploads with it: a bad request leaves nothing behind. A replay or an SDK
    // retry stores nothing: the task it joins has its uploads.
    let body = Value::Object(fields);
    let references = images.iter().map(Upload::reference).collect();
    let request = parse_request(&state, &body, references, mask.as_ref().map(Upload::reference))?;
    let form = request.answer(Operation::Edit);
    // The multipart boundary differs between attempts; the fields and the files' bytes do not.
    let identity = json!({
        "fields": body,
        "images": images.iter().map(|u| &u.digest).collect::<Vec<_>>(),
        "mask": mask.as_ref().map(|u| &u.digest),
    });
    let key = match sdk_retry::origin(&state, &caller.0, &headers, "openai/images/edits", &identity).await? {
        Origin::Earlier(id) => return answer(&state, &caller, &id, form, true).await,
        Origin::New(key) => key,
    };
    let stored = match uploads::store(&state, images.into_iter().chain(mask).collect()).await {
        Ok(stored) => stored,
        Err(e) => {
            if let Some(key) = &key {
                state.free_key(&caller.0.account_id, key).await;
            }
            return Err(e);
        }
    };
    let id = match create(&state, &caller, &headers, request, body.to_string(), key.as_ref()).await {
        Ok(id) => id,
        Err(refused) => {
            uploads::discard(&state, &stored).await;
            return Err(refused);
        }
    };
    answer(&state, &caller, &id, form, false).await
}

fn model_entry(model: &Model) -> ModelEntry {
    ModelEntry { id: model.id.clone(), object: "model", created: 0, owned_by: model.family.vendor() }
}

/// List the models.
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "listModels",
    tag = "OpenAI-compatible",
    responses(
        (status = 200, description = "The models offered on this API", body = ModelList),
        (status = 500, description = "Internal error", body = ErrorBody),
        OpenAiAuthErrors,
    ),
)]
pub async fn models(State(state): State<AppState>, _: Caller) -> Json<ModelList> {
    let data = state.catalog.in_api(Api::Openai).map(model_entry).collect();
    Json(ModelList { object: "list", data })
}

/// Retrieve a model (OpenAI's `models.retrieve`), by its id or an alias.
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    operation_id = "retrieveModel",
    tag = "OpenAI-compatible",
    params(("model" = String, Path, description = "A model's id or alias", example = "gpt-image-1")),
    responses(
        (status = 200, description = "The model", body = ModelEntry),
        (status = 404, description = "No such model on this API", body = ErrorBody),
        OpenAiAuthErrors,
    ),
)]
pub async fn model(
    State(state): State<AppState>,
    _: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<ModelEntry>, ApiError> {
    let model = state
        .catalog
        .offered(&id, Api::Openai)
        .ok_or_else(|| ApiError::NotFound(format!("The model `{id}` does not exist; GET /v1/models lists them")))?;
    Ok(Json(model_entry(model)))
}
