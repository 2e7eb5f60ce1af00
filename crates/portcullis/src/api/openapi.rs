//! The API's OpenAPI 3.1 document, generated from the handlers' own
//! `#[utoipa::path]` annotations: each route is registered and described
//! by the same `routes!` call (see [`super::routes`]), so the document
//! cannot list a route the router lacks or miss one it serves.

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error the API answers: one line saying what went wrong.
#[derive(ToSchema)]
#[allow(dead_code)] // documents ApiError's JSON; never built as such
pub struct ErrorBody {
    /// What went wrong.
    error: String,
}

/// The document's fixed parts: title, tags and the bearer scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis API",
        description = "The gateway's JSON API, used by the `portcullis` CLI and the web console. Calls carry `Authorization: Bearer <token>` (a static token, an OIDC ID token or a gateway token); each is decided by the gateway's Cedar policies and recorded.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearer),
    tags(
        (name = "sessions", description = "Sessions, their commands and recordings"),
        (name = "reviews", description = "Statements held for review"),
        (name = "grants", description = "Roles for a while, approved like reviews"),
        (name = "identity", description = "Who am I, revocation, tokens and login"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| super::routes().into_openapi())
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value))
)]
pub async fn serve() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}
