//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers' `#[utoipa::path]`
//! annotations and the types they read and write. Served at `/openapi.json` (see `api::docs`).

pub mod catalog;
pub mod examples;
pub mod schemas;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, OpenApi as Document};
use utoipa::{Modify, OpenApi};

use super::{account, admin, apixo, callbacks, events, files, health, models, openai, tasks, unified};

#[derive(OpenApi)]
#[openapi(
    info(title = "Easel", description = include_str!("description.md")),
    paths(
        apixo::generate,
        apixo::status,
        unified::create,
        unified::query,
        unified::balance,
        openai::generations,
        openai::edits,
        openai::models,
        openai::model,
        models::list,
        tasks::list,
        tasks::show,
        tasks::cancel,
        events::follow,
        tasks::delete_images,
        account::show,
        account::ledger,
        account::current_balance,
        callbacks::list,
        callbacks::retry,
        files::serve,
        health::healthz,
        health::readyz,
    ),
    components(schemas(
        schemas::ApixoError,
        schemas::UnifiedError,
        openai::ErrorBody,
        // Path parameters' schemas are not collected from the operations.
        schemas::ApixoModel,
        schemas::CatalogModel,
        // Named by the create answers' `anyOf`.
        apixo::TaskCreated,
        apixo::TaskStatus,
        unified::Created,
        unified::Status,
        // What the event streams' `data` carry.
        super::events::TaskEventView,
        schemas::ImageStreamEvent,
        schemas::CallbackEvent,
    )),
    modifiers(&API_KEY),
    security(("apiKey" = [])),
    tags(
        (name = "APIXO tasks", description = "APIXO's per-model task API (seeds 000-002)"),
        (name = "Unified API", description = "apimodels' unified API (seed 003)"),
        (name = "OpenAI-compatible", description = "OpenAI's Images API: OpenAI SDKs work with `base_url` set to \
            `<server>/v1`"),
        (name = "Models", description = "The catalog: every model, where it is offered, its sizes and prices; no \
            API key"),
        (name = "Tasks", description = "The caller's own tasks, whichever API created them"),
        (name = "Account", description = "The caller's own account"),
        (name = "Callbacks", description = "Callback deliveries of the caller's tasks"),
        (name = "Files", description = "Result images behind signed links; no API key"),
        (name = "Probes", description = "Liveness and readiness for load balancers; no API key"),
    ),
)]
struct PublicApi;

#[derive(OpenApi)]
#[openapi(
    paths(
        admin::create_account,
        admin::list_accounts,
        admin::show_account,
        admin::create_key,
        admin::add_credits,
        admin::set_limits,
        admin::list_tasks,
        admin::rotate_webhook_secret,
        admin::revoke_key,
        admin::channels,
        admin::set_channel,
        admin::test_channel,
        admin::metrics,
    ),
    modifiers(&ADMIN_TOKEN),
    tags((name = "Admin", description = "The operator's routes, present only when `EASEL_ADMIN_TOKEN` is set")),
)]
struct AdminApi;

/// A bearer-token security scheme: its name and description.
struct Bearer(&'static str, &'static str);

const API_KEY: Bearer = Bearer("apiKey", "An account's API key: `Authorization: Bearer sk-…`");
const ADMIN_TOKEN: Bearer =
    Bearer("adminToken", "The operator's token, `EASEL_ADMIN_TOKEN`: `Authorization: Bearer <token>`");

impl Modify for Bearer {
    fn modify(&self, doc: &mut Document) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(self.1)).build();
        let components = doc.components.get_or_insert_with(|| ComponentsBuilder::new().build());
        components.add_security_scheme(self.0, SecurityScheme::Http(scheme));
    }
}

/// The document for a server: the operator's routes are described only where they exist, i.e.
/// when an admin token is configured.
pub fn document(admin_routes: bool, models: &crate::catalog::Catalog) -> Document {
    let mut doc = PublicApi::openapi();
    catalog::apply(&mut doc, models);
    if admin_routes {
        doc.merge(AdminApi::openapi());
    }
    doc
}
