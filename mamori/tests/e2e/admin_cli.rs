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
}
