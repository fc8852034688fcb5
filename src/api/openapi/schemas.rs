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

fn null() -> Schema {
    ObjectBuilder::new().schema_type(Type::Null).into()
}

fn url() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uri".into())))
        .max_length(Some(2048))
        .pattern(Some(URL_PATTERN))
}

fn url_list(max: usize) -> ArrayBuilder {
    ArrayBuilder::new().items(url()).max_items(Some(max))
}

/// An optional field: the parsers take `null` for not given.
fn or_null(schema: impl Into<RefOr<Schema>>) -> OneOfBuilder {
    OneOfBuilder::new().item(schema).item(null())
}

fn optional_url() -> OneOfBuilder {
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

/// A model of the APIXO task API: `{model}` in `generateTask/{model}`.
#[derive(ToSchema)]
pub enum ApixoModel {
    #[schema(rename = "seedream-5-0")]
    Seedream50,
    #[schema(rename = "gpt-image-1")]
    GptImage1,
}

/// A model of Easel's catalog.
#[derive(ToSchema)]
pub enum CatalogModel {
    #[schema(rename = "seedream-5-0")]
    Seedream50,
    #[schema(rename = "gpt-image-1")]
    GptImage1,
    #[schema(rename = "doubao-seedream-5-0-260128")]
    DoubaoSeedream50Lite,
    #[schema(rename = "doubao-seedream-4-5-251128")]
    DoubaoSeedream45,
}

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

/// The model's input: Seedream 5.0's for `seedream-5-0`, gpt-image-1's for `gpt-image-1`.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum TaskInput {
    Seedream(SeedreamInput),
    GptImage(GptImageInput),
}

#[derive(ToSchema)]
pub enum SeedreamMode {
    #[schema(rename = "text-to-image")]
    TextToImage,
    #[schema(rename = "image-to-image")]
    ImageToImage,
}

#[derive(ToSchema)]
pub enum Resolution {
    #[schema(rename = "2K")]
    TwoK,
    #[schema(rename = "3K")]
    ThreeK,
}

/// The aspect ratios of Seedream's preset table (seed 001).
#[derive(ToSchema)]
pub enum AspectRatio {
    #[schema(rename = "1:1")]
    Square,
    #[schema(rename = "4:3")]
    FourThree,
    #[schema(rename = "3:4")]
    ThreeFour,
    #[schema(rename = "16:9")]
    SixteenNine,
    #[schema(rename = "9:16")]
    NineSixteen,
    #[schema(rename = "3:2")]
    ThreeTwo,
    #[schema(rename = "2:3")]
    TwoThree,
    #[schema(rename = "21:9")]
    TwentyOneNine,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Sequential {
    Disabled,
    Auto,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum SeedreamFormat {
    Jpeg,
    Png,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum PromptOptimizeMode {
    Standard,
}

/// Seedream 5.0's input (seeds 000 and 001).
#[derive(ToSchema)]
pub struct SeedreamInput {
    mode: SeedreamMode,
    #[schema(min_length = 1, max_length = 5000, pattern = r"\S")]
    prompt: String,
    /// Images to generate, billed per image delivered.
    #[schema(minimum = 1, maximum = 10)]
    max_images: u32,
    /// Default `2K`.
    resolution: Option<Resolution>,
    /// Default `1:1`; with `resolution`, picks a size from seed 001's table.
    aspect_ratio: Option<AspectRatio>,
    /// Wins over `resolution`: `2K`, `3K` (with `aspect_ratio`) or `WIDTHxHEIGHT` (`x`, `X` or
    /// `*`) with 1280×720 to 4096×4096 pixels in total and a ratio between 1:16 and 16:1.
    #[schema(pattern = r"^\s*(2K|3K|\+?[0-9]+\s*[xX*]\s*\+?[0-9]+)\s*$", example = "2048x2048")]
    size: Option<String>,
    /// `auto`: one coherent series (references and images together at most 15). Default `disabled`.
    sequential_image_generation: Option<Sequential>,
    /// Default `false`.
    web_search: Option<bool>,
    /// Default `jpeg`.
    output_format: Option<SeedreamFormat>,
    prompt_optimize_mode: Option<PromptOptimizeMode>,
    /// Reference images (JPEG, PNG, WebP or GIF, at most 10 MB each): 1 to 14 with
    /// `image-to-image`, none with `text-to-image`.
    #[schema(schema_with = seedream_references)]
    image_urls: Option<Vec<String>>,
}

fn seedream_references() -> OneOfBuilder {
    or_null(url_list(14))
}

#[derive(ToSchema)]
pub enum GptMode {
    #[schema(rename = "gpt-image-1")]
    GptImage1,
}

#[derive(ToSchema)]
pub enum GptAspectRatio {
    #[schema(rename = "1:1")]
    Square,
    #[schema(rename = "3:2")]
    Landscape,
    #[schema(rename = "2:3")]
    Portrait,
}

/// gpt-image-1's input (seed 002).
#[derive(ToSchema)]
pub struct GptImageInput {
    mode: GptMode,
    #[schema(min_length = 1, max_length = 32000, pattern = r"\S")]
    prompt: String,
    /// Default `1:1` (1024×1024); `3:2` is 1536×1024, `2:3` 1024×1536.
    aspect_ratio: Option<GptAspectRatio>,
    /// 1, 2 or 4; default 1.
    #[schema(schema_with = num_images)]
    num_images: Option<u32>,
    /// Reference images (JPEG, PNG, WebP or GIF, at most 10 MB each), up to 16.
    #[schema(schema_with = gpt_references)]
    image_urls: Option<Vec<String>>,
}

fn num_images() -> OneOfBuilder {
    or_null(ObjectBuilder::new().schema_type(Type::Integer).enum_values(Some([1, 2, 4])))
}

fn gpt_references() -> OneOfBuilder {
    or_null(url_list(16))
}

/// A request of the unified API (seed 003); `model` decides which fields apply.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum UnifiedRequest {
    SeedreamLite(UnifiedSeedreamLite),
    Seedream45(UnifiedSeedream45),
    GptImage(UnifiedGptImage),
}

#[derive(ToSchema)]
pub enum SeedreamLiteModel {
    #[schema(rename = "doubao-seedream-5-0-260128")]
    Lite,
}

#[derive(ToSchema)]
pub enum Seedream45Model {
    #[schema(rename = "doubao-seedream-4-5-251128")]
    Seedream45,
}

#[derive(ToSchema)]
pub enum GptImageModel {
    #[schema(rename = "gpt-image-1")]
    GptImage1,
}

#[derive(ToSchema)]
pub enum SeedreamTier {
    #[schema(rename = "2K")]
    TwoK,
    #[schema(rename = "4K")]
    FourK,
}

#[derive(ToSchema)]
pub enum GptSize {
    #[schema(rename = "1024x1024")]
    Square,
    #[schema(rename = "1536x1024")]
    Landscape,
    #[schema(rename = "1024x1536")]
    Portrait,
    /// Easel picks 1024x1024.
    #[schema(rename = "auto")]
    Auto,
}

/// Seedream 5.0 Lite: text-to-image, or image-to-image with `image_url`. `aspect_ratio` is
/// ignored (square sizes), as seed 003 says.
#[derive(ToSchema)]
pub struct UnifiedSeedreamLite {
    model: SeedreamLiteModel,
    #[schema(min_length = 1, max_length = 5000, pattern = r"\S")]
    prompt: String,
    /// Default `2K` (2048×2048); `4K` is 4096×4096.
    size: Option<SeedreamTier>,
    #[serde(flatten)]
    common: UnifiedCommon,
}

/// Seedream 4.5: like 5.0 Lite, and `aspect_ratio` is honoured.
#[derive(ToSchema)]
pub struct UnifiedSeedream45 {
    model: Seedream45Model,
    #[schema(min_length = 1, max_length = 5000, pattern = r"\S")]
    prompt: String,
    /// Default `2K`.
    size: Option<SeedreamTier>,
    /// Default `1:1`.
    aspect_ratio: Option<AspectRatio>,
    #[serde(flatten)]
    common: UnifiedCommon,
}

/// gpt-image-1: text-to-image, editing with `image_url`, inpainting with `mask_url`.
#[derive(ToSchema)]
pub struct UnifiedGptImage {
    model: GptImageModel,
    #[schema(min_length = 1, max_length = 32000, pattern = r"\S")]
    prompt: String,
    /// Default `auto`.
    size: Option<GptSize>,
    /// A PNG mask applying to the first `image_url`.
    #[schema(schema_with = optional_url)]
    mask_url: Option<String>,
    #[serde(flatten)]
    common: UnifiedCommon,
}

/// The fields every model of the unified API takes.
#[derive(ToSchema)]
pub struct UnifiedCommon {
    /// Images to generate; default 1.
    #[schema(minimum = 1, maximum = 4)]
    n: Option<u32>,
    #[schema(schema_with = image_url)]
    image_url: Option<String>,
    /// Easel POSTs the result here when the task ends (see `GenerateTaskRequest.callback_url`).
    #[schema(schema_with = optional_url)]
    callback_url: Option<String>,
}

fn image_url() -> OneOfBuilder {
    or_null(url()).item(url_list(14)).description(Some("One reference image URL, or an array of up to 14"))
}

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
pub enum OpenAiOutputFormat {
    Png,
    Jpeg,
    Jpg,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ResponseFormat {
    Url,
    B64Json,
}

/// OpenAI's image generation request. Fields Easel has no use for (`background`, `moderation`,
/// `style`, `user`, …) are accepted and ignored.
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
    /// gpt-image-1: `1024x1024`, `1536x1024`, `1024x1536` or `auto`. Seedream: `auto` (2048×2048),
    /// `2K`, `3K`, `4K` or `WIDTHxHEIGHT`.
    #[schema(example = "1024x1024")]
    size: Option<String>,
    /// Accepted; Easel renders at one quality.
    quality: Option<Quality>,
    /// Default `png` for gpt-image-1, `jpeg` for the Seedream models.
    output_format: Option<OpenAiOutputFormat>,
    /// Default `b64_json` for gpt-image-1 (its only form at OpenAI), `url` for the Seedream models.
    response_format: Option<ResponseFormat>,
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
    output_format: OpenAiOutputFormat,
    #[schema(required = false)]
    response_format: ResponseFormat,
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
