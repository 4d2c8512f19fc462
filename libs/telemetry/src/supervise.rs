//! Supervision of a role's long-running tasks: a task that ends before the
//! role is told to stop (it panicked, returned, or was aborted) makes the
//! role unready, with the task's name, and resolves [`Supervisor::failed`],
//! on which the process exits with a non-zero status so that Kubernetes,
//! systemd or `mamori all`'s caller starts it again. Without this, a dead
//! consumer would leave its shard unread while `/readyz` still said ready.

use crate::Readiness;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// Spawns and watches a role's tasks.
#[derive(Clone)]
pub struct Supervisor {
    role: &'static str,
    stop: CancellationToken,
    failed: CancellationToken,
    failure: Arc<Mutex<Option<String>>>,
    tasks: Arc<Mutex<Vec<(String, AbortHandle)>>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("role", &self.role)
            .field("failure", &self.failure())
            .finish()
    }
}

/// Reports the task's end when dropped before it finished on a stop.
struct Watch {
    sup: Supervisor,
    name: String,
    finished: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.sup.stop.is_cancelled() {
            return;
        }
        let how = if self.finished {
            "ended"
        } else if std::thread::panicking() {
            "panicked"
        } else {
            "was aborted"
        };
        self.sup.fail(format!("its task `{}` {how}", self.name));
    }
}

impl Supervisor {
    /// `stop` is the role's own stop: tasks ending after it are not failures.
    pub fn new(role: &'static str, stop: CancellationToken) -> Self {
        Self {
            role,
            stop,
            failed: CancellationToken::new(),
            failure: Arc::default(),
            tasks: Arc::default(),
        }
    }

    /// Spawns `task` into `set`, named for the logs and `/readyz`.
    pub fn spawn<F>(&self, set: &mut JoinSet<()>, name: impl Into<String>, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let watch = Watch {
            sup: self.clone(),
            name: name.clone(),
            finished: false,
        };
        let handle = set.spawn(async move {
            // The whole guard moves in (not just the field it sets), so it
            // drops when the task ends, however it ends.
            let mut watch = watch;
            task.await;
            watch.finished = true;
        });
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, handle));
    }

    fn fail(&self, why: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            tracing::error!(role = self.role, reason = %why, "a task of the role failed: it is unready and stops so that it is restarted");
            metrics::counter!("mamori_task_failures_total", "role" => self.role).increment(1);
            *failure = Some(why);
            self.failed.cancel();
        }
    }

    /// Why the role failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves once a task has failed, with why.
    pub async fn failed(&self) -> String {
        self.failed.cancelled().await;
        self.failure().unwrap_or_default()
    }

    /// `inner`, but unready once a task has failed or the role is stopping
    /// (so that a load balancer stops sending to a pod that drains).
    pub fn readiness(&self, inner: Readiness) -> Readiness {
        let sup = self.clone();
        Arc::new(move || {
            let sup = sup.clone();
            let inner = inner.clone();
            Box::pin(async move {
                if let Some(why) = sup.failure() {
                    return Err(format!("{} failed: {why}", sup.role));
                }
                if sup.stop.is_cancelled() {
                    return Err(format!("{} is shutting down", sup.role));
                }
                inner().await
            })
        })
    }

    /// Aborts the first task whose name contains `name`, as a crash of that
    /// task would end it (for tests of the supervision itself).
    #[doc(hidden)]
    pub fn abort_task(&self, name: &str) -> bool {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        match tasks.iter().find(|(n, _)| n.contains(name)) {
            Some((_, handle)) => {
                handle.abort();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn always_ready() -> Readiness {
        Arc::new(|| Box::pin(async { Ok(()) }))
    }

    #[tokio::test]
    async fn a_task_that_panics_or_returns_makes_the_role_unready() {
        let stop = CancellationToken::new();
        let sup = Supervisor::new("writer", stop.clone());
        let ready = sup.readiness(always_ready());
        let mut set = JoinSet::new();
        sup.spawn(&mut set, "consumer {0}", std::future::pending());
        assert_eq!(ready().await, Ok(()));
        sup.spawn(&mut set, "consumer {1}", async { panic!("boom") });
        let why = tokio::time::timeout(Duration::from_secs(5), sup.failed())
            .await
            .expect("the failure is seen");
        assert_eq!(why, "its task `consumer {1}` panicked");
        let e = ready().await.unwrap_err();
        assert!(
            e.contains("writer failed") && e.contains("consumer {1}"),
            "{e}"
        );

        let sup = Supervisor::new("alerting", CancellationToken::new());
        let mut set = JoinSet::new();
        sup.spawn(&mut set, "outbox", async {});
        let why = tokio::time::timeout(Duration::from_secs(5), sup.failed())
            .await
            .unwrap();
        assert_eq!(why, "its task `outbox` ended");
    }

    #[tokio::test]
    async fn tasks_ending_on_a_stop_are_no_failure_but_the_role_is_unready() {
        let stop = CancellationToken::new();
        let sup = Supervisor::new("writer", stop.clone());
        let ready = sup.readiness(always_ready());
        let mut set = JoinSet::new();
        let s = stop.clone();
        sup.spawn(&mut set, "consumer", async move { s.cancelled().await });
        stop.cancel();
        while set.join_next().await.is_some() {}
        assert_eq!(sup.failure(), None);
        assert_eq!(ready().await, Err("writer is shutting down".into()));
    }

    #[tokio::test]
    async fn an_aborted_task_is_a_failure() {
        let sup = Supervisor::new("writer", CancellationToken::new());
        let mut set = JoinSet::new();
        sup.spawn(
            &mut set,
            "consumer mamori:events:{2}",
            std::future::pending(),
        );
        assert!(sup.abort_task("{2}"));
        let why = tokio::time::timeout(Duration::from_secs(5), sup.failed())
            .await
            .unwrap();
        assert_eq!(why, "its task `consumer mamori:events:{2}` was aborted");
    }
}
