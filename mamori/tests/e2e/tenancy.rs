//! Row-level security: a transaction for tenant A sees none of tenant B's
//! rows, even with no WHERE clause, and cannot write rows for B.

use crate::support::*;
use std::time::Duration;

#[tokio::test]
async fn rls_hides_other_tenants_rows_without_a_where_clause() {
    let s = Stack::start().await;
    let (a, token_a) = s.tenant_with_token().await;
    let (b, token_b) = s.tenant_with_token().await;
    for (token, n) in [(&token_a, 2), (&token_b, 3)] {
        let dev = s.new_device(token).await;
        let mut st = s.open(&dev.device_credential).await.unwrap();
        st.send(batch(1, (0..n).map(|_| process_event("/bin/x")).collect()))
            .await
            .unwrap();
    }
    wait_for("5 events", Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&s.env.owner)
            .await
            .unwrap();
        (n == 5).then_some(())
    })
    .await;

    for (tenant, events) in [(a, 2i64), (b, 3)] {
        let mut tx = s.env.db.begin_tenant(tenant).await.unwrap();
        for (table, expect) in [
            ("events", events),
            ("devices", 1),
            ("enrollment_tokens", 1),
            ("tenants", 1),
        ] {
            let n: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
            assert_eq!(n, expect, "{table} as seen by tenant {tenant}");
        }
    }

    // With no tenant set, nothing at all is visible.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(s.env.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);

    // Tenant A cannot write a row for tenant B.
    let mut tx = s.env.db.begin_tenant(a).await.unwrap();
    let err = sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'sneaky')")
        .bind(uuid::Uuid::now_v7())
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    drop(tx);

    // The events table is append-only for the application role.
    let mut tx = s.env.db.begin_tenant(a).await.unwrap();
    let err = sqlx::query("DELETE FROM events")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}

#[tokio::test]
async fn every_tenant_table_forces_rls_for_a_role_without_bypass() {
    let s = Stack::start().await;
    let unprotected: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relispartition = false
           AND c.relname <> '_sqlx_migrations'
           AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
    )
    .fetch_all(&s.env.owner)
    .await
    .unwrap();
    assert!(
        unprotected.is_empty(),
        "tables without forced RLS: {unprotected:?}"
    );
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(s.env.db.pool())
            .await
            .unwrap();
    assert!(!superuser && !bypass, "services run as a role under RLS");
}
