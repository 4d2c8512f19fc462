//! The policy service as its own process (`mamori policy`): the gateway
//! calls its internal gRPC API as the verified caller, a change made there
//! reaches a connected agent through ingest, the gateway answers 503 while
//! it is down and loses nothing, and the internal API refuses calls whose
//! identity is missing, forged, stale or not allowed to do what it asks.

use crate::gw::{Gw, Session};
use crate::support::{Proc, free_port, wait_for};
use mamori_policy::{Identity, IdentityKey};
use mamori_proto::agent::v1::{AgentMessage, Hello, agent_message, server_message};
use mamori_proto::policy::v1 as pb;
use mamori_proto::policy::v1::policy_service_client::PolicyServiceClient;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

fn spawn_policy(gw: &Gw, port: u16, log: &std::path::Path) -> Proc {
    crate::support::spawn_mamori(
        "policy",
        &gw.stack.env,
        &[
            ("MAMORI_POLICY_ADDR", &format!("127.0.0.1:{port}")),
            ("MAMORI_POLICY_OPS_ADDR", "127.0.0.1:0"),
            ("MAMORI_KEY_ENCRYPTION_KEY", &gw.kek),
        ],
        log,
    )
}

async fn put_policy(gw: &Gw, s: &Session, body: Value) -> (StatusCode, Value) {
    gw.call(Some(s), Method::PUT, "/api/v1/policies/tenant", Some(body))
        .await
}

fn banning(name: &str) -> Value {
    json!({"banned_apps": [{"name": name, "action": "kill"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_calls_a_separate_policy_process_and_survives_its_crash() {
    let port = free_port();
    let gw = Gw::start_with(|cfg| cfg.policy_url = format!("http://127.0.0.1:{port}")).await;
    let admin = gw.signup("Separate Policy KK", "tenant").await;
    let log = tempfile::NamedTempFile::new().unwrap();

    // Nothing listens yet: a clear 503, and nothing is stored.
    let (status, v) = put_policy(&gw, &admin, banning("winny")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("policy service"),
        "{v}"
    );

    // An agent of the tenant is connected to ingest.
    let token = admin.enrollment_token.clone().unwrap();
    let device = gw.stack.new_device(&token).await;
    let mut agent = gw.stack.open(&device.device_credential).await.unwrap();
    agent
        .tx
        .send(AgentMessage {
            body: Some(agent_message::Body::Hello(Hello {
                agent_version: "test".into(),
                ..Default::default()
            })),
        })
        .await
        .unwrap();

    let mut policy = spawn_policy(&gw, port, log.path());
    let saved = wait_for(
        "the policy process to answer",
        Duration::from_secs(30),
        || async {
            let (status, v) = put_policy(&gw, &admin, banning("winny")).await;
            (status == StatusCode::OK).then_some(v)
        },
    )
    .await;
    assert_eq!(saved["version"], 1, "the refused attempt stored nothing");

    // The change went from the policy process through Redis to ingest and
    // down the agent's stream.
    let update = loop {
        match agent.next().await.unwrap().body {
            Some(server_message::Body::Policy(p)) => break p,
            _ => continue,
        }
    };
    assert_eq!(update.revision, saved["revision"].as_u64().unwrap());
    assert_eq!(update.banned_apps.len(), 1);
    assert_eq!(update.banned_apps[0].name, "winny");

    // Audited in the tenant as the admin who made it.
    let (status, audit) = gw.get(&admin, "/api/v1/audit").await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "policy.update")
        .unwrap_or_else(|| panic!("no policy.update in {audit}"))
        .clone();
    assert_eq!(entry["actor_id"].as_str(), Some(admin.user_id.as_str()));
    assert_eq!(entry["actor_role"], "tenant_admin");

    // kill -9: the gateway answers 503 and the stored policy is intact.
    policy.0.kill().unwrap();
    policy.0.wait().unwrap();
    let (status, v) = put_policy(&gw, &admin, banning("share")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let (status, v) = gw.get(&admin, "/api/v1/policies/tenant").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");

    let _policy = spawn_policy(&gw, port, log.path());
    let current = wait_for(
        "the restarted policy process",
        Duration::from_secs(30),
        || async {
            let (status, v) = gw.get(&admin, "/api/v1/policies/tenant").await;
            (status == StatusCode::OK).then_some(v)
        },
    )
    .await;
    assert_eq!(current["version"], 1);
    assert_eq!(current["document"]["banned_apps"][0]["name"], "winny");
    let (status, v) = put_policy(&gw, &admin, banning("share")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 2);
}

async fn client(gw: &Gw) -> PolicyServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", gw.policy.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    PolicyServiceClient::new(channel)
}

fn identity_of(s: &Session, role: &str) -> Identity {
    Identity {
        tenant: s.tenant_id.as_deref().map(|t| t.parse().unwrap()),
        org: s.org_id.as_deref().map(|t| t.parse().unwrap()),
        user: s.user_id.parse().unwrap(),
        email: s.email.clone(),
        role: role.into(),
        ip: None,
        request_id: "test".into(),
        iat: chrono::Utc::now().timestamp(),
        id: Uuid::nil(),
        method: String::new(),
        body_sha256: String::new(),
    }
}

/// `message` for the call `method`, with `identity` signed for it (as the
/// gateway's client does).
fn signed<T: prost::Message>(
    key: &IdentityKey,
    identity: &Identity,
    method: &str,
    message: T,
) -> tonic::Request<T> {
    let identity = Identity {
        id: Uuid::new_v4(),
        method: mamori_policy::identity::method_path(method),
        body_sha256: mamori_policy::identity::body_digest(&message),
        ..identity.clone()
    };
    signed_as(key, &identity, message)
}

/// `message` with `identity` signed as it is.
fn signed_as<T>(key: &IdentityKey, identity: &Identity, message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert(
        mamori_policy::identity::METADATA,
        key.sign(identity).parse().unwrap(),
    );
    req
}

fn tenant_target() -> pb::PolicyTarget {
    pb::PolicyTarget {
        scope: pb::ScopeKind::Tenant as i32,
        target_id: String::new(),
    }
}

fn put_req(doc: Value) -> pb::PutPolicyRequest {
    pb::PutPolicyRequest {
        target: Some(tenant_target()),
        document_json: Some(doc.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_api_acts_only_as_a_valid_signed_identity() {
    let gw = Gw::start().await;
    let a = gw.signup("Identity A KK", "tenant").await;
    let b = gw.signup("Identity B KK", "tenant").await;
    let (status, v) = put_policy(&gw, &a, banning("winny")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, group) = gw
        .post(&a, "/api/v1/groups", json!({"name": "Osaka office"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let a_group = group["id"].as_str().unwrap().to_owned();

    let key = IdentityKey::from_kek(&mamori_gateway::Kek::from_base64(&gw.kek).unwrap());
    let other_key = IdentityKey::from_kek(
        &mamori_gateway::Kek::from_base64(&mamori_gateway::Kek::generate_base64()).unwrap(),
    );
    let mut api = client(&gw).await;

    // No identity, one signed under another key, a stale one, garbage.
    let err = api
        .list_policies(pb::ListPoliciesRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = api
        .put_policy(signed(
            &other_key,
            &identity_of(&a, "tenant_admin"),
            "PutPolicy",
            put_req(banning("x")),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("signature"), "{err:?}");
    let mut stale = identity_of(&a, "tenant_admin");
    stale.iat -= 120;
    let err = api
        .put_policy(signed(&key, &stale, "PutPolicy", put_req(banning("x"))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let mut req = tonic::Request::new(pb::ListPoliciesRequest {});
    req.metadata_mut().insert(
        mamori_policy::identity::METADATA,
        "not.signed".parse().unwrap(),
    );
    let err = api.list_policies(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // An auditor may read but not change.
    let auditor = identity_of(&a, "auditor");
    let list = api
        .list_policies(signed(
            &key,
            &auditor,
            "ListPolicies",
            pb::ListPoliciesRequest {},
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.policies.len(), 1);
    let err = api
        .put_policy(signed(&key, &auditor, "PutPolicy", put_req(banning("x"))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // The tenant is the identity's: B sees none of A's policies, cannot
    // reach A's group, and tenant-level templates are refused.
    let b_id = identity_of(&b, "tenant_admin");
    let list = api
        .list_policies(signed(
            &key,
            &b_id,
            "ListPolicies",
            pb::ListPoliciesRequest {},
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(list.policies.is_empty(), "{list:?}");
    let err = api
        .put_policy(signed(
            &key,
            &b_id,
            "PutPolicy",
            pb::PutPolicyRequest {
                target: Some(pb::PolicyTarget {
                    scope: pb::ScopeKind::Group as i32,
                    target_id: a_group.clone(),
                }),
                document_json: Some(banning("x").to_string()),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = api
        .create_template(signed(
            &key,
            &b_id,
            "CreateTemplate",
            pb::TemplateInput {
                name: "t".into(),
                document_json: "{}".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Bad input names the field and changes nothing.
    let err = api
        .put_policy(signed(
            &key,
            &identity_of(&a, "tenant_admin"),
            "PutPolicy",
            put_req(json!({"device_control": {"classes": {"warp_drive": "deny"}}})),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("warp_drive"), "{err:?}");
    let err = api
        .put_policy(signed(
            &key,
            &identity_of(&a, "tenant_admin"),
            "PutPolicy",
            pb::PutPolicyRequest {
                target: Some(pb::PolicyTarget {
                    scope: pb::ScopeKind::Device as i32,
                    target_id: "not-a-uuid".into(),
                }),
                document_json: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("target_id"), "{err:?}");
    let current = api
        .get_policy(signed(&key, &auditor, "GetPolicy", tenant_target()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.version, 1, "A's policy is unchanged");
    let doc: Value = serde_json::from_str(current.document_json.as_deref().unwrap()).unwrap();
    assert_eq!(doc["banned_apps"][0]["name"], "winny");
    assert!(Uuid::parse_str(&current.id).is_ok());
}

async fn new_group(gw: &Gw, s: &Session, name: &str, parent: Option<&str>) -> String {
    let (status, v) = gw
        .post(
            s,
            "/api/v1/groups",
            json!({ "name": name, "parent_id": parent }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn patch(gw: &Gw, s: &Session, path: &str, body: Value) -> (StatusCode, Value) {
    gw.call(Some(s), Method::PATCH, path, Some(body)).await
}

async fn effective(gw: &Gw, s: &Session, device: &str) -> Value {
    let (status, v) = gw.get(s, &format!("/api/v1/devices/{device}/policy")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

async fn delete_group(gw: &Gw, s: &Session, id: &str) -> (StatusCode, Value) {
    gw.call(
        Some(s),
        Method::DELETE,
        &format!("/api/v1/groups/{id}"),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_move_rename_and_delete_only_when_empty_and_policies_follow() {
    let gw = Gw::start().await;
    let admin = gw.signup("Group Tree KK", "tenant").await;
    let tokyo = new_group(&gw, &admin, "Tokyo", None).await;
    let osaka = new_group(&gw, &admin, "Osaka", None).await;
    let sales = new_group(&gw, &admin, "Sales", Some(&tokyo)).await;
    let (status, v) = gw
        .call(
            Some(&admin),
            Method::PUT,
            &format!("/api/v1/policies/groups/{tokyo}"),
            Some(banning("winny")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let device = gw
        .stack
        .new_device(admin.enrollment_token.as_deref().unwrap())
        .await
        .device_id;
    let (status, v) = patch(
        &gw,
        &admin,
        &format!("/api/v1/devices/{device}"),
        json!({ "group_id": sales }),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let before = effective(&gw, &admin, &device).await;
    assert_eq!(before["document"]["banned_apps"][0]["name"], "winny");
    assert_eq!(
        before["origins"]["banned_apps"]["target_id"],
        tokyo.as_str()
    );

    // Sales moves from Tokyo to Osaka: Tokyo's ban no longer applies.
    let (status, moved) = patch(
        &gw,
        &admin,
        &format!("/api/v1/groups/{sales}"),
        json!({ "parent_id": osaka }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["parent_id"], osaka.as_str());
    assert_eq!(moved["name"], "Sales");
    let after = effective(&gw, &admin, &device).await;
    assert!(after["document"].get("banned_apps").is_none(), "{after}");
    assert!(after["revision"].as_i64() > before["revision"].as_i64());

    // Never under itself or its own subgroup.
    for (target, parent) in [(&sales, &sales), (&osaka, &sales)] {
        let (status, v) = patch(
            &gw,
            &admin,
            &format!("/api/v1/groups/{target}"),
            json!({ "parent_id": parent }),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("parent_id:"),
            "{v}"
        );
    }
    // Names are unique among siblings, case aside; a rename keeps the place.
    new_group(&gw, &admin, "Support", Some(&osaka)).await;
    let (status, v) = patch(
        &gw,
        &admin,
        &format!("/api/v1/groups/{sales}"),
        json!({ "name": "support" }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "group_exists");
    let (status, v) = patch(
        &gw,
        &admin,
        &format!("/api/v1/groups/{sales}"),
        json!({ "name": "Sales West" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["parent_id"], osaka.as_str());
    let (status, v) = patch(
        &gw,
        &admin,
        &format!("/api/v1/groups/{sales}"),
        json!({ "name": "" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // Deleting: refused while anything is in the group.
    let (status, v) = delete_group(&gw, &admin, &osaka).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "group_not_empty");
    let (status, v) = delete_group(&gw, &admin, &sales).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("1 device"),
        "{v}"
    );
    // Tokyo is empty now; its policy goes with it. No device's effective
    // policy changes, so the revision stays (nothing is pushed).
    let (_, listed) = gw.get(&admin, "/api/v1/policies").await;
    let (status, v) = delete_group(&gw, &admin, &tokyo).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let (_, after) = gw.get(&admin, "/api/v1/policies").await;
    assert_eq!(after["revision"], listed["revision"]);
    assert_eq!(
        after["policies"].as_array().unwrap().len() + 1,
        listed["policies"].as_array().unwrap().len(),
        "Tokyo's policy is gone: {after}"
    );
    let (status, _) = gw
        .get(&admin, &format!("/api/v1/policies/groups/{tokyo}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, groups) = gw.get(&admin, "/api/v1/groups").await;
    let names: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Osaka", "Sales West", "Support"]);
    let (status, _) = delete_group(&gw, &admin, &tokyo).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Top-level again with an explicit null.
    let (status, v) = patch(
        &gw,
        &admin,
        &format!("/api/v1/groups/{sales}"),
        json!({ "parent_id": null }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["parent_id"].is_null(), "{v}");

    let (_, audit) = gw.get(&admin, "/api/v1/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for wanted in [
        "group.create",
        "group.update",
        "group.delete",
        "device.move",
    ] {
        assert!(
            actions.contains(&wanted),
            "{wanted} missing from {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reaches_the_policy_service_over_tls_only_with_its_ca() {
    let mut gw = Gw::start().await;
    let admin = gw.signup("Policy TLS KK", "tenant").await;

    // Plain HTTP/2 beyond loopback is refused.
    let mut open = crate::gw::policy_config(&gw.stack, &gw.kek);
    open.policy_addr = "0.0.0.0:0".into();
    let err = mamori_policy::start(open).await.unwrap_err();
    assert!(format!("{err:#}").contains("without TLS"), "{err:#}");

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::agent::test_pki();
    for (name, pem) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let mut tls = crate::gw::policy_config(&gw.stack, &gw.kek);
    tls.policy_tls_cert = path("cert.pem");
    tls.policy_tls_key = path("key.pem");
    let policy = mamori_policy::start(tls).await.expect("TLS policy service");
    let url = format!("https://localhost:{}", policy.grpc_addr.port());

    // A gateway that does not trust the CA cannot reach it.
    let mut cfg = crate::gw::gateway_config(&gw.stack, gw.mail_dir.path(), &gw.kek);
    cfg.policy_url = url.clone();
    let untrusting = mamori_gateway::start(cfg).await.unwrap();
    gw.base = format!("http://{}", untrusting.addr);
    let (status, v) = put_policy(&gw, &admin, banning("winny")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");

    // One that does gets through.
    let mut cfg = crate::gw::gateway_config(&gw.stack, gw.mail_dir.path(), &gw.kek);
    cfg.policy_url = url;
    cfg.policy_tls_ca = path("ca.pem");
    let trusting = mamori_gateway::start(cfg).await.unwrap();
    gw.base = format!("http://{}", trusting.addr);
    let (status, v) = put_policy(&gw, &admin, banning("winny")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 1, "the refused attempt stored nothing");
    policy.shutdown().await.unwrap();
}

/// The review replayed a captured identity for about two minutes, on any
/// call, with an `iat` a minute in the future. Now an identity is signed
/// for one call and one request message, is accepted once, and may be at
/// most a few seconds ahead.
#[tokio::test]
async fn an_identity_serves_only_the_call_it_was_signed_for_and_only_once() {
    let gw = Gw::start().await;
    let a = gw.signup("Replay KK", "tenant").await;
    let key = IdentityKey::from_kek(&mamori_gateway::Kek::from_base64(&gw.kek).unwrap());
    let mut api = client(&gw).await;
    let admin = identity_of(&a, "tenant_admin");
    let for_call = |method: &str, body: &dyn Fn() -> Vec<u8>| Identity {
        id: Uuid::new_v4(),
        method: mamori_policy::identity::method_path(method),
        body_sha256: {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(body()))
        },
        ..admin.clone()
    };
    use prost::Message;

    // Once: the same signed identity a second time is refused.
    let once = for_call("ListPolicies", &|| {
        pb::ListPoliciesRequest {}.encode_to_vec()
    });
    api.list_policies(signed_as(&key, &once, pb::ListPoliciesRequest {}))
        .await
        .expect("the first use");
    let err = api
        .list_policies(signed_as(&key, &once, pb::ListPoliciesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("used before"), "{err:?}");

    // Another call with the same message, or the same call with another.
    let read = for_call("GetPolicy", &|| tenant_target().encode_to_vec());
    let err = api
        .list_versions(signed_as(&key, &read, tenant_target()))
        .await
        .unwrap_err();
    assert!(err.message().contains("another call"), "{err:?}");
    let put = for_call("PutPolicy", &|| put_req(banning("winny")).encode_to_vec());
    let err = api
        .put_policy(signed_as(&key, &put, put_req(banning("everything"))))
        .await
        .unwrap_err();
    assert!(err.message().contains("another call"), "{err:?}");
    let (status, current) = gw.get(&a, "/api/v1/policies/tenant").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing was stored: {current}"
    );

    // From the future: a few seconds are clock skew, a minute is not.
    let mut ahead = for_call("ListPolicies", &|| {
        pb::ListPoliciesRequest {}.encode_to_vec()
    });
    ahead.iat += 50;
    let err = api
        .list_policies(signed_as(&key, &ahead, pb::ListPoliciesRequest {}))
        .await
        .unwrap_err();
    assert!(err.message().contains("future"), "{err:?}");
}
