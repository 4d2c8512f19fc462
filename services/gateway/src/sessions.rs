//! Whether an access token's session still stands. A signed token is good
//! for its whole lifetime (15 minutes by default), so on its own it outlives
//! what ended it: a disabled or demoted user, a changed password, a logout.
//! Every request therefore also checks, in PostgreSQL through a short
//! cache, the user's session epoch (bumped by each of those; the token
//! carries the epoch it was issued at), whether the user is disabled, and
//! whether the login the token came from (its refresh family) was logged
//! out. The gateway that makes a change forgets its cached state at once;
//! other replicas notice within the cache's lifetime.

use crate::claims::Claims;
use crate::error::{ApiError, ApiResult};
use mamori_tenancy::Db;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Entries kept before the stale ones are swept.
const SWEEP_AT: usize = 100_000;

#[derive(Debug, Clone, Copy, sqlx::FromRow)]
struct State {
    session_epoch: i32,
    disabled: bool,
    family_revoked: bool,
}

/// (user, login) → its state and when it was read; `None`: no such user.
type Cache = HashMap<(Uuid, Option<Uuid>), (Option<State>, Instant)>;

#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    cache: Mutex<Cache>,
    /// Bumped by every forget: a read that began before one must not put
    /// what it read (perhaps from before the change) back in the cache.
    forgets: std::sync::atomic::AtomicU64,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cache: Mutex::default(),
            forgets: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn state(&self, db: &Db, user: Uuid, family: Option<Uuid>) -> ApiResult<Option<State>> {
        let now = Instant::now();
        if let Some((state, at)) = self.lock().get(&(user, family))
            && now.duration_since(*at) < self.ttl
        {
            return Ok(*state);
        }
        let generation = self.forgets.load(std::sync::atomic::Ordering::SeqCst);
        let state: Option<State> = sqlx::query_as(
            "SELECT session_epoch, disabled, family_revoked FROM mamori_session_state($1, $2)",
        )
        .bind(user)
        .bind(family)
        .fetch_optional(db.pool())
        .await?;
        let mut cache = self.lock();
        if self.forgets.load(std::sync::atomic::Ordering::SeqCst) != generation {
            // Something was forgotten meanwhile: use the answer, keep none.
            return Ok(state);
        }
        if cache.len() >= SWEEP_AT {
            let ttl = self.ttl;
            cache.retain(|_, (_, at)| now.duration_since(*at) < ttl);
        }
        cache.insert((user, family), (state, now));
        Ok(state)
    }

    /// Refuses a token whose session has ended.
    pub async fn check(&self, db: &Db, claims: &Claims) -> ApiResult<()> {
        let Some(state) = self.state(db, claims.sub, claims.fam).await? else {
            return Err(ApiError::unauthenticated("the account no longer exists"));
        };
        if state.disabled {
            return Err(ApiError::unauthenticated("this account is disabled"));
        }
        if state.family_revoked {
            return Err(ApiError::unauthenticated(
                "this session was logged out: log in again",
            ));
        }
        if claims.sep < state.session_epoch {
            return Err(ApiError::unauthenticated(
                "this session has ended (the account's role, password or status changed, or it logged out everywhere): log in again",
            ));
        }
        Ok(())
    }

    /// Forgets what is cached of `user`'s sessions (after ending them here).
    pub fn forget_user(&self, user: Uuid) {
        let mut cache = self.lock();
        self.forgets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.retain(|(u, _), _| *u != user);
    }

    /// Forgets what is cached of one login (after a logout here).
    pub fn forget_family(&self, family: Uuid) {
        let mut cache = self.lock();
        self.forgets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.retain(|(_, f), _| *f != Some(family));
    }
}
