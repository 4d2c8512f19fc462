//! Every route called as every role, each answer checked against one
//! table: the permissions `GET /me` lists for the role and the permission
//! each operation names in the OpenAPI document's `bearer` scopes (which
//! the handlers' extractors enforce).

use crate::gateway::{invite_and_accept, me_id, verify};
use crate::gw::{Gw, Session};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const TENANT_SCOPES: [&str; 4] = [
    "read_tenant",
    "manage_tenant",
    "hand_over_tenant",
    "issue_uninstall_code",
];

struct Who {
    name: &'static str,
    session: Option<Session>,
    /// The tenant it acts on, sent as X-Mamori-Tenant (MSP roles).
    tenant_header: Option<String>,
    /// Whether it reaches that tenant.
    reaches: bool,
    permissions: BTreeSet<String>,
}

async fn permissions(g: &Gw, s: &Session) -> BTreeSet<String> {
    let (status, me) = g.get(s, "/api/v1/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    me["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

/// One call; the status and the body as text (CSV answers are not JSON).
async fn call(
    g: &Gw,
    who: &Who,
    method: &Method,
    path: &str,
    body: bool,
    tenant: bool,
) -> (StatusCode, String) {
    let mut req = g.http.request(method.clone(), g.url(path));
    if let Some(s) = &who.session {
        req = req.bearer_auth(&s.access);
    }
    if tenant && let Some(t) = &who.tenant_header {
        req = req.header("X-Mamori-Tenant", t);
    }
    if body {
        req = req.json(&json!({}));
    }
    let resp = req.send().await.expect("gateway answers");
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

#[tokio::test]
async fn every_route_answers_every_role_as_the_permission_table_says() {
    let g = Gw::start().await;
    let admin = g.signup("Matrix KK", "tenant").await;
    verify(&g, &admin).await;
    let auditor = invite_and_accept(&g, &admin, "auditor").await;
    let msp = g.signup("Matrix MSP", "msp").await;
    verify(&g, &msp).await;
    let (status, created) = g
        .post(&msp, "/api/v1/tenants", json!({"name": "Matrix Customer"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let customer = created["id"].as_str().unwrap().to_owned();
    let with_access = invite_and_accept(&g, &msp, "msp_technician").await;
    let without_access = invite_and_accept(&g, &msp, "msp_technician").await;
    let (status, v) = g
        .call(
            Some(&msp),
            Method::PUT,
            &format!(
                "/api/v1/org/users/{}/tenants",
                me_id(&g, &with_access).await
            ),
            Some(json!({ "tenant_ids": [customer] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");

    let mut people = vec![Who {
        name: "no token",
        session: None,
        tenant_header: None,
        reaches: false,
        permissions: BTreeSet::new(),
    }];
    for (name, s, header, reaches) in [
        ("tenant_admin", &admin, None, true),
        ("auditor", &auditor, None, true),
        ("msp_admin", &msp, Some(&customer), true),
        (
            "msp_technician with access",
            &with_access,
            Some(&customer),
            true,
        ),
        (
            "msp_technician without access",
            &without_access,
            Some(&customer),
            false,
        ),
    ] {
        people.push(Who {
            name,
            session: Some(s.clone()),
            tenant_header: header.cloned(),
            reaches,
            permissions: permissions(&g, s).await,
        });
    }
    // The table itself, as /me serves it.
    let table: Vec<(&str, Vec<&str>)> = people[1..]
        .iter()
        .map(|w| (w.name, w.permissions.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        table,
        vec![
            (
                "tenant_admin",
                vec![
                    "hand_over_tenant",
                    "issue_uninstall_code",
                    "manage_tenant",
                    "read_tenant"
                ]
            ),
            ("auditor", vec!["read_tenant"]),
            (
                "msp_admin",
                vec![
                    "issue_uninstall_code",
                    "manage_org",
                    "manage_tenant",
                    "read_tenant"
                ]
            ),
            (
                "msp_technician with access",
                vec!["manage_tenant", "read_tenant"]
            ),
            (
                "msp_technician without access",
                vec!["manage_tenant", "read_tenant"]
            ),
        ]
    );

    let (_, doc) = g
        .call(None, Method::GET, "/api/v1/openapi.json", None)
        .await;
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(scopes) = mamori_gateway::openapi_permission(op) else {
                continue;
            };
            ops.push((
                path.clone(),
                method.to_uppercase(),
                scopes,
                op.get("requestBody").is_some(),
            ));
        }
    }
    // Calls that end the caller's sessions go last.
    ops.sort_by_key(|(path, ..)| path.contains("logout-everywhere"));
    assert!(ops.len() >= 55, "{} secured operations", ops.len());

    let mut checked = 0;
    for who in &people {
        for (template, method, scopes, body) in &ops {
            let path = template
                .replace("{id}", &uuid::Uuid::now_v7().to_string())
                .replace("{kind}", "groups");
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let tenant_scoped = scopes.iter().any(|s| TENANT_SCOPES.contains(&s.as_str()));
            let (status, text) = call(&g, who, &method, &path, *body, tenant_scoped).await;
            let expected = if who.session.is_none() {
                "401"
            } else if !scopes.iter().all(|s| who.permissions.contains(s)) {
                "403"
            } else if tenant_scoped && !who.reaches {
                "404"
            } else {
                "allowed"
            };
            let ok = match expected {
                "401" => status == StatusCode::UNAUTHORIZED,
                "403" => status == StatusCode::FORBIDDEN,
                "404" => status == StatusCode::NOT_FOUND,
                _ => {
                    ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status)
                        && !status.is_server_error()
                }
            };
            assert!(
                ok,
                "{method} {template} as {}: expected {expected}, got {status}: {text}",
                who.name
            );
            // A refusal names the code a client can act on.
            if expected != "allowed" {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert!(v["error"]["code"].is_string(), "{text}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ops.len() * people.len());

    // Every route the gateway serves is in the document (and so in this
    // table): the router's paths, read from its source.
    let source = include_str!("../../../services/gateway/src/server.rs");
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let mut served = BTreeSet::new();
    let mut rest = source;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + 7..];
        let start = rest.find('"').unwrap() + 1;
        let end = start + rest[start..].find('"').unwrap();
        let path = &rest[start..end];
        served.insert(if path.starts_with("/.well-known") {
            path.to_owned()
        } else {
            format!("/api/v1{path}")
        });
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
}
