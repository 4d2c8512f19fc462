//! The `mamori` binary's admin commands, as an operator's script uses them.

use mamori_test_support::TestEnv;
use std::process::Command;

fn mamori(env: &TestEnv, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mamori"))
        .args(args)
        .env("MAMORI_DATABASE_URL", &env.database_url)
        .env_remove("MAMORI_CONFIG")
        .output()
        .expect("run mamori")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[tokio::test]
async fn admin_commands_print_json_and_name_bad_input() {
    let env = TestEnv::new().await;
    let tenant = json(&mamori(&env, &["tenant", "create", "Acme KK", "--json"]));
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let token = json(&mamori(
        &env,
        &[
            "token",
            "create",
            "--tenant",
            &tenant_id,
            "--expires",
            "7d",
            "--max-uses",
            "5",
            "--json",
        ],
    ));
    assert!(token["token"].as_str().unwrap().starts_with("mmt_"));
    let token_id = token["id"].as_str().unwrap().to_owned();
    let revoked = json(&mamori(&env, &["token", "revoke", &token_id, "--json"]));
    assert_eq!(revoked["revoked"], true);
    let list = json(&mamori(
        &env,
        &["token", "list", "--tenant", &tenant_id, "--json"],
    ));
    assert!(list["tokens"][0]["revoked_at"].is_string());
    let devices = json(&mamori(
        &env,
        &["device", "list", "--tenant", &tenant_id, "--json"],
    ));
    assert_eq!(devices["devices"].as_array().unwrap().len(), 0);

    let bad = mamori(&env, &["token", "create", "--tenant", "not-a-uuid"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("not-a-uuid"), "{stderr}");
    let missing = mamori(
        &env,
        &["device", "revoke", &uuid::Uuid::now_v7().to_string()],
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}

/// The operator's changes go through the same domain layer as the API's:
/// audited in the tenant's log with the operator named, and a deleted
/// device is gone for both.
#[tokio::test]
async fn the_operators_changes_are_audited_and_deleted_devices_stay_gone() {
    let env = TestEnv::new().await;
    let tenant = json(&mamori(&env, &["tenant", "create", "Audited KK", "--json"]));
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let mut create = Command::new(env!("CARGO_BIN_EXE_mamori"))
        .args([
            "user",
            "create",
            "--tenant",
            &tenant_id,
            "--email",
            "Ops@Example.com",
            "--role",
            "auditor",
            "--json",
        ])
        .env("MAMORI_DATABASE_URL", &env.database_url)
        .env("USER", "alice")
        .env_remove("MAMORI_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = create.stdin.take().unwrap();
        writeln!(stdin, "a long operator passphrase").unwrap();
    }
    let user = json(&create.wait_with_output().unwrap());
    assert_eq!(user["email"], "ops@example.com");
    let token = json(&mamori(
        &env,
        &["token", "create", "--tenant", &tenant_id, "--json"],
    ));
    json(&mamori(
        &env,
        &["token", "revoke", token["id"].as_str().unwrap(), "--json"],
    ));

    // A device enrolled, then deleted through the API's path.
    let t: mamori_tenancy::TenantId = tenant_id.parse().unwrap();
    let tok = mamori_registry::create_token(&env.db, t, None, None)
        .await
        .unwrap();
    let enrolled = mamori_registry::enroll(
        &env.db,
        &tok.token,
        &mamori_registry::MachineFacts {
            machine_id: "m-1".into(),
            instance_id: "i-1".into(),
            hostname: "pc-1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let admin = mamori_tenancy::audit::Actor {
        user: Some(uuid::Uuid::now_v7()),
        email: "admin@example.com",
        role: "tenant_admin",
        ip: None,
        request_id: "r-1",
    };
    mamori_registry::manage::apply(
        &env.db,
        mamori_registry::manage::Change::DeleteDevice(enrolled.device),
        &admin,
    )
    .await
    .unwrap();
    let again = mamori(&env, &["device", "revoke", &enrolled.device.to_string()]);
    assert!(!again.status.success(), "a deleted device is not found");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not found"));

    let rows: Vec<(String, String, String, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT action, actor_role, actor_email, actor_id FROM audit_log WHERE tenant_id = $1::uuid ORDER BY at, id",
    )
    .bind(&tenant_id)
    .fetch_all(&env.owner)
    .await
    .unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        actions,
        ["user.create", "enrollment_token.revoke", "device.delete"]
    );
    for (action, role, email, id) in &rows[..2] {
        assert_eq!(role, "operator", "{action}");
        assert!(
            email.starts_with("operator ") && email.contains('@'),
            "{action}: {email}"
        );
        assert!(id.is_none());
    }
    assert!(
        rows[0].2.starts_with("operator alice@"),
        "named by $USER: {}",
        rows[0].2
    );
    assert_eq!(rows[2].1, "tenant_admin");
}

#[tokio::test]
async fn services_refuse_an_unmigrated_database_and_a_bad_setting() {
    let env = TestEnv::new().await;
    let empty = format!("mamori_empty_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {empty}")))
        .execute(&env.owner)
        .await
        .unwrap();
    let url = format!("{}/{empty}", env.database_url.rsplit_once('/').unwrap().0);
    let out = Command::new(env!("CARGO_BIN_EXE_mamori"))
        .arg("writer")
        .env("MAMORI_DATABASE_URL", &url)
        .env("MAMORI_REDIS_URL", &env.redis_url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not migrated") && stderr.contains("mamori migrate"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_mamori"))
        .arg("ingest")
        .env("MAMORI_DATABASE_URL", &env.database_url)
        .env("MAMORI_STREAM_SHARDS", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MAMORI_STREAM_SHARDS"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_mamori"))
        .arg("ingest")
        .env("MAMORI_DATABASE_URL", &env.database_url)
        .env("MAMORI_INGEST_ADDR", "0.0.0.0:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without TLS"), "{stderr}");

    // One config file for every role: the shared settings at the top, a
    // misspelt key in a role's section refused by name (the role does not
    // start with a default in its place).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mamori.toml");
    std::fs::write(
        &file,
        format!(
            "database_url = \"{}\"\nstream_shards = 4\n[writer]\nredis_ulr = \"redis://127.0.0.1:1\"\n",
            env.database_url
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mamori"))
        .args(["--config".as_ref(), file.as_os_str(), "writer".as_ref()])
        .env_remove("MAMORI_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[writer]") && stderr.contains("unknown key `redis_ulr`"),
        "{stderr}"
    );
}
