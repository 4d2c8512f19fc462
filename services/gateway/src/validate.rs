//! Input checks shared by the handlers. Each refusal names the field.

use crate::error::{ApiError, ApiResult};

/// Lower-cases and checks an e-mail address (the registry's rules, the
/// same for every way an account is made).
pub fn email(raw: &str) -> ApiResult<String> {
    Ok(mamori_registry::users::normalize_email(raw)?)
}

/// A display name (company, tenant, group): trimmed, 1–200 printable
/// characters.
pub fn name(field: &str, raw: &str) -> ApiResult<String> {
    let n = raw.trim();
    if n.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    if n.chars().count() > 200 {
        return Err(ApiError::invalid(field, "must be at most 200 characters"));
    }
    if n.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(n.to_owned())
}

/// A free-text search term: at most 200 characters, no control characters.
pub fn search_text(field: &str, raw: &str) -> ApiResult<String> {
    if raw.chars().count() > 200 {
        return Err(ApiError::invalid(field, "must be at most 200 characters"));
    }
    if raw.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(raw.to_owned())
}

/// Escapes LIKE wildcards so that user text matches literally.
pub fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A page size: default 50, at most 1000.
pub fn limit(raw: Option<u32>) -> ApiResult<i64> {
    match raw {
        None => Ok(50),
        Some(n) if (1..=1000).contains(&n) => Ok(i64::from(n)),
        Some(_) => Err(ApiError::invalid("limit", "must be 1..=1000")),
    }
}

/// The `[from, to)` of a listing: `to` defaults to now, `from` to `span`
/// before `to`.
pub fn time_range(
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
    span: chrono::Duration,
) -> ApiResult<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let to = to.unwrap_or_else(chrono::Utc::now);
    let from = match from {
        Some(f) => f,
        None => to
            .checked_sub_signed(span)
            .ok_or_else(|| ApiError::invalid("to", "is out of range"))?,
    };
    Ok((from, to))
}

/// Cuts a page fetched with `limit + 1` rows to `limit` and returns the
/// cursor of the next page (absent on the last one), from the last row's
/// time and id.
pub fn next_page<T>(
    rows: &mut Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> (chrono::DateTime<chrono::Utc>, uuid::Uuid),
) -> Option<String> {
    if rows.len() as i64 <= limit {
        return None;
    }
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    rows.last().map(|r| {
        let (ts, id) = key(r);
        crate::events::encode_cursor(ts, id)
    })
}

/// Checks an IANA time zone name against the database's list.
pub async fn time_zone(tx: &mut mamori_tenancy::TenantTx, field: &str, tz: &str) -> ApiResult<()> {
    if tz.is_empty() || tz.len() > 64 {
        return Err(ApiError::invalid(
            field,
            "must be an IANA time zone name such as Asia/Tokyo",
        ));
    }
    let known: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
            .bind(tz)
            .fetch_one(&mut **tx)
            .await?;
    if !known {
        return Err(ApiError::invalid(
            field,
            format!("unknown time zone {tz:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(email(" Alice@Example.COM ").unwrap(), "alice@example.com");
        for bad in [
            "", "alice", "a@b", "a b@c.d", "a@@c.d", "@c.d", "a@.c", "a@c..d",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn like_text_is_literal() {
        assert_eq!(like_literal("50%_off\\"), "50\\%\\_off\\\\");
    }
}
