//! RedisCache against the machine's Redis (`PLUGD_TEST_REDIS`, default `127.0.0.1:6379`):
//! the conformance suite, hostile keys, two instances, the quota under a race, the ACL users
//! and the faults. Each test has a prefix of its own and removes its keys and users.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plugd_core::testing::{CutProxy, cache_backend};
use plugd_core::{CacheBackend, CacheQuota, CacheSetError, PluginCache};
use plugd_redis::redis::{self, aio::ConnectionManager};
use plugd_redis::{AclMode, RedisCache, RedisError, RedisOptions};

/// `host:port` of the test server.
fn server() -> String {
    let addr = std::env::var("PLUGD_TEST_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
    addr.trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string()
}

fn unique_prefix() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    format!("t_{}", hex::encode(bytes))
}

fn options(prefix: &str, acl: AclMode) -> RedisOptions {
    RedisOptions {
        url: format!("redis://{}", server()),
        prefix: prefix.into(),
        acl,
        ..RedisOptions::default()
    }
}

async fn connect(options: &RedisOptions) -> RedisCache {
    match RedisCache::connect(options).await {
        Ok(c) => c,
        Err(e) => panic!("{e}: is the test Redis up? run scripts/services.sh"),
    }
}

/// The server as the default user, for looking behind the backend's back.
async fn admin() -> ConnectionManager {
    let client = redis::Client::open(format!("redis://{}", server())).unwrap();
    ConnectionManager::new(client)
        .await
        .expect("the test Redis: run scripts/services.sh")
}

/// Remove the keys and ACL users of `prefix` (the prefix is `t_<hex>`: no glob characters).
async fn cleanup(prefix: &str) {
    let mut admin = admin().await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut admin)
        .await
        .unwrap();
    for key in keys {
        let _: () = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut admin)
        .await
        .unwrap();
    for user in users
        .iter()
        .filter(|u| u.starts_with(&format!("{prefix}-")))
    {
        let _: () = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(user)
            .query_async(&mut admin)
            .await
            .unwrap();
    }
}

/// Runs [`cleanup`] when a test ends, passed or failed.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(cleanup(&prefix));
        })
        .join();
    }
}

#[tokio::test]
async fn conforms_with_an_acl_user_per_plugin() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let cache = connect(&options(&prefix, AclMode::On)).await;
    assert!(cache.acl_users());
    cache.ping().await.unwrap();
    cache_backend(Arc::new(cache)).await;
}

#[tokio::test]
async fn conforms_on_the_shared_connection() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let cache = connect(&options(&prefix, AclMode::Off)).await;
    assert!(!cache.acl_users());
    cache_backend(Arc::new(cache)).await;
}

#[tokio::test]
async fn auto_uses_acl_users_on_redis_7() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let cache = connect(&options(&prefix, AclMode::Auto)).await;
    assert!(cache.acl_users(), "the test server is Redis 7");
}

const HOSTILE: &[&str] = &[
    "*", "a:*", "\0", "]", "[", "[a-z]*", "?", "\\", "\\*", "k", "b:k", "*:*", ":", "..",
];

async fn hostile_keys_stay_in_their_plugin(acl: AclMode) {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let backend: Arc<dyn CacheBackend> = Arc::new(connect(&options(&prefix, acl)).await);
    let a = PluginCache::new("a", backend.clone());
    let b = PluginCache::new("b", backend.clone());
    let ab = PluginCache::new("a-b", backend);
    for key in HOSTILE {
        a.set(key, format!("a{key}").as_bytes(), None)
            .await
            .unwrap();
    }
    for key in ["k", "*", "\0"] {
        b.set(key, format!("b{key}").as_bytes(), None)
            .await
            .unwrap();
        ab.set(key, format!("ab{key}").as_bytes(), None)
            .await
            .unwrap();
    }
    for key in HOSTILE {
        assert_eq!(
            a.get(key).await.unwrap(),
            Some(format!("a{key}").into_bytes()),
            "{key:?}"
        );
    }
    assert_eq!(b.get("b:k").await.unwrap(), None);
    assert!(!b.delete("a:*").await.unwrap());

    a.clear().await.unwrap();
    for key in HOSTILE {
        assert_eq!(a.get(key).await.unwrap(), None, "{key:?} cleared");
    }
    for key in ["k", "*", "\0"] {
        assert_eq!(
            b.get(key).await.unwrap(),
            Some(format!("b{key}").into_bytes())
        );
        assert_eq!(
            ab.get(key).await.unwrap(),
            Some(format!("ab{key}").into_bytes())
        );
    }
    // Nothing of `a` is left behind, the books included.
    let mut admin = admin().await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*:a:*"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn hostile_keys_stay_in_their_plugin_with_acl_users() {
    hostile_keys_stay_in_their_plugin(AclMode::On).await;
}

#[tokio::test]
async fn hostile_keys_stay_in_their_plugin_on_the_shared_connection() {
    hostile_keys_stay_in_their_plugin(AclMode::Off).await;
}

#[tokio::test]
async fn bad_plugin_names_are_refused() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let cache = connect(&options(&prefix, AclMode::On)).await;
    for plugin in ["", "a:b", "A", "a*", "a b"] {
        let e = cache.get(plugin, "k").await.unwrap_err();
        assert!(e.to_string().contains("invalid plugin name"), "{e}");
    }
}

#[tokio::test]
async fn two_instances_see_each_others_entries() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let one = connect(&options(&prefix, AclMode::On)).await;
    let two = connect(&options(&prefix, AclMode::On)).await;
    let q = CacheQuota::default();
    one.set("p", "k", b"from one".to_vec(), None, q)
        .await
        .unwrap();
    assert_eq!(two.get("p", "k").await.unwrap(), Some(b"from one".to_vec()));
    two.set("p", "k", b"from two".to_vec(), None, q)
        .await
        .unwrap();
    assert_eq!(one.get("p", "k").await.unwrap(), Some(b"from two".to_vec()));
    assert!(one.delete("p", "k").await.unwrap());
    assert_eq!(two.get("p", "k").await.unwrap(), None);
    // One instance unloading the plugin leaves the other's ACL password working.
    two.set("p", "k2", b"x".to_vec(), None, q).await.unwrap();
    one.clear("p").await.unwrap();
    two.set("p", "k3", b"y".to_vec(), None, q).await.unwrap();
    assert_eq!(two.get("p", "k3").await.unwrap(), Some(b"y".to_vec()));
    // The last instance to unload it drops the plugin's user.
    let mut admin = admin().await;
    let user = format!("{prefix}-cache-p");
    let exists = |admin: &mut ConnectionManager| {
        let mut getuser = redis::cmd("ACL");
        getuser.arg("GETUSER").arg(&user);
        let admin = admin.clone();
        async move {
            let mut admin = admin;
            let rules: Option<Vec<redis::Value>> = getuser.query_async(&mut admin).await.unwrap();
            rules.is_some()
        }
    };
    assert!(exists(&mut admin).await);
    two.clear("p").await.unwrap();
    assert!(!exists(&mut admin).await, "the user is dropped");
}

/// Many writes of new keys at once from two instances: exactly `limit` of them get in.
async fn race(one: &RedisCache, two: &RedisCache, quota: CacheQuota, value: usize) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..120 {
        let cache = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.spawn(async move {
            cache
                .set("racer", &format!("k{i}"), vec![7; value], None, quota)
                .await
        });
    }
    let mut stored = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(()) => stored += 1,
            Err(CacheSetError::Full { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_quota_holds_across_instances_racing() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let one = connect(&options(&prefix, AclMode::On)).await;
    let two = connect(&options(&prefix, AclMode::On)).await;
    let by_entries = CacheQuota {
        max_entries: 17,
        max_bytes: 1 << 20,
    };
    assert_eq!(race(&one, &two, by_entries, 3).await, 17);
    one.clear("racer").await.unwrap();
    let by_bytes = CacheQuota {
        max_entries: 1000,
        max_bytes: 230,
    };
    assert_eq!(race(&one, &two, by_bytes, 10).await, 23);
    // The books agree with what is stored.
    let mut admin = admin().await;
    let entries: usize = redis::cmd("HLEN")
        .arg(format!("{prefix}:cache-meta:racer:sizes"))
        .query_async(&mut admin)
        .await
        .unwrap();
    let bytes: usize = redis::cmd("GET")
        .arg(format!("{prefix}:cache-meta:racer:bytes"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!((entries, bytes), (23, 230));
}

#[tokio::test]
async fn expired_entries_leave_the_quota() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let cache = connect(&options(&prefix, AclMode::On)).await;
    let quota = CacheQuota {
        max_entries: 2,
        max_bytes: 100,
    };
    let short = Some(Duration::from_millis(30));
    cache
        .set("p", "a", b"1".to_vec(), short, quota)
        .await
        .unwrap();
    cache
        .set("p", "b", b"2".to_vec(), short, quota)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    for key in ["a", "b"] {
        while cache.get("p", key).await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "{key} never expired");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    cache
        .set("p", "c", b"3".to_vec(), None, quota)
        .await
        .unwrap();
    cache
        .set("p", "d", b"4".to_vec(), None, quota)
        .await
        .unwrap();
    assert!(matches!(
        cache.set("p", "e", b"5".to_vec(), None, quota).await,
        Err(CacheSetError::Full {
            what: "entries",
            limit: 2
        })
    ));
    // A replaced entry loses its TTL.
    cache
        .set("p", "c", b"3".to_vec(), short, quota)
        .await
        .unwrap();
    cache
        .set("p", "c", b"33".to_vec(), None, quota)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(cache.get("p", "c").await.unwrap(), Some(b"33".to_vec()));
}

fn is_noperm(result: redis::RedisResult<redis::Value>) -> bool {
    match result {
        Err(e) => {
            let message = e.to_string();
            e.code() == Some("NOPERM")
                || message.contains("NOPERM")
                || message.contains("can't access")
        }
        Ok(v) => panic!("allowed: {v:?}"),
    }
}

#[tokio::test]
async fn a_plugins_acl_user_reaches_nothing_else() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let cache = connect(&options(&prefix, AclMode::On)).await;
    let q = CacheQuota::default();
    cache.set("a", "k", b"a".to_vec(), None, q).await.unwrap();
    cache.set("b", "k", b"b".to_vec(), None, q).await.unwrap();
    let mut conn = cache.plugin_connection("a").await.unwrap();
    let own: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("{prefix}:cache:a:k"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(own, Some(b"a".to_vec()));
    let other = format!("{prefix}:cache:b:k");
    let refused = [
        redis::cmd("GET").arg(&other).clone(),
        redis::cmd("SET").arg(&other).arg("x").clone(),
        redis::cmd("DEL").arg(&other).clone(),
        redis::cmd("DEL")
            .arg(format!("{prefix}:cache-meta:b:sizes"))
            .clone(),
        redis::cmd("GET").arg("unrelated").clone(),
        redis::cmd("FLUSHALL").clone(),
        redis::cmd("FLUSHDB").clone(),
        redis::cmd("CONFIG").arg("GET").arg("*").clone(),
        redis::cmd("KEYS").arg("*").clone(),
        redis::cmd("SCAN").arg(0).clone(),
        redis::cmd("ACL").arg("LIST").clone(),
        redis::cmd("PUBLISH").arg("c").arg("m").clone(),
        // A script runs with the user's rights too.
        redis::cmd("EVAL")
            .arg("return redis.call('GET', KEYS[1])")
            .arg(1)
            .arg(&other)
            .clone(),
        redis::cmd("EVAL")
            .arg("return redis.call('GET', ARGV[1])")
            .arg(0)
            .arg(&other)
            .clone(),
    ];
    for cmd in refused {
        assert!(
            is_noperm(cmd.query_async(&mut conn).await),
            "{:?}",
            String::from_utf8_lossy(&cmd.get_packed_command())
        );
    }
    assert_eq!(
        cache.get("b", "k").await.unwrap(),
        Some(b"b".to_vec()),
        "untouched"
    );
}

#[tokio::test]
async fn a_plugin_whose_acl_user_was_dropped_gets_it_back() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let cache = connect(&options(&prefix, AclMode::On)).await;
    let q = CacheQuota::default();
    cache.set("p", "k", b"1".to_vec(), None, q).await.unwrap();
    // As after a Redis restart without an ACL file: the user and its connections are gone.
    let mut admin = admin().await;
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(format!("{prefix}-cache-p"))
        .query_async(&mut admin)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cache.get("p", "k").await {
            Ok(v) => {
                assert_eq!(v, Some(b"1".to_vec()));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never recovered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_cut_is_a_clear_error_and_the_same_value_recovers() {
    let proxy = CutProxy::start(&server()).await.unwrap();
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let cache = connect(&RedisOptions {
        url: format!("redis://{}", proxy.addr()),
        timeout: Duration::from_millis(800),
        connect_timeout: Duration::from_millis(800),
        ..options(&prefix, AclMode::On)
    })
    .await;
    let q = CacheQuota::default();
    cache.set("p", "k", b"1".to_vec(), None, q).await.unwrap();

    proxy.cut();
    // Bounded by the cache's own timeout: an outer guard only catches a hang.
    let guard = Duration::from_secs(10);
    let get = tokio::time::timeout(guard, cache.get("p", "k"))
        .await
        .expect("get hung");
    let e = get.unwrap_err().to_string();
    assert!(e.starts_with("redis: redis at redis://127.0.0.1:"), "{e}");
    assert!(e.contains("get of plugin 'p'"), "{e}");
    let set = tokio::time::timeout(guard, cache.set("p", "k", b"2".to_vec(), None, q))
        .await
        .expect("set hung");
    let e = set.unwrap_err().to_string();
    assert!(
        e.contains("redis at") && e.contains("set of plugin 'p'"),
        "{e}"
    );
    let ping = tokio::time::timeout(guard, cache.ping())
        .await
        .expect("ping hung");
    assert!(ping.unwrap_err().to_string().contains("redis at"));

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match cache.set("p", "k", b"3".to_vec(), None, q).await {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "never recovered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cache.get("p", "k").await.unwrap(), Some(b"3".to_vec()));
    cache.ping().await.unwrap();
}

#[tokio::test]
async fn connecting_through_a_cut_link_fails_within_the_connect_timeout() {
    let proxy = CutProxy::start(&server()).await.unwrap();
    proxy.cut();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        RedisCache::connect(&RedisOptions {
            url: format!("redis://{}", proxy.addr()),
            connect_timeout: Duration::from_millis(500),
            ..options(&unique_prefix(), AclMode::Auto)
        }),
    )
    .await
    .expect("connect hung");
    let e = result.unwrap_err();
    assert!(
        matches!(e, RedisError::Connect { .. } | RedisError::Timeout { .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with("redis at redis://127.0.0.1:"),
        "{e}"
    );
}

#[tokio::test]
async fn passwords_never_reach_a_message() {
    // The default user of the test server has no password: AUTH fails, naming no password.
    let e = RedisCache::connect(&RedisOptions {
        url: format!("redis://someone:hunter2@{}", server()),
        ..options(&unique_prefix(), AclMode::Auto)
    })
    .await
    .unwrap_err();
    let message = e.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("someone:***@"), "{message}");

    let e = RedisCache::connect(&RedisOptions {
        url: "redis://:hunter2@127.0.0.1:1".into(),
        ..options(&unique_prefix(), AclMode::Auto)
    })
    .await
    .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
}

#[tokio::test]
async fn bad_options_are_refused_before_connecting() {
    for (options, field) in [
        (
            RedisOptions {
                prefix: "a:b".into(),
                ..RedisOptions::default()
            },
            "prefix",
        ),
        (
            RedisOptions {
                pool_size: 0,
                ..RedisOptions::default()
            },
            "pool_size",
        ),
        (
            RedisOptions {
                url: "http://:pw@x".into(),
                ..RedisOptions::default()
            },
            "url",
        ),
    ] {
        let e = RedisCache::connect(&options).await.unwrap_err();
        assert!(
            matches!(e, RedisError::Invalid { field: f, .. } if f == field),
            "{e:?}"
        );
        assert!(!e.to_string().contains("pw@"), "{e}");
    }
}

/// A user like a managed Redis gives: every command but `ACL SETUSER`.
async fn limited_user(prefix: &str) -> String {
    let (user, password) = (format!("{prefix}-admin"), format!("pw{prefix}"));
    let mut admin = admin().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(format!(">{password}"))
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-acl|setuser")
        .query_async(&mut admin)
        .await
        .unwrap();
    format!("redis://{user}:{password}@{}", server())
}

#[tokio::test]
async fn auto_falls_back_to_the_shared_connection_when_acl_setuser_is_refused() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let url = limited_user(&prefix).await;
    let cache = connect(&RedisOptions {
        url,
        ..options(&prefix, AclMode::Auto)
    })
    .await;
    assert!(cache.acl_users(), "ACL WHOAMI works");
    let q = CacheQuota::default();
    cache.set("p", "k", b"1".to_vec(), None, q).await.unwrap();
    assert!(!cache.acl_users(), "ACL SETUSER was refused");
    assert_eq!(cache.get("p", "k").await.unwrap(), Some(b"1".to_vec()));
    cache_backend(Arc::new(cache)).await;
}

#[tokio::test]
async fn acl_on_fails_clearly_when_acl_setuser_is_refused() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let url = limited_user(&prefix).await;
    let cache = connect(&RedisOptions {
        url,
        ..options(&prefix, AclMode::On)
    })
    .await;
    let e = cache
        .set("p", "k", b"1".to_vec(), None, CacheQuota::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("ACL SETUSER {prefix}-cache-p")), "{e}");
    assert!(e.contains("NOPERM") || e.contains("no permissions"), "{e}");
    assert!(e.contains(&format!("{prefix}-admin:***@")), "{e}");
    assert!(!e.contains(&format!("pw{prefix}")), "{e}");
    assert!(cache.acl_users(), "acl: on never falls back");
}
