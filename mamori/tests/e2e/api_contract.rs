//! The API as a contract: each answer's status says whose move it is. A
//! refused write of the caller's is 409/422, a dependency away is 503, and
//! a fault of ours is 500, never dressed up as a passing outage.

use crate::gateway::verify;
use crate::gw::{Gw, code};
use mamori_tenancy::{Failure, classify};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Real PostgreSQL errors, classified by SQLSTATE.
#[tokio::test]
async fn database_errors_are_classified_by_sqlstate() {
    let env = mamori_test_support::TestEnv::new().await;
    let run = |sql: &'static str| {
        let owner = env.owner.clone();
        async move {
            let mut tx = owner.begin().await.unwrap();
            sqlx::query("CREATE TEMP TABLE t (id int PRIMARY KEY, n int CHECK (n > 0), p int REFERENCES t (id))")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("INSERT INTO t VALUES (1, 1, NULL)")
                .execute(&mut *tx)
                .await
                .unwrap();
            // After ` ;; `, the statement that fails; before, its setup.
            let (setup, failing) = sql.split_once(" ;; ").unwrap_or(("", sql));
            if !setup.is_empty() {
                sqlx::query(sqlx::AssertSqlSafe(setup))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            let e = sqlx::query(sqlx::AssertSqlSafe(failing))
                .execute(&mut *tx)
                .await
                .expect_err(sql);
            classify(&e)
        }
    };
    assert!(matches!(
        run("INSERT INTO t VALUES (1, 1, NULL)").await,
        Failure::Duplicate { constraint: Some(c) } if c == "t_pkey"
    ));
    assert!(matches!(
        run("INSERT INTO t VALUES (2, 0, NULL)").await,
        Failure::Refused { constraint: Some(c) } if c == "t_n_check"
    ));
    assert!(matches!(
        run("INSERT INTO t VALUES (3, 1, 99)").await,
        Failure::Refused { .. }
    ));
    assert_eq!(
        run("DO $$ BEGIN RAISE EXCEPTION 'only the owner may do this'; END $$").await,
        Failure::Rule {
            message: "only the owner may do this".into()
        }
    );
    assert_eq!(
        run("SET LOCAL statement_timeout = 10 ;; SELECT pg_sleep(1)").await,
        Failure::Unavailable
    );
    assert_eq!(run("SELECT * FROM no_such_table").await, Failure::Internal);
}

/// Renaming a template to the name of another of the organisation's was
/// answered 503 "retry later"; it is a conflict of the caller's.
#[tokio::test]
async fn renaming_a_template_to_a_taken_name_is_a_conflict() {
    let g = Gw::start().await;
    let msp = g.signup("Rename MSP", "msp").await;
    verify(&g, &msp).await;
    let mut ids = Vec::new();
    for name in ["Standard", "Strict"] {
        let (status, t) = g
            .post(
                &msp,
                "/api/v1/org/policy-templates",
                json!({"name": name, "document": {"mass_print": {"pages": 50, "window_minutes": 60}}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{t}");
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    let (status, v) = g
        .call(
            Some(&msp),
            Method::PUT,
            &format!("/api/v1/org/policy-templates/{}", ids[1]),
            Some(json!({"name": "Standard", "document": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(code(&v), "template_exists");
}

/// Browser sessions keep the refresh token in an HttpOnly cookie, never in
/// JavaScript's reach, and only a same-origin request that says it is a
/// browser session may use it.
#[tokio::test]
async fn browser_sessions_keep_the_refresh_token_in_a_cookie_only_they_can_use() {
    let g = Gw::start().await;
    let owner = g.signup("Cookie KK", "tenant").await;
    let login = g
        .http
        .post(g.url("/api/v1/auth/login"))
        .header("X-Mamori-Session", "cookie")
        .json(&json!({"email": owner.email, "password": crate::gw::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login
        .headers()
        .get("set-cookie")
        .expect("a refresh cookie")
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "mamori_refresh=mmr_",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/api/v1/auth",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let body: serde_json::Value = login.json().await.unwrap();
    assert!(
        body.get("refresh_token").is_none(),
        "not in the JSON: {body}"
    );
    assert!(body["access_token"].is_string());
    let pair = cookie.split(';').next().unwrap().to_owned();

    let refresh = |headers: Vec<(&'static str, String)>| {
        let (g, pair) = (&g, &pair);
        async move {
            let mut req = g
                .http
                .post(g.url("/api/v1/auth/refresh"))
                .header("Cookie", pair.clone());
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.send().await.unwrap()
        }
    };
    // The cookie alone (a form another site posts) is not a session.
    let plain = refresh(vec![]).await;
    assert!(plain.status().is_client_error(), "{}", plain.status());
    // From another origin, refused.
    let forged = refresh(vec![
        ("X-Mamori-Session", "cookie".into()),
        ("Origin", "https://evil.example".into()),
    ])
    .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // The console's own request gets a new access token and a new cookie.
    let ok = refresh(vec![
        ("X-Mamori-Session", "cookie".into()),
        ("Origin", g.base.clone()),
    ])
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(ok.headers().get("set-cookie").is_some());
    let body: serde_json::Value = ok.json().await.unwrap();
    assert!(body["access_token"].is_string() && body.get("refresh_token").is_none());
    // The old cookie was rotated: presenting it again ends the login.
    let reused = refresh(vec![("X-Mamori-Session", "cookie".into())]).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        reused
            .headers()
            .get("set-cookie")
            .is_some_and(|c| c.to_str().unwrap().contains("Max-Age=0")),
        "a refused cookie is cleared"
    );
    // API clients keep the JSON flow.
    let (status, v) = g.login(&owner.email, crate::gw::PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert!(v["refresh_token"].is_string());
}

/// The gateway serves a built console at `/` with its caching and security
/// headers, deep links included, next to the API.
#[tokio::test]
async fn the_console_is_served_beside_the_api() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<div id=\"root\"></div>").unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/app-1234.js"), "console.log(1)").unwrap();
    let console = dir.path().to_string_lossy().into_owned();
    let g = Gw::start_with(|cfg| cfg.console_dir = console).await;
    let get = |path: &'static str| {
        let g = &g;
        async move { g.http.get(g.url(path)).send().await.unwrap() }
    };
    for path in ["/", "/devices/123/policy"] {
        let page = get(path).await;
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        assert_eq!(page.headers()["cache-control"], "no-cache");
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(page.text().await.unwrap(), "<div id=\"root\"></div>");
    }
    let asset = get("/assets/app-1234.js").await;
    assert!(
        asset.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let api = get("/api/v1/nothing-here").await;
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");
    let v: serde_json::Value = api.json().await.unwrap();
    assert_eq!(code(&v), "not_found");
}

/// The log around an alarm stopped at 1,000 events without saying so; it
/// is paged now, and the last page is the one without a cursor.
#[tokio::test]
async fn the_log_around_an_alarm_is_paged_and_says_where_it_ends() {
    use crate::support::{batch, process_event, wait_for};
    let g = Gw::start().await;
    let admin = g.signup("Context KK", "tenant").await;
    let tenant = admin.tenant_id.clone().unwrap();
    let enrolled = g
        .stack
        .new_device(admin.enrollment_token.as_deref().unwrap())
        .await;
    let mut stream = g.stack.open(&enrolled.device_credential).await.unwrap();
    let now = chrono::Utc::now();
    let events: Vec<_> = (0..25)
        .map(|i| {
            let mut e = process_event(&format!("/usr/bin/step-{i:02}"));
            e.occurred_at_us = (now - chrono::Duration::seconds(100 - i)).timestamp_micros();
            e
        })
        .collect();
    stream.send(batch(1, events)).await.unwrap();
    wait_for(
        "events stored",
        std::time::Duration::from_secs(20),
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM events WHERE device_id = $1::uuid")
                    .bind(&enrolled.device_id)
                    .fetch_one(&g.stack.env.owner)
                    .await
                    .unwrap();
            (n == 25).then_some(())
        },
    )
    .await;
    let alarm = crate::gateway::insert_alarm(
        &g,
        &tenant,
        "banned_app",
        Some(&enrolled.device_id),
        &now.to_rfc3339(),
    )
    .await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => format!("/api/v1/alarms/{alarm}/context?limit=10"),
            Some(c) => format!("/api/v1/alarms/{alarm}/context?limit=10&cursor={c}"),
        };
        let (status, page) = g.get(&admin, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for e in page["events"].as_array().unwrap() {
            seen.push(e["subject"].as_str().unwrap().to_owned());
            assert!(
                e["hostname"].as_str().unwrap().starts_with("host-"),
                "each event names its device: {e}"
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).map(|i| format!("/usr/bin/step-{i:02}")).collect();
    assert_eq!(seen, want, "each event once, oldest first");
    let (status, _) = g
        .get(&admin, &format!("/api/v1/alarms/{alarm}/context?limit=0"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// A fleet of hundreds is filtered, sorted and paged by the server, and
/// devices silent for a day are told apart from those merely off.
#[tokio::test]
async fn the_device_list_is_searched_sorted_and_paged_on_the_server() {
    let g = Gw::start().await;
    let admin = g.signup("Fleet KK", "tenant").await;
    verify(&g, &admin).await;
    let tenant = admin.tenant_id.clone().unwrap();
    // 250 devices: every 10th seen now, every 10th+1 an hour ago, every
    // 10th+2 two days ago, every 10th+3 revoked, the rest never.
    sqlx::query(
        "INSERT INTO devices (tenant_id, id, hostname, machine_id, instance_id, credential_hash,
                              os_name, os_version, agent_version, last_seen_at, revoked_at)
         SELECT $1::uuid, gen_random_uuid(), format('pc-%s', lpad(i::text, 3, '0')), format('m-%s', i),
                format('i-%s', i), sha256(gen_random_uuid()::text::bytea), 'Debian', '13',
                format('0.%s.0', i % 3),
                CASE i % 10 WHEN 0 THEN now() WHEN 1 THEN now() - interval '1 hour'
                            WHEN 2 THEN now() - interval '2 days' END,
                CASE WHEN i % 10 = 3 THEN now() END
         FROM generate_series(0, 249) i",
    )
    .bind(&tenant)
    .execute(&g.stack.env.owner)
    .await
    .unwrap();

    let (status, page) = g.get(&admin, "/api/v1/devices?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 250);
    assert_eq!(page["devices"].as_array().unwrap().len(), 100);
    assert_eq!(
        page["counts"],
        json!({"online": 25, "offline": 25, "not_reporting": 175, "revoked": 25})
    );
    assert_eq!(page["devices"][0]["hostname"], "pc-000");
    assert_eq!(page["devices"][99]["hostname"], "pc-099");

    // Every page once, in order, then an empty page past the end that
    // still says how many there are.
    let mut names = Vec::new();
    for offset in (0..300).step_by(100) {
        let (_, page) = g
            .get(
                &admin,
                &format!("/api/v1/devices?limit=100&offset={offset}&sort=hostname&order=desc"),
            )
            .await;
        assert_eq!(page["total"], 250);
        for d in page["devices"].as_array().unwrap() {
            names.push(d["hostname"].as_str().unwrap().to_owned());
        }
    }
    let mut want: Vec<String> = (0..250).map(|i| format!("pc-{i:03}")).collect();
    want.reverse();
    assert_eq!(names, want);

    // Search by host-name fragment, case-insensitive; LIKE wildcards are
    // taken literally.
    let (_, page) = g.get(&admin, "/api/v1/devices?q=PC-04").await;
    assert_eq!(page["total"], 10);
    assert_eq!(page["counts"]["online"], 1);
    let (_, page) = g.get(&admin, "/api/v1/devices?q=%25").await;
    assert_eq!(page["total"], 0);

    // Status filter with the last contact first.
    let (_, page) = g
        .get(
            &admin,
            "/api/v1/devices?status=not_reporting&sort=last_seen&order=desc&limit=1000",
        )
        .await;
    assert_eq!(page["total"], 175);
    let devices = page["devices"].as_array().unwrap();
    for d in &devices[..25] {
        assert!(
            d["hostname"].as_str().unwrap().ends_with('2'),
            "seen two days ago: {d}"
        );
        assert!(d["last_seen_at"].is_string());
    }
    assert!(devices[174]["last_seen_at"].is_null(), "never seen go last");
    let (_, page) = g.get(&admin, "/api/v1/devices?status=offline").await;
    assert_eq!(page["devices"][0]["status"], "offline");
    assert_eq!(page["total"], 25);

    for bad in [
        "limit=0",
        "limit=1001",
        "offset=-1",
        "sort=credential_hash",
        "order=sideways",
        "status=asleep",
    ] {
        let (status, v) = g.get(&admin, &format!("/api/v1/devices?{bad}")).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
            "{bad}: {status} {v}"
        );
    }
}

/// Alarms are acknowledged many at a time: those still open, once, in one
/// audit entry.
#[tokio::test]
async fn alarms_are_acknowledged_in_bulk() {
    let g = Gw::start().await;
    let admin = g.signup("Bulk KK", "tenant").await;
    let tenant = admin.tenant_id.clone().unwrap();
    let now = chrono::Utc::now().to_rfc3339();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(crate::gateway::insert_alarm(&g, &tenant, "after_hours", None, &now).await);
    }
    let other = g.signup("Other Bulk KK", "tenant").await;
    let foreign = crate::gateway::insert_alarm(
        &g,
        other.tenant_id.as_deref().unwrap(),
        "after_hours",
        None,
        &now,
    )
    .await;
    let (status, v) = g
        .post(
            &admin,
            "/api/v1/alarms/acknowledge",
            json!({ "ids": [ids[0], ids[1], foreign] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let mut got: Vec<String> = v["acknowledged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want = vec![ids[0].clone(), ids[1].clone()];
    want.sort();
    assert_eq!(got, want, "the other tenant's alarm is passed over");
    let (_, v) = g
        .post(
            &admin,
            "/api/v1/alarms/acknowledge",
            json!({ "ids": [ids[0], ids[1]] }),
        )
        .await;
    assert_eq!(v["acknowledged"], json!([]), "once");
    let (_, open) = g.get(&admin, "/api/v1/alarms?status=open").await;
    assert_eq!(open["alarms"].as_array().unwrap().len(), 1);
    let (_, theirs) = g.get(&other, "/api/v1/alarms?status=open").await;
    assert_eq!(theirs["alarms"].as_array().unwrap().len(), 1, "untouched");
    let (_, audit) = g
        .get(&admin, "/api/v1/audit?action=alarm.acknowledge_many")
        .await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1);
    let too_many: Vec<String> = (0..1001)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    for ids in [json!([]), json!(too_many)] {
        let (status, v) = g
            .post(&admin, "/api/v1/alarms/acknowledge", json!({ "ids": ids }))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    }
}

/// "Send test" posts a signed delivery to the webhook now and says what
/// its receiver answered.
#[tokio::test]
async fn a_webhook_test_delivery_is_signed_and_reports_the_answer() {
    use base64::Engine;
    let g = Gw::start().await;
    let admin = g.signup("Hook KK", "tenant").await;
    let (hook, url) = crate::policy_alarms::Hook::start().await;
    let (status, created) = g
        .post(
            &admin,
            "/api/v1/webhooks",
            json!({"name": "Slack", "url": url}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(created["secret"].as_str().unwrap())
        .unwrap();
    let (status, v) = g
        .post(&admin, &format!("/api/v1/webhooks/{id}/test"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["delivered"], true, "{v}");
    assert_eq!(v["status"], 200);
    let got = hook.deliveries();
    assert_eq!(got.len(), 1);
    let (headers, body) = &got[0];
    let ts = headers["x-mamori-timestamp"].to_str().unwrap();
    let want = mamori_policy::webhook::sign(&secret, ts, body);
    assert_eq!(
        headers["x-mamori-signature"].to_str().unwrap(),
        format!("sha256={want}")
    );
    let payload: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(payload["test"], true);

    // A receiver that is not there: not delivered, and why.
    let port = crate::support::free_port();
    let (_, dead) = g
        .post(
            &admin,
            "/api/v1/webhooks",
            json!({"name": "Gone", "url": format!("http://127.0.0.1:{port}/hook")}),
        )
        .await;
    let (status, v) = g
        .post(
            &admin,
            &format!("/api/v1/webhooks/{}/test", dead["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["delivered"], false);
    assert!(
        v["error"].as_str().unwrap().starts_with("not delivered"),
        "{v}"
    );
    let (_, audit) = g.get(&admin, "/api/v1/audit?action=webhook.test").await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2);
}

/// The tenant's time zone is a setting; the calendar counts days in it
/// unless asked for another.
#[tokio::test]
async fn the_calendar_counts_days_in_the_tenants_time_zone() {
    let g = Gw::start().await;
    let admin = g.signup("Zone KK", "tenant").await;
    let tenant = admin.tenant_id.clone().unwrap();
    let (_, t) = g.get(&admin, "/api/v1/tenant").await;
    assert_eq!(t["time_zone"], "Asia/Tokyo", "the default");
    // 2026-11-30 20:00 UTC is 2026-12-01 05:00 in Tokyo.
    crate::gateway::insert_alarm(&g, &tenant, "after_hours", None, "2026-11-30T20:00:00Z").await;
    let (_, cal) = g.get(&admin, "/api/v1/alarms/calendar?month=2026-12").await;
    assert_eq!(cal["time_zone"], "Asia/Tokyo");
    assert_eq!(cal["days"][0]["counts"]["after_hours"], 1, "{cal}");
    let (status, v) = g
        .call(
            Some(&admin),
            Method::PATCH,
            "/api/v1/tenant",
            Some(json!({"time_zone": "Mars/Olympus"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("time_zone:"),
        "{v}"
    );
    let (status, t) = g
        .call(
            Some(&admin),
            Method::PATCH,
            "/api/v1/tenant",
            Some(json!({"time_zone": "UTC"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["time_zone"], "UTC");
    let (_, cal) = g.get(&admin, "/api/v1/alarms/calendar?month=2026-12").await;
    assert_eq!(cal["time_zone"], "UTC");
    assert!(
        cal["days"][0]["counts"].as_object().unwrap().is_empty(),
        "{cal}"
    );
    let (_, nov) = g
        .get(&admin, "/api/v1/alarms/calendar?month=2026-11&tz=UTC")
        .await;
    assert_eq!(nov["days"][29]["counts"]["after_hours"], 1);
}
