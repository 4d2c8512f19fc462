//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Access token from /api/v1/auth/login. MSP users name the tenant to act on in the X-Mamori-Tenant header.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Mamori API",
        description = "Endpoint monitoring and leak prevention: accounts, tenants, devices, operation logs and audit.\n\nErrors are JSON `{\"error\": {\"code\", \"message\"}}`. An object of another tenant is always 404. MSP users choose the tenant they act on with the `X-Mamori-Tenant` header."
    ),
    paths(
        crate::accounts::signup,
        crate::accounts::login,
        crate::accounts::refresh,
        crate::accounts::logout,
        crate::accounts::logout_everywhere,
        crate::accounts::change_password,
        crate::accounts::verify_link,
        crate::accounts::verify_post,
        crate::accounts::me,
        crate::accounts::jwks,
        crate::tenants::list,
        crate::tenants::create,
        crate::tenants::get,
        crate::tenants::update,
        crate::tenants::handover,
        crate::tenants::claim,
        crate::tenants::release,
        crate::users::list,
        crate::users::list_org,
        crate::users::invite,
        crate::users::invite_org,
        crate::users::list_invitations,
        crate::users::revoke_invitation,
        crate::users::list_org_invitations,
        crate::users::revoke_org_invitation,
        crate::users::accept,
        crate::users::update,
        crate::users::update_org,
        crate::users::set_access,
        crate::devices::list,
        crate::devices::get,
        crate::devices::revoke,
        crate::devices::delete,
        crate::devices::list_tokens,
        crate::devices::create_token,
        crate::devices::revoke_token,
        crate::groups::list,
        crate::groups::create,
        crate::groups::update,
        crate::groups::delete,
        crate::events::search,
        crate::events::export,
        crate::events::audit_log,
        crate::alarms::list,
        crate::alarms::acknowledge,
        crate::alarms::context,
        crate::alarms::calendar,
        crate::policies::list,
        crate::policies::get_tenant,
        crate::policies::put_tenant,
        crate::policies::clear_tenant,
        crate::policies::tenant_versions,
        crate::policies::get_target,
        crate::policies::put_target,
        crate::policies::clear_target,
        crate::policies::target_versions,
        crate::policies::effective,
        crate::policies::move_device,
        crate::policies::create_webhook,
        crate::policies::list_webhooks,
        crate::policies::delete_webhook,
        crate::recipients::list,
        crate::recipients::confirm_page,
        crate::recipients::confirm,
        crate::templates::create,
        crate::templates::list,
        crate::templates::update,
        crate::templates::apply,
        crate::templates::drift,
    ),
    modifiers(&Bearer),
    tags(
        (name = "accounts", description = "Signup, login, tokens"),
        (name = "tenants", description = "Tenants, MSP organisations, licences, retention"),
        (name = "users", description = "Users, roles, invitations"),
        (name = "devices", description = "Devices, enrollment tokens, groups"),
        (name = "logs", description = "Operation-log search and export, audit trail"),
        (name = "alarms", description = "Alarms, the operation log around them, the violation calendar"),
        (name = "policies", description = "Policies per tenant, group and device; effective policies; webhooks"),
    )
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The OpenAPI document as pretty JSON (`mamori openapi`, the console's
/// generated types).
pub fn document_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}
