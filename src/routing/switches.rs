//! The operator's switch on each channel: off, a channel takes no new task until it is switched
//! on again. Kept in the database (`channel_switches`, one row per channel ever switched) so it
//! holds across restarts and for every node. A change is announced on the [`Bus`] with its
//! commit; every node (the sender too, on PostgreSQL) then reads the table again, and so does a
//! node whose listener (re)connects, since it may have missed announcements meanwhile.

use std::sync::Arc;

use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{ChannelError, ChannelStatus, Router, status_of};
use crate::db::{Db, now_ms};
use crate::signals::{Bus, Signal};

impl Router {
    /// Switches channel `id` on or off, for every node, and returns what it now is. Switching on
    /// wakes the workers too: tasks left waiting for the channel can go.
    pub async fn set_enabled(
        &self,
        db: &Db,
        bus: &Bus,
        id: &str,
        enabled: bool,
    ) -> Result<ChannelStatus, ChannelError> {
        let channel = self.channel(id)?;
        let signals =
            if enabled { vec![Signal::ChannelsSwitched, Signal::TaskQueued] } else { vec![Signal::ChannelsSwitched] };
        let mut tx = db.write.begin().await?;
        sqlx::query(
            "INSERT INTO channel_switches (channel_id, enabled, changed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (channel_id) DO UPDATE SET enabled = excluded.enabled, changed_at = excluded.changed_at",
        )
        .bind(id)
        .bind(i64::from(enabled))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        bus.within(&mut *tx, &signals).await?;
        tx.commit().await?;
        // This node at once; the others (and this one again) when they hear the announcement.
        channel.set_enabled(enabled);
        bus.committed(&signals);
        Ok(status_of(channel))
    }

    /// Brings every channel's switch to what the database says (on, where it says nothing).
    pub async fn load_switches(&self, db: &Db) -> Result<(), sqlx::Error> {
        let rows = sqlx::query("SELECT channel_id, enabled FROM channel_switches").fetch_all(&db.read).await?;
        let mut switched = Vec::with_capacity(rows.len());
        for row in &rows {
            switched.push((row.try_get::<String, _>("channel_id")?, row.try_get::<i64, _>("enabled")? != 0));
        }
        for channel in &self.channels {
            let enabled = switched.iter().find(|(id, _)| *id == channel.id).is_none_or(|(_, on)| *on);
            if enabled != channel.is_enabled() {
                tracing::info!(channel = %channel.id, enabled, "channel switched");
            }
            channel.set_enabled(enabled);
        }
        Ok(())
    }
}

/// Reads the switches again whenever a change is announced, until `shutdown`. A failed read is
/// tried again at the next announcement, or after a few seconds.
pub async fn follow(router: Arc<Router>, db: Db, switched: Arc<Notify>, shutdown: CancellationToken) {
    let mut retry = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            () = switched.notified() => {}
            () = tokio::time::sleep(RETRY), if retry => {}
        }
        retry = match router.load_switches(&db).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the channel switches; trying again");
                true
            }
        };
    }
}

const RETRY: std::time::Duration = std::time::Duration::from_secs(5);
