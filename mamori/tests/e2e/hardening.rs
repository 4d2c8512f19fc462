//! Regression tests for the findings of the outside security review (one
//! free tenant slowing, spamming or outlasting others), each failing on the
//! code before its fix.

use crate::gateway::{invite_and_accept, verify};
use crate::gw::{Gw, PASSWORD, code, session_from};
use crate::policy_alarms::{alarms, alerting_config, event_at, set_tenant_policy};
use crate::support::*;
use mamori_proto::agent::v1::{FileEvent, ProcessEvent, event::Kind, file_event, process_event};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

/// A tenant whose events cost the shared alerting consumer more than its
/// budget has them evaluated in the overflow lane, and nothing is lost or
/// counted twice: every one of its 900 confidential-folder operations
/// counts into its alarm exactly once, and the other tenant's banned app
/// is alarmed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_alerting_budget_is_moved_aside_and_loses_nothing() {
    let gw = Gw::start().await;
    let mut cfg = alerting_config(&gw, "");
    cfg.alerting_tenant_budget_ms = 5;
    let alerting = mamori_alerting::start(cfg).await.expect("alerting starts");
    let hostile = gw.signup("Flood KK", "tenant").await;
    let quiet = gw.signup("Quiet KK", "tenant").await;
    // The hostile tenant's policy holds as much glob text as it may.
    let folders: Vec<String> = (0..31)
        .map(|i| format!("*{}{i}*", "a".repeat(500 - 4)))
        .chain(["/srv/hr/**".to_owned()])
        .collect();
    set_tenant_policy(&gw, &hostile, json!({ "confidential_folders": folders })).await;
    set_tenant_policy(
        &gw,
        &quiet,
        json!({"banned_apps": [{"name": "winny", "action": "log"}]}),
    )
    .await;
    let flooder = gw
        .stack
        .new_device(hostile.enrollment_token.as_deref().unwrap())
        .await;
    let victim = gw
        .stack
        .new_device(quiet.enrollment_token.as_deref().unwrap())
        .await;
    let mut flood = gw.stack.open(&flooder.device_credential).await.unwrap();
    let mut agent = gw.stack.open(&victim.device_credential).await.unwrap();
    let now = chrono::Utc::now();
    // Long paths in the confidential folder: each one a hit to record.
    let long_path = format!("/srv/hr/{}/pay.xlsx", "b".repeat(3000));
    for seq in 1..=3 {
        let events = (0..300)
            .map(|_| {
                event_at(
                    now,
                    Kind::File(FileEvent {
                        action: file_event::Action::Modify as i32,
                        path: long_path.clone(),
                        ..Default::default()
                    }),
                )
            })
            .collect();
        flood.send(batch(seq, events)).await.unwrap();
    }
    let start = event_at(
        now,
        Kind::Process(ProcessEvent {
            action: process_event::Action::Start as i32,
            exe_path: "C:\\Tools\\Winny.exe".into(),
            ..Default::default()
        }),
    );
    agent.send(batch(1, vec![start])).await.unwrap();

    let quiet_alarm = wait_for(
        "the quiet tenant's alarm",
        Duration::from_secs(30),
        || async { alarms(&gw, &quiet).await.into_iter().next() },
    )
    .await;
    assert_eq!(quiet_alarm["category"], "banned_app");
    let counted = wait_for(
        "every flood event counted",
        Duration::from_secs(60),
        || async {
            let a = alarms(&gw, &hostile).await;
            (a.len() == 1 && a[0]["count"] == 900).then_some(a)
        },
    )
    .await;
    assert_eq!(counted[0]["category"], "confidential_folder");
    // The flood went through an overflow lane (the fix); no entry is left
    // pending there, and nothing was counted twice.
    let client = redis::Client::open(gw.stack.env.redis_url.as_str()).unwrap();
    let lanes_used = wait_for(
        "the overflow lanes acked",
        Duration::from_secs(20),
        || async {
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let (mut used, mut pending) = (0, 0);
            for shard in 0..4 {
                let key = mamori_streams::overflow_key(shard);
                for g in mamori_streams::groups(&mut conn, &key).await.unwrap() {
                    pending += g.pending;
                    if g.last_delivered.is_some_and(|id| id.ms > 0) {
                        used += 1;
                    }
                }
            }
            (pending == 0).then_some(used)
        },
    )
    .await;
    assert!(lanes_used >= 1, "the flood bypassed the overflow lanes");
    // Ingest was told, so that it can hold the tenant back.
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let marked: bool = redis::cmd("EXISTS")
        .arg(mamori_streams::penalised_key(
            hostile.tenant_id.as_deref().unwrap(),
        ))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(marked, "the hostile tenant is marked penalised");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = alarms(&gw, &hostile).await;
    assert_eq!(again[0]["count"], 900, "{again:?}");
    assert_eq!(alarms(&gw, &quiet).await[0]["count"], 1);
    alerting.shutdown().await;
}

/// The review's escalation: a tenant admin who was disabled used the
/// access token it still held (good for 15 minutes) to invite and accept a
/// new admin account, keeping access for good. Now the token is refused
/// at once, and the invitation it had sent before is void.
#[tokio::test]
async fn a_disabled_admin_is_refused_at_once_and_its_invitations_are_void() {
    let g = Gw::start().await;
    let owner = g.signup("Disable KK", "tenant").await;
    verify(&g, &owner).await;
    let admin = invite_and_accept(&g, &owner, "tenant_admin").await;
    // The admin invites someone before being disabled.
    let pending = format!("{}@pending.example.com", uuid::Uuid::new_v4().simple());
    let (status, v) = g
        .post(
            &admin,
            "/api/v1/invitations",
            json!({"email": pending, "role": "tenant_admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let pending_code = g.code_mailed_to(&pending, "mmi_");
    // ...and makes a handover code, with which an MSP of its own could take
    // the tenant over for good.
    let (status, handover) = g.post(&admin, "/api/v1/tenant/handover", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{handover}");

    let (status, v) = g
        .call(
            Some(&owner),
            Method::PATCH,
            &format!("/api/v1/users/{}", user_id(&g, &admin).await),
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // The very next request with the admin's token is refused.
    let backdoor = format!("{}@backdoor.example.com", uuid::Uuid::new_v4().simple());
    let (status, v) = g
        .post(
            &admin,
            "/api/v1/invitations",
            json!({"email": backdoor, "role": "tenant_admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert!(g.mails().iter().all(|m| !m.contains(&backdoor)));
    let (status, _) = g.get(&admin, "/api/v1/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = g
        .call(
            None,
            Method::POST,
            "/api/v1/auth/refresh",
            Some(json!({"refresh_token": admin.refresh})),
        )
        .await;
    assert!(status.is_client_error(), "{status}");
    // What it sent before does not let anyone in either.
    let (status, v) = g
        .call(
            None,
            Method::POST,
            "/api/v1/invitations/accept",
            Some(json!({ "token": pending_code, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(code(&v), "invitation_expired");
    let msp = g.signup("Accomplice MSP", "msp").await;
    let (status, v) = g
        .post(
            &msp,
            "/api/v1/tenants/claim",
            json!({"code": handover["code"]}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the handover code is void: {v}"
    );
    // The owner's own session is untouched.
    let (status, _) = g.get(&owner, "/api/v1/users").await;
    assert_eq!(status, StatusCode::OK);
}

/// A demoted admin's token no longer carries admin rights: refused at once;
/// a new login has the new role.
#[tokio::test]
async fn a_demoted_admin_must_log_in_again_and_gets_the_new_role() {
    let g = Gw::start().await;
    let owner = g.signup("Demote KK", "tenant").await;
    verify(&g, &owner).await;
    let admin = invite_and_accept(&g, &owner, "tenant_admin").await;
    let (status, v) = g
        .call(
            Some(&owner),
            Method::PATCH,
            &format!("/api/v1/users/{}", user_id(&g, &admin).await),
            Some(json!({ "role": "auditor" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = g.post(&admin, "/api/v1/enrollment-tokens", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, v) = g.login(&admin.email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let again = session_from(&v, &admin.email);
    let (status, _) = g.post(&again, "/api/v1/enrollment-tokens", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an auditor now");
    let (status, _) = g.get(&again, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK);
}

/// Logging out ends that login's access token (not the user's other
/// logins); logging out everywhere and changing the password end them all.
#[tokio::test]
async fn logout_logout_everywhere_and_a_new_password_end_access_tokens_at_once() {
    let g = Gw::start().await;
    let owner = g.signup("Logout KK", "tenant").await;
    let login = || async {
        let (status, v) = g.login(&owner.email, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        session_from(&v, &owner.email)
    };
    let (laptop, phone) = (login().await, login().await);
    let (status, _) = g
        .call(
            None,
            Method::POST,
            "/api/v1/auth/logout",
            Some(json!({"refresh_token": laptop.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = g.get(&laptop, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("logged out"),
        "{v}"
    );
    let (status, _) = g.get(&phone, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK, "the other login stays");

    let (status, _) = g
        .post(&phone, "/api/v1/auth/logout-everywhere", json!({}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for s in [&phone, &owner] {
        let (status, _) = g.get(s, "/api/v1/devices").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    let (desk, other) = (login().await, login().await);
    let new_password = "a different long passphrase";
    let (status, v) = g
        .post(
            &desk,
            "/api/v1/me/password",
            json!({"current_password": "wrong guess here", "new_password": new_password}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, v) = g
        .post(
            &desk,
            "/api/v1/me/password",
            json!({"current_password": PASSWORD, "new_password": new_password}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let fresh = session_from(&v, &owner.email);
    for s in [&desk, &other] {
        let (status, _) = g.get(s, "/api/v1/devices").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = g.get(&fresh, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK, "the answer is a working login");
    let (status, _) = g.login(&owner.email, PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = g.login(&owner.email, new_password).await;
    assert_eq!(status, StatusCode::OK);
}

/// The id of the session's user.
async fn user_id(g: &Gw, s: &crate::gw::Session) -> String {
    let (status, me) = g.get(s, "/api/v1/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    me["id"].as_str().unwrap().to_owned()
}

/// Every SECURITY DEFINER function searches `pg_temp` last (or not at
/// all), and the services' role cannot create temporary tables: the review
/// shadowed `tenants` with a temporary table and made definer functions
/// return forged rows.
#[tokio::test]
async fn definer_functions_cannot_be_fooled_by_temporary_tables() {
    let env = mamori_test_support::TestEnv::new().await;
    let loose: Vec<(String, Option<Vec<String>>)> = sqlx::query_as(
        "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p
         WHERE p.prosecdef
           AND NOT coalesce('search_path=public, pg_temp' = ANY(p.proconfig), false)",
    )
    .fetch_all(&env.owner)
    .await
    .unwrap();
    assert!(
        loose.is_empty(),
        "definer functions without pg_temp last: {loose:?}"
    );
    let definers: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_proc WHERE prosecdef")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    assert!(definers > 20, "the scan saw the functions: {definers}");

    let mut conn = env.db.pool().acquire().await.unwrap();
    let err = sqlx::query("CREATE TEMP TABLE tenants (id uuid, policy_revision bigint)")
        .execute(&mut *conn)
        .await
        .expect_err("the services' role may not create temporary tables");
    assert!(err.to_string().contains("permission denied"), "{err}");
    let err = sqlx::query("CREATE TABLE public.tenants_forged (id uuid)")
        .execute(&mut *conn)
        .await
        .expect_err("nor tables in public");
    assert!(err.to_string().contains("permission denied"), "{err}");
}

/// A DNS server on loopback that answers A questions from a script: the
/// n-th question gets `answers(n)` (n from 1), with a TTL of 0. Returns its
/// address and the number of questions so far.
async fn dns_responder(
    answers: fn(usize) -> Vec<std::net::Ipv4Addr>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let q = &buf[..n];
            // The question: labels up to the root, then type and class.
            let mut end = 12;
            while end < q.len() && q[end] != 0 {
                end += 1 + usize::from(q[end]);
            }
            let Some(qtype) = q.get(end + 1..end + 3) else {
                continue;
            };
            let ips = if qtype == [0, 1] {
                answers(count.fetch_add(1, Ordering::SeqCst) + 1)
            } else {
                Vec::new()
            };
            let mut reply = Vec::new();
            reply.extend_from_slice(&q[..2]);
            reply.extend_from_slice(&[0x81, 0x80, 0, 1]);
            reply.extend_from_slice(&(ips.len() as u16).to_be_bytes());
            reply.extend_from_slice(&[0, 0, 0, 0]);
            reply.extend_from_slice(&q[12..end + 5]);
            for ip in ips {
                reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
                reply.extend_from_slice(&ip.octets());
            }
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    (addr, asked)
}

/// DNS rebinding: the webhook's name answers a public address when the
/// webhook is created, then a public and a loopback address, then loopback
/// only. Every delivery resolves once and vets every address the HTTP
/// client may connect to, so nothing ever connects to the loopback server
/// behind the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_name_that_rebinds_to_loopback_gets_no_connection() {
    use std::sync::atomic::Ordering;
    let public: std::net::Ipv4Addr = "93.184.216.34".parse().unwrap();
    let loopback = std::net::Ipv4Addr::LOCALHOST;
    let (dns, asked) = dns_responder(|n| match n {
        1 => vec!["93.184.216.34".parse().unwrap()],
        2 => vec![
            "93.184.216.34".parse().unwrap(),
            std::net::Ipv4Addr::LOCALHOST,
        ],
        _ => vec![std::net::Ipv4Addr::LOCALHOST],
    })
    .await;
    assert!(
        mamori_policy::webhook::is_public(public.into())
            && !mamori_policy::webhook::is_public(loopback.into())
    );
    // What the name would reach: a server on loopback that counts visitors.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    let visits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = visits.clone();
    tokio::spawn(async move {
        while let Ok((_conn, _)) = target.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });

    let g = Gw::start_with(|cfg| {
        cfg.webhook_allow_private = false;
        cfg.webhook_dns_server = dns.to_string();
    })
    .await;
    let mut acfg = alerting_config(&g, "");
    acfg.webhook_allow_private = false;
    acfg.webhook_dns_server = dns.to_string();
    acfg.webhook_timeout_ms = 2000;
    let alerting = mamori_alerting::start(acfg).await.expect("alerting starts");
    let admin = g.signup("Rebind KK", "tenant").await;
    let url = format!("https://hook.rebind.test:{port}/hook");
    let (status, hook) = g
        .post(
            &admin,
            "/api/v1/webhooks",
            json!({"name": "chat", "url": url}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    set_tenant_policy(
        &g,
        &admin,
        json!({"banned_apps": [{"name": "winny", "action": "log"}],
               "notifications": {"routes": [{"categories": ["*"], "webhooks": [hook["id"]]}]}}),
    )
    .await;
    let device = g
        .stack
        .new_device(admin.enrollment_token.as_deref().unwrap())
        .await;
    let mut agent = g.stack.open(&device.device_credential).await.unwrap();
    agent
        .send(batch(1, vec![process_event("/usr/bin/winny")]))
        .await
        .unwrap();

    let (attempts, error): (i32, String) = wait_for(
        "two refused deliveries",
        Duration::from_secs(30),
        || async {
            sqlx::query_as::<_, (i32, Option<String>)>(
                "SELECT attempts, last_error FROM notification_outbox WHERE channel = 'webhook'",
            )
            .fetch_optional(&g.stack.env.owner)
            .await
            .unwrap()
            .and_then(|(a, e)| (a >= 2).then(|| (a, e.unwrap_or_default())))
        },
    )
    .await;
    assert!(
        error.contains("127.0.0.1 is not a public address"),
        "attempt {attempts}: {error}"
    );
    assert!(
        asked.load(Ordering::SeqCst) >= 3,
        "each delivery asked the DNS"
    );
    assert_eq!(
        visits.load(Ordering::SeqCst),
        0,
        "nothing connected to loopback"
    );
    alerting.shutdown().await;
}

/// The review got 80 events through a device limit of 10 with a reconnect
/// and 6 parallel streams, each with a fresh budget. Now a device has one
/// live stream (a new one closes the older) and one budget across them.
#[tokio::test]
async fn a_device_has_one_live_stream_and_one_budget_across_reconnects() {
    let s = Stack::ingest_only(|cfg| {
        cfg.device_rate = 1;
        cfg.device_burst = 20;
        // What a device at these rates may send at once at most.
        cfg.max_batch_events = 22;
    })
    .await;
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let events = |n: usize| (0..n).map(|_| process_event("/x")).collect::<Vec<_>>();
    let mut first = s.open(&dev.device_credential).await.unwrap();
    first.send(batch(1, events(20))).await.unwrap();
    let mut second = s.open(&dev.device_credential).await.unwrap();
    let err = first.next().await.expect_err("the older stream is closed");
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    assert!(err.message().contains("newer stream"), "{err:?}");
    // The budget went with the device, not with the stream.
    let err = second
        .send(batch(2, events(20)))
        .await
        .expect_err("over the device's budget");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let mut third = s.open(&dev.device_credential).await.unwrap();
    let err = third
        .send(batch(2, events(20)))
        .await
        .expect_err("a reconnect gets no fresh budget");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
}

/// Hellos cost from the device's budget, and being seen is written once a
/// second at most, not once per hello (the review: 2,000 hellos made about
/// 1,650 database commits in 0.2 s).
#[tokio::test]
async fn hellos_are_rate_limited_and_last_seen_is_written_coalesced() {
    use mamori_proto::agent::v1::{AgentMessage, Hello, agent_message};
    let s = Stack::ingest_only(|cfg| {
        cfg.device_rate = 1;
        cfg.device_burst = 100_000;
    })
    .await;
    // Counts the updates of each device row.
    for sql in [
        "CREATE TABLE device_updates (device_id uuid, at timestamptz DEFAULT clock_timestamp())",
        "GRANT INSERT ON device_updates TO mamori_app",
        "CREATE FUNCTION count_device_update() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN INSERT INTO device_updates (device_id) VALUES (NEW.id); RETURN NEW; END $$",
        "CREATE TRIGGER device_updates AFTER UPDATE ON devices FOR EACH ROW EXECUTE FUNCTION count_device_update()",
    ] {
        sqlx::query(sql).execute(&s.env.owner).await.unwrap();
    }
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let hello = || AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            agent_version: "9.9.9".into(),
            ..Default::default()
        })),
    };
    let st = s.open(&dev.device_credential).await.unwrap();
    for _ in 0..500 {
        st.tx.send(hello()).await.unwrap();
    }
    let id: uuid::Uuid = dev.device_id.parse().unwrap();
    let (version, seen): (String, Option<chrono::DateTime<chrono::Utc>>) = wait_for(
        "the hellos' version recorded",
        Duration::from_secs(10),
        || async {
            sqlx::query_as("SELECT agent_version, last_seen_at FROM devices WHERE id = $1")
                .bind(id)
                .fetch_one(&s.env.owner)
                .await
                .ok()
                .filter(|(v, _): &(String, _)| v == "9.9.9")
        },
    )
    .await;
    assert_eq!(version, "9.9.9");
    assert!(seen.is_some());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let updates: i64 =
        sqlx::query_scalar("SELECT count(*) FROM device_updates WHERE device_id = $1")
            .bind(id)
            .fetch_one(&s.env.owner)
            .await
            .unwrap();
    assert!(
        updates <= 4,
        "500 hellos made {updates} updates of the device"
    );

    // With a small budget, a hello flood ends the stream: retry later.
    let s = Stack::ingest_only(|cfg| {
        cfg.device_rate = 1;
        cfg.device_burst = 100;
        cfg.max_batch_events = 102;
    })
    .await;
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();
    for _ in 0..50 {
        if st.tx.send(hello()).await.is_err() {
            break;
        }
    }
    let err = st.next().await.expect_err("the flood is refused");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
}

/// The review's mail abuse: an unverified signup routed alarm mail (with
/// agent-chosen text) to arbitrary addresses. Now only a verified user may
/// route mail; an outside address gets one confirmation mail and nothing
/// else until it confirms; a tenant's alarm mail stops at its daily quota,
/// and its administrator is told once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_mail_goes_only_to_confirmed_addresses_and_within_a_daily_quota() {
    use crate::policy_alarms::{Smtp, confirm_recipients};
    let g = Gw::start().await;
    let smtp = Smtp::start().await;
    let mut cfg = alerting_config(&g, &smtp.url());
    cfg.mail_daily_quota = 4;
    let alerting = mamori_alerting::start(cfg).await.expect("alerting starts");
    let admin = g.signup("Spam KK", "tenant").await;
    let strangers: Vec<String> = (0..19).map(|i| format!("victim{i}@spam.example")).collect();
    let routed: Vec<&String> = std::iter::once(&admin.email).chain(&strangers).collect();
    let policy = json!({
        "banned_apps": [{"name": "winny", "action": "log"}],
        "notifications": {"routes": [{"categories": ["*"], "email": routed}]}
    });
    let (status, v) = g
        .call(
            Some(&admin),
            Method::PUT,
            "/api/v1/policies/tenant",
            Some(policy.clone()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an unverified user routes no mail: {v}"
    );

    verify(&g, &admin).await;
    let (status, saved) = g
        .call(
            Some(&admin),
            Method::PUT,
            "/api/v1/policies/tenant",
            Some(policy),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(
        saved["awaiting_confirmation"].as_array().unwrap().len(),
        19,
        "{saved}"
    );
    for s in &strangers {
        let asked = g
            .mails()
            .iter()
            .filter(|m| m.contains(&format!("To: {s}")))
            .count();
        assert_eq!(asked, 1, "one confirmation mail to {s}");
    }
    let (_, listed) = g.get(&admin, "/api/v1/notification-recipients").await;
    assert_eq!(listed.as_array().unwrap().len(), 19, "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "pending")
    );

    // Alarms from four devices: four alarms.
    let token = admin.enrollment_token.clone().unwrap();
    let mut agents = Vec::new();
    for _ in 0..4 {
        let d = g.stack.new_device(&token).await;
        agents.push(g.stack.open(&d.device_credential).await.unwrap());
    }
    let to = |addr: &str| {
        smtp.messages()
            .into_iter()
            .filter(|m| m.contains(&format!("To: {addr}")))
            .collect::<Vec<_>>()
    };
    agents[0]
        .send(batch(1, vec![process_event("/usr/bin/winny")]))
        .await
        .unwrap();
    wait_for("the first alarm mail", Duration::from_secs(20), || async {
        (!to(&admin.email).is_empty()).then_some(())
    })
    .await;
    // Opening a link (as a mail scanner does) confirms nothing.
    let scanned = g.code_mailed_to(&strangers[1], "mmn_");
    let page = g
        .http
        .get(g.url(&format!(
            "/api/v1/notification-recipients/confirm?token={scanned}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    // One stranger confirms (and by JSON, the API's way, a second time
    // finds the code used); it gets the next alarm, the others never.
    confirm_recipients(&g, &[strangers[0].as_str()]).await;
    let used = g.code_mailed_to(&strangers[0], "mmn_");
    let (status, _) = g
        .call(
            None,
            Method::POST,
            "/api/v1/notification-recipients/confirm",
            Some(json!({"token": used})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    agents[1]
        .send(batch(1, vec![process_event("/usr/bin/winny")]))
        .await
        .unwrap();
    wait_for(
        "the second alarm's mails",
        Duration::from_secs(20),
        || async { (!to(&strangers[0]).is_empty() && to(&admin.email).len() >= 2).then_some(()) },
    )
    .await;
    // The third alarm reaches the quota (4 alarm mails a day): the admin's
    // copy is the fourth, the confirmed stranger's is over it; the admin is
    // told, once, and the fourth alarm sends nothing.
    agents[2]
        .send(batch(1, vec![process_event("/usr/bin/winny")]))
        .await
        .unwrap();
    wait_for("the quota notice", Duration::from_secs(20), || async {
        to(&admin.email)
            .iter()
            .any(|m| m.contains("daily alarm e-mail limit"))
            .then_some(())
    })
    .await;
    agents[3]
        .send(batch(1, vec![process_event("/usr/bin/winny")]))
        .await
        .unwrap();
    wait_for("four alarms", Duration::from_secs(20), || async {
        (alarms(&g, &admin).await.len() == 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let admin_mails = to(&admin.email);
    assert_eq!(
        admin_mails
            .iter()
            .filter(|m| m.contains("Subject: [Mamori] banned_app"))
            .count(),
        3,
        "{admin_mails:?}"
    );
    assert_eq!(
        admin_mails
            .iter()
            .filter(|m| m.contains("daily alarm e-mail limit"))
            .count(),
        1
    );
    assert_eq!(to(&strangers[0]).len(), 1);
    for s in &strangers[1..] {
        assert!(to(s).is_empty(), "{s} got alarm mail without confirming");
    }
    let (_, listed) = g.get(&admin, "/api/v1/notification-recipients").await;
    let status_of = |email: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["email"] == email)
            .map(|r| r["status"].clone())
    };
    assert_eq!(status_of(&strangers[0]), Some(json!("confirmed")));
    assert_eq!(
        status_of(&strangers[1]),
        Some(json!("pending")),
        "a GET confirmed nothing"
    );
    // At most 50 addresses await confirmation at once.
    let more: Vec<String> = (0..40).map(|i| format!("more{i}@spam.example")).collect();
    let (status, v) = g
        .call(
            Some(&admin),
            Method::PUT,
            "/api/v1/policies/tenant",
            Some(json!({"notifications": {"routes": [
                {"categories": ["*"], "email": more[..20]},
                {"categories": ["*"], "email": more[20..]}
            ]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(code(&v), "too_many_unconfirmed");
    assert!(g.mails().iter().all(|m| !m.contains("more0@spam.example")));
    alerting.shutdown().await;
}

/// With neither SMTP nor a mail directory, mail is logged; an agent-chosen
/// path with newlines in an alarm mail forged whole log lines. The real
/// `mamori alerting` now writes each event on one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_text_in_a_logged_mail_cannot_forge_log_lines() {
    let g = Gw::start().await;
    let admin = g.signup("Log KK", "tenant").await;
    verify(&g, &admin).await;
    set_tenant_policy(
        &g,
        &admin,
        json!({"banned_apps": [{"name": "winny", "action": "log"}],
               "notifications": {"routes": [{"categories": ["*"], "email": [admin.email]}]}}),
    )
    .await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("alerting.log");
    let _alerting = spawn_mamori(
        "alerting",
        &g.stack.env,
        &[
            ("MAMORI_ALERTING_OPS_ADDR", "127.0.0.1:0"),
            ("MAMORI_KEY_ENCRYPTION_KEY", &g.kek),
            ("MAMORI_NOTIFY_POLL_MS", "200"),
            ("RUST_LOG", "info"),
        ],
        &log,
    );
    let forged = "2026-12-05T00:00:00.000000Z  INFO mamori_gateway: FORGED admin logged in";
    let d = g
        .stack
        .new_device(admin.enrollment_token.as_deref().unwrap())
        .await;
    let mut agent = g.stack.open(&d.device_credential).await.unwrap();
    agent
        .send(batch(
            1,
            vec![process_event(&format!("/tmp/a\n{forged}\r\n/winny"))],
        ))
        .await
        .unwrap();
    let text = wait_for("the logged mail", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("no smtp_url or mail_dir").then_some(text)
    })
    .await;
    let mail_line = text
        .lines()
        .find(|l| l.contains("no smtp_url or mail_dir"))
        .unwrap();
    assert!(
        mail_line.contains("FORGED"),
        "the text is in the mail line: {mail_line}"
    );
    assert!(
        text.lines().all(|l| !l.starts_with("2026-12-05T00:00:00")),
        "a forged line: {text}"
    );
}

/// MSP invitations (msp_admin included) could be neither listed nor
/// withdrawn, and outlived their inviter: now an MSP admin lists and
/// withdraws them, and disabling an inviter voids what it sent.
#[tokio::test]
async fn msp_invitations_are_listed_withdrawn_and_voided_with_their_inviter() {
    let g = Gw::start().await;
    let msp = g.signup("Invite MSP", "msp").await;
    verify(&g, &msp).await;
    let invite = |by: crate::gw::Session, role: &'static str| {
        let g = &g;
        async move {
            let email = format!("{}@msp-invite.example.com", uuid::Uuid::new_v4().simple());
            let (status, v) = g
                .post(
                    &by,
                    "/api/v1/org/invitations",
                    json!({"email": email, "role": role}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{v}");
            (
                v["id"].as_str().unwrap().to_owned(),
                g.code_mailed_to(&email, "mmi_"),
            )
        }
    };
    let accept = |code: String| {
        let g = &g;
        async move {
            g.call(
                None,
                Method::POST,
                "/api/v1/invitations/accept",
                Some(json!({ "token": code, "password": PASSWORD })),
            )
            .await
        }
    };
    let (admin_inv, admin_code) = invite(msp.clone(), "msp_admin").await;
    let (_tech_inv, _) = invite(msp.clone(), "msp_technician").await;
    let (status, listed) = g.get(&msp, "/api/v1/org/invitations").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let (status, _) = g
        .post(
            &msp,
            &format!("/api/v1/org/invitations/{admin_inv}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = accept(admin_code).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(code(&v), "invitation_expired");

    // A second MSP admin invites someone, then is disabled: void.
    let second = invite_and_accept(&g, &msp, "msp_admin").await;
    let (_, pending_code) = invite(second.clone(), "msp_admin").await;
    let second_id = user_id(&g, &second).await;
    let (status, v) = g
        .call(
            Some(&msp),
            Method::PATCH,
            &format!("/api/v1/org/users/{second_id}"),
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = accept(pending_code).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    // Another organisation's admin sees none of them.
    let other = g.signup("Other MSP", "msp").await;
    verify(&g, &other).await;
    let (_, theirs) = g.get(&other, "/api/v1/org/invitations").await;
    assert_eq!(theirs, json!([]));
    let (status, _) = g
        .post(
            &other,
            &format!("/api/v1/org/invitations/{admin_inv}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Slack and Teams webhook URLs are credentials: an auditor sees only the
/// scheme and host.
#[tokio::test]
async fn auditors_see_webhook_urls_without_their_secret_part() {
    let g = Gw::start().await;
    let owner = g.signup("Hook Mask KK", "tenant").await;
    verify(&g, &owner).await;
    let url = "http://127.0.0.1:9/services/T0001/B0002/SecretPart123";
    let (status, v) = g
        .post(
            &owner,
            "/api/v1/webhooks",
            json!({"name": "slack", "url": url}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (_, full) = g.get(&owner, "/api/v1/webhooks").await;
    assert_eq!(full[0]["url"], url);
    let auditor = invite_and_accept(&g, &owner, "auditor").await;
    let (status, masked) = g.get(&auditor, "/api/v1/webhooks").await;
    assert_eq!(status, StatusCode::OK, "{masked}");
    assert_eq!(masked[0]["url"], "http://127.0.0.1:9/…");
    assert!(!masked.to_string().contains("SecretPart123"));
}

/// A request the gateway gives up on (503 after its timeout) no longer
/// leaves its query running: PostgreSQL cancels it at the same timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_leaves_no_query_behind() {
    let g = Gw::start_with(|cfg| cfg.api_request_timeout_ms = 300).await;
    let owner = g.signup("Timeout KK", "tenant").await;
    // Something holds the devices table, as a long report would.
    let mut lock = g.stack.env.owner.begin().await.unwrap();
    sqlx::query("LOCK TABLE devices IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let (status, v) = g.get(&owner, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&g.stack.env.owner)
        .await
        .unwrap();
    wait_for(
        "the abandoned query to end",
        Duration::from_secs(5),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'mamori-gateway'
               AND wait_event_type = 'Lock'",
            )
            .bind(&database)
            .fetch_one(&g.stack.env.owner)
            .await
            .unwrap();
            (waiting == 0).then_some(())
        },
    )
    .await;
    lock.rollback().await.unwrap();
    let (status, _) = g.get(&owner, "/api/v1/devices").await;
    assert_eq!(status, StatusCode::OK);
}

/// The overflow lanes are outside the streams' bound: while they are full,
/// ingest tells the tenants alerting penalised to retry later (their
/// agents keep the batches), and only them.
#[tokio::test]
async fn a_penalised_tenant_is_held_back_while_the_overflow_lanes_are_full() {
    let s = Stack::ingest_only(|cfg| cfg.max_alerting_overflow = 0).await;
    let (hostile, hostile_token) = s.tenant_with_token().await;
    let (_quiet, quiet_token) = s.tenant_with_token().await;
    let mut conn = s.env.redis().await;
    let _: () = redis::cmd("SET")
        .arg(mamori_streams::penalised_key(&hostile.to_string()))
        .arg(1)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut flood = s
        .open(&s.new_device(&hostile_token).await.device_credential)
        .await
        .unwrap();
    let mut quiet = s
        .open(&s.new_device(&quiet_token).await.device_credential)
        .await
        .unwrap();
    // The lanes are empty: nobody is held back.
    flood
        .send(batch(1, vec![process_event("/x")]))
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(mamori_streams::overflow_key(0))
        .arg("*")
        .arg(mamori_streams::BATCH_FIELD)
        .arg("queued")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = wait_for(
        "the lanes measured full",
        Duration::from_secs(10),
        || async {
            let mut st = s
                .open(&s.new_device(&hostile_token).await.device_credential)
                .await
                .unwrap();
            st.send(batch(1, vec![process_event("/x")])).await.err()
        },
    )
    .await;
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("retry later"), "{err:?}");
    quiet
        .send(batch(1, vec![process_event("/x")]))
        .await
        .unwrap();
    let _ = flood;
}

/// A technician invited an administrator into a tenant, then lost access to
/// it: the invitation goes with the access.
#[tokio::test]
async fn a_technicians_invitations_go_when_it_loses_the_tenant() {
    let g = Gw::start().await;
    let msp = g.signup("Access MSP", "msp").await;
    verify(&g, &msp).await;
    let (status, t) = g
        .post(&msp, "/api/v1/tenants", json!({"name": "Customer"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let tenant = t["id"].as_str().unwrap().to_owned();
    let tech = invite_and_accept(&g, &msp, "msp_technician").await;
    let tech_id = user_id(&g, &tech).await;
    let grant = |ids: serde_json::Value| {
        let (g, msp, tech_id) = (&g, &msp, &tech_id);
        async move {
            let (status, v) = g
                .call(
                    Some(msp),
                    Method::PUT,
                    &format!("/api/v1/org/users/{tech_id}/tenants"),
                    Some(json!({ "tenant_ids": ids })),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{v}");
        }
    };
    grant(json!([tenant])).await;
    let email = format!("{}@backdoor.example.com", uuid::Uuid::new_v4().simple());
    let (status, v) = g
        .post(
            &tech.on(&tenant),
            "/api/v1/invitations",
            json!({"email": email, "role": "tenant_admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let invitation = g.code_mailed_to(&email, "mmi_");
    grant(json!([])).await;
    let (status, v) = g
        .call(
            None,
            Method::POST,
            "/api/v1/invitations/accept",
            Some(json!({ "token": invitation, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(code(&v), "invitation_expired");
}

/// Mass printing counted out of order (a tenant's events evaluated partly
/// in the overflow lane, or a batch written late): the later job counted
/// first leaves the window below the threshold, and the earlier one that
/// completes it must still raise the alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_print_threshold_crossed_out_of_order_still_alarms() {
    use mamori_proto::agent::v1::PrintEvent;
    let g = Gw::start().await;
    let alerting = mamori_alerting::start(alerting_config(&g, ""))
        .await
        .expect("alerting starts");
    let admin = g.signup("Print Order KK", "tenant").await;
    set_tenant_policy(
        &g,
        &admin,
        json!({"mass_print": {"pages": 100, "window_minutes": 60}}),
    )
    .await;
    let d = g
        .stack
        .new_device(admin.enrollment_token.as_deref().unwrap())
        .await;
    let mut agent = g.stack.open(&d.device_credential).await.unwrap();
    let print = |at: chrono::DateTime<chrono::Utc>| {
        event_at(
            at,
            Kind::Print(PrintEvent {
                printer: "hall".into(),
                document: "report.pdf".into(),
                pages: 60,
                copies: 1,
                ..Default::default()
            }),
        )
    };
    let now = chrono::Utc::now();
    // The later job (60 pages) is counted before the earlier one (60 more,
    // within the hour).
    agent
        .send(batch(1, vec![print(now - chrono::Duration::minutes(5))]))
        .await
        .unwrap();
    agent
        .send(batch(2, vec![print(now - chrono::Duration::minutes(35))]))
        .await
        .unwrap();
    let found = wait_for("the mass-print alarm", Duration::from_secs(20), || async {
        let a = alarms(&g, &admin).await;
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["category"], "mass_print");
    alerting.shutdown().await;
}

/// Every `Connect` cost a database lookup before any limit applied: a
/// device opening streams in a loop, or a client trying credentials, could
/// keep the database busy. Now a device may open a stream about once a
/// second (ten at once), and an address that keeps failing to authenticate
/// is refused without a lookup.
#[tokio::test]
async fn connects_are_limited_per_device_and_failed_logins_per_address() {
    let s = Stack::ingest_only(|_| {}).await;
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut refused = None;
    for _ in 0..40 {
        if let Err(e) = s.open(&dev.device_credential).await {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("40 streams in a row are refused at some point");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too often"), "{err:?}");

    let bogus = mamori_registry::DeviceCredential::generate();
    let mut last = None;
    for _ in 0..60 {
        last = Some(
            s.open(bogus.expose())
                .await
                .err()
                .expect("unknown credential"),
        );
    }
    let err = last.unwrap();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("failed authentications"), "{err:?}");
    // The address is refused for enrollment too, even with a good token.
    let err = s
        .enroll(&token, "m-late", "i-late")
        .await
        .expect_err("refused while the address cools down");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
}
