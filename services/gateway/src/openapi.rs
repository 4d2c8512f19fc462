//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use serde_json::{Value, json};
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
        crate::accounts::request_password_reset,
        crate::accounts::confirm_password_reset,
        crate::accounts::verify_link,
        crate::accounts::verify_post,
        crate::accounts::me,
        crate::accounts::jwks,
        crate::tenants::list,
        crate::tenants::create,
        crate::tenants::get,
        crate::tenants::update,
        crate::tenants::handover,
        crate::tenants::uninstall_code,
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
        crate::files::trace,
        crate::alarms::list,
        crate::alarms::acknowledge,
        crate::alarms::acknowledge_many,
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
        crate::policies::test_webhook,
        crate::recipients::list,
        crate::recipients::confirm_page,
        crate::recipients::confirm,
        crate::templates::create,
        crate::templates::list,
        crate::templates::update,
        crate::templates::apply,
        crate::templates::drift,
        document,
    ),
    components(schemas(crate::policies::TargetKind, crate::policies::OriginView)),
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

/// The document, completed once (see [`complete`]).
static DOCUMENT: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises");
    complete(&mut doc);
    doc
});

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "accounts",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub async fn document() -> Json<Value> {
    Json(DOCUMENT.clone())
}

/// The OpenAPI document as pretty JSON (`mamori openapi`, the console's
/// generated types).
pub fn document_json() -> String {
    serde_json::to_string_pretty(&*DOCUMENT).expect("the OpenAPI document serialises")
}

/// The scopes an operation's `bearer` security requirement names: the
/// permission it takes (`[]`: any signed-in user). `None`: no token needed.
pub fn permission_of(operation: &Value) -> Option<Vec<String>> {
    let bearer = operation["security"]
        .as_array()?
        .iter()
        .find_map(|r| r.get("bearer"))?;
    Some(
        bearer
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

const TENANT_SCOPES: [&str; 4] = [
    "read_tenant",
    "manage_tenant",
    "hand_over_tenant",
    "issue_uninstall_code",
];

/// Adds what the handlers' annotations leave to the layers they share:
/// the answers of the edge (429 per address, 503 on timeout, 500 on a
/// fault), of the extractors (401 without a token; 403 without the
/// permission; 400 and 404 for the `X-Mamori-Tenant` header, which is
/// declared on every operation that acts on a tenant), and of the body,
/// path and query parsers (400 malformed, 413 too large, 415 not JSON,
/// 422 refused), and of the database on writes (409, see
/// `mamori_tenancy::classify`).
fn complete(doc: &mut Value) {
    // The event kinds, named once (the proto crate's list).
    let kinds: Vec<&str> = mamori_proto::EventKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    doc["components"]["schemas"]["EventKind"] = json!({
        "type": "string",
        "enum": kinds,
        "description": "What an event records."
    });
    if doc["components"]["schemas"]["EventView"]["properties"]["kind"].is_object() {
        // A kind this server does not know (from a newer agent) reads
        // `unknown_<code>`.
        doc["components"]["schemas"]["EventView"]["properties"]["kind"] = json!({
            "anyOf": [
                {"$ref": "#/components/schemas/EventKind"},
                {"type": "string", "pattern": "^unknown_[0-9]+$"}
            ]
        });
    }
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let mut add: Vec<(&str, &str)> = vec![
                ("429", "Too many requests (see Retry-After)"),
                ("500", "A fault of ours, logged with the request id"),
                (
                    "503",
                    "A dependency is unavailable or the request timed out; retry later",
                ),
            ];
            if let Some(scopes) = permission_of(op) {
                add.push(("401", "No valid access token"));
                if scopes.iter().any(|s| s != "read_tenant") {
                    add.push(("403", "The caller's role lacks the permission this takes"));
                }
                if scopes.iter().any(|s| TENANT_SCOPES.contains(&s.as_str())) {
                    add.push((
                        "400",
                        "Malformed X-Mamori-Tenant header, or an MSP user named no tenant",
                    ));
                    add.push((
                        "404",
                        "No such object in the tenant, or a tenant the caller cannot reach",
                    ));
                    let params = op["parameters"]
                        .as_array_mut()
                        .map(std::mem::take)
                        .unwrap_or_default();
                    let mut params = params;
                    params.push(json!({
                        "name": "X-Mamori-Tenant",
                        "in": "header",
                        "required": false,
                        "description": "The tenant an MSP user acts on (tenant users may name only their own).",
                        "schema": {"type": "string", "format": "uuid"}
                    }));
                    op["parameters"] = Value::Array(params);
                }
            }
            if method != "get" {
                add.push(("409", "Conflicts with what is stored (a taken name, a rule such as \"not empty\"); the message says which"));
            }
            if op.get("requestBody").is_some() {
                add.push(("400", "Malformed JSON"));
                add.push(("413", "The body is too large"));
                add.push(("415", "The body is not application/json"));
                add.push(("422", "A field is refused; the message names it"));
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if params.iter().any(|p| p["in"] == "path") {
                add.push(("400", "A malformed id in the path"));
                add.push(("404", "No such object"));
            }
            if params.iter().any(|p| p["in"] == "query") {
                add.push(("400", "A malformed query parameter"));
                add.push(("422", "A query parameter is refused; the message names it"));
            }
            let responses = op["responses"]
                .as_object_mut()
                .expect("every operation has responses");
            for (status, description) in add {
                responses.entry(status).or_insert_with(|| {
                    json!({
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                    })
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_in_the_document_resolves() {
        let mut found = Vec::new();
        refs(&DOCUMENT, &mut found);
        assert!(found.len() > 100);
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .expect("a schema reference");
            assert!(
                DOCUMENT["components"]["schemas"].get(name).is_some(),
                "{r} is not defined"
            );
        }
    }

    #[test]
    fn every_operation_answers_the_shared_errors_with_a_body() {
        for (path, item) in DOCUMENT["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for status in ["429", "500", "503"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{method} {path} {status}"
                    );
                }
                if permission_of(op).is_some() {
                    assert!(op["responses"].get("401").is_some(), "{method} {path}");
                }
            }
        }
    }
}
