//! The `plugd` command's subcommands that live outside `main.rs`.

pub mod admin;
pub mod author;
pub mod pkg;
pub mod progress;
pub mod reload;
pub mod rollout;

use plugd::manifest::HostConfig;

/// The running server's base URL and admin token, as `plugd serve` with `config` would have
/// them: `--server`, else `admin.listen` (default 127.0.0.1:8081), else `server.listen` when
/// `admin.listen` is `shared` (a wildcard address becomes loopback); `--token`, else `PLUGD_ADMIN_TOKEN`,
/// else `admin.token`, else the token file a server writes into its data directory.
pub fn server_and_token(
    server: Option<&str>,
    token: Option<&str>,
    config: Option<&HostConfig>,
) -> (String, Option<String>) {
    let server = server.map(str::to_string).unwrap_or_else(|| {
        let listen = config
            .map(|c| {
                c.admin
                    .listen_addr()
                    .unwrap_or_else(|| c.server.listen.clone())
            })
            .unwrap_or_else(|| plugd::manifest::AdminConfig::DEFAULT_LISTEN.into());
        let listen = listen
            .replace("0.0.0.0:", "127.0.0.1:")
            .replace("[::]:", "[::1]:");
        format!("http://{listen}")
    });
    let token = token
        .map(str::to_string)
        .or_else(|| std::env::var("PLUGD_ADMIN_TOKEN").ok())
        .or_else(|| config.and_then(|c| c.admin.token.clone()))
        .or_else(|| {
            config.and_then(|c| {
                std::fs::read_to_string(plugd::server::token_file(&c.data_dir))
                    .ok()
                    .map(|t| t.trim().to_string())
            })
        })
        .filter(|t| !t.is_empty());
    (server.trim_end_matches('/').to_string(), token)
}
