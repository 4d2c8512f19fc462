//! Attacks on the gateway: cross-tenant access by id, forged and stale
//! JWTs, hostile input. Each must be refused and change nothing.

use crate::gateway::{invite_and_accept, verify};
use crate::gw::{Gw, PASSWORD, Session, code};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// Everything tenant B owns, by id.
struct Victim {
    admin: Session,
    tenant: String,
    device: String,
    token_id: String,
    group: String,
    user: String,
    alarm: String,
    invitation: String,
}

async fn victim(g: &Gw) -> Victim {
    let admin = g.signup("Victim KK", "tenant").await;
    verify(g, &admin).await;
    let tenant = admin.tenant_id.clone().unwrap();
    let device = g
        .stack
        .new_device(admin.enrollment_token.as_ref().unwrap())
        .await;
    let mut stream = g.stack.open(&device.device_credential).await.unwrap();
    stream
        .send(crate::support::batch(
            1,
            vec![crate::support::process_event("/secret/payroll.xlsx")],
        ))
        .await
        .unwrap();
    let tenant_id = mamori_tenancy::TenantId::from_uuid(tenant.parse().unwrap());
    crate::support::wait_for(
        "B's event in PostgreSQL",
        Duration::from_secs(20),
        || async { (g.stack.count_events(tenant_id).await == 1).then_some(()) },
    )
    .await;
    let (_, tokens) = g.get(&admin, "/api/v1/enrollment-tokens").await;
    let token_id = tokens[0]["id"].as_str().unwrap().to_owned();
    let (_, group) = g
        .post(&admin, "/api/v1/groups", json!({ "name": "HQ" }))
        .await;
    let (status, policy) = g
        .call(
            Some(&admin),
            Method::PUT,
            &format!("/api/v1/policies/groups/{}", group["id"].as_str().unwrap()),
            Some(json!({ "banned_apps": [{"name": "winny", "action": "kill"}] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    let auditor = invite_and_accept(g, &admin, "auditor").await;
    let (_, me) = g.get(&auditor, "/api/v1/me").await;
    let (_, pending) = g
        .post(
            &admin,
            "/api/v1/invitations",
            json!({ "email": "later@victim.example.com", "role": "auditor" }),
        )
        .await;
    let alarm = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO alarms (tenant_id, id, category, device_id, summary, first_at, last_at)
         VALUES ($1::uuid, $2, 'banned_app', $3::uuid, 'winny started', now(), now())",
    )
    .bind(&tenant)
    .bind(alarm)
    .bind(&device.device_id)
    .execute(&g.stack.env.owner)
    .await
    .unwrap();
    Victim {
        admin,
        tenant,
        device: device.device_id,
        token_id,
        group: group["id"].as_str().unwrap().to_owned(),
        user: me["id"].as_str().unwrap().to_owned(),
        alarm: alarm.to_string(),
        invitation: pending["id"].as_str().unwrap().to_owned(),
    }
}

/// B's state as its admin sees it, to compare before and after an attack.
async fn snapshot(g: &Gw, v: &Victim) -> Value {
    let (_, devices) = g.get(&v.admin, "/api/v1/devices").await;
    let (_, tokens) = g.get(&v.admin, "/api/v1/enrollment-tokens").await;
    let (_, users) = g.get(&v.admin, "/api/v1/users").await;
    let (_, groups) = g.get(&v.admin, "/api/v1/groups").await;
    let (_, invitations) = g.get(&v.admin, "/api/v1/invitations").await;
    let (_, alarms) = g.get(&v.admin, "/api/v1/alarms").await;
    let (_, policies) = g.get(&v.admin, "/api/v1/policies").await;
    let (_, mut tenant) = g.get(&v.admin, "/api/v1/tenant").await;
    tenant["devices"] = Value::Null;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1::uuid")
        .bind(&v.tenant)
        .fetch_one(&g.stack.env.owner)
        .await
        .unwrap();
    let mut devices = devices;
    // Connection bookkeeping, not data an attacker could change.
    devices["counts"] = Value::Null;
    for d in devices["devices"].as_array_mut().unwrap() {
        // Connection bookkeeping, not data an attacker could change.
        d["status"] = Value::Null;
        d["last_seen_at"] = Value::Null;
    }
    json!({ "devices": devices, "tokens": tokens, "users": users, "groups": groups, "tenant": tenant,
            "events": events, "invitations": invitations, "alarms": alarms, "policies": policies })
}

/// Every endpoint that takes a tenant object's id, aimed at B's objects.
fn attacks(v: &Victim) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, format!("/api/v1/devices/{}", v.device), None),
        (
            Method::POST,
            format!("/api/v1/devices/{}/revoke", v.device),
            Some(json!({})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/devices/{}", v.device),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/enrollment-tokens/{}/revoke", v.token_id),
            Some(json!({})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{}", v.user),
            Some(json!({ "role": "tenant_admin" })),
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{}", v.user),
            Some(json!({ "disabled": true })),
        ),
        (
            Method::POST,
            "/api/v1/enrollment-tokens".into(),
            Some(json!({ "group_id": v.group })),
        ),
        (
            Method::POST,
            "/api/v1/groups".into(),
            Some(json!({ "name": "x", "parent_id": v.group })),
        ),
        (
            Method::PATCH,
            format!("/api/v1/groups/{}", v.group),
            Some(json!({ "name": "renamed" })),
        ),
        (
            Method::PATCH,
            format!("/api/v1/groups/{}", v.group),
            Some(json!({ "parent_id": null })),
        ),
        (Method::DELETE, format!("/api/v1/groups/{}", v.group), None),
        (
            Method::PUT,
            format!("/api/v1/policies/groups/{}", v.group),
            Some(json!({ "banned_apps": [{"name": "x", "action": "kill"}] })),
        ),
        (
            Method::DELETE,
            format!("/api/v1/policies/groups/{}", v.group),
            None,
        ),
        (
            Method::PUT,
            format!("/api/v1/policies/devices/{}", v.device),
            Some(json!({ "banned_apps": [{"name": "x", "action": "kill"}] })),
        ),
        (
            Method::GET,
            format!("/api/v1/devices/{}/policy", v.device),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v1/devices/{}", v.device),
            Some(json!({ "group_id": null })),
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{}/release", v.tenant),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/api/v1/alarms/{}/acknowledge", v.alarm),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/api/v1/alarms/{}/context", v.alarm),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/invitations/{}/revoke", v.invitation),
            Some(json!({})),
        ),
    ]
}

#[tokio::test]
async fn other_tenants_objects_are_404_and_unchanged() {
    let g = Gw::start().await;
    let v = victim(&g).await;
    let before = snapshot(&g, &v).await;

    let attacker = g.signup("Attacker KK", "tenant").await;
    let msp = g.signup("Other MSP", "msp").await;
    let (_, own) = g
        .post(
            &msp,
            "/api/v1/tenants",
            json!({ "name": "MSP's own customer" }),
        )
        .await;
    let msp_own = msp.on(own["id"].as_str().unwrap());

    for who in [&attacker, &msp_own] {
        for (method, path, body) in attacks(&v) {
            let (status, resp) = g.call(Some(who), method.clone(), &path, body).await;
            let allowed = if path.ends_with("/release") && who.org_id.is_none() {
                // A tenant admin may not release anything at all.
                [StatusCode::FORBIDDEN].as_slice()
            } else {
                [StatusCode::NOT_FOUND].as_slice()
            };
            assert!(
                allowed.contains(&status),
                "{method} {path} as {}: {status} {resp}",
                who.email
            );
        }
        // Lists and searches simply do not contain B's rows.
        let (_, page) = g
            .get(who, &format!("/api/v1/events?device={}", v.device))
            .await;
        assert_eq!(page["events"].as_array().unwrap().len(), 0);
        let (_, page) = g.get(who, "/api/v1/events?q=payroll").await;
        assert_eq!(page["events"].as_array().unwrap().len(), 0);
        let (_, devices) = g
            .get(who, &format!("/api/v1/devices?group={}", v.group))
            .await;
        assert_eq!(devices["devices"].as_array().unwrap().len(), 0);
    }

    // Naming B as the tenant to act on: 404 for a tenant user and for an
    // MSP that does not run B, on every tenant endpoint.
    for who in [attacker.on(&v.tenant), msp.on(&v.tenant)] {
        for path in [
            "/api/v1/devices",
            "/api/v1/events",
            "/api/v1/audit",
            "/api/v1/tenant",
            "/api/v1/users",
            "/api/v1/enrollment-tokens",
            "/api/v1/groups",
            "/api/v1/events/export",
            "/api/v1/alarms",
            "/api/v1/alarms/calendar",
            "/api/v1/invitations",
        ] {
            let (status, resp) = g.get(&who, path).await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{path} as {}: {resp}",
                who.email
            );
        }
        let (status, _) = g
            .call(
                Some(&who),
                Method::PATCH,
                "/api/v1/tenant",
                Some(json!({ "retention_days": 90 })),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    // An MSP cannot put B on a technician's list, nor claim it without a code.
    let tech = {
        verify(&g, &msp).await;
        invite_and_accept(&g, &msp, "msp_technician").await
    };
    let (_, tech_me) = g.get(&tech, "/api/v1/me").await;
    let (status, _) = g
        .call(
            Some(&msp),
            Method::PUT,
            &format!(
                "/api/v1/org/users/{}/tenants",
                tech_me["id"].as_str().unwrap()
            ),
            Some(json!({ "tenant_ids": [v.tenant] })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = g
        .call(
            Some(&msp),
            Method::PATCH,
            &format!("/api/v1/org/users/{}", v.user),
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "B's user is not the MSP's");

    assert_eq!(snapshot(&g, &v).await, before, "B's data is unchanged");
}

async fn raw(g: &Gw, token: &str, path: &str) -> (StatusCode, Value) {
    let resp = g
        .http
        .get(g.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn claims(s: &Session, iat: i64, nbf: i64, exp: i64) -> Value {
    json!({
        "iss": mamori_gateway::ISSUER, "aud": mamori_gateway::AUDIENCE, "sub": s.user_id,
        "iat": iat, "nbf": nbf, "exp": exp, "jti": uuid::Uuid::new_v4(),
        "email": s.email, "role": "tenant_admin", "tid": s.tenant_id,
    })
}

#[tokio::test]
async fn forged_expired_and_retired_tokens_are_refused() {
    let g = Gw::start_with(|c| c.key_reload_s = 1).await;
    let s = g.signup("JWT Co", "tenant").await;
    let other = g.signup("Other Co", "tenant").await;
    let (status, _) = raw(&g, &s.access, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK, "the genuine token works");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(s.access.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now().timestamp();

    let refuse = |token: String, want: &'static str| {
        let g = &g;
        async move {
            let (status, v) = raw(g, &token, "/api/v1/devices").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{want}: {v}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(want),
                "{want}: {v} {token}"
            );
        }
    };

    // alg: none, no signature.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        b64(&claims(&s, now, now, now + 600))
    );
    refuse(none, "").await;

    // HS256 "signed" with the public key (algorithm confusion).
    let (_, jwks) = g
        .call(None, Method::GET, "/.well-known/jwks.json", None)
        .await;
    let x = jwks["keys"][0]["x"].as_str().unwrap();
    for secret in [URL_SAFE_NO_PAD.decode(x).unwrap(), x.as_bytes().to_vec()] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.clone());
        let t = jsonwebtoken::encode(
            &h,
            &claims(&s, now, now, now + 600),
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        refuse(t, "invalid").await;
    }

    // Tampered claims: another tenant's id in a genuine token's payload.
    let mut parts: Vec<String> = s.access.split('.').map(str::to_owned).collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["tid"] = json!(other.tenant_id);
    parts[1] = b64(&payload);
    refuse(parts.join("."), "access token").await;

    // A key the gateway has never seen.
    let stranger = ed_key([9u8; 32]);
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("not-a-known-kid".into());
    let t = jsonwebtoken::encode(&h, &claims(&s, now, now, now + 600), &stranger).unwrap();
    refuse(t, "unknown signing key").await;

    // A key of our own, imported, so the test can sign what it likes.
    let seed = [42u8; 32];
    let kek = mamori_gateway::Kek::from_base64(&g.kek).unwrap();
    let ours = mamori_registry::signing_keys::import_key(&g.stack.env.db, &kek, &seed)
        .await
        .unwrap();
    let key = ed_key(seed);
    let sign = |c: Value| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(ours.clone());
        jsonwebtoken::encode(&h, &c, &key).unwrap()
    };
    let good = sign(claims(&s, now, now, now + 600));
    crate::support::wait_for(
        "the imported key to be picked up",
        Duration::from_secs(5),
        || async { (raw(&g, &good, "/api/v1/devices").await.0 == StatusCode::OK).then_some(()) },
    )
    .await;
    refuse(
        sign(claims(&s, now - 7200, now - 7200, now - 3600)),
        "expired",
    )
    .await;
    refuse(
        sign(claims(&s, now, now + 3600, now + 7200)),
        "not valid yet",
    )
    .await;
    let mut wrong_aud = claims(&s, now, now, now + 600);
    wrong_aud["aud"] = json!("someone-else");
    refuse(sign(wrong_aud), "invalid").await;
    let mut missing_exp = claims(&s, now, now, now + 600);
    missing_exp.as_object_mut().unwrap().remove("exp");
    refuse(sign(missing_exp), "malformed").await;

    // Rotation keeps old tokens working; retirement ends them.
    let (status, _) = raw(&g, &s.access, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK, "rotation logged nobody out");
    assert!(
        mamori_registry::signing_keys::retire_key(&g.stack.env.db, &kid)
            .await
            .unwrap()
    );
    crate::support::wait_for(
        "the gateways to re-read keys",
        Duration::from_secs(5),
        || async {
            (raw(&g, &s.access, "/api/v1/devices").await.0 == StatusCode::UNAUTHORIZED)
                .then_some(())
        },
    )
    .await;
    refuse(s.access.clone(), "retired").await;
    let (status, v) = g.login(&s.email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let fresh = v["access_token"].as_str().unwrap();
    let (status, _) = raw(&g, fresh, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK, "new logins use the current key");

    // Missing and malformed Authorization headers.
    let (status, v) = g.call(None, Method::GET, "/api/v1/devices", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&v), "unauthenticated");
    refuse("garbage".into(), "malformed").await;
}

fn ed_key(seed: [u8; 32]) -> EncodingKey {
    let der = ed25519_dalek::SigningKey::from_bytes(&seed)
        .to_pkcs8_der()
        .unwrap();
    EncodingKey::from_ed_der(der.as_bytes())
}

#[tokio::test]
async fn hostile_input_gets_a_clear_4xx_and_changes_nothing() {
    let g = Gw::start().await;
    let s = g.signup("Input Co", "tenant").await;
    let counts = || async {
        sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM users), (SELECT count(*) FROM groups)",
        )
        .fetch_one(&g.stack.env.owner)
        .await
        .unwrap()
    };
    let before = counts().await;

    // Oversized body.
    let big = json!({ "email": "a@b.example.com", "password": "x".repeat(2 * 1024 * 1024), "company": "X" });
    let (status, v) = g
        .call(None, Method::POST, "/api/v1/signup", Some(big))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(code(&v), "payload_too_large");

    // Malformed JSON, wrong content type, wrong shapes, unknown fields.
    let send = |body: &'static str, ct: Option<&'static str>| {
        let g = &g;
        async move {
            let mut r = g.http.post(g.url("/api/v1/auth/login")).body(body);
            if let Some(ct) = ct {
                r = r.header("content-type", ct);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status();
            let v: Value = resp.json().await.expect("errors are JSON");
            (status, v)
        }
    };
    let (status, v) = send("{\"email\": ", Some("application/json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(code(&v), "bad_request");
    let (status, v) = send("{}", None).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    let (status, v) = send("{\"email\": 5, \"password\": []}", Some("application/json")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (status, v) = send(
        "{\"email\": \"a@b.co\", \"password\": \"x\", \"admin\": true}",
        Some("application/json"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused: {v}"
    );
    let (status, _) = send(
        "{\"email\": \"\\ud800\", \"password\": \"x\"}",
        Some("application/json"),
    )
    .await;
    assert!(status.is_client_error(), "a lone surrogate is refused");

    // SQL metacharacters in every search field: answered, never an error.
    let nasty = [
        "'",
        "\"",
        "';DROP TABLE events;--",
        "%",
        "_",
        "\\",
        "1 OR 1=1",
        "$$",
        "😀",
        "\u{202e}gnp.exe",
    ];
    for n in nasty {
        let e = urlencode(n);
        for path in [
            format!("/api/v1/events?q={e}"),
            format!("/api/v1/events?user={e}"),
            format!("/api/v1/audit?action={e}"),
        ] {
            let (status, v) = g.get(&s, &path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {v}");
        }
        for path in [
            format!("/api/v1/events?kind={e}"),
            format!("/api/v1/events?cursor={e}"),
        ] {
            let (status, v) = g.get(&s, &path).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {v}");
        }
        let (status, v) = g.get(&s, &format!("/api/v1/events?device={e}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "not a UUID: {v}");
        assert_eq!(code(&v), "bad_request");
    }
    let (status, _) = g
        .get(&s, &format!("/api/v1/events?q={}", "x".repeat(201)))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "bounded");
    for extreme in [
        "/api/v1/events?to=-262143-01-01T00:00:00Z",
        "/api/v1/events?from=262142-12-31T23:59:59Z",
        "/api/v1/audit?to=-262143-01-01T00:00:00Z",
        "/api/v1/alarms?to=-262143-01-01T00:00:00Z",
    ] {
        let (status, v) = g.get(&s, extreme).await;
        assert!(status.is_client_error(), "{extreme}: {status} {v}");
    }
    let (status, _) = g.get(&s, "/api/v1/events?limit=100000").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "bounded");
    assert_eq!(counts().await, before, "refusals changed nothing");

    // Unicode names are kept exactly as given; control characters are not.
    for name in [
        "'; DROP TABLE devices; --",
        "株式会社やまだ",
        "Zero\u{200b}Width",
        "e\u{301}cole",
        "\u{202e}evil",
        "🏢 HQ",
    ] {
        let (status, v) = g.post(&s, "/api/v1/groups", json!({ "name": name })).await;
        assert_eq!(status, StatusCode::CREATED, "{name:?}: {v}");
        assert_eq!(v["name"], name);
    }
    let (status, v) = g
        .post(&s, "/api/v1/groups", json!({ "name": "bell\u{7}" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (status, _) = g.get(&s, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK, "the devices table is still there");
    let (status, v) = g
        .call(Some(&s), Method::GET, "/api/v1/no-such-thing", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&v), "not_found");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn the_audit_log_is_append_only_for_the_service_role() {
    let g = Gw::start().await;
    let s = g.signup("Audit Co", "tenant").await;
    let tenant: uuid::Uuid = s.tenant_id.as_ref().unwrap().parse().unwrap();
    let mut tx = g
        .stack
        .env
        .db
        .begin_tenant(mamori_tenancy::TenantId::from_uuid(tenant))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(n >= 1, "the signup is recorded");
    let err = sqlx::query("UPDATE audit_log SET action = 'nothing happened'")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    drop(tx);
    let mut tx = g
        .stack
        .env
        .db
        .begin_tenant(mamori_tenancy::TenantId::from_uuid(tenant))
        .await
        .unwrap();
    let err = sqlx::query("DELETE FROM audit_log")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    drop(tx);
    // Signing keys and refresh tokens are out of the service role's reach
    // except through the narrow functions.
    for table in ["signing_keys", "refresh_tokens"] {
        let result: Result<i64, _> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(g.stack.env.db.pool())
                .await;
        match result {
            Ok(rows) => assert_eq!(rows, 0, "{table} rows visible to the service role"),
            Err(e) => assert!(e.to_string().contains("permission denied"), "{table}: {e}"),
        }
    }
}

#[tokio::test]
async fn the_database_refuses_moving_tenants_and_users_between_owners() {
    let g = Gw::start().await;
    let s = g.signup("Pinned KK", "tenant").await;
    let other_msp = g.signup("Grabby MSP", "msp").await;
    let tenant: uuid::Uuid = s.tenant_id.as_ref().unwrap().parse().unwrap();
    let org: uuid::Uuid = other_msp.org_id.as_ref().unwrap().parse().unwrap();
    let attempts = [
        "UPDATE tenants SET msp_org_id = $1 WHERE id = $2",
        "UPDATE users SET tenant_id = NULL, msp_org_id = $1, role = 'msp_admin' WHERE tenant_id = $2",
    ];
    for sql in attempts {
        // Even with the MSP's organisation named in the transaction.
        let mut tx = g
            .stack
            .env
            .db
            .begin_tenant(mamori_tenancy::TenantId::from_uuid(tenant))
            .await
            .unwrap();
        sqlx::query("SELECT set_config('mamori.org_id', $1, true)")
            .bind(org.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let err = sqlx::query(sql)
            .bind(org)
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("a tenant") || err.to_string().contains("a user"),
            "{sql}: {err}"
        );
    }
    let (_, t) = g.get(&s, "/api/v1/tenant").await;
    assert!(t["msp_org_id"].is_null());
}

/// Behind a load balancer the per-address limit is kept per client, by
/// `X-Forwarded-For`, but only when the connection comes from a configured
/// proxy: a client talking to the gateway directly cannot escape its limit
/// by writing the header itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    // (trusted proxies, whether a new forwarded address gets a fresh budget)
    for (trusted, fresh) in [("127.0.0.0/8", true), ("", false)] {
        let g = Gw::start_with(|c| {
            c.api_ip_rate = 1;
            c.api_ip_burst = 3;
            c.trusted_proxies = trusted.to_owned();
        })
        .await;
        let from = |client: &'static str| {
            let req = g
                .http
                .get(g.url("/api/v1/me"))
                .header("x-forwarded-for", format!("198.51.100.1, {client}"));
            async move { req.send().await.unwrap().status() }
        };
        for _ in 0..3 {
            assert_eq!(from("203.0.113.1").await, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(
            from("203.0.113.1").await,
            StatusCode::TOO_MANY_REQUESTS,
            "the fourth request of a client (trusted: {trusted:?})"
        );
        let other = from("203.0.113.2").await;
        if fresh {
            assert_eq!(
                other,
                StatusCode::UNAUTHORIZED,
                "another client behind the proxy"
            );
        } else {
            assert_eq!(
                other,
                StatusCode::TOO_MANY_REQUESTS,
                "a forged header changes nothing"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_trusted_proxy_entry_stops_the_gateway_with_its_name() {
    let e = mamori_gateway::Config {
        trusted_proxies: "10.0.0.0/8, lb.example".into(),
        kek: mamori_config::KeyEncryption {
            key_encryption_key: mamori_gateway::Kek::generate_base64(),
            ..Default::default()
        },
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert!(
        e.contains("trusted_proxies") && e.contains("lb.example"),
        "{e}"
    );
}
