//! Policies and alarms end to end: an administrator bans an app through the
//! REST API, the agent on this machine receives the policy and kills the
//! app when it starts, the alerting service raises an alarm, and the
//! notification reaches a real SMTP server (Python's aiosmtpd) and a signed
//! webhook. Plus the alarm rules driven by events over real gRPC, and bad
//! policies refused with the field named.

use crate::gw::{Gw, Session};
use crate::support::*;
use base64::Engine;
use hmac::{Hmac, Mac};
use mamori_agent::{CollectorSet, EnrollOptions, RunOptions};
use mamori_proto::agent::v1::{Event, PrintEvent, event::Kind};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Python's aiosmtpd, storing what it receives in a Maildir.
pub struct Smtp {
    child: Option<tokio::process::Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Smtp {
    pub async fn start() -> Self {
        let mut smtp = Smtp {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        smtp.resume().await;
        smtp
    }

    /// Starts the server (again) on the same port.
    pub async fn resume(&mut self) {
        let python =
            std::env::var("MAMORI_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
        let child = tokio::process::Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.dir.path().join("Maildir"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start aiosmtpd with {python}: {e} (scripts/test.sh installs python3-aiosmtpd)"));
        self.child = Some(child);
        let port = self.port;
        wait_for(
            "aiosmtpd to listen",
            Duration::from_secs(20),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received, as text.
    pub fn messages(&self) -> Vec<String> {
        let dir = self.dir.path().join("Maildir/new");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }
}

/// One webhook request: its headers and body.
pub type Delivery = (axum::http::HeaderMap, Vec<u8>);

/// A webhook receiver on loopback, keeping every delivery.
#[derive(Clone, Default)]
pub struct Hook {
    pub received: Arc<Mutex<Vec<Delivery>>>,
}

impl Hook {
    pub async fn start() -> (Self, String) {
        let hook = Hook::default();
        let store = hook.received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let store = store.clone();
                    async move {
                        store.lock().unwrap().push((headers, body.to_vec()));
                        "ok"
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (hook, url)
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.received.lock().unwrap().clone()
    }
}

pub fn alerting_config(gw: &Gw, smtp_url: &str) -> mamori_alerting::Config {
    mamori_alerting::Config {
        stores: mamori_config::Stores {
            database_url: gw.stack.env.database_url.clone(),
            redis_url: gw.stack.env.redis_url.clone(),
            db_max_connections: 4,
        },
        alerting_ops_addr: "127.0.0.1:0".into(),
        alerting_claim_idle_ms: 1000,
        kek: mamori_config::KeyEncryption {
            key_encryption_key: gw.kek.clone(),
            ..Default::default()
        },
        smtp_url: smtp_url.to_owned(),
        mail_from: "Mamori <alarms@mamori.example>".into(),
        notify_poll_ms: 200,
        webhook_allow_private: true,
        ..Default::default()
    }
}

async fn put(gw: &Gw, s: &Session, path: &str, body: Value) -> (StatusCode, Value) {
    gw.call(Some(s), Method::PUT, path, Some(body)).await
}

/// Sets the tenant policy of the session's tenant; returns the saved policy.
pub(crate) async fn set_tenant_policy(gw: &Gw, s: &Session, document: Value) -> Value {
    let (status, v) = put(gw, s, "/api/v1/policies/tenant", document).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// Confirms each address with the code mailed to it (a policy routed alarm
/// mail to it), as a person does: the link's page, then its button.
pub(crate) async fn confirm_recipients(gw: &Gw, emails: &[&str]) {
    for email in emails {
        let token = gw.code_mailed_to(email, "mmn_");
        let link = gw.url(&format!(
            "/api/v1/notification-recipients/confirm?token={token}"
        ));
        let page = gw.http.get(&link).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let page = page.text().await.unwrap();
        assert!(page.contains("<form method=\"post\""), "{page}");
        let done = gw.http.post(&link).send().await.unwrap();
        assert_eq!(done.status(), StatusCode::OK);
        assert!(done.text().await.unwrap().contains("Confirmed"));
    }
}

/// Makes the session's tenant two days old: past the "new app" learning
/// period.
pub(crate) async fn past_learning(gw: &Gw, s: &Session) {
    let tenant: uuid::Uuid = s.tenant_id.as_deref().unwrap().parse().unwrap();
    sqlx::query("UPDATE tenants SET created_at = now() - interval '2 days' WHERE id = $1")
        .bind(tenant)
        .execute(&gw.stack.env.owner)
        .await
        .unwrap();
}

/// The alarms of the session's tenant.
pub(crate) async fn alarms(gw: &Gw, s: &Session) -> Vec<Value> {
    let (status, v) = gw.get(s, "/api/v1/alarms").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["alarms"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_app_is_killed_alarmed_mailed_and_posted() {
    let gw = Gw::start().await;
    let smtp = Smtp::start().await;
    let (hook, hook_url) = Hook::start().await;
    let alerting = mamori_alerting::start(alerting_config(&gw, &smtp.url()))
        .await
        .expect("alerting starts");
    let admin = gw.signup("Winny Ban KK", "tenant").await;
    crate::gateway::verify(&gw, &admin).await;

    // A webhook, its secret shown once.
    let (status, created) = gw
        .post(
            &admin,
            "/api/v1/webhooks",
            json!({ "name": "chat", "url": hook_url }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let webhook_id = created["id"].as_str().unwrap().to_owned();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(created["secret"].as_str().unwrap())
        .unwrap();
    let (_, listed) = gw.get(&admin, "/api/v1/webhooks").await;
    assert!(listed[0].get("secret").is_none(), "secret never listed");

    // The agent on this machine, connected before the policy exists.
    let state = tempfile::tempdir().unwrap();
    let enrolled = enroll_agent(&gw, &admin, state.path(), "policy-test").await;
    let device = enrolled.device_id.clone();
    let mut opts = RunOptions::new(state.path().to_owned());
    opts.collectors = "process".parse::<CollectorSet>().unwrap();
    let (stop_tx, agent) = run_agent(opts);
    wait_for("the agent to connect", Duration::from_secs(30), || async {
        let (_, d) = gw.get(&admin, &format!("/api/v1/devices/{device}")).await;
        (d["status"] == "online").then_some(())
    })
    .await;

    // The administrator bans winny and routes the alarm to two addresses
    // and the webhook.
    let saved = set_tenant_policy(
        &gw,
        &admin,
        json!({
            "banned_apps": [{"name": "winny", "action": "kill"}],
            "notifications": {"routes": [{
                "categories": ["banned_app"],
                "email": ["boss@example.com", "security@example.com"],
                "webhooks": [webhook_id]
            }]}
        }),
    )
    .await;
    let revision = saved["revision"].as_i64().unwrap();
    assert_eq!(saved["version"], 1);
    assert_eq!(
        saved["awaiting_confirmation"],
        json!(["boss@example.com", "security@example.com"])
    );
    confirm_recipients(&gw, &["boss@example.com", "security@example.com"]).await;

    // The agent receives it and says so; the device shows the revision.
    wait_applied(&gw, &admin, &device, revision).await;
    let (_, eff) = gw
        .get(&admin, &format!("/api/v1/devices/{device}/policy"))
        .await;
    assert_eq!(eff["origins"]["banned_apps"]["scope"], "tenant", "{eff}");
    assert_eq!(eff["document"]["banned_apps"][0]["name"], "winny");

    // winny starts on this machine and is killed.
    let bin = tempfile::tempdir().unwrap();
    let winny = marker_program_named(bin.path(), "winny");
    let started = std::time::Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(&winny).arg("30").status(),
    )
    .await
    .expect("winny is stopped well before its 30 s sleep ends")
    .unwrap();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    eprintln!("winny killed after {:?}", started.elapsed());

    // An alarm row.
    let alarm = wait_for("the banned-app alarm", Duration::from_secs(20), || async {
        alarms(&gw, &admin)
            .await
            .into_iter()
            .find(|a| a["category"] == "banned_app")
    })
    .await;
    assert!(
        alarm["summary"].as_str().unwrap().contains("winny"),
        "{alarm}"
    );
    assert_eq!(alarm["device_id"].as_str(), Some(device.as_str()));
    assert_eq!(alarm["count"], 1);

    // One e-mail to each recipient, at the real SMTP server.
    let mails = wait_for("two e-mails", Duration::from_secs(20), || async {
        let m = smtp.messages();
        (m.len() >= 2).then_some(m)
    })
    .await;
    assert_eq!(mails.len(), 2, "{mails:?}");
    for to in ["boss@example.com", "security@example.com"] {
        let mail = mails
            .iter()
            .find(|m| m.contains(&format!("To: {to}")))
            .unwrap_or_else(|| panic!("no mail to {to}: {mails:?}"));
        assert!(mail.contains("Subject: [Mamori] banned_app"), "{mail}");
        assert!(mail.contains("winny"), "{mail}");
    }

    // One webhook delivery, with a signature made with the secret.
    let deliveries = wait_for("the webhook", Duration::from_secs(20), || async {
        let d = hook.deliveries();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(deliveries.len(), 1);
    let (headers, body) = &deliveries[0];
    let timestamp = headers["x-mamori-timestamp"].to_str().unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(headers["x-mamori-signature"].to_str().unwrap(), expected);
    let payload: Value = serde_json::from_slice(body).unwrap();
    assert!(
        payload["text"].as_str().unwrap().contains("winny"),
        "{payload}"
    );
    assert_eq!(payload["alarms"][0]["category"], "banned_app");

    // The operation log says what was stopped, for whom and why.
    let event = wait_for(
        "the blocked-process event",
        Duration::from_secs(20),
        || async {
            let (_, v) = gw.get(&admin, "/api/v1/events?kind=process_blocked").await;
            v["events"].as_array().and_then(|e| e.first().cloned())
        },
    )
    .await;
    assert_eq!(event["subject"].as_str(), winny.to_str());
    let reason = event["detail"]["process"]["blocked_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("winny") && reason.contains("killed"),
        "{event}"
    );

    // Nothing more goes out: one alarm, two mails, one webhook.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(hook.deliveries().len(), 1);

    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
    alerting.shutdown().await;

    // The agent keeps the applied policy for offline enforcement; enrolling
    // the same installation into another tenant drops it.
    assert!(state.path().join("policy.pb").exists());
    let next = gw.signup("Next Owner KK", "tenant").await;
    enroll_agent(&gw, &next, state.path(), "policy-test").await;
    assert!(!state.path().join("policy.pb").exists());
}

/// Enrolls an agent installation in `state` with the session's token.
pub(crate) async fn enroll_agent(
    gw: &Gw,
    s: &Session,
    state: &std::path::Path,
    machine: &str,
) -> mamori_agent::EnrollOutcome {
    mamori_agent::enroll(&EnrollOptions {
        server: gw.stack.url(),
        token: s.enrollment_token.clone().unwrap(),
        state_dir: state.to_owned(),
        ca_cert: None,
        machine_id: Some(format!("{machine}-{}", uuid::Uuid::new_v4())),
    })
    .await
    .expect("agent enrolls")
}

/// Runs the agent until the returned sender is used (or dropped).
pub(crate) fn run_agent(
    opts: RunOptions,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<mamori_agent::Result<()>>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(mamori_agent::run(opts, async {
        let _ = stop_rx.await;
    }));
    (stop_tx, agent)
}

/// Waits until the device's agent reports applying `revision`.
async fn wait_applied(gw: &Gw, s: &Session, device: &str, revision: i64) {
    wait_for(
        "the agent to apply the policy",
        Duration::from_secs(30),
        || async {
            let (_, p) = gw.get(s, &format!("/api/v1/devices/{device}/policy")).await;
            (p["applied_revision"].as_i64() == Some(revision)).then_some(())
        },
    )
    .await;
}

/// A copy of /bin/sleep under `name`.
fn marker_program_named(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    crate::agent::marker_program(dir, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_is_refused_with_the_field_named_and_the_old_one_stays() {
    let gw = Gw::start().await;
    let admin = gw.signup("Strict Policies KK", "tenant").await;
    let good = json!({"device_control": {"classes": {"usb_storage": "deny"}}});
    set_tenant_policy(&gw, &admin, good.clone()).await;
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"name": format!("app{i}"), "action": "kill"}))
        .collect();
    let cases = [
        (
            json!({"device_control": {"classes": {"usb_stick": "deny"}}}),
            "usb_stick",
        ),
        (
            json!({"banned_apps": [{"path": "/opt/[p2p", "action": "kill"}]}),
            "banned_apps[0].path",
        ),
        (
            json!({"business_hours": {"time_zone": "Asia/Tokyo", "shifts": {"mon": [
                {"start": "09:00", "end": "13:00"}, {"start": "12:30", "end": "18:00"}]}}}),
            "business_hours.shifts.mon[1]",
        ),
        (
            json!({ "banned_apps": too_many }),
            "banned_apps: has 1001 entries",
        ),
        (
            json!({"confidential_folders": ["/srv/[x"]}),
            "confidential_folders[0]",
        ),
        (
            json!({"notifications": {"routes": [{"categories": ["banned_app"], "email": ["not-an-address"]}]}}),
            "notifications.routes[0].email[0]",
        ),
    ];
    for (doc, field) in cases {
        let (status, v) = put(&gw, &admin, "/api/v1/policies/tenant", doc).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{field}: {v}"
        );
    }
    let (_, current) = gw.get(&admin, "/api/v1/policies/tenant").await;
    assert_eq!(current["version"], 1, "the previous version stays");
    assert_eq!(
        current["document"]["device_control"]["classes"],
        good["device_control"]["classes"]
    );
    let (_, versions) = gw.get(&admin, "/api/v1/policies/tenant/versions").await;
    assert_eq!(versions.as_array().unwrap().len(), 1);
    // The auditor may read, not write.
    let (_, audit) = gw.get(&admin, "/api/v1/audit").await;
    let updates = audit["entries"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["action"] == "policy.update").count())
        .unwrap_or_default();
    assert_eq!(updates, 1, "one audited change: {audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_specific_policy_wins_and_names_its_origin() {
    let gw = Gw::start().await;
    let admin = gw.signup("Layered KK", "tenant").await;
    let (_, office) = gw
        .post(&admin, "/api/v1/groups", json!({"name": "Osaka office"}))
        .await;
    let office = office["id"].as_str().unwrap().to_owned();
    let (_, sales) = gw
        .post(
            &admin,
            "/api/v1/groups",
            json!({"name": "Sales", "parent_id": office}),
        )
        .await;
    let sales = sales["id"].as_str().unwrap().to_owned();
    let device = gw
        .stack
        .new_device(admin.enrollment_token.as_deref().unwrap())
        .await
        .device_id;
    let (status, v) = gw
        .call(
            Some(&admin),
            Method::PATCH,
            &format!("/api/v1/devices/{device}"),
            Some(json!({ "group_id": sales })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let layers = [
        (
            "/api/v1/policies/tenant".to_owned(),
            json!({
                "banned_apps": [{"name": "winny", "action": "kill"}],
                "mass_print": {"pages": 100, "window_minutes": 60}
            }),
        ),
        (
            format!("/api/v1/policies/groups/{office}"),
            json!({"mass_print": {"pages": 20, "window_minutes": 60}}),
        ),
        (
            format!("/api/v1/policies/devices/{device}"),
            json!({"device_control": {"classes": {"usb_storage": "read_only"}}}),
        ),
    ];
    for (path, doc) in layers {
        let (status, v) = put(&gw, &admin, &path, doc).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
    }
    let (_, eff) = gw
        .get(&admin, &format!("/api/v1/devices/{device}/policy"))
        .await;
    assert_eq!(eff["document"]["mass_print"]["pages"], 20, "{eff}");
    assert_eq!(eff["origins"]["mass_print"]["scope"], "group");
    assert_eq!(eff["origins"]["mass_print"]["target_id"], office.as_str());
    assert_eq!(eff["origins"]["banned_apps"]["scope"], "tenant");
    assert_eq!(eff["origins"]["device_control"]["scope"], "device");
    // Clearing the group's policy makes the tenant's apply again, as a new
    // version.
    let (status, cleared) = gw
        .call(
            Some(&admin),
            Method::DELETE,
            &format!("/api/v1/policies/groups/{office}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["version"], 2);
    let (_, eff) = gw
        .get(&admin, &format!("/api/v1/devices/{device}/policy"))
        .await;
    assert_eq!(eff["document"]["mass_print"]["pages"], 100);
    let (_, versions) = gw
        .get(
            &admin,
            &format!("/api/v1/policies/groups/{office}/versions"),
        )
        .await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
    assert!(versions[0]["document"].is_null());
    // Another tenant sees none of it.
    let other = gw.signup("Nosy KK", "tenant").await;
    for path in [
        format!("/api/v1/devices/{device}/policy"),
        format!("/api/v1/policies/groups/{office}"),
        format!("/api/v1/policies/devices/{device}"),
    ] {
        assert_eq!(
            gw.get(&other, &path).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(
        put(
            &gw,
            &other,
            &format!("/api/v1/policies/groups/{office}"),
            json!({}),
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

/// An event of `kind` at `at`.
pub(crate) fn event_at(at: chrono::DateTime<chrono::Utc>, kind: Kind) -> Event {
    Event {
        id: uuid::Uuid::now_v7().as_bytes().to_vec(),
        occurred_at_us: at.timestamp_micros(),
        os_user: "tanaka".into(),
        kind: Some(kind),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_rules_fire_at_their_edges() {
    let gw = Gw::start().await;
    let alerting = mamori_alerting::start(alerting_config(&gw, ""))
        .await
        .expect("alerting starts");
    let admin = gw.signup("Edges KK", "tenant").await;
    // Business hours in Tokyo, 09:00-18:00 on weekdays, one holiday; ten
    // pages an hour.
    let weekdays: serde_json::Map<String, Value> = ["mon", "tue", "wed", "thu", "fri"]
        .iter()
        .map(|d| (d.to_string(), json!([{"start": "09:00", "end": "18:00"}])))
        .collect();
    set_tenant_policy(
        &gw,
        &admin,
        json!({
            "business_hours": {"time_zone": "Asia/Tokyo", "shifts": weekdays, "holidays": ["2026-11-23"]},
            "mass_print": {"pages": 10, "window_minutes": 60}
        }),
    )
    .await;
    let enrolled = gw
        .stack
        .new_device(admin.enrollment_token.as_deref().unwrap())
        .await;
    let mut agent = gw.stack.open(&enrolled.device_credential).await.unwrap();
    let tokyo = |s: &str| -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().into()
    };
    let print = |pages: u32, at: &str| {
        event_at(
            tokyo(at),
            Kind::Print(PrintEvent {
                printer: "Office".into(),
                document: "plan.xlsx".into(),
                pages,
                copies: 1,
                ..Default::default()
            }),
        )
    };
    // Tuesday 24 Nov 2026: 17:59 is inside, 18:00 is not; Monday 23 Nov is
    // a holiday. Nine pages, then the tenth within the hour.
    let events = vec![
        print(4, "2026-11-24T17:30:00+09:00"),
        print(5, "2026-11-24T17:59:00+09:00"),
    ];
    let reply = agent.send(batch(1, events)).await.unwrap();
    assert!(matches!(
        reply.body,
        Some(mamori_proto::agent::v1::server_message::Body::Ack(_))
    ));
    // Give the rules time to (not) fire: nine pages, all in hours.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(alarms(&gw, &admin).await.is_empty(), "nothing yet");

    agent
        .send(batch(2, vec![print(1, "2026-11-24T18:00:00+09:00")]))
        .await
        .unwrap();
    let found = wait_for(
        "after-hours and mass-print alarms",
        Duration::from_secs(20),
        || async {
            let a = alarms(&gw, &admin).await;
            (a.len() >= 2).then_some(a)
        },
    )
    .await;
    let categories: Vec<&str> = found
        .iter()
        .map(|a| a["category"].as_str().unwrap())
        .collect();
    assert!(categories.contains(&"after_hours"), "{found:?}");
    assert!(categories.contains(&"mass_print"), "{found:?}");

    // A holiday at noon is after hours: a new alarm (a day away from the
    // open one).
    agent
        .send(batch(3, vec![print(1, "2026-11-23T12:00:00+09:00")]))
        .await
        .unwrap();
    wait_for("the holiday alarm", Duration::from_secs(20), || async {
        let a = alarms(&gw, &admin).await;
        (a.iter().filter(|x| x["category"] == "after_hours").count() == 2).then_some(())
    })
    .await;
    // Within the hour, the same device and user count into the open alarm.
    let late = vec![print(1, "2026-11-24T18:05:00+09:00")];
    agent.send(batch(4, late.clone())).await.unwrap();
    let counted = |n: i64| {
        let gw = &gw;
        let admin = &admin;
        move || async move {
            let a = alarms(gw, admin).await;
            a.iter()
                .find(|x| {
                    x["category"] == "after_hours"
                        && x["first_at"].as_str().unwrap().starts_with("2026-11-24")
                        && x["count"] == n
                })
                .map(drop)
        }
    };
    wait_for("the count to grow", Duration::from_secs(20), counted(2)).await;
    // The same events again (a replayed batch) count once.
    agent.send(batch(5, late)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        counted(2)().await.is_some(),
        "a replay is not counted twice"
    );
    assert_eq!(
        alarms(&gw, &admin)
            .await
            .iter()
            .filter(|x| x["category"] == "mass_print")
            .count(),
        1,
        "later pages in the window count into the mass-print alarm"
    );
    alerting.shutdown().await;
}

fn spawn_alerting(gw: &Gw, smtp_url: &str, log: &std::path::Path) -> Proc {
    crate::support::spawn_mamori(
        "alerting",
        &gw.stack.env,
        &[
            ("MAMORI_ALERTING_OPS_ADDR", "127.0.0.1:0"),
            ("MAMORI_ALERTING_CLAIM_IDLE_MS", "1000"),
            ("MAMORI_KEY_ENCRYPTION_KEY", &gw.kek),
            ("MAMORI_SMTP_URL", smtp_url),
            ("MAMORI_NOTIFY_POLL_MS", "200"),
            ("MAMORI_NOTIFY_LEASE_S", "2"),
        ],
        log,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_survives_smtp_down_and_kill_9_and_goes_out_once() {
    let gw = Gw::start().await;
    let admin = gw.signup("Crash Notify KK", "tenant").await;
    crate::gateway::verify(&gw, &admin).await;
    set_tenant_policy(
        &gw,
        &admin,
        json!({
            "banned_apps": [{"name": "winny", "action": "log"}],
            "notifications": {"routes": [{"categories": ["*"], "email": ["soc@example.com"]}]}
        }),
    )
    .await;
    confirm_recipients(&gw, &["soc@example.com"]).await;
    // SMTP is down: its port is reserved but nothing listens yet.
    let mut smtp = Smtp {
        child: None,
        port: free_port(),
        dir: tempfile::tempdir().unwrap(),
    };
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("alerting.log");
    let mut alerting = spawn_alerting(&gw, &smtp.url(), &log);

    let enrolled = gw
        .stack
        .new_device(admin.enrollment_token.as_deref().unwrap())
        .await;
    let mut agent = gw.stack.open(&enrolled.device_credential).await.unwrap();
    agent
        .send(batch(1, vec![process_event("C:\\P2P\\Winny.exe")]))
        .await
        .unwrap();
    // The alarm is raised and its e-mail is stuck in the outbox.
    wait_for(
        "a failed delivery attempt",
        Duration::from_secs(30),
        || async {
            let row: Option<(i32, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
            "SELECT attempts, sent_at FROM notification_outbox WHERE recipient = 'soc@example.com'",
        )
        .fetch_optional(&gw.stack.env.owner)
        .await
        .unwrap();
            row.filter(|(attempts, sent)| *attempts >= 1 && sent.is_none())
                .map(drop)
        },
    )
    .await;
    assert_eq!(alarms(&gw, &admin).await.len(), 1);

    // kill -9, SMTP comes back, a new alerting process takes over.
    crate::crash::kill9(&mut alerting);
    smtp.resume().await;
    let _alerting = spawn_alerting(&gw, &smtp.url(), &log);
    wait_for("the e-mail", Duration::from_secs(60), || async {
        (!smtp.messages().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "exactly one e-mail: {mails:?}");
    assert!(mails[0].contains("Winny.exe"), "{}", mails[0]);
    assert_eq!(
        alarms(&gw, &admin).await.len(),
        1,
        "the replayed entry raised nothing new"
    );
    let sent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notification_outbox WHERE sent_at IS NOT NULL")
            .fetch_one(&gw.stack.env.owner)
            .await
            .unwrap();
    assert_eq!(sent, 1);
}

/// A fake sysfs: USB devices with their interfaces and block devices, as
/// the kernel lays them out (bus entries are links into `devices/`).
pub(crate) struct FakeSysfs {
    root: tempfile::TempDir,
}

impl FakeSysfs {
    pub(crate) fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        for d in ["bus/usb/devices", "devices/usb1", "block"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        FakeSysfs { root }
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        self.root.path()
    }

    /// A device `name` (`1-3`) with one interface of `class`/`subclass`.
    pub(crate) fn plug(
        &self,
        name: &str,
        vendor: &str,
        product: &str,
        serial: &str,
        class: &str,
        sub: &str,
    ) {
        let dev = self.path().join("devices/usb1").join(name);
        let iface = dev.join(format!("{name}:1.0"));
        std::fs::create_dir_all(&iface).unwrap();
        for (file, value) in [
            ("idVendor", vendor),
            ("idProduct", product),
            ("serial", serial),
            ("product", "Stick"),
            ("manufacturer", "Acme"),
            ("bDeviceClass", "00"),
            ("authorized", "1"),
        ] {
            std::fs::write(dev.join(file), format!("{value}\n")).unwrap();
        }
        std::fs::write(iface.join("bInterfaceClass"), format!("{class}\n")).unwrap();
        std::fs::write(iface.join("bInterfaceSubClass"), format!("{sub}\n")).unwrap();
        let bus = self.path().join("bus/usb/devices");
        std::os::unix::fs::symlink(&dev, bus.join(name)).unwrap();
        std::os::unix::fs::symlink(&iface, bus.join(format!("{name}:1.0"))).unwrap();
    }

    /// Block device `block` (`sdz`) below USB device `name`.
    pub(crate) fn block(&self, name: &str, block: &str) {
        let dir = self
            .path()
            .join("devices/usb1")
            .join(name)
            .join(format!("{name}:1.0/host7/block"))
            .join(block);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&dir, self.path().join("block").join(block)).unwrap();
    }

    fn authorized(&self, name: &str) -> String {
        std::fs::read_to_string(
            self.path()
                .join("devices/usb1")
                .join(name)
                .join("authorized"),
        )
        .unwrap()
        .trim()
        .to_owned()
    }
}

/// A tmpfs mounted for the test, unmounted when dropped.
pub(crate) struct TmpfsMount(pub(crate) tempfile::TempDir);

impl TmpfsMount {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mounting a tmpfs (the tests run as root)");
        TmpfsMount(dir)
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_control_refuses_denied_media_honours_exceptions_and_expires_allowances() {
    let gw = Gw::start().await;
    let alerting = mamori_alerting::start(alerting_config(&gw, ""))
        .await
        .expect("alerting starts");
    let admin = gw.signup("USB Control KK", "tenant").await;
    let sysfs = FakeSysfs::new();
    sysfs.plug("1-1", "0781", "5581", "DENYME", "08", "06");
    sysfs.plug("1-2", "0951", "1666", "KEEP", "08", "06");
    sysfs.plug("1-3", "058f", "6387", "TEMP", "08", "06");
    sysfs.plug("1-4", "0e8d", "1806", "DVD1", "08", "02");
    sysfs.block("1-4", "sdz");
    let media = TmpfsMount::new();
    let mounts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        mounts.path(),
        format!(
            "proc /proc proc rw 0 0\n/dev/sdz1 {} udf rw 0 0\n",
            media.0.path().display()
        ),
    )
    .unwrap();

    let state = tempfile::tempdir().unwrap();
    let enrolled = enroll_agent(&gw, &admin, state.path(), "usb-test").await;
    let mut opts = RunOptions::new(state.path().to_owned());
    opts.collectors = "devices".parse::<CollectorSet>().unwrap();
    opts.platform.sysfs_root = sysfs.path().to_owned();
    opts.platform.mount_table = mounts.path().to_owned();
    let (stop_tx, agent) = run_agent(opts);
    // No policy yet: everything is allowed and reported as connected.
    let device = enrolled.device_id.clone();
    wait_for("four connect events", Duration::from_secs(30), || async {
        let (_, v) = gw.get(&admin, "/api/v1/events?kind=device_connect").await;
        (v["events"].as_array().map(Vec::len) == Some(4)).then_some(())
    })
    .await;
    assert_eq!(sysfs.authorized("1-1"), "1");

    let until = chrono::Utc::now() + chrono::Duration::seconds(6);
    let (status, v) = put(
        &gw,
        &admin,
        &format!("/api/v1/policies/devices/{device}"),
        json!({"device_control": {
            "classes": {"usb_storage": "deny", "cd_dvd": "read_only"},
            "exceptions": [
                {"vendor_id": "0951", "product_id": "1666", "serial": "KEEP"},
                {"vendor_id": "058F", "product_id": "6387", "serial": "TEMP", "until": until}
            ]
        }}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");

    wait_for(
        "the denied stick to be de-authorised",
        Duration::from_secs(20),
        || async { (sysfs.authorized("1-1") == "0").then_some(()) },
    )
    .await;
    assert_eq!(
        sysfs.authorized("1-2"),
        "1",
        "the excepted serial is left alone"
    );
    assert_eq!(
        sysfs.authorized("1-3"),
        "1",
        "the allowance is still running"
    );
    let probe = media.0.path().join("copy.txt");
    wait_for(
        "the DVD's file system to be read-only",
        Duration::from_secs(20),
        || async {
            match std::fs::write(&probe, b"secret") {
                Err(e) if e.raw_os_error() == Some(libc_erofs()) => Some(()),
                _ => None,
            }
        },
    )
    .await;

    // The temporary allowance ends.
    wait_for(
        "the allowance to expire",
        Duration::from_secs(30),
        || async { (sysfs.authorized("1-3") == "0").then_some(()) },
    )
    .await;
    assert!(
        chrono::Utc::now() >= until,
        "refused only after the allowance ended"
    );
    assert_eq!(sysfs.authorized("1-2"), "1");

    // Every refusal is an event and a device-control alarm.
    let blocked = wait_for(
        "three refusals in the log",
        Duration::from_secs(20),
        || async {
            let (_, v) = gw.get(&admin, "/api/v1/events?kind=device_blocked").await;
            let e = v["events"].as_array().cloned().unwrap_or_default();
            (e.len() == 3).then_some(e)
        },
    )
    .await;
    let serials: Vec<&str> = blocked
        .iter()
        .map(|e| e["detail"]["device"]["serial"].as_str().unwrap_or_default())
        .collect();
    for s in ["DENYME", "TEMP", "DVD1"] {
        assert!(serials.contains(&s), "{s} in {serials:?}");
    }
    wait_for(
        "three device-control alarms",
        Duration::from_secs(20),
        || async {
            let a = alarms(&gw, &admin).await;
            (a.iter()
                .filter(|x| x["category"] == "device_control")
                .count()
                == 3)
                .then_some(())
        },
    )
    .await;

    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
    alerting.shutdown().await;
}

fn libc_erofs() -> i32 {
    nix::errno::Errno::EROFS as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_app_alarms_once_per_tenant_after_the_learning_period() {
    let gw = Gw::start().await;
    let alerting = mamori_alerting::start(alerting_config(&gw, ""))
        .await
        .expect("alerting starts");
    // A tenant past its first day, and one still learning its apps.
    let old = gw.signup("Settled KK", "tenant").await;
    let young = gw.signup("Brand New KK", "tenant").await;
    past_learning(&gw, &old).await;
    let mut streams = Vec::new();
    for s in [&old, &old, &young] {
        let d = gw
            .stack
            .new_device(s.enrollment_token.as_deref().unwrap())
            .await;
        streams.push(gw.stack.open(&d.device_credential).await.unwrap());
    }
    // Two devices of the old tenant start the same new app, twice.
    for (i, agent) in streams.iter_mut().enumerate() {
        let events = vec![
            process_event("C:\\Tools\\shadow-it.exe"),
            process_event("C:\\Tools\\shadow-it.exe"),
        ];
        agent.send(batch(1 + i as u64, events)).await.unwrap();
    }
    let found = wait_for("the new-app alarm", Duration::from_secs(20), || async {
        let a = alarms(&gw, &old).await;
        (!a.is_empty()).then_some(a)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = alarms(&gw, &old).await;
    assert_eq!(again.len(), 1, "one alarm for the tenant: {again:?}");
    assert_eq!(found[0]["category"], "new_app");
    assert!(
        found[0]["summary"]
            .as_str()
            .unwrap()
            .contains("shadow-it.exe")
    );
    assert!(
        alarms(&gw, &young).await.is_empty(),
        "a tenant in its learning period is not alarmed"
    );
    // Another app (another executable: another hash) is new again.
    let mut other = process_event("C:\\Tools\\other.exe");
    if let Some(Kind::Process(p)) = &mut other.kind {
        p.exe_sha256 = vec![8; 32];
    }
    streams[0].send(batch(10, vec![other])).await.unwrap();
    wait_for(
        "the second new-app alarm",
        Duration::from_secs(20),
        || async { (alarms(&gw, &old).await.len() == 2).then_some(()) },
    )
    .await;
    alerting.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_web_environment_and_lan_rules_raise_their_alarms() {
    use mamori_proto::agent::v1::{
        EnvironmentChangeEvent, FileEvent, LanSightingEvent, WebEvent, environment_change_event,
        file_event,
    };
    let gw = Gw::start().await;
    let alerting = mamori_alerting::start(alerting_config(&gw, ""))
        .await
        .expect("alerting starts");
    let admin = gw.signup("Four Rules KK", "tenant").await;
    set_tenant_policy(
        &gw,
        &admin,
        json!({
            "confidential_folders": ["/srv/hr/**"],
            "web": {"block": ["*.p2p.example"], "alarm": ["upload.example"]}
        }),
    )
    .await;
    let d = gw
        .stack
        .new_device(admin.enrollment_token.as_deref().unwrap())
        .await;
    let mut agent = gw.stack.open(&d.device_credential).await.unwrap();
    let now = chrono::Utc::now();
    let file = |path: &str, target: &str| {
        event_at(
            now,
            Kind::File(FileEvent {
                action: file_event::Action::Copy as i32,
                path: path.into(),
                target_path: target.into(),
                removable_media: true,
                ..Default::default()
            }),
        )
    };
    let web = |host: &str| {
        event_at(
            now,
            Kind::Web(WebEvent {
                url_host: host.into(),
                browser: "Edge".into(),
                ..Default::default()
            }),
        )
    };
    let lan = |mac: &str, known: bool| {
        event_at(
            now,
            Kind::LanSighting(LanSightingEvent {
                ip_addr: "192.168.1.77".into(),
                mac_addr: mac.into(),
                known,
                ..Default::default()
            }),
        )
    };
    let events = vec![
        file("/srv/hr/salaries.xlsx", "/media/usb/salaries.xlsx"),
        file("/home/tanaka/notes.txt", "/media/usb/notes.txt"),
        web("www.p2p.example"),
        web("news.example"),
        web("files.upload.example"),
        event_at(
            now,
            Kind::EnvironmentChange(EnvironmentChangeEvent {
                field: environment_change_event::Field::IpAddress as i32,
                old_value: "10.0.0.5".into(),
                new_value: "10.0.9.9".into(),
            }),
        ),
        lan("aa:bb:cc:00:11:22", false),
        lan("aa:bb:cc:00:11:33", true),
    ];
    agent.send(batch(1, events)).await.unwrap();
    let found = wait_for("five alarms", Duration::from_secs(20), || async {
        let a = alarms(&gw, &admin).await;
        (a.len() >= 5).then_some(a)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let found_again = alarms(&gw, &admin).await;
    assert_eq!(found_again.len(), 5, "{found_again:?}");
    let summary = |category: &str| -> Vec<String> {
        found
            .iter()
            .filter(|a| a["category"] == category)
            .map(|a| a["summary"].as_str().unwrap().to_owned())
            .collect()
    };
    let folder = summary("confidential_folder");
    assert_eq!(folder.len(), 1);
    assert!(folder[0].contains("salaries.xlsx"), "{folder:?}");
    let webs = summary("banned_web");
    assert_eq!(webs.len(), 2, "a blocked and an alarmed host: {webs:?}");
    assert!(webs.iter().any(|w| w.contains("www.p2p.example")));
    assert!(webs.iter().any(|w| w.contains("files.upload.example")));
    assert!(summary("environment_change")[0].contains("10.0.9.9"));
    let lan_alarms = summary("unauthorized_pc");
    assert_eq!(lan_alarms.len(), 1);
    assert!(lan_alarms[0].contains("aa:bb:cc:00:11:22"));
    alerting.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_msp_applies_a_template_to_its_tenants_and_sees_drift() {
    let gw = Gw::start().await;
    let msp = gw.signup("Template MSP", "msp").await;
    let mut tenants = Vec::new();
    for name in ["Shop A", "Shop B", "Shop C"] {
        let (status, v) = gw
            .post(&msp, "/api/v1/tenants", json!({ "name": name }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        tenants.push(v["id"].as_str().unwrap().to_owned());
    }
    let doc = json!({"banned_apps": [{"name": "winny", "action": "kill"}]});
    let (status, template) = gw
        .post(
            &msp,
            "/api/v1/org/policy-templates",
            json!({"name": "Standard", "document": doc}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let id = template["id"].as_str().unwrap().to_owned();
    // A bad template document names the field.
    let (status, v) = gw
        .post(
            &msp,
            "/api/v1/org/policy-templates",
            json!({"name": "Broken", "document": {"banned_apps": [{"action": "kill"}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("document.banned_apps[0]")
    );

    // Apply to A and B.
    let (status, applied) = gw
        .post(
            &msp,
            &format!("/api/v1/org/policy-templates/{id}/apply"),
            json!({"tenant_ids": [tenants[0], tenants[1]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied.as_array().unwrap().len(), 2);
    let (_, a_policy) = gw
        .get(&msp.on(&tenants[0]), "/api/v1/policies/tenant")
        .await;
    assert_eq!(a_policy["document"]["banned_apps"][0]["name"], "winny");

    let drift = |expect: [&'static str; 3]| {
        let gw = &gw;
        let msp = &msp;
        let id = id.clone();
        let tenants = tenants.clone();
        async move {
            let (status, v) = gw
                .get(msp, &format!("/api/v1/org/policy-templates/{id}/drift"))
                .await;
            assert_eq!(status, StatusCode::OK, "{v}");
            for (t, want) in tenants.iter().zip(expect) {
                let row = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["tenant_id"] == t.as_str())
                    .unwrap_or_else(|| panic!("{t} missing from {v}"));
                assert_eq!(row["status"], want, "{t}: {v}");
            }
        }
    };
    drift(["in_sync", "in_sync", "not_applied"]).await;

    // The template moves on: A and B are outdated; A is then edited locally.
    let (status, v) = gw
        .call(
            Some(&msp),
            Method::PUT,
            &format!("/api/v1/org/policy-templates/{id}"),
            Some(json!({"name": "Standard", "document": {"banned_apps": [
                {"name": "winny", "action": "kill"}, {"name": "share", "action": "kill"}]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 2);
    drift(["outdated", "outdated", "not_applied"]).await;
    set_tenant_policy(
        &gw,
        &msp.on(&tenants[0]),
        json!({"mass_print": {"pages": 50, "window_minutes": 60}}),
    )
    .await;
    drift(["modified", "outdated", "not_applied"]).await;

    // A tenant of another organisation cannot be named: nothing changes.
    let stranger = gw.signup("Independent KK", "tenant").await;
    let (status, _) = gw
        .post(
            &msp,
            &format!("/api/v1/org/policy-templates/{id}/apply"),
            json!({"tenant_ids": [tenants[2], stranger.tenant_id.clone().unwrap()]}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drift(["modified", "outdated", "not_applied"]).await;
    let (status, _) = gw.get(&stranger, "/api/v1/policies/tenant").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the stranger got no policy");
    // Tenants' own admins do not manage templates.
    assert_eq!(
        gw.get(&stranger, "/api/v1/org/policy-templates").await.0,
        StatusCode::FORBIDDEN
    );
    // Applying again brings A and B to the current version.
    let (status, _) = gw
        .post(
            &msp,
            &format!("/api/v1/org/policy-templates/{id}/apply"),
            json!({"tenant_ids": [tenants[0], tenants[1]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    drift(["in_sync", "in_sync", "not_applied"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_into_the_operators_network_are_refused() {
    let gw = Gw::start_with(|c| c.webhook_allow_private = false).await;
    let admin = gw.signup("SSRF KK", "tenant").await;
    for url in [
        "http://127.0.0.1:9101/metrics",
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.5/hook",
        "https://[::1]/hook",
        "https://localhost/hook",
        "https://user:pw@hooks.example.com/x",
    ] {
        let (status, v) = gw
            .post(&admin, "/api/v1/webhooks", json!({"name": "x", "url": url}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with("url:"),
            "{v}"
        );
    }
    let (_, listed) = gw.get(&admin, "/api/v1/webhooks").await;
    assert_eq!(listed.as_array().unwrap().len(), 0, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_route_collects_alarms_into_one_mail_when_its_interval_ends() {
    let gw = Gw::start().await;
    let smtp = Smtp::start().await;
    let alerting = mamori_alerting::start(mamori_alerting::Config {
        digest_interval_s: 3600,
        ..alerting_config(&gw, &smtp.url())
    })
    .await
    .expect("alerting starts");
    let admin = gw.signup("Digest KK", "tenant").await;
    crate::gateway::verify(&gw, &admin).await;
    set_tenant_policy(
        &gw,
        &admin,
        json!({
            "banned_apps": [{"name": "winny", "action": "log"}],
            "notifications": {"routes": [
                {"categories": ["banned_app"], "email": ["now@digest.example"]},
                {"categories": ["*"], "email": ["boss@digest.example"], "mode": "digest"}
            ]}
        }),
    )
    .await;
    confirm_recipients(&gw, &["now@digest.example", "boss@digest.example"]).await;
    let token = admin.enrollment_token.clone().unwrap();
    let mut hosts = Vec::new();
    for _ in 0..3 {
        let d = gw.stack.new_device(&token).await;
        let mut agent = gw.stack.open(&d.device_credential).await.unwrap();
        agent
            .send(batch(1, vec![process_event("/usr/local/bin/winny")]))
            .await
            .unwrap();
        let (_, device) = gw
            .get(&admin, &format!("/api/v1/devices/{}", d.device_id))
            .await;
        hosts.push(device["hostname"].as_str().unwrap().to_owned());
    }
    // The immediate route: one e-mail per alarm at once.
    let to = |who: &str| {
        smtp.messages()
            .into_iter()
            .filter(|m| m.contains(&format!("To: {who}")))
            .collect::<Vec<_>>()
    };
    wait_for(
        "three immediate e-mails",
        Duration::from_secs(20),
        || async { (to("now@digest.example").len() == 3).then_some(()) },
    )
    .await;
    // The digest waits for its hour.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        to("boss@digest.example").is_empty(),
        "the digest went early"
    );
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notification_outbox
         WHERE recipient = 'boss@digest.example' AND digest AND sent_at IS NULL AND next_attempt_at > now()",
    )
    .fetch_one(&gw.stack.env.owner)
    .await
    .unwrap();
    assert_eq!(waiting, 3);

    // The hour is over: one message with all three alarms.
    sqlx::query(
        "UPDATE notification_outbox SET next_attempt_at = now() WHERE recipient = 'boss@digest.example'",
    )
    .execute(&gw.stack.env.owner)
    .await
    .unwrap();
    let digest = wait_for("the digest e-mail", Duration::from_secs(20), || async {
        to("boss@digest.example").pop()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(to("boss@digest.example").len(), 1, "one digest, not three");
    assert!(digest.contains("[Mamori] 3 alarms"), "{digest}");
    for host in &hosts {
        assert!(
            digest.contains(host.as_str()),
            "{host} missing from {digest}"
        );
    }
    alerting.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_app_is_refused_before_it_runs_and_runs_again_without_the_agent() {
    let gw = Gw::start().await;
    let alerting = mamori_alerting::start(alerting_config(&gw, ""))
        .await
        .expect("alerting starts");
    let admin = gw.signup("Launch Guard KK", "tenant").await;
    let state = tempfile::tempdir().unwrap();
    let device = enroll_agent(&gw, &admin, state.path(), "launch-guard")
        .await
        .device_id;
    let mut opts = RunOptions::new(state.path().to_owned());
    opts.collectors = "process".parse::<CollectorSet>().unwrap();
    let (stop_tx, agent) = run_agent(opts);
    let saved = set_tenant_policy(
        &gw,
        &admin,
        json!({"banned_apps": [{"name": "p2p-share", "action": "block"}]}),
    )
    .await;
    let revision = saved["revision"].as_i64().unwrap();
    wait_applied(&gw, &admin, &device, revision).await;

    let bin = tempfile::tempdir().unwrap();
    let banned = marker_program_named(bin.path(), "p2p-share");
    let other = marker_program_named(bin.path(), "allowed-tool");
    // The banned program never runs: its exec is refused.
    // The guard opens its fanotify group within a quarter second of the
    // policy arriving; until then a block rule kills at exec. Either way
    // the program does not keep running; once the guard is on, its exec
    // is refused (EPERM) and it never runs at all.
    let err = wait_for("the launch guard", Duration::from_secs(10), || async {
        match std::process::Command::new(&banned).arg("30").status() {
            Err(e) => Some(e),
            Ok(status) => {
                assert_eq!(status.signal(), Some(9), "killed at exec: {status:?}");
                None
            }
        }
    })
    .await;
    assert_eq!(err.raw_os_error(), Some(1), "EPERM: {err}");
    // Everything else starts as usual.
    let ok = std::process::Command::new(&other)
        .arg("0")
        .status()
        .unwrap();
    assert!(ok.success(), "{ok:?}");

    let alarm = wait_for("the banned-app alarm", Duration::from_secs(20), || async {
        alarms(&gw, &admin)
            .await
            .into_iter()
            .find(|a| a["category"] == "banned_app")
    })
    .await;
    let summary = alarm["summary"].as_str().unwrap();
    assert!(summary.contains("p2p-share"), "{summary}");
    assert_eq!(alarm["device_id"].as_str(), Some(device.as_str()));
    // The operation log has the refused launch, with the rule.
    wait_for(
        "the refused-launch event",
        Duration::from_secs(20),
        || async {
            let (_, v) = gw.get(&admin, "/api/v1/events?kind=process_blocked").await;
            v["events"].as_array()?.iter().find_map(|e| {
                let reason = e["detail"]["process"]["blocked_reason"].as_str()?;
                (e["subject"].as_str() == banned.to_str()
                    && reason.contains("p2p-share")
                    && reason.ends_with("blocked before launch"))
                .then_some(())
            })
        },
    )
    .await;

    // A stopped agent guards nothing: it closed its fanotify group (marks
    // removed, queued questions allowed), so no exec waits for it.
    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
    let ran = std::process::Command::new(&banned)
        .arg("0")
        .status()
        .unwrap();
    assert!(ran.success(), "{ran:?}");
    alerting.shutdown().await;
}
