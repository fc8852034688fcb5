//! Schema-only types: the request bodies that the handlers read field by field (`catalog::fields`
//! names the field at fault, which serde could not) and the error bodies the dialect layers write.
//! Nothing builds or parses them; they tell OpenAPI what the parsers accept. Where the parsers'
//! rules cannot be said in JSON Schema (pixel bounds, reachable URLs), the descriptions say them.
// Their fields are read by the OpenAPI derive only.
#![allow(dead_code)]

use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, Ref, RefOr};
use utoipa::{IntoParams, IntoResponses, PartialSchema, ToSchema};

use crate::api::apixo::{TaskCreated, TaskStatus};
use crate::api::unified::{Created as UnifiedCreated, Status as UnifiedStatus};

const URL_PATTERN: &str = "^https?://";

pub(super) fn null() -> Schema {
    ObjectBuilder::new().schema_type(Type::Null).into()
}

pub(super) fn url() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uri".into())))
        .max_length(Some(2048))
        .pattern(Some(URL_PATTERN))
}

pub(super) fn url_list(max: usize) -> ArrayBuilder {
    ArrayBuilder::new().items(url()).max_items(Some(max))
}

/// An optional field: the parsers take `null` for not given.
pub(super) fn or_null(schema: impl Into<RefOr<Schema>>) -> OneOfBuilder {
    OneOfBuilder::new().item(schema).item(null())
}

pub(super) fn optional_url() -> OneOfBuilder {
    or_null(url())
}

/// The error body of the APIXO routes (seeds 000-002) and of Easel's own routes.
#[derive(ToSchema)]
#[schema(example = json!({"code": 400, "message": "Insufficient credits", "data": null}))]
pub struct ApixoError {
    /// The HTTP status, repeated.
    code: u16,
    /// What went wrong, naming the field at fault.
    message: String,
    #[schema(schema_with = null)]
    data: (),
}

/// The error body of the unified API (seed 003).
#[derive(ToSchema)]
#[schema(example = json!({"code": 402, "msg": "Insufficient credits", "data": null}))]
pub struct UnifiedError {
    /// The HTTP status, repeated.
    code: u16,
    msg: String,
    #[schema(schema_with = null)]
    data: (),
}

/// The headers of the create routes (`generateTask` and the unified API's).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct CreateHeaders {
    /// 1 to 255 visible ASCII characters: a retry with the same key and body within 24 hours
    /// answers with the same task, and holds no more credits.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    idempotency_key: Option<String>,
    /// `wait=N`: answer when the task ends or after N seconds (at most 60), with its status.
    #[param(rename = "Prefer", example = "wait=30")]
    prefer: Option<String>,
    /// A duration (`90s`, `5m`, `1h30m`, or seconds) from 1 second to 7 days: a task not
    /// finished by then is cancelled, keeping and charging only the images already stored.
    #[param(rename = "Cancel-After", example = "5m")]
    cancel_after: Option<String>,
    /// Which events the callback URL hears, comma-separated: `started`, `progress`,
    /// `completed` (the final state, the only one by default). Each is a signed delivery of
    /// its own, retried like the final one, with an `easel-event` header naming the event; a
    /// `started` or `progress` body is the task's status while it runs.
    #[param(rename = "Callback-Events", example = "started, completed")]
    callback_events: Option<String>,
}

/// The headers of the OpenAI-compatible create routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct OpenAiCreateHeaders {
    /// 1 to 255 visible ASCII characters: a retry with the same key and request within 24 hours
    /// answers with the same task (waiting for it again), and holds no more credits.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    idempotency_key: Option<String>,
    /// Sent by the official OpenAI SDKs: 0 on a call's first attempt, N on its N-th retry. A
    /// retry joins the task of its call's first attempt instead of creating another. A hint, so
    /// a value that is not a count is ignored rather than refused.
    #[param(rename = "X-Stainless-Retry-Count", example = "1")]
    retry_count: Option<String>,
    /// A duration (`90s`, `5m`, `1h30m`, or seconds) from 1 second to 7 days: a task not
    /// finished by then is cancelled and answered as failed.
    #[param(rename = "Cancel-After", example = "5m")]
    cancel_after: Option<String>,
}

/// A task's id or, when the create request was held with `Prefer: wait`, its status (which
/// has the id too: `anyOf`, not `oneOf`).
fn id_or_status<Id: ToSchema, Status: ToSchema>() -> AnyOfBuilder {
    AnyOfBuilder::new().item(Ref::from_schema_name(Id::name())).item(Ref::from_schema_name(Status::name()))
}

/// The answer of `generateTask`, in the envelope of seeds 000-002.
#[derive(ToSchema)]
pub struct TaskSubmitted {
    code: u16,
    message: String,
    #[schema(schema_with = id_or_status::<TaskCreated, TaskStatus>)]
    data: (),
}

/// The answer of a unified create request, in the envelope of seed 003.
#[derive(ToSchema)]
pub struct UnifiedSubmitted {
    code: u16,
    msg: String,
    #[schema(schema_with = id_or_status::<UnifiedCreated, UnifiedStatus>)]
    data: (),
}

/// A schema the catalog fills in at start-up (`openapi::catalog`): here only its type.
macro_rules! from_the_catalog {
    ($(#[$doc:meta])* $name:ident, $ty:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new().schema_type($ty).into()
            }
        }

        impl ToSchema for $name {}
    };
}

from_the_catalog!(
    /// A model of the APIXO task API: `{model}` in `generateTask/{model}`.
    ApixoModel,
    Type::String
);
from_the_catalog!(
    /// A model of Easel's catalog, by id or alias.
    CatalogModel,
    Type::String
);

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum RequestType {
    Async,
    Callback,
}

/// Which tier of upstream channels may serve the task.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Provider {
    Auto,
    Value,
    Official,
}

/// A task request (seeds 000-002). Fields that are `null` count as not given; others are ignored.
#[derive(ToSchema)]
pub struct GenerateTaskRequest {
    /// `async` (poll `statusTask`) or `callback` (Easel POSTs the result to `callback_url`).
    /// Default `async`.
    request_type: Option<RequestType>,
    /// Required when `request_type` is `callback`: an https URL (http only where the server allows
    /// private networks) that is not a private, loopback or link-local address.
    #[schema(schema_with = optional_url)]
    callback_url: Option<String>,
    /// Default `auto`.
    provider: Option<Provider>,
    input: TaskInput,
}

from_the_catalog!(
    /// The model's `input`: one schema per model of the APIXO API.
    TaskInput,
    Type::Object
);
from_the_catalog!(
    /// A request of the unified API (seed 003): one schema per model.
    UnifiedRequest,
    Type::Object
);

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Quality {
    Auto,
    Low,
    Medium,
    High,
    Standard,
    Hd,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Background {
    Auto,
    Opaque,
    Transparent,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum OpenAiOutputFormat {
    Png,
    Jpeg,
    Jpg,
    /// GPT image models only; lossless.
    Webp,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ResponseFormat {
    Url,
    B64Json,
}

/// OpenAI's image generation request. Fields Easel has no use for (`moderation`, `style`, `user`,
/// …) are accepted and ignored. `GET /api/v1/models` tells each model's sizes, formats and
/// qualities.
#[derive(ToSchema)]
pub struct ImageGenerationRequest {
    /// Default `gpt-image-1`; `GET /v1/models` lists them.
    model: Option<CatalogModel>,
    /// At most 32000 characters for gpt-image-1, 5000 for the Seedream models.
    #[schema(min_length = 1, max_length = 32000, pattern = r"\S")]
    prompt: String,
    /// Default 1.
    #[schema(minimum = 1, maximum = 10)]
    n: Option<u32>,
    /// GPT image models: one of their listed sizes (gpt-image-1: `1024x1024`, `1536x1024`,
    /// `1024x1536`) or `auto`, and for models with bounds any `WIDTHxHEIGHT` within them.
    /// Seedream: `auto` (the default tier, square), a tier (`2K`…) or `WIDTHxHEIGHT`.
    #[schema(example = "1024x1024")]
    size: Option<String>,
    /// For models with quality levels: `auto` (the model chooses; the dearest is held and what
    /// it rendered is charged) or a level; `standard` and `hd` are taken as `medium` and `high`.
    /// Other models render at their one quality.
    quality: Option<Quality>,
    /// `transparent` for models that can (PNG or WebP output); default `auto`.
    background: Option<Background>,
    /// Default `png` for gpt-image-1, `jpeg` for the Seedream models; `webp` (lossless) for
    /// gpt-image-1 only.
    output_format: Option<OpenAiOutputFormat>,
    /// Default `b64_json` for gpt-image-1 (its only form at OpenAI), `url` for the Seedream models.
    response_format: Option<ResponseFormat>,
    /// `true`: answer with `text/event-stream`, OpenAI's image events (`ImageStreamEvent`):
    /// the previews, then one `image_generation.completed` event per image.
    stream: Option<bool>,
    /// With `stream`: how many previews to send before the image (0-3), where the model's
    /// provider makes them; others send the completed event alone.
    #[schema(minimum = 0, maximum = 3)]
    partial_images: Option<u32>,
}

/// OpenAI's image edit request, as multipart form data: the fields of a generation request as
/// text parts (no `null` here: a part's text is taken as it is), and the images as files.
#[derive(ToSchema)]
pub struct ImageEditForm {
    /// The images to edit: PNG, JPEG, WebP or GIF, at most 10 MB each and 16 in all; repeat the
    /// part for several (`image[]` is accepted too).
    #[schema(schema_with = image_files)]
    image: Vec<Vec<u8>>,
    /// A PNG mask for the first image.
    #[schema(value_type = String, format = Binary, required = false)]
    mask: Vec<u8>,
    #[schema(required = false)]
    model: CatalogModel,
    #[schema(min_length = 1, max_length = 32000, pattern = r"\S")]
    prompt: String,
    #[schema(minimum = 1, maximum = 10, required = false)]
    n: u32,
    #[schema(example = "1024x1024", required = false)]
    size: String,
    #[schema(required = false)]
    quality: Quality,
    #[schema(required = false)]
    background: Background,
    #[schema(required = false)]
    output_format: OpenAiOutputFormat,
    #[schema(required = false)]
    response_format: ResponseFormat,
    /// `true`: answer with `text/event-stream` (`image_edit.partial_image`, `image_edit.completed`).
    #[schema(required = false)]
    stream: bool,
    #[schema(minimum = 0, maximum = 3, required = false)]
    partial_images: u32,
}

fn image_files() -> ArrayBuilder {
    let file =
        ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)));
    ArrayBuilder::new().items(file).min_items(Some(1)).max_items(Some(16))
}

/// `POST /admin/v1/accounts`.
#[derive(ToSchema)]
pub struct CreateAccountRequest {
    /// Unique; 1 to 64 characters once trimmed.
    #[schema(min_length = 1, max_length = 64, pattern = r"\S")]
    name: String,
    /// Opening credits in USD; default 0.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    credits: Option<f64>,
}

/// `POST /admin/v1/accounts/{id}/credits`.
#[derive(ToSchema)]
pub struct AddCreditsRequest {
    /// USD to add: at least one micro-dollar.
    #[schema(minimum = 0.000001, maximum = 1_000_000_000)]
    amount: f64,
}

/// `PUT /admin/v1/accounts/{id}/limits`: the account's own limits for one model; a limit left
/// out keeps the model's default.
#[derive(ToSchema)]
pub struct SetLimitsRequest {
    model: CatalogModel,
    /// Task creations per minute.
    #[schema(minimum = 0, maximum = 1_000_000)]
    rpm: Option<u32>,
    /// Unfinished tasks at once.
    #[schema(minimum = 0, maximum = 1_000_000)]
    concurrency: Option<u32>,
}

/// `PUT /admin/v1/channels/{id}`.
#[derive(ToSchema)]
pub struct SetChannelRequest {
    /// `false` switches the channel off (it takes no new task), `true` on again.
    enabled: bool,
}

/// What any route behind an API key may also answer, in the APIXO envelope.
#[derive(IntoResponses)]
pub enum ApixoAuthErrors {
    /// Missing, malformed or revoked API key
    #[response(status = 401)]
    Unauthorized(ApixoError),
    /// Internal error (the details are in the server's log)
    #[response(status = 500)]
    Internal(ApixoError),
}

/// What any route of the unified API may also answer.
#[derive(IntoResponses)]
pub enum UnifiedAuthErrors {
    /// Missing, malformed or revoked API key
    #[response(status = 401)]
    Unauthorized(UnifiedError),
    /// Internal error (the details are in the server's log)
    #[response(status = 500)]
    Internal(UnifiedError),
}

/// What any operator route may also answer.
#[derive(IntoResponses)]
pub enum AdminAuthErrors {
    /// Missing or wrong admin token
    #[response(status = 401)]
    Unauthorized(ApixoError),
    /// Internal error (the details are in the server's log)
    #[response(status = 500)]
    Internal(ApixoError),
}

/// What an operator route on one account answers when there is no such account.
#[derive(IntoResponses)]
pub enum NoSuchAccount {
    /// No such account
    #[response(status = 404)]
    NotFound(ApixoError),
}

/// What an operator route on one channel answers when there is no such channel.
#[derive(IntoResponses)]
pub enum NoSuchChannel {
    /// No channel with this id
    #[response(status = 404)]
    NotFound(ApixoError),
}

/// The channel an operator route is about.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelPath {
    /// The channel's id, as configured in `[[channels]]` (`local` when none is)
    #[param(example = "local")]
    #[allow(dead_code)]
    id: String,
}

/// The account an operator route is about.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AccountPath {
    /// The account's id or name
    #[param(example = "default")]
    #[allow(dead_code)]
    id: String,
}

/// File contents.
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}

/// One event of a streamed image answer (the SSE `event` is its `type`), as OpenAI's SDKs
/// read it; an `error` event (`{"type": "error", "error": {…}}`) ends a stream that failed.
#[derive(ToSchema)]
pub struct ImageStreamEvent {
    /// `image_generation.partial_image`, `image_generation.completed`, or `image_edit.…` for edits.
    #[schema(example = "image_generation.partial_image")]
    r#type: String,
    /// The preview's or the image's bytes, base64.
    b64_json: String,
    /// Unix seconds.
    created_at: i64,
    /// Which preview (partial images only), from 0.
    partial_image_index: Option<u32>,
    #[schema(example = "1024x1024")]
    size: String,
    #[schema(example = "auto")]
    quality: String,
    #[schema(example = "opaque")]
    background: String,
    #[schema(example = "png")]
    output_format: String,
    /// On completed events: all counts 0 (Easel bills per image).
    #[schema(value_type = Option<Object>)]
    usage: Option<serde_json::Value>,
}

/// One Server-Sent Event of `GET /api/v1/tasks/{id}/events`: its `event` name is the event's
/// type, its `id` (stored events only) the number to resume after with `Last-Event-ID`, and its
/// `data` a `TaskEvent` as JSON.
#[derive(ToSchema)]
pub struct TaskEventMessage {
    event: crate::tasks::events::EventKind,
    #[schema(pattern = "^[0-9]+$", example = "3")]
    id: Option<String>,
    /// A `TaskEvent`, as JSON.
    #[schema(example = r#"{"taskId":"task_12345678","seq":3,"type":"progress","at":1796157349233,"percent":40}"#)]
    data: String,
}

/// One Server-Sent Event of a streamed OpenAI image answer: `event` is the `type` of its
/// `data`, an `ImageStreamEvent` (or an error) as JSON.
#[derive(ToSchema)]
pub struct ImageStreamMessage {
    #[schema(example = "image_generation.partial_image")]
    event: String,
    /// An `ImageStreamEvent`, as JSON.
    data: String,
}

/// An event a create may ask callbacks for (`Callback-Events`), named again in each delivery's
/// `easel-event` header: `started` (a channel began), `progress` (the provider reported
/// progress, at most twice a second), `completed` (the final state; the default and the seeds'
/// only callback). Every delivery is signed (Standard Webhooks) and retried on the same schedule.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum CallbackEvent {
    Started,
    Progress,
    Completed,
}
