//! The gateway end to end: signup, verification, login, refresh rotation,
//! logout, devices enrolled through real gRPC, log search, audit, MSPs,
//! invitations, roles, licence caps, retention and CSV export.

use crate::gw::{Gw, PASSWORD, Session, code, session_from};
use crate::support::{batch, process_event};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn signup_gives_a_tenant_an_admin_and_a_working_enrollment_token() {
    let g = Gw::start().await;
    let s = g.signup("Yamada Trading", "tenant").await;
    let tenant = s.tenant_id.clone().unwrap();

    // The enrollment token from signup enrolls a real agent over gRPC.
    let device = g
        .stack
        .new_device(s.enrollment_token.as_ref().unwrap())
        .await;
    let (status, devices) = g.get(&s, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK, "{devices}");
    let list = devices["devices"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(devices["total"], 1);
    assert_eq!(list[0]["id"], device.device_id.as_str());
    assert_eq!(
        list[0]["status"], "not_reporting",
        "enrolled, never connected"
    );
    assert_eq!(devices["counts"]["not_reporting"], 1);

    let (_, me) = g.get(&s, "/api/v1/me").await;
    assert_eq!(me["role"], "tenant_admin");
    assert_eq!(me["tenant_id"], tenant.as_str());
    assert_eq!(me["email_verified"], false);

    let (_, t) = g.get(&s, "/api/v1/tenant").await;
    assert_eq!(t["name"], "Yamada Trading");
    assert_eq!(t["devices"], 1);
    assert_eq!(t["device_limit"], 100);

    // The signup itself is in the audit log.
    let (_, audit) = g.get(&s, "/api/v1/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"tenant.signup"), "{actions:?}");
}

#[tokio::test]
async fn email_verification_link_works_once() {
    let g = Gw::start().await;
    let s = g.signup("Verify Co", "tenant").await;
    let code_text = g.code_mailed_to(&s.email, "mmv_");
    let (status, v) = g
        .call(
            None,
            Method::GET,
            &format!("/api/v1/auth/verify?token={code_text}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, me) = g.get(&s, "/api/v1/me").await;
    assert_eq!(me["email_verified"], true);
    let (status, v) = g
        .call(
            None,
            Method::POST,
            "/api/v1/auth/verify",
            Some(json!({ "token": code_text })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a used link: {v}");
}

#[tokio::test]
async fn login_refresh_rotation_reuse_and_logout() {
    let g = Gw::start().await;
    let s = g.signup("Rotate Co", "tenant").await;

    let (status, v) = g.login(&s.email, "wrong password entirely").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&v), "unauthenticated");
    let (status, v) = g.login("nobody@nowhere.example.com", PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "same answer for a missing account: {v}"
    );

    let (status, v) = g.login(&s.email.to_uppercase(), PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 900);
    let login = session_from(&v, &s.email);
    let (status, _) = g.get(&login, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK);

    // Refresh rotates: a new refresh token each time.
    let refresh = |t: String| {
        let g = &g;
        async move {
            g.call(
                None,
                Method::POST,
                "/api/v1/auth/refresh",
                Some(json!({ "refresh_token": t })),
            )
            .await
        }
    };
    let (status, r1) = refresh(login.refresh.clone()).await;
    assert_eq!(status, StatusCode::OK, "{r1}");
    let r1_token = r1["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1_token, login.refresh);
    let (status, r2) = refresh(r1_token.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let r2_token = r2["refresh_token"].as_str().unwrap().to_owned();

    // Presenting an already-used token revokes the whole family: even the
    // newest token of that login stops working.
    let (status, v) = refresh(r1_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&v), "refresh_token_reused");
    let (status, _) = refresh(r2_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "family revoked");

    // Another login is another family, untouched by that.
    let (status, _) = refresh(s.refresh.clone()).await;
    assert_eq!(status, StatusCode::OK, "the signup session lives on");

    // Logout revokes.
    let (_, v) = g.login(&s.email, PASSWORD).await;
    let fresh = session_from(&v, &s.email);
    let (status, _) = g
        .call(
            None,
            Method::POST,
            "/api/v1/auth/logout",
            Some(json!({ "refresh_token": fresh.refresh })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = refresh(fresh.refresh).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn repeated_wrong_passwords_slow_the_account_down() {
    let g = Gw::start_with(|c| c.login_free_failures = 3).await;
    let s = g.signup("Brute Co", "tenant").await;
    for _ in 0..3 {
        let (status, _) = g.login(&s.email, "not the password at all").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Past the free failures the account waits before each attempt: even
    // the right password is refused until then.
    let resp = g
        .http
        .post(g.url("/api/v1/auth/login"))
        .json(&json!({ "email": s.email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        wait, 1,
        "the first wait is one second, doubling after each failure"
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code(&v), "too_many_attempts");
    tokio::time::sleep(std::time::Duration::from_millis(wait * 1000 + 200)).await;
    let (status, v) = g.login(&s.email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "after the wait: {v}");
}

#[tokio::test]
async fn signup_refusals_name_the_problem() {
    let g = Gw::start().await;
    let post = |body: Value| {
        let g = &g;
        async move {
            g.call(None, Method::POST, "/api/v1/signup", Some(body))
                .await
        }
    };
    let cases = [
        (
            json!({"email": "not-an-address", "password": PASSWORD, "company": "X"}),
            "email",
        ),
        (
            json!({"email": "a@b.example.com", "password": "short", "company": "X"}),
            "at least 12",
        ),
        (
            json!({"email": "a@b.example.com", "password": "aaaaaaaaaaaaaaaa", "company": "X"}),
            "5 different",
        ),
        (
            json!({"email": "a@b.example.com", "password": PASSWORD, "company": ""}),
            "company",
        ),
        (
            json!({"email": "a@b.example.com", "password": PASSWORD, "company": "x".repeat(201)}),
            "200",
        ),
        (
            json!({"email": "a@b.example.com", "password": PASSWORD, "company": "Bad\u{0000}Name"}),
            "control",
        ),
    ];
    for (body, want) in cases {
        let (status, v) = post(body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(code(&v), "invalid_input");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(want),
            "{body}: {v}"
        );
    }
    let s = g.signup("First", "tenant").await;
    let (status, v) =
        post(json!({"email": s.email, "password": PASSWORD, "company": "Second"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&v), "email_taken");
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&g.stack.env.owner)
        .await
        .unwrap();
    assert_eq!(tenants, 1, "refused signups created nothing");
}

/// Sends `n` process events with the given executables from a new device.
async fn send_events(g: &Gw, token: &str, exes: &[&str]) -> String {
    let device = g.stack.new_device(token).await;
    let mut stream = g.stack.open(&device.device_credential).await.unwrap();
    let events = exes.iter().map(|e| process_event(e)).collect();
    stream.send(batch(1, events)).await.unwrap();
    device.device_id
}

async fn wait_rows(g: &Gw, tenant: &str, n: i64) {
    let t = mamori_tenancy::TenantId::from_uuid(tenant.parse().unwrap());
    crate::support::wait_for(
        "events in PostgreSQL",
        std::time::Duration::from_secs(20),
        || async { (g.stack.count_events(t).await >= n).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn log_search_filters_pages_and_is_audited() {
    let g = Gw::start().await;
    let s = g.signup("Search Co", "tenant").await;
    let token = s.enrollment_token.clone().unwrap();
    let exes: Vec<String> = (0..25).map(|i| format!("/usr/bin/tool{i:02}")).collect();
    let mut all: Vec<&str> = exes.iter().map(String::as_str).collect();
    all.push("/opt/100%_legit/winny.exe");
    let d1 = send_events(&g, &token, &all).await;
    let d2 = send_events(&g, &token, &["/usr/bin/other"]).await;
    wait_rows(&g, s.tenant_id.as_ref().unwrap(), 27).await;

    // Pages of 10 cover all 27, newest first, without repeats.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/events?limit=10&cursor={c}"),
            None => "/api/v1/events?limit=10".into(),
        };
        let (status, page) = g.get(&s, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for e in page["events"].as_array().unwrap() {
            let time = chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap();
            seen.push((time, e["id"].as_str().unwrap().to_owned()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 27);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 27, "no event twice");
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Filters.
    let (_, page) = g.get(&s, &format!("/api/v1/events?device={d2}")).await;
    let ev = page["events"].as_array().unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["subject"], "/usr/bin/other");
    assert_eq!(ev[0]["kind"], "process_start");
    assert_eq!(ev[0]["os_user"], "alice");
    assert_eq!(
        ev[0]["detail"]["process"]["command_line"],
        "/usr/bin/other --flag"
    );
    // Stored once, in its column, the subject is still in the detail.
    assert_eq!(ev[0]["detail"]["process"]["exe_path"], "/usr/bin/other");
    // Free text is literal: % and _ are not wildcards.
    let (_, page) = g.get(&s, "/api/v1/events?q=100%25_legit").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["device_id"], d1.as_str());
    let (_, page) = g.get(&s, "/api/v1/events?q=WINNY").await;
    assert_eq!(
        page["events"].as_array().unwrap().len(),
        1,
        "case-insensitive"
    );
    let (_, page) = g.get(&s, "/api/v1/events?q=tool0").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 10);
    let (_, page) = g.get(&s, "/api/v1/events?kind=logon").await;
    assert!(page["events"].as_array().unwrap().is_empty());
    let (_, page) = g.get(&s, "/api/v1/events?user=bob").await;
    assert!(page["events"].as_array().unwrap().is_empty());
    let (status, v) = g.get(&s, "/api/v1/events?kind=explode").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["message"].as_str().unwrap().contains("explode"));
    let (status, _) = g.get(&s, "/api/v1/events?cursor=garbage").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = g
        .get(
            &s,
            "/api/v1/events?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Every read is audited with who did it.
    let (_, audit) = g.get(&s, "/api/v1/audit?action=events.search").await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(
        entries.len(),
        9,
        "3 pages and 6 filtered searches; refused ones read nothing"
    );
    assert_eq!(entries[0]["actor_email"], s.email.as_str());
    assert_eq!(entries[0]["client_ip"], "127.0.0.1");

    // CSV export of the same range.
    let resp = g
        .http
        .get(g.url("/api/v1/events/export?q=tool"))
        .bearer_auth(&s.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = resp.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "time,received_at,device_id,hostname,kind,os_user,subject,detail"
    );
    assert_eq!(lines.len(), 26, "header + 25 tool events");
    let (_, audit) = g.get(&s, "/api/v1/audit?action=events.export").await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn auditors_read_but_change_nothing() {
    let g = Gw::start().await;
    let admin = g.signup("Roles Co", "tenant").await;
    verify(&g, &admin).await;
    let auditor = invite_and_accept(&g, &admin, "auditor").await;
    let device = g
        .stack
        .new_device(admin.enrollment_token.as_ref().unwrap())
        .await;

    let (status, _) = g.get(&auditor, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = g.get(&auditor, "/api/v1/events").await;
    assert_eq!(status, StatusCode::OK);
    for (method, path) in [
        (
            Method::POST,
            format!("/api/v1/devices/{}/revoke", device.device_id),
        ),
        (
            Method::DELETE,
            format!("/api/v1/devices/{}", device.device_id),
        ),
        (Method::POST, "/api/v1/enrollment-tokens".into()),
        (Method::PATCH, "/api/v1/tenant".into()),
        (Method::POST, "/api/v1/invitations".into()),
    ] {
        let body = json!({ "email": "new@x.example.com", "role": "auditor" });
        let body = if path.ends_with("invitations") {
            body
        } else {
            json!({})
        };
        let (status, v) = g
            .call(Some(&auditor), method.clone(), &path, Some(body))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {v}");
    }
    let (_, d) = g
        .get(&admin, &format!("/api/v1/devices/{}", device.device_id))
        .await;
    assert!(d["revoked_at"].is_null(), "the device is untouched");
    // Reading the audit trail is an auditor's job.
    let (status, audit) = g.get(&auditor, "/api/v1/audit").await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    assert!(!audit["entries"].as_array().unwrap().is_empty());
}

pub async fn verify(g: &Gw, s: &Session) {
    let c = g.code_mailed_to(&s.email, "mmv_");
    let (status, _) = g
        .call(
            None,
            Method::POST,
            "/api/v1/auth/verify",
            Some(json!({ "token": c })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// Invites a new user with `role` to `by`'s tenant (or organisation for MSP
/// roles) and accepts the mailed invitation.
pub async fn invite_and_accept(g: &Gw, by: &Session, role: &str) -> Session {
    let email = format!("{}@invited.example.com", uuid::Uuid::new_v4().simple());
    let path = if role.starts_with("msp_") {
        "/api/v1/org/invitations"
    } else {
        "/api/v1/invitations"
    };
    let (status, v) = g
        .post(by, path, json!({ "email": email, "role": role }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let token = g.code_mailed_to(&email, "mmi_");
    let (status, v) = g
        .call(
            None,
            Method::POST,
            "/api/v1/invitations/accept",
            Some(json!({ "token": token, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, again) = g
        .call(
            None,
            Method::POST,
            "/api/v1/invitations/accept",
            Some(json!({ "token": token, "password": PASSWORD })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an invitation works once: {again}"
    );
    let mut s = session_from(&v, &email);
    s.acting = by.acting.clone();
    s
}

#[tokio::test]
async fn msp_runs_tenants_and_technicians_see_only_their_list() {
    let g = Gw::start().await;
    let msp = g.signup("Kanto IT Services", "msp").await;
    assert!(msp.org_id.is_some() && msp.tenant_id.is_none());
    verify(&g, &msp).await;

    let mut tenants = Vec::new();
    for name in ["Customer A", "Customer B"] {
        let (status, v) = g
            .post(&msp, "/api/v1/tenants", json!({ "name": name }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        // Licence caps are the operator's (`mamori tenant set-limit`).
        let id = mamori_tenancy::TenantId::from_uuid(v["id"].as_str().unwrap().parse().unwrap());
        mamori_registry::set_device_limit(&g.stack.env.db, id, 5)
            .await
            .unwrap();
        tenants.push((
            v["id"].as_str().unwrap().to_owned(),
            v["enrollment_token"].as_str().unwrap().to_owned(),
        ));
    }
    g.stack.new_device(&tenants[0].1).await;
    g.stack.new_device(&tenants[0].1).await;
    g.stack.new_device(&tenants[1].1).await;

    let (_, list) = g.get(&msp, "/api/v1/tenants").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let a = list
        .iter()
        .find(|t| t["id"] == tenants[0].0.as_str())
        .unwrap();
    assert_eq!(a["devices"], 2);
    assert_eq!(a["device_limit"], 5);

    // Acting on a tenant needs the header.
    let (status, v) = g.get(&msp, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Mamori-Tenant")
    );
    let (status, devices) = g.get(&msp.on(&tenants[0].0), "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2);

    // A technician with only tenant B on the list.
    let tech = invite_and_accept(&g, &msp, "msp_technician").await;
    let (status, v) = g
        .call(
            Some(&msp),
            Method::PUT,
            &format!("/api/v1/org/users/{}/tenants", me_id(&g, &tech).await),
            Some(json!({ "tenant_ids": [tenants[1].0] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, audit) = g
        .get(
            &msp.on(&tenants[1].0),
            "/api/v1/audit?action=msp.access_granted",
        )
        .await;
    assert_eq!(
        audit["entries"].as_array().unwrap().len(),
        1,
        "the grant is in B's audit log"
    );
    let (_, list) = g.get(&tech, "/api/v1/tenants").await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![tenants[1].0.as_str()]);
    let (status, _) = g.get(&tech.on(&tenants[1].0), "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = g.get(&tech.on(&tenants[0].0), "/api/v1/devices").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not on the list");
    let (status, _) = g
        .post(&tech, "/api/v1/tenants", json!({ "name": "Sneaky" }))
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "technicians do not create tenants"
    );

    // Neither the MSP nor the tenant changes a licence cap; the operator
    // lowers this one to the devices enrolled.
    let (status, v) = g
        .call(
            Some(&msp.on(&tenants[0].0)),
            Method::PATCH,
            "/api/v1/tenant",
            Some(json!({ "device_limit": 1000000 })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let id = mamori_tenancy::TenantId::from_uuid(tenants[0].0.parse().unwrap());
    mamori_registry::set_device_limit(&g.stack.env.db, id, 2)
        .await
        .unwrap();
    let (_, v) = g.get(&msp.on(&tenants[0].0), "/api/v1/tenant").await;
    assert_eq!(v["device_limit"], 2);
    assert_eq!(v["devices"], 2);
    // At the cap, enrollment is refused with the reason.
    let err = g
        .stack
        .enroll(&tenants[0].1, "one-too-many", "one-too-many")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("licence cap of 2"),
        "{}",
        err.message()
    );
}

pub async fn me_id(g: &Gw, s: &Session) -> String {
    let (_, me) = g.get(s, "/api/v1/me").await;
    me["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_tenant_is_handed_over_to_an_msp_and_released() {
    let g = Gw::start().await;
    let company = g.signup("Self Service KK", "tenant").await;
    let tenant = company.tenant_id.clone().unwrap();
    let msp = g.signup("Helpful MSP", "msp").await;

    let (status, _) = g.get(&msp.on(&tenant), "/api/v1/devices").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not the MSP's tenant yet");
    let (status, v) = g.post(&company, "/api/v1/tenant/handover", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let code_text = v["code"].as_str().unwrap().to_owned();
    let (status, v) = g
        .post(&msp, "/api/v1/tenants/claim", json!({ "code": code_text }))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["id"], tenant.as_str());
    let (status, _) = g.get(&msp.on(&tenant), "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK, "the MSP runs it now");
    let (status, _) = g
        .post(&msp, "/api/v1/tenants/claim", json!({ "code": code_text }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a code works once");

    let (status, _) = g
        .post(
            &msp,
            &format!("/api/v1/tenants/{tenant}/release"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = g.get(&msp.on(&tenant), "/api/v1/devices").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "released");
    let (status, _) = g.get(&company, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK, "the tenant's own admin keeps it");
    let (_, audit) = g.get(&company, "/api/v1/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"tenant.claimed") && actions.contains(&"tenant.released"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn tokens_devices_groups_and_retention_settings() {
    let g = Gw::start().await;
    let s = g.signup("Admin Co", "tenant").await;
    let (status, group) = g
        .post(&s, "/api/v1/groups", json!({ "name": "Osaka office" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let (status, _) = g
        .post(&s, "/api/v1/groups", json!({ "name": "osaka OFFICE" }))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "names are unique per parent, case-insensitively"
    );
    let gid = group["id"].as_str().unwrap();
    let (status, dept) = g
        .post(
            &s,
            "/api/v1/groups",
            json!({ "name": "Sales", "parent_id": gid }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, tok) = g
        .post(
            &s,
            "/api/v1/enrollment-tokens",
            json!({ "expires": "7d", "max_uses": 1, "group_id": dept["id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tok}");
    let device = g.stack.new_device(tok["token"].as_str().unwrap()).await;
    let err = g
        .stack
        .enroll(tok["token"].as_str().unwrap(), "m2", "m2")
        .await
        .unwrap_err();
    assert!(err.message().contains("maximum"), "{}", err.message());
    // The device joined the department; the office filter includes it.
    let (_, d) = g
        .get(&s, &format!("/api/v1/devices/{}", device.device_id))
        .await;
    assert_eq!(d["group_id"], dept["id"]);
    let (_, list) = g
        .get(
            &s,
            &format!("/api/v1/devices?group={}", dept["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);

    let (status, v) = g
        .post(
            &s,
            "/api/v1/enrollment-tokens",
            json!({ "expires": "soon" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("expires"),
        "{v}"
    );
    let (_, tokens) = g.get(&s, "/api/v1/enrollment-tokens").await;
    assert_eq!(tokens.as_array().unwrap().len(), 2, "signup's and this one");
    assert!(
        tokens.to_string().find("mmt_").is_none(),
        "secrets are never listed"
    );
    let (status, _) = g
        .post(
            &s,
            &format!(
                "/api/v1/enrollment-tokens/{}/revoke",
                tok["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Revoking a device cuts its credential.
    let (status, v) = g
        .post(
            &s,
            &format!("/api/v1/devices/{}/revoke", device.device_id),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "revoked");
    assert!(g.stack.open(&device.device_credential).await.is_err());
    let (status, _) = g
        .call(
            Some(&s),
            Method::DELETE,
            &format!("/api/v1/devices/{}", device.device_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = g
        .get(&s, &format!("/api/v1/devices/{}", device.device_id))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Retention: 90 days to 7 years.
    for bad in [89, 2558] {
        let (status, v) = g
            .call(
                Some(&s),
                Method::PATCH,
                "/api/v1/tenant",
                Some(json!({ "retention_days": bad })),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    }
    let (status, v) = g
        .call(
            Some(&s),
            Method::PATCH,
            "/api/v1/tenant",
            Some(json!({ "retention_days": 2557 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["retention_days"], 2557);
    let (status, v) = g
        .call(
            Some(&s),
            Method::PATCH,
            "/api/v1/tenant",
            Some(json!({ "device_limit": 100000 })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a tenant cannot raise its own cap: {v}"
    );

    // Deleting a device revokes it: an open stream is cut, the row is gone
    // from the lists.
    let live = g
        .stack
        .new_device(s.enrollment_token.as_ref().unwrap())
        .await;
    let mut stream = g.stack.open(&live.device_credential).await.unwrap();
    stream
        .send(batch(1, vec![process_event("/usr/bin/still-here")]))
        .await
        .unwrap();
    let (status, _) = g
        .call(
            Some(&s),
            Method::DELETE,
            &format!("/api/v1/devices/{}", live.device_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let cut = stream.next().await;
    assert!(cut.is_err(), "the deleted device's stream ends: {cut:?}");
    let (_, list) = g.get(&s, "/api/v1/devices").await;
    assert!(
        list["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["id"] != live.device_id.as_str()),
        "{list}"
    );
}

#[tokio::test]
async fn openapi_document_lists_the_named_endpoints() {
    let g = Gw::start().await;
    let (status, doc) = g
        .call(None, Method::GET, "/api/v1/openapi.json", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/signup",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/devices",
        "/api/v1/events",
        "/api/v1/audit",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let (status, jwks) = g
        .call(None, Method::GET, "/.well-known/jwks.json", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert!(key["kid"].is_string());
    assert!(key.get("d").is_none(), "no private part");

    // The ops endpoint counts requests per route.
    let metrics = g
        .http
        .get(format!("http://{}/metrics", g.gateway.ops_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mamori_gateway_requests_total")
                && l.contains("route=\"/api/v1/openapi.json\"")
                && l.contains("status=\"200\"")),
        "{metrics}"
    );
    let ready = g
        .http
        .get(format!("http://{}/readyz", g.gateway.ops_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

/// Runs the `mamori` binary with `stdin` on its standard input.
fn mamori_cli(g: &Gw, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mamori"))
        .args(args)
        .env("MAMORI_DATABASE_URL", &g.stack.env.database_url)
        .env("MAMORI_KEY_ENCRYPTION_KEY", &g.kek)
        .env_remove("MAMORI_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn cli_json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[tokio::test]
async fn operators_create_users_set_caps_and_rotate_keys_from_the_cli() {
    let g = Gw::start_with(|c| c.key_reload_s = 1).await;
    let tenant = mamori_registry::create_tenant(&g.stack.env.db, "Operator Made KK")
        .await
        .unwrap();
    let t = tenant.to_string();

    let user = cli_json(&mamori_cli(
        &g,
        &[
            "user",
            "create",
            "--tenant",
            &t,
            "--email",
            "Boss@Operator.example.com",
            "--json",
        ],
        &format!("{PASSWORD}\n"),
    ));
    assert_eq!(user["email"], "boss@operator.example.com");
    let (status, v) = g.login("boss@operator.example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let boss = session_from(&v, "boss@operator.example.com");
    let (_, me) = g.get(&boss, "/api/v1/me").await;
    assert_eq!(me["tenant_id"], t.as_str());
    assert_eq!(
        me["email_verified"], true,
        "the operator vouches for the address"
    );

    let weak = mamori_cli(
        &g,
        &[
            "user",
            "create",
            "--tenant",
            &t,
            "--email",
            "x@operator.example.com",
        ],
        "short\n",
    );
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 12"));

    let capped = cli_json(&mamori_cli(
        &g,
        &["tenant", "set-limit", &t, "3", "--json"],
        "",
    ));
    assert_eq!(capped["device_limit"], 3);
    let (_, settings) = g.get(&boss, "/api/v1/tenant").await;
    assert_eq!(settings["device_limit"], 3);

    // Rotate: the old key still verifies; retire it: its tokens stop.
    let keys = cli_json(&mamori_cli(&g, &["keys", "list", "--json"], ""));
    let old = keys["keys"][0]["kid"].as_str().unwrap().to_owned();
    assert_eq!(keys["keys"][0]["signing"], true);
    let new = cli_json(&mamori_cli(&g, &["keys", "rotate", "--json"], ""));
    let new_kid = new["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old);
    let (status, _) = g.get(&boss, "/api/v1/me").await;
    assert_eq!(status, StatusCode::OK, "rotation logs nobody out");
    cli_json(&mamori_cli(&g, &["keys", "retire", &old, "--json"], ""));
    crate::support::wait_for(
        "the old key's tokens to stop working",
        std::time::Duration::from_secs(5),
        || async { (g.get(&boss, "/api/v1/me").await.0 == StatusCode::UNAUTHORIZED).then_some(()) },
    )
    .await;
    let (_, v) = g.login("boss@operator.example.com", PASSWORD).await;
    let header = v["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    use base64::Engine;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        header["kid"],
        new_kid.as_str(),
        "new tokens carry the new kid"
    );
    assert_eq!(header["alg"], "EdDSA");
    let again = mamori_cli(&g, &["keys", "retire", &old], "");
    assert!(!again.status.success(), "retiring twice is an error");
}

#[tokio::test]
async fn each_tenant_keeps_its_log_for_its_retention() {
    let g = Gw::start().await;
    let short = g.signup("Short Memory KK", "tenant").await;
    let long = g.signup("Long Memory KK", "tenant").await;
    let (status, _) = g
        .call(
            Some(&short),
            Method::PATCH,
            "/api/v1/tenant",
            Some(json!({ "retention_days": 90 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let old_us = (chrono::Utc::now() - chrono::Duration::days(100)).timestamp_micros();
    for s in [&short, &long] {
        let device = g
            .stack
            .new_device(s.enrollment_token.as_ref().unwrap())
            .await;
        let mut stream = g.stack.open(&device.device_credential).await.unwrap();
        let mut old = process_event("/usr/bin/old-news");
        old.occurred_at_us = old_us;
        stream
            .send(batch(1, vec![old, process_event("/usr/bin/fresh")]))
            .await
            .unwrap();
        wait_rows(&g, s.tenant_id.as_ref().unwrap(), 2).await;
    }
    let from = (chrono::Utc::now() - chrono::Duration::days(120)).format("%Y-%m-%dT%H:%M:%SZ");
    let visible = |s: &Session| {
        let g = &g;
        let path = format!("/api/v1/events?from={from}");
        let s = s.clone();
        async move { g.get(&s, &path).await.1["events"].as_array().unwrap().len() }
    };
    assert_eq!(
        visible(&short).await,
        1,
        "past its retention the search shows nothing"
    );
    assert_eq!(visible(&long).await, 2);

    let deleted = mamori_writer::apply_retention(&g.stack.env.db)
        .await
        .unwrap();
    assert_eq!(
        deleted, 1,
        "only the short-retention tenant's old event goes"
    );
    let count = |s: &Session| {
        let t = mamori_tenancy::TenantId::from_uuid(s.tenant_id.as_ref().unwrap().parse().unwrap());
        g.stack.count_events(t)
    };
    assert_eq!(count(&short).await, 1);
    assert_eq!(count(&long).await, 2);
    assert_eq!(
        mamori_writer::apply_retention(&g.stack.env.db)
            .await
            .unwrap(),
        0,
        "idempotent"
    );
}

/// Writes an alarm row the way the alerting service will.
pub(crate) async fn insert_alarm(
    g: &Gw,
    tenant: &str,
    category: &str,
    device: Option<&str>,
    at: &str,
) -> String {
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO alarms (tenant_id, id, category, device_id, summary, first_at, last_at)
         VALUES ($1::uuid, $2, $3, $4::uuid, 'test alarm', $5::timestamptz, $5::timestamptz)",
    )
    .bind(tenant)
    .bind(id)
    .bind(category)
    .bind(device)
    .bind(at)
    .execute(&g.stack.env.owner)
    .await
    .unwrap();
    id.to_string()
}

#[tokio::test]
async fn alarms_calendar_acknowledgement_and_context() {
    let g = Gw::start().await;
    let msp = g.signup("Calendar MSP", "msp").await;
    let (_, t) = g
        .post(&msp, "/api/v1/tenants", json!({ "name": "Calendar KK" }))
        .await;
    let tenant = t["id"].as_str().unwrap().to_owned();
    let admin = msp.on(&tenant);
    let (_, office) = g
        .post(&admin, "/api/v1/groups", json!({ "name": "Osaka" }))
        .await;
    let (_, dept) = g
        .post(
            &admin,
            "/api/v1/groups",
            json!({ "name": "Sales", "parent_id": office["id"] }),
        )
        .await;
    let (_, tok) = g
        .post(
            &admin,
            "/api/v1/enrollment-tokens",
            json!({ "group_id": dept["id"] }),
        )
        .await;
    let in_sales = g
        .stack
        .new_device(tok["token"].as_str().unwrap())
        .await
        .device_id;
    let elsewhere = g
        .stack
        .new_device(t["enrollment_token"].as_str().unwrap())
        .await
        .device_id;

    // 16:00 UTC on the 3rd is the 4th in Tokyo.
    insert_alarm(
        &g,
        &tenant,
        "banned_app",
        Some(&in_sales),
        "2026-11-03T16:00:00Z",
    )
    .await;
    insert_alarm(
        &g,
        &tenant,
        "banned_app",
        Some(&elsewhere),
        "2026-11-03T16:30:00Z",
    )
    .await;
    insert_alarm(
        &g,
        &tenant,
        "mass_print",
        Some(&in_sales),
        "2026-11-20T01:00:00Z",
    )
    .await;
    insert_alarm(
        &g,
        &tenant,
        "after_hours",
        Some(&in_sales),
        "2026-10-31T23:00:00Z",
    )
    .await;

    let (status, cal) = g
        .get(
            &admin,
            "/api/v1/alarms/calendar?month=2026-11&tz=Asia/Tokyo",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cal}");
    let days = cal["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    assert_eq!(days[0]["date"], "2026-11-01");
    assert_eq!(
        days[0]["counts"]["after_hours"], 1,
        "23:00 UTC on Oct 31 is Nov 1 in Tokyo"
    );
    assert_eq!(days[3]["counts"]["banned_app"], 2);
    assert_eq!(days[2]["total"], 0);
    assert_eq!(days[19]["counts"]["mass_print"], 1);
    assert_eq!(cal["categories"].as_array().unwrap().len(), 9);
    let (_, utc) = g
        .get(&admin, "/api/v1/alarms/calendar?month=2026-11&tz=UTC")
        .await;
    assert_eq!(
        utc["days"][2]["counts"]["banned_app"], 2,
        "in UTC they are on the 3rd"
    );
    assert_eq!(utc["days"][0]["total"], 0);
    // The office includes its department; the department alone too.
    let (_, by_office) = g
        .get(
            &admin,
            &format!(
                "/api/v1/alarms/calendar?month=2026-11&tz=Asia/Tokyo&group={}",
                office["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(by_office["days"][3]["counts"]["banned_app"], 1);
    assert_eq!(by_office["days"][19]["total"], 1);
    for bad in ["month=2026-13", "month=26-11", "tz=Mars/Olympus"] {
        let (status, v) = g
            .get(&admin, &format!("/api/v1/alarms/calendar?{bad}"))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
    }

    // The MSP overview counts open alarms; acknowledging one lowers it.
    let (_, list) = g.get(&msp, "/api/v1/tenants").await;
    assert_eq!(list[0]["open_alarms"], 4);
    assert_eq!(list[0]["last_alarm_at"], "2026-11-20T01:00:00Z");
    let (_, page) = g
        .get(
            &admin,
            "/api/v1/alarms?from=2026-10-01T00:00:00Z&to=2026-12-01T00:00:00Z&category=mass_print",
        )
        .await;
    let alarm = page["alarms"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(page["alarms"].as_array().unwrap().len(), 1);
    let (status, acked) = g
        .post(
            &admin,
            &format!("/api/v1/alarms/{alarm}/acknowledge"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(acked["status"], "acknowledged");
    let (_, list) = g.get(&msp, "/api/v1/tenants").await;
    assert_eq!(list[0]["open_alarms"], 3);
    assert_eq!(
        list[0]["last_alarm_at"], "2026-11-20T01:00:00Z",
        "an acknowledged alarm still happened"
    );
    let (_, open) = g
        .get(
            &admin,
            "/api/v1/alarms?from=2026-10-01T00:00:00Z&to=2026-12-01T00:00:00Z&status=open",
        )
        .await;
    assert_eq!(open["alarms"].as_array().unwrap().len(), 3);
    let (status, _) = g.get(&admin, "/api/v1/alarms?category=volcano").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Another tenant cannot see or acknowledge it.
    let other = g.signup("Nosy KK", "tenant").await;
    let (status, _) = g
        .post(
            &other,
            &format!("/api/v1/alarms/{alarm}/acknowledge"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = g
        .get(&other, &format!("/api/v1/alarms/{alarm}/context"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The operation log around an alarm: 5 minutes either side.
    let enrolled = g.stack.new_device(tok["token"].as_str().unwrap()).await;
    let device = enrolled.device_id.clone();
    let mut stream = g.stack.open(&enrolled.device_credential).await.unwrap();
    let now = chrono::Utc::now();
    let mut near = process_event("/usr/bin/winny");
    near.occurred_at_us = (now - chrono::Duration::minutes(2)).timestamp_micros();
    let mut far = process_event("/usr/bin/unrelated");
    far.occurred_at_us = (now - chrono::Duration::minutes(30)).timestamp_micros();
    stream.send(batch(1, vec![near, far])).await.unwrap();
    crate::support::wait_for(
        "events stored",
        std::time::Duration::from_secs(20),
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM events WHERE device_id = $1::uuid")
                    .bind(&device)
                    .fetch_one(&g.stack.env.owner)
                    .await
                    .unwrap();
            (n == 2).then_some(())
        },
    )
    .await;
    let alarm = insert_alarm(&g, &tenant, "banned_app", Some(&device), &now.to_rfc3339()).await;
    let (status, ctx) = g
        .get(&admin, &format!("/api/v1/alarms/{alarm}/context"))
        .await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    let events = ctx["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{ctx}");
    assert_eq!(events[0]["subject"], "/usr/bin/winny");
    let (_, audit) = g
        .get(&admin, "/api/v1/audit?action=events.alarm_context")
        .await;
    assert_eq!(
        audit["entries"].as_array().unwrap().len(),
        1,
        "reading the log around an alarm is audited"
    );
}

#[tokio::test]
async fn finished_days_get_search_indexes_and_stay_searchable() {
    let g = Gw::start().await;
    let s = g.signup("Index KK", "tenant").await;
    let device = g
        .stack
        .new_device(s.enrollment_token.as_ref().unwrap())
        .await;
    let mut stream = g.stack.open(&device.device_credential).await.unwrap();
    let two_days_ago = chrono::Utc::now() - chrono::Duration::days(2);
    let mut old = process_event("/opt/legacy/winny.exe");
    old.occurred_at_us = two_days_ago.timestamp_micros();
    stream
        .send(batch(1, vec![old, process_event("/usr/bin/today")]))
        .await
        .unwrap();
    wait_rows(&g, s.tenant_id.as_ref().unwrap(), 2).await;

    let indexes = |day: chrono::DateTime<chrono::Utc>| {
        let part = format!("events_{}", day.format("%Y%m%d"));
        let owner = g.stack.env.owner.clone();
        async move {
            let mut names: Vec<String> =
                sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE tablename = $1")
                    .bind(&part)
                    .fetch_all(&owner)
                    .await
                    .unwrap();
            names.sort();
            names
        }
    };
    let today = chrono::Utc::now();
    assert_eq!(
        indexes(two_days_ago).await.len(),
        1,
        "only the primary key while inserting"
    );
    let built = mamori_writer::index_finished_days(&g.stack.env.db)
        .await
        .unwrap();
    assert!(built >= 1, "{built}");
    let old_day = format!("events_{}", two_days_ago.format("%Y%m%d"));
    assert_eq!(
        indexes(two_days_ago).await,
        vec![
            format!("{old_day}_device"),
            format!("{old_day}_pkey"),
            format!("{old_day}_subject")
        ]
    );
    assert_eq!(
        indexes(today).await.len(),
        1,
        "the current day keeps only its primary key"
    );
    assert_eq!(
        mamori_writer::index_finished_days(&g.stack.env.db)
            .await
            .unwrap(),
        0,
        "done once"
    );

    let from = (two_days_ago - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    let (_, page) = g
        .get(&s, &format!("/api/v1/events?from={from}&q=winny"))
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1, "{page}");
    let (_, page) = g
        .get(
            &s,
            &format!("/api/v1/events?from={from}&device={}", device.device_id),
        )
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_withdrawn_invitation_cannot_be_accepted() {
    let g = Gw::start().await;
    let admin = g.signup("Withdraw KK", "tenant").await;
    verify(&g, &admin).await;
    let email = "changed-my-mind@withdraw.example.com";
    let (status, inv) = g
        .post(
            &admin,
            "/api/v1/invitations",
            json!({ "email": email, "role": "auditor" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{inv}");
    let code_text = g.code_mailed_to(email, "mmi_");
    let (status, _) = g
        .post(
            &admin,
            &format!("/api/v1/invitations/{}/revoke", inv["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = g
        .call(
            None,
            Method::POST,
            "/api/v1/invitations/accept",
            Some(json!({ "token": code_text, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(code(&v), "invitation_expired");
    let (_, list) = g.get(&admin, "/api/v1/invitations").await;
    assert!(list[0]["revoked_at"].is_string(), "{list}");
    let (_, users) = g.get(&admin, "/api/v1/users").await;
    assert_eq!(users.as_array().unwrap().len(), 1, "no account was made");
    let (_, audit) = g
        .get(&admin, "/api/v1/audit?action=user.invitation_revoke")
        .await;
    assert_eq!(audit["entries"][0]["target"], email);
}
