//! Accounts: a forgotten password is reset by e-mail without telling
//! anyone which addresses have accounts.

use crate::gw::{Gw, PASSWORD, code};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

fn reset_mails(g: &Gw, email: &str) -> usize {
    g.mails()
        .iter()
        .filter(|m| m.contains(email) && m.contains("mmp_"))
        .count()
}

async fn wait_for_reset_mails(g: &Gw, email: &str, n: usize) {
    crate::support::wait_for("the reset mail", Duration::from_secs(10), || async {
        (reset_mails(g, email) >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_forgotten_password_is_reset_by_mail_and_every_session_ends() {
    let g = Gw::start().await;
    let admin = g.signup("Reset KK", "tenant").await;
    let request = |email: String| {
        let g = &g;
        async move {
            g.call(
                None,
                Method::POST,
                "/api/v1/auth/password-reset",
                Some(json!({ "email": email })),
            )
            .await
        }
    };

    // The same answer for an address with an account and one without.
    let (status, known) = request(admin.email.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{known}");
    let nobody = "nobody-here@reset.example.com".to_owned();
    let (status, unknown) = request(nobody.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(known, unknown);
    wait_for_reset_mails(&g, &admin.email, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        reset_mails(&g, &nobody),
        0,
        "no mail to an address without an account"
    );
    let (status, v) = request("not an address".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let reset_code = g.code_mailed_to(&admin.email, "mmp_");
    let confirm = |token: String, new_password: &'static str| {
        let g = &g;
        async move {
            g.call(
                None,
                Method::POST,
                "/api/v1/auth/password-reset/confirm",
                Some(json!({ "token": token, "new_password": new_password })),
            )
            .await
        }
    };
    // A refused password names the field and leaves the code usable.
    let (status, v) = confirm(reset_code.clone(), "short").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("new_password"),
        "{v}"
    );
    let (status, v) = confirm(reset_code.clone(), "a brand new passphrase").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");

    // Every session of the account ended: the access token and the refresh
    // token from before no longer work.
    let (status, _) = g.get(&admin, "/api/v1/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = g
        .call(
            None,
            Method::POST,
            "/api/v1/auth/refresh",
            Some(json!({ "refresh_token": admin.refresh })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = g.login(&admin.email, PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password is gone");
    let (status, v) = g.login(&admin.email, "a brand new passphrase").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let fresh = crate::gw::session_from(&v, &admin.email);
    let (_, me) = g.get(&fresh, "/api/v1/me").await;
    assert_eq!(me["email_verified"], true, "the mail reached the address");

    // The code works once.
    let (status, v) = confirm(reset_code, "yet another passphrase").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&v), "invalid_input");

    // An expired code is refused.
    request(admin.email.clone()).await;
    wait_for_reset_mails(&g, &admin.email, 2).await;
    let expired = g.code_mailed_to(&admin.email, "mmp_");
    sqlx::query("UPDATE users SET reset_expires_at = now() - interval '1 second' WHERE email = $1")
        .bind(&admin.email)
        .execute(&g.stack.env.owner)
        .await
        .unwrap();
    let (status, _) = confirm(expired, "yet another passphrase").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // A mailbox is not flooded: 5 reset mails an hour, the same answer
    // after.
    for _ in 0..6 {
        let (status, v) = request(admin.email.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(v, unknown);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reset_mails(&g, &admin.email), 5);
}

#[tokio::test]
async fn a_disabled_account_gets_no_reset() {
    let g = Gw::start().await;
    let admin = g.signup("Disabled Reset KK", "tenant").await;
    crate::gateway::verify(&g, &admin).await;
    let auditor = crate::gateway::invite_and_accept(&g, &admin, "auditor").await;
    let id = crate::gateway::me_id(&g, &auditor).await;
    let (status, v) = g
        .call(
            Some(&admin),
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = g
        .call(
            None,
            Method::POST,
            "/api/v1/auth/password-reset",
            Some(json!({ "email": auditor.email })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reset_mails(&g, &auditor.email), 0);
}
