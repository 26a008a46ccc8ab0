//! The driver of conversation lifecycles on this host: one small task per
//! active conversation runs its [`Lifecycle`] against the wall clock, and
//! every way a call ends (timers, the end endpoint, deletion, host
//! shutdown) goes through [`Host::finish`], which records the end once and
//! queues `system.shutdown` and `application.transcription_ready`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::db::{ConversationRow, Db, DbError, now_us, rfc3339};
use crate::lifecycle::{Lifecycle, ShutdownReason, Timeouts};
use crate::webhooks::{Deliverer, envelope};

/// What the session side tells a conversation's lifecycle.
#[derive(Debug)]
pub enum Signal {
    ParticipantJoined,
    ParticipantLeft,
    ParticipantActive,
    End(ShutdownReason, oneshot::Sender<bool>),
}

/// The conversations this host runs.
pub struct Host {
    db: Db,
    deliverer: Deliverer,
    host_id: String,
    running: Mutex<HashMap<String, mpsc::Sender<Signal>>>,
    /// The id of each conversation this host ends, as it ends.
    ended: tokio::sync::broadcast::Sender<String>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("host_id", &self.host_id).finish()
    }
}

fn timeouts(row: &ConversationRow) -> Timeouts {
    let p = &row.document["properties"];
    let get = |k: &str, d: u64| p[k].as_u64().unwrap_or(d);
    Timeouts {
        max_call_duration: get("max_call_duration", 3600),
        participant_left_timeout: get("participant_left_timeout", 0),
        participant_absent_timeout: get("participant_absent_timeout", 300),
    }
}

impl Host {
    pub fn new(db: Db, deliverer: Deliverer, host_id: String) -> Arc<Self> {
        Arc::new(Self {
            db,
            deliverer,
            host_id,
            running: Mutex::new(HashMap::new()),
            ended: tokio::sync::broadcast::channel(256).0,
        })
    }

    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn deliverer(&self) -> &Deliverer {
        &self.deliverer
    }

    /// Tells the id of every conversation that ends from now on (the edge
    /// closes its calls).
    pub fn ended_conversations(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.ended.subscribe()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Signal>>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts driving a conversation's lifecycle. Absence counts from now:
    /// a conversation resumed after a restart gets its full absence timeout.
    pub fn run(self: &Arc<Self>, row: &ConversationRow) {
        let (tx, rx) = mpsc::channel(64);
        let active = {
            let mut running = self.registry();
            running.insert(row.id.clone(), tx);
            running.len()
        };
        metrics::gauge!("tete_conversations_active").set(active as f64);
        let mut lifecycle = Lifecycle::new(timeouts(row), row.created_us.max(0) as u64);
        lifecycle.participant_active(now_us().max(0) as u64);
        tokio::spawn(drive(self.clone(), row.id.clone(), lifecycle, rx));
    }

    /// Resumes the active conversations this host was running before a restart.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, DbError> {
        let rows = self.db.active_conversations(&self.host_id).await?;
        for row in &rows {
            self.run(row);
        }
        Ok(rows.len())
    }

    /// Ends conversations past their `max_call_duration` that no task here
    /// drives — those of a host that stopped for good — so no call stays
    /// active forever. Safe on every host at once: a call ends only once.
    pub async fn sweep(&self) -> Result<usize, DbError> {
        let now = now_us();
        let mut ended = 0;
        for row in self.db.all_active_conversations(500).await? {
            let overdue =
                row.created_us.saturating_add((timeouts(&row).max_call_duration as i64).saturating_mul(1_000_000))
                    <= now;
            let running_here = self.registry().contains_key(&row.id);
            if overdue && !running_here && self.finish(&row.id, ShutdownReason::MaxCallDuration).await? {
                tracing::info!(conversation = %row.id, host = %row.host, "ended an orphaned conversation past its max_call_duration");
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Passes a signal to a running conversation; false when it is not running here.
    pub async fn signal(&self, id: &str, signal: Signal) -> bool {
        let tx = self.registry().get(id).cloned();
        match tx {
            Some(tx) => tx.send(signal).await.is_ok(),
            None => false,
        }
    }

    /// Ends a conversation for an outside reason. True when this call ended
    /// it, false when it had already ended.
    pub async fn end(&self, id: &str, reason: ShutdownReason) -> Result<bool, DbError> {
        let (ack, done) = oneshot::channel();
        if self.signal(id, Signal::End(reason, ack)).await
            && let Ok(ended) = done.await
        {
            return Ok(ended);
        }
        // Not running here (another host's, or its task is gone): end it directly.
        self.finish(id, reason).await
    }

    /// Ends every conversation this host runs (graceful shutdown).
    pub async fn shutdown_all(&self) {
        let ids: Vec<String> = self.registry().keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.end(&id, ShutdownReason::HostShutdown).await {
                tracing::warn!("ending {id} at shutdown: {e}");
            }
        }
    }

    /// Records the end once, with `system.shutdown` and
    /// `application.transcription_ready`, in one transaction.
    pub async fn finish(&self, id: &str, reason: ShutdownReason) -> Result<bool, DbError> {
        let Some(row) = self.db.conversation(id).await? else { return Ok(false) };
        if row.status != "active" {
            return Ok(false);
        }
        let transcript = self.transcript(&row).await?;
        let url = row.callback_url.as_deref();
        let now = rfc3339(now_us());
        let events = [
            ("system.shutdown", json!({"replica_id": row.replica_id, "shutdown_reason": reason.as_str()})),
            ("application.transcription_ready", json!({"replica_id": row.replica_id, "transcript": transcript})),
        ]
        .map(|(event, props)| (event, envelope("conversation_id", &row.id, event, url, props, &now)));
        if !self.db.end_conversation(id, reason.as_str(), &events, url).await? {
            return Ok(false);
        }
        tracing::info!(conversation = id, reason = reason.as_str(), "conversation ended");
        self.deliverer.wake();
        let _ = self.ended.send(id.to_string());
        Ok(true)
    }

    /// The full transcript, the system prompt first.
    pub async fn transcript(&self, row: &ConversationRow) -> Result<Vec<serde_json::Value>, DbError> {
        let mut out = Vec::new();
        let mut system = Vec::new();
        if let Some(pid) = &row.persona_id
            && let Some(p) = self.db.persona(pid).await?
        {
            for key in ["system_prompt", "context"] {
                if let Some(s) = p.document[key].as_str().filter(|s| !s.is_empty()) {
                    system.push(s.to_string());
                }
            }
        }
        if let Some(s) = row.document["conversational_context"].as_str().filter(|s| !s.is_empty()) {
            system.push(s.to_string());
        }
        if !system.is_empty() {
            out.push(json!({"role": "system", "content": system.join("\n\n")}));
        }
        for u in self.db.utterances(&row.id).await? {
            out.push(json!({"role": u.role, "content": u.content}));
        }
        Ok(out)
    }

    /// Records an event of a conversation and queues its webhook.
    pub async fn emit(
        &self,
        row: &ConversationRow,
        event_type: &str,
        properties: serde_json::Value,
    ) -> Result<(), DbError> {
        self.queue(("conversation_id", &row.id), true, row.callback_url.as_deref(), event_type, properties).await
    }

    /// Records an event of conversation `id` with properties made from its
    /// row, trying again for a while when storage fails (for events that
    /// come after the work is done, such as a kept recording). False when
    /// it could not be queued; the reason is logged.
    pub async fn emit_later(
        &self,
        id: &str,
        event_type: &str,
        properties: impl Fn(&ConversationRow) -> serde_json::Value,
    ) -> bool {
        let mut delay = Duration::from_millis(200);
        for _ in 0..8 {
            let queued = match self.db.conversation(id).await {
                Ok(Some(row)) => self.emit(&row, event_type, properties(&row)).await,
                Ok(None) => {
                    tracing::warn!(conversation = id, "{event_type} is not sent: the conversation is gone");
                    return false;
                }
                Err(e) => Err(e),
            };
            match queued {
                Ok(()) => return true,
                Err(e) => tracing::warn!(conversation = id, "queueing {event_type} (retrying in {delay:?}): {e}"),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        tracing::error!(conversation = id, "{event_type} could not be queued");
        false
    }

    /// Queues a replica's webhook (training progress, ready, error) to its
    /// `callback_url`, if it has one.
    pub async fn emit_replica(
        &self,
        row: &crate::db::ReplicaRow,
        event_type: &str,
        properties: serde_json::Value,
    ) -> Result<(), DbError> {
        self.queue(("replica_id", &row.id), false, row.callback_url.as_deref(), event_type, properties).await
    }

    async fn queue(
        &self,
        (subject_key, subject): (&str, &str),
        in_conversation_log: bool,
        url: Option<&str>,
        event_type: &str,
        properties: serde_json::Value,
    ) -> Result<(), DbError> {
        let body = envelope(subject_key, subject, event_type, url, properties, &rfc3339(now_us()));
        self.db.record_event(subject, in_conversation_log, event_type, &body, url).await?;
        self.deliverer.wake();
        Ok(())
    }

    fn unregister(&self, id: &str) {
        let active = {
            let mut running = self.registry();
            running.remove(id);
            running.len()
        };
        metrics::gauge!("tete_conversations_active").set(active as f64);
    }
}

/// Ends a conversation, trying again with backoff while storage fails, so
/// a call never stays active with nothing driving it.
async fn finish_until_done(host: &Host, id: &str, reason: ShutdownReason) -> bool {
    let mut delay = Duration::from_millis(200);
    loop {
        match host.finish(id, reason).await {
            Ok(ended) => return ended,
            Err(e) => {
                tracing::error!(conversation = %id, "ending the conversation (retrying in {delay:?}): {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn drive(host: Arc<Host>, id: String, mut lifecycle: Lifecycle, mut rx: mpsc::Receiver<Signal>) {
    loop {
        let now = now_us().max(0) as u64;
        if let Some(reason) = lifecycle.poll(now) {
            finish_until_done(&host, &id, reason).await;
            break;
        }
        let wait = lifecycle
            .next_deadline()
            .map_or(Duration::from_secs(3600), |t| Duration::from_micros(t.saturating_sub(now)));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            signal = rx.recv() => {
                let now = now_us().max(0) as u64;
                match signal {
                    Some(Signal::ParticipantJoined) => {
                        lifecycle.participant_joined(now);
                        match host.db.conversation(&id).await {
                            Ok(Some(row)) if row.status == "active" => {
                                if let Err(e) = host.emit(&row, "system.replica_joined", json!({"replica_id": row.replica_id})).await {
                                    tracing::warn!(conversation = %id, "recording replica_joined: {e}");
                                }
                            }
                            // Ended elsewhere (another host, the end endpoint): stop driving it.
                            Ok(_) => break,
                            Err(e) => tracing::warn!(conversation = %id, "reading the conversation: {e}"),
                        }
                    }
                    Some(Signal::ParticipantLeft) => lifecycle.participant_left(now),
                    Some(Signal::ParticipantActive) => lifecycle.participant_active(now),
                    Some(Signal::End(reason, ack)) => {
                        let reason = lifecycle.end(reason);
                        let ended = finish_until_done(&host, &id, reason).await;
                        let _ = ack.send(ended);
                        break;
                    }
                    None => break,
                }
            }
        }
    }
    host.unregister(&id);
}
