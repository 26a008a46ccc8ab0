//! The outbox deliverer. It sleeps until the next delivery falls due or a
//! new event is queued (or, for events another host queued, a bounded
//! re-check interval), claims due deliveries with a lease so a crash only
//! delays them, and records each attempt's outcome.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;

use super::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign};
use crate::db::{Db, OutboxRow, now_us};

/// When to retry and when to give up.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt; doubled after each further one.
    pub base: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
    /// An event still undelivered this long after its first attempt is marked failed.
    pub horizon: Duration,
    /// How long a claimed delivery is reserved before it may be tried again
    /// (by this host after a crash, or by another).
    pub lease: Duration,
    /// Timeout of one HTTP attempt.
    pub request_timeout: Duration,
    /// Re-check interval for deliveries queued by other hosts.
    pub recheck: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
            horizon: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            recheck: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempts + 1`: exponential, with full
    /// jitter over its upper half so that retries of many events spread out.
    pub fn delay(&self, attempts: i32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << (attempts.clamp(1, 30) - 1) as u32).min(self.max_delay);
        let jitter = rand::rng().random_range(0.5..=1.0);
        exp.mul_f64(jitter)
    }
}

/// Drains the outbox. Cheap to clone; `wake` after queueing an event.
#[derive(Clone)]
pub struct Deliverer {
    db: Db,
    client: reqwest::Client,
    secret: Arc<Vec<u8>>,
    policy: RetryPolicy,
    notify: Arc<Notify>,
    forbid_private: bool,
}

/// A resolver that returns only public addresses.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.filter(|a| !super::is_private(a.ip())).collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{} resolves to no public address (private callbacks are forbidden)",
                    name.as_str()
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl Deliverer {
    /// With `forbid_private`, names are resolved at delivery time and only
    /// public addresses are connected to (so a name that later points at
    /// a private address is refused too), and IP literals are checked.
    pub fn new(db: Db, secret: Vec<u8>, mut policy: RetryPolicy, forbid_private: bool) -> Result<Self, reqwest::Error> {
        // A delivery in flight must stay reserved for longer than a request
        // can take, or another host would send it again meanwhile.
        policy.lease = policy.lease.max(policy.request_timeout * 2);
        let mut builder = reqwest::Client::builder()
            .timeout(policy.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tete-webhooks/", env!("CARGO_PKG_VERSION")));
        if forbid_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let client = builder.build()?;
        Ok(Self { db, client, secret: Arc::new(secret), policy, notify: Arc::new(Notify::new()), forbid_private })
    }

    /// Tells the deliverer that an event was queued.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let wait = match self.round().await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!("webhook delivery: {e}");
                    self.policy.recheck
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Delivers everything due now; returns how long to wait for the next.
    pub async fn round(&self) -> Result<Duration, crate::db::DbError> {
        loop {
            let now = now_us();
            let due = self.db.due_deliveries(now, 64).await?;
            if due.is_empty() {
                break;
            }
            let mut attempts = Vec::new();
            for row in due {
                let lease_until = now + self.policy.lease.as_micros() as i64;
                if self.db.claim_delivery(&row, lease_until).await? {
                    let first = row.first_attempt_us.unwrap_or(now);
                    attempts.push(self.attempt(OutboxRow { first_attempt_us: Some(first), ..row }));
                }
            }
            if attempts.is_empty() {
                break;
            }
            for result in futures_util::future::join_all(attempts).await {
                result?;
            }
        }
        let next = self.db.next_delivery_us().await?;
        let recheck = self.policy.recheck;
        Ok(next.map_or(recheck, |t| Duration::from_micros((t - now_us()).max(0) as u64).min(recheck)))
    }

    async fn attempt(&self, row: OutboxRow) -> Result<(), crate::db::DbError> {
        let attempts = row.attempts + 1;
        if self.forbid_private
            && let Some(ip) = url::Url::parse(&row.url)
                .ok()
                .and_then(|u| u.host_str().and_then(|h| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok()))
            && super::is_private(ip)
        {
            return self.db.delivery_failed(&row.id, &format!("{ip} is a private address (forbidden)"), None).await;
        }
        let outcome = self
            .client
            .post(&row.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sign(&self.secret, row.body.as_bytes()))
            .header(DELIVERY_HEADER, &row.id)
            .header(EVENT_HEADER, &row.event_type)
            .body(row.body.clone())
            .send()
            .await;
        let error = match outcome {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("receiver answered {}", r.status())),
            Err(e) => Some(format!("request failed: {e}")),
        };
        match error {
            None => {
                metrics::counter!("tete_webhook_attempts_total", "outcome" => "delivered").increment(1);
                tracing::debug!(id = %row.id, event = %row.event_type, "webhook delivered");
                self.db.delivery_succeeded(&row.id).await
            }
            Some(error) => {
                let next = now_us() + self.policy.delay(attempts).as_micros() as i64;
                // The horizon counts from the first attempt: an event that
                // waited behind an earlier one of its conversation still gets
                // its full share of retries.
                let first = row.first_attempt_us.unwrap_or(row.created_us);
                let give_up =
                    next > first.saturating_add(i64::try_from(self.policy.horizon.as_micros()).unwrap_or(i64::MAX));
                let outcome = if give_up { "failed" } else { "retry" };
                metrics::counter!("tete_webhook_attempts_total", "outcome" => outcome).increment(1);
                tracing::info!(id = %row.id, event = %row.event_type, attempts, give_up, "webhook attempt failed: {error}");
                self.db
                    .delivery_failed(&row.id, &format!("attempt {attempts}: {error}"), (!give_up).then_some(next))
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_with_jitter_and_a_cap() {
        let p =
            RetryPolicy { base: Duration::from_millis(100), max_delay: Duration::from_secs(1), ..Default::default() };
        for (attempts, upper) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (20, 1000)] {
            for _ in 0..50 {
                let d = p.delay(attempts).as_millis() as u64;
                assert!(d >= upper / 2 && d <= upper, "attempt {attempts}: {d} ms not in [{}, {upper}]", upper / 2);
            }
        }
    }
}
