//! Calls into plugins outside the request path: commands, one hook on its own (the test
//! harness), event delivery and timers. Each goes through the guarded call.

use std::sync::Arc;

use plugd_manifest::HookType;

use crate::call::{Call, guarded};
use crate::error::LoadError;
use crate::events::Event;
use crate::loaded::{Loaded, is_absent};
use crate::state::Status;

use super::Host;

impl Host {
    /// Run a plugin's command (`plugd run`).
    pub async fn run_command(
        &self,
        plugin: &str,
        command: &str,
        args: &[String],
    ) -> Result<String, LoadError> {
        let p = self
            .find(plugin)
            .ok_or_else(|| LoadError::UnknownPlugin(plugin.to_string()))?;
        if p.state.status() != Status::Running {
            let mut message = format!(
                "plugin '{plugin}' is not running (status: {})",
                p.state.status()
            );
            if let Some(e) = p.state.last_error() {
                message.push_str(&format!("; last error: {}", e.message));
            }
            return Err(LoadError::Invalid(message));
        }
        guarded(
            &p,
            Call::Command(command),
            p.plugin.run_command(command, args),
        )
        .await
        .map_err(|e| LoadError::Invalid(format!("{plugin} {command}: {e}")))
    }

    /// Call one plugin's hook directly, outside the request path (the test harness does), as the
    /// dispatcher would call it: with the plugin's authority (its hidden headers taken out, the
    /// identity only if granted, what it is refused audited), its deadline and its counters.
    /// No other plugin runs; the stage is set to the hook.
    pub async fn call_hook(
        &self,
        name: &str,
        hook: HookType,
        ex: &mut crate::Exchange,
    ) -> Result<crate::Action, crate::PluginError> {
        let p = self
            .find(name)
            .filter(|p| !is_absent(p))
            .ok_or_else(|| crate::PluginError::Unavailable(format!("no plugin '{name}' loaded")))?;
        ex.stage = crate::Stage::Hook(hook);
        let entry = crate::dispatch::HookEntry {
            plugin: p,
            priority: 0,
        };
        crate::dispatch::call_hook(&entry, hook, ex).await
    }

    /// Connect a running plugin's subscriptions to the bus, each with the delivery its manifest
    /// declares (once per instance unless it says `fleet`).
    pub(super) fn attach_subscriptions(&self, p: &Arc<Loaded>) {
        let queue_bytes = self.plugin_limits(&p.name).event_queue_bytes;
        for topic in &p.registrations.load().subscriptions {
            let plugin = p.clone();
            let delivery = p
                .manifest
                .as_ref()
                .map(|m| m.events.delivery_of(topic))
                .unwrap_or_default();
            self.inner.bus.subscribe_with(
                &p.name,
                topic,
                delivery,
                queue_bytes,
                Arc::new(move |event: Event| {
                    let plugin = plugin.clone();
                    Box::pin(async move {
                        // A throttled subscriber gets the event when its window ends: its queue
                        // holds the rest (and drops, counted, when full).
                        while plugin.state.status() == Status::Running
                            && plugin.state.throttled().is_some()
                        {
                            tokio::time::sleep_until(plugin.state.cpu_window_end().into()).await;
                        }
                        if plugin.state.status() != Status::Running {
                            return Ok(());
                        }
                        crate::call::guarded(
                            &plugin,
                            crate::call::Call::Event(&event.topic),
                            plugin.plugin.on_event(&event),
                        )
                        .await
                    })
                }),
            );
        }
    }
}

/// Start a task per timer of a running plugin.
pub(super) fn start_timers(p: &Arc<Loaded>) {
    let timers = p.registrations.load().timers.clone();
    for (name, every) in timers {
        let plugin = p.clone();
        p.tasks.spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            interval.tick().await; // the first tick is immediate: wait one interval instead
            loop {
                interval.tick().await;
                if plugin.state.status() != Status::Running || plugin.state.throttled().is_some() {
                    continue;
                }
                // Counted and recorded by the guarded call; a failed tick is not retried.
                let _ = crate::call::guarded(
                    &plugin,
                    crate::call::Call::Timer(&name),
                    plugin.plugin.on_tick(&name),
                )
                .await;
            }
        });
    }
}
