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
