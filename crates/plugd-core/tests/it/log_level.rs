//! A plugin's own log level: set by the operator in the host config (`log_level:`) and by the
//! embedding application or the admin API (`Host::set_log_level`); lines under it are dropped
//! before the plugin's log rate counts them.

use std::sync::Arc;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{
    Exchange, Host, InitContext, LogLevel, Plugin, PluginError, PluginLog, Response, RouteOptions,
};

use crate::{config, manifest_with};

/// Its `/say` route writes one line at every level through the log it kept from `init`; `/quiet`
/// raises its own level to `error`.
#[derive(Default)]
struct Chatty {
    log: Arc<Mutex<Option<PluginLog>>>,
}

#[async_trait::async_trait]
impl Plugin for Chatty {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        ctx.register_route("GET", "/say", RouteOptions::default())?;
        ctx.register_route("GET", "/quiet", RouteOptions::default())?;
        *self.log.lock() = Some(ctx.log());
        Ok(())
    }

    async fn handle_request(
        &self,
        route: &str,
        _ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        let log = self.log.lock().clone().expect("kept in init");
        match route {
            "/quiet" => log.set_level(LogLevel::Error),
            _ => {
                for level in LogLevel::ALL {
                    log.write(level, &format!("a {level} line"), &[]);
                }
            }
        }
        Ok(Response::new(http::StatusCode::OK))
    }
}

async fn call(host: &Host, route: &str) {
    let r = host
        .dispatcher()
        .handle(Exchange::new(
            Method::GET,
            &format!("/plugins/chatty{route}"),
        ))
        .await;
    assert_eq!(
        r.status,
        200,
        "{route}: {}",
        String::from_utf8_lossy(&r.body)
    );
}

#[tokio::test]
async fn the_operator_and_the_plugin_set_its_level_and_lines_under_it_never_reach_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    // Two lines a second, no burst: the rate is spent by what is kept only.
    let yaml = "plugins:\n  plugins:\n    - name: chatty\n      permissions: { router: true }\n      log_level: warn\n      limits: { log_lines_per_second: 2, log_burst_seconds: 1 }\n";
    let chatty = Chatty::default();
    let host = Host::builder()
        .config(config(dir.path(), yaml))
        .native(manifest_with("chatty", "router", ""), chatty)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let state = host.plugin_state("chatty").unwrap();
    assert_eq!(host.log_level("chatty"), Some(LogLevel::Warn));

    // trace, debug and info are dropped under the level; warn and error are written within
    // the rate of two lines.
    call(&host, "/say").await;
    let log = state.log();
    assert_eq!((log.written(), log.dropped(), log.filtered()), (2, 0, 3));

    // The operator lowers it: the same five lines now go to the rate, which drops what is over it.
    host.set_log_level("chatty", LogLevel::Trace).unwrap();
    assert_eq!(host.log_level("chatty"), Some(LogLevel::Trace));
    call(&host, "/say").await;
    assert_eq!(log.filtered(), 3);
    assert_eq!(log.written() + log.dropped(), 2 + 5);

    // The plugin raises its own level through its log handle; the host sees the same level.
    call(&host, "/quiet").await;
    assert_eq!(host.log_level("chatty"), Some(LogLevel::Error));
    let before = (log.written() + log.dropped(), log.filtered());
    call(&host, "/say").await;
    assert_eq!(log.written() + log.dropped(), before.0 + 1);
    assert_eq!(log.filtered(), before.1 + 4);

    assert!(matches!(
        host.set_log_level("nope", LogLevel::Info),
        Err(plugd_core::LoadError::UnknownPlugin(_))
    ));
    assert_eq!(host.log_level("nope"), None);
    host.shutdown().await;
}

#[test]
fn the_config_key_takes_the_five_levels_and_names_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        "plugins:\n  plugins:\n    - { name: a, log_level: debug }\n    - { name: b }\n",
    );
    assert_eq!(c.plugins.plugins[0].log_level, Some(LogLevel::Debug));
    assert_eq!(c.plugins.plugins[1].log_level, None);
    let e = plugd_manifest::HostConfig::from_str(
        "plugins:\n  plugins:\n    - { name: a, log_level: loud }\n",
        plugd_manifest::Format::Yaml,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("log_level"), "{e}");
    assert!(e.contains("loud"), "{e}");
}
