//! Gateway test helpers: the spine stack plus a gateway on port 0, a real
//! HTTP client, mail dropped in a temporary directory, and sessions.

use crate::support::Stack;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Gw {
    pub stack: Stack,
    pub gateway: mamori_gateway::Running,
    /// The policy service the gateway calls.
    pub policy: mamori_policy::Running,
    pub http: reqwest::Client,
    pub base: String,
    pub mail_dir: tempfile::TempDir,
    pub kek: String,
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub user_id: String,
    pub tenant_id: Option<String>,
    pub org_id: Option<String>,
    pub enrollment_token: Option<String>,
    pub email: String,
    /// The tenant an MSP session acts on (sent as X-Mamori-Tenant).
    pub acting: Option<String>,
}

impl Session {
    pub fn on(&self, tenant: &str) -> Session {
        Session {
            acting: Some(tenant.to_owned()),
            ..self.clone()
        }
    }
}

pub fn gateway_config(
    stack: &Stack,
    mail_dir: &std::path::Path,
    kek: &str,
) -> mamori_gateway::Config {
    mamori_gateway::Config {
        stores: mamori_config::Stores {
            database_url: stack.env.database_url.clone(),
            redis_url: stack.env.redis_url.clone(),
            db_max_connections: 6,
        },
        gateway_addr: "127.0.0.1:0".into(),
        gateway_ops_addr: "127.0.0.1:0".into(),
        kek: mamori_config::KeyEncryption {
            key_encryption_key: kek.to_owned(),
            ..Default::default()
        },
        mail_dir: mail_dir.to_string_lossy().into_owned(),
        // Tests log in many times from one address.
        api_auth_rate: 1000,
        api_auth_burst: 1000,
        api_ip_rate: 10_000,
        api_ip_burst: 10_000,
        // The tests' webhook receivers listen on loopback.
        webhook_allow_private: true,
        ..Default::default()
    }
}

/// The policy service on port 0, sharing the gateway's key-encryption key.
pub fn policy_config(stack: &Stack, kek: &str) -> mamori_policy::Config {
    mamori_policy::Config {
        stores: mamori_config::Stores {
            database_url: stack.env.database_url.clone(),
            redis_url: stack.env.redis_url.clone(),
            db_max_connections: 4,
        },
        policy_addr: "127.0.0.1:0".into(),
        policy_ops_addr: "127.0.0.1:0".into(),
        kek: mamori_config::KeyEncryption {
            key_encryption_key: kek.to_owned(),
            ..Default::default()
        },
        ..Default::default()
    }
}

impl Gw {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut mamori_gateway::Config)) -> Self {
        // Server-side errors show in the output of a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,mamori_gateway=info")
            .with_test_writer()
            .try_init();
        let stack = Stack::start().await;
        let mail_dir = tempfile::tempdir().unwrap();
        let kek = mamori_gateway::Kek::generate_base64();
        let policy = mamori_policy::start(policy_config(&stack, &kek))
            .await
            .expect("policy service starts");
        let mut cfg = gateway_config(&stack, mail_dir.path(), &kek);
        cfg.policy_url = format!("http://{}", policy.grpc_addr);
        tweak(&mut cfg);
        let gateway = mamori_gateway::start(cfg).await.expect("gateway starts");
        let base = format!("http://{}", gateway.addr);
        Self {
            stack,
            gateway,
            policy,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base,
            mail_dir,
            kek,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; returns the status and the JSON body (Null if none).
    pub async fn call(
        &self,
        s: Option<&Session>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(s) = s {
            req = req.bearer_auth(&s.access);
            if let Some(t) = &s.acting {
                req = req.header("X-Mamori-Tenant", t);
            }
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("gateway answers");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{path}: not JSON ({status}): {text}"))
        };
        (status, value)
    }

    pub async fn get(&self, s: &Session, path: &str) -> (StatusCode, Value) {
        self.call(Some(s), Method::GET, path, None).await
    }

    pub async fn post(&self, s: &Session, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Some(s), Method::POST, path, Some(body)).await
    }

    pub async fn signup(&self, company: &str, kind: &str) -> Session {
        let email = format!("{}@{}.example.com", uuid::Uuid::new_v4().simple(), kind);
        let (status, v) = self
            .call(
                None,
                Method::POST,
                "/api/v1/signup",
                Some(json!({ "email": email, "password": PASSWORD, "company": company, "kind": kind })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "signup: {v}");
        session_from(&v, &email)
    }

    pub async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.call(
            None,
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({ "email": email, "password": password })),
        )
        .await
    }

    /// Every mail dropped so far, as text, oldest first (the files are
    /// named at random: ordered by when they were written).
    pub fn mails(&self) -> Vec<String> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> =
            std::fs::read_dir(self.mail_dir.path())
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.metadata().unwrap().modified().unwrap(), e.path())
                })
                .collect();
        files.sort();
        let files: Vec<PathBuf> = files.into_iter().map(|(_, p)| p).collect();
        files
            .iter()
            .map(|p| decode_qp(&std::fs::read_to_string(p).unwrap()))
            .collect()
    }

    /// The `mm?_` code in the newest mail to `email` that has one.
    pub fn code_mailed_to(&self, email: &str, prefix: &str) -> String {
        let mail = self
            .mails()
            .into_iter()
            .rfind(|m| m.contains(email) && m.contains(prefix))
            .unwrap_or_else(|| panic!("no mail to {email}"));
        let start = mail
            .find(prefix)
            .unwrap_or_else(|| panic!("no {prefix} code in: {mail}"));
        mail[start..start + prefix.len() + 43].to_owned()
    }
}

/// Undoes quoted-printable soft line breaks and `=3D`, enough to find a
/// code in a plain-text mail.
fn decode_qp(text: &str) -> String {
    text.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

pub fn session_from(v: &Value, email: &str) -> Session {
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    Session {
        access: s("access_token").expect("access_token"),
        refresh: s("refresh_token").expect("refresh_token"),
        user_id: s("user_id").unwrap_or_default(),
        tenant_id: s("tenant_id"),
        org_id: s("org_id"),
        enrollment_token: s("enrollment_token"),
        email: email.to_owned(),
        acting: None,
    }
}

pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}
