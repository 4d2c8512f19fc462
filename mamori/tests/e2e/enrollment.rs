//! Enrollment tokens and devices: expiry, use limits, revocation,
//! re-enrollment of the same machine and cloned machines.

const OPERATOR: mamori_tenancy::audit::Actor<'static> = mamori_tenancy::audit::Actor {
    user: None,
    email: "operator test@enrollment",
    role: "operator",
    ip: None,
    request_id: "",
};

use crate::support::*;
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn token_limits_expiry_and_revocation_are_enforced() {
    let s = Stack::start().await;
    let tenant = mamori_registry::create_tenant(&s.env.db, "Limits Co")
        .await
        .unwrap();
    let two_uses = mamori_registry::create_token(&s.env.db, tenant, None, Some(2))
        .await
        .unwrap();
    let t = two_uses.token.expose();
    s.enroll(t, "m1", "i1").await.expect("first use");
    s.enroll(t, "m2", "i2").await.expect("second use");
    let err = s.enroll(t, "m3", "i3").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("maximum number of times"),
        "{}",
        err.message()
    );

    let expiring =
        mamori_registry::create_token(&s.env.db, tenant, Some(Duration::from_secs(3600)), None)
            .await
            .unwrap();
    sqlx::query(
        "UPDATE enrollment_tokens SET expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(expiring.id.as_uuid())
    .execute(&s.env.owner)
    .await
    .unwrap();
    let err = s
        .enroll(expiring.token.expose(), "m4", "i4")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("expired"), "{}", err.message());

    let revoked = mamori_registry::create_token(&s.env.db, tenant, None, None)
        .await
        .unwrap();
    mamori_registry::manage::apply(
        &s.env.db,
        mamori_registry::manage::Change::RevokeToken(revoked.id),
        &OPERATOR,
    )
    .await
    .unwrap();
    let err = s
        .enroll(revoked.token.expose(), "m5", "i5")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("revoked"), "{}", err.message());

    let unknown = mamori_registry::EnrollmentToken::generate();
    let err = s.enroll(unknown.expose(), "m6", "i6").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = s.enroll("not-a-token", "m6", "i6").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("enrollment token"),
        "{}",
        err.message()
    );

    // Only the two good enrollments made devices, and the refused ones
    // used nothing up.
    let devices = mamori_registry::list_devices(&s.env.db, tenant)
        .await
        .unwrap();
    assert_eq!(devices.len(), 2);
    let tokens = mamori_registry::list_tokens(&s.env.db, tenant)
        .await
        .unwrap();
    let uses: Vec<i32> = tokens.iter().map(|t| t.uses).collect();
    assert_eq!(uses, vec![2, 0, 0]);
}

#[tokio::test]
async fn bad_machine_facts_are_refused_with_the_field_named() {
    let s = Stack::start().await;
    let (tenant, token) = s.tenant_with_token().await;
    let err = s.enroll(&token, &"x".repeat(500), "i").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("machine_id"), "{}", err.message());
    let err = s.enroll(&token, "m", "").await.unwrap_err();
    assert!(err.message().contains("instance_id"), "{}", err.message());
    assert!(
        mamori_registry::list_devices(&s.env.db, tenant)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn same_machine_gets_its_device_back_and_a_clone_is_told_apart() {
    let s = Stack::start().await;
    let (tenant, token) = s.tenant_with_token().await;
    let first = s.enroll(&token, "machine-a", "install-1").await.unwrap();
    assert!(!first.reenrolled);
    let again = s.enroll(&token, "machine-a", "install-1").await.unwrap();
    assert!(again.reenrolled);
    assert_eq!(again.device_id, first.device_id);
    // The old credential was replaced by the new one.
    let err = s
        .open(&first.device_credential)
        .await
        .err()
        .expect("old credential refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    s.open(&again.device_credential)
        .await
        .expect("new credential works");

    // A cloned VM: same machine id, another installation.
    let clone = s.enroll(&token, "machine-a", "install-2").await.unwrap();
    assert_ne!(clone.device_id, first.device_id);
    let devices = mamori_registry::list_devices(&s.env.db, tenant)
        .await
        .unwrap();
    assert_eq!(devices.len(), 2);
    let c = devices
        .iter()
        .find(|d| d.id.to_string() == clone.device_id)
        .unwrap();
    assert_eq!(
        c.clone_of.map(|d| d.to_string()),
        Some(first.device_id.clone())
    );
}

#[tokio::test]
async fn a_revoked_device_is_cut_off_within_seconds_and_never_works_again() {
    let s = Stack::start().await;
    let tenant = mamori_registry::create_tenant(&s.env.db, "Revoke Co")
        .await
        .unwrap();
    let token = mamori_registry::create_token(&s.env.db, tenant, None, None)
        .await
        .unwrap();
    let token = token.token.expose();
    let dev = s.enroll(token, "machine-r", "install-r").await.unwrap();
    let mut stream = s.open(&dev.device_credential).await.unwrap();
    stream
        .send(batch(1, vec![process_event("/usr/bin/ok")]))
        .await
        .expect("ack");

    let device_id = dev.device_id.parse().unwrap();
    let revoked_at = std::time::Instant::now();
    mamori_registry::manage::apply(
        &s.env.db,
        mamori_registry::manage::Change::RevokeDevice(device_id),
        &OPERATOR,
    )
    .await
    .unwrap();
    let err = stream.next().await.expect_err("stream is cut");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        revoked_at.elapsed() < Duration::from_secs(5),
        "cut after {:?}",
        revoked_at.elapsed()
    );

    let err = s.open(&dev.device_credential).await.err().expect("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("revoked"), "{}", err.message());

    // Re-enrolling needs a valid token...
    let spent = mamori_registry::create_token(&s.env.db, tenant, None, Some(1))
        .await
        .unwrap();
    mamori_registry::manage::apply(
        &s.env.db,
        mamori_registry::manage::Change::RevokeToken(spent.id),
        &OPERATOR,
    )
    .await
    .unwrap();
    let err = s
        .enroll(spent.token.expose(), "machine-r", "install-r")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // ...and gives the device back with a new credential; the old one
    // never works again.
    let again = s.enroll(token, "machine-r", "install-r").await.unwrap();
    assert_eq!(again.device_id, dev.device_id);
    assert_ne!(again.device_credential, dev.device_credential);
    let err = s
        .open(&dev.device_credential)
        .await
        .err()
        .expect("old credential refused");
    assert!(
        matches!(err.code(), Code::Unauthenticated | Code::PermissionDenied),
        "{err:?}"
    );
    s.open(&again.device_credential)
        .await
        .expect("new credential works");
}
