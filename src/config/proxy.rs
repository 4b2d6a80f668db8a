//! Centrifugo v6's proxies to the application backend, as configured: `client.proxy.connect`
//! and `client.proxy.refresh`, `channel.proxy.subscribe` / `publish` / `sub_refresh`,
//! `rpc.proxy`, the named `proxies` list, per-namespace `*_proxy_enabled` / `*_proxy_name`,
//! and the `rpc` section (`without_namespace`, `namespaces`, `ping`, `namespace_boundary`).
//!
//! Owns: the key names and defaults (Centrifugo's: `timeout` 1s, proxy name `default`), the
//! start-up checks Centrifugo makes (an enabled proxy needs an endpoint and a timeout,
//! names must exist, `default` is reserved), plus Herald's own (HTTP endpoints only: Herald
//! has no gRPC client), and [`ProxySet`], the resolved table the Centrifugo transport looks
//! proxies up in. Called by [`super::Config::validate`] and at start-up. Keys of these
//! sections Herald does not implement (`grpc`, `grpc_metadata`, `http.tls`, the stream, map
//! and shared-poll proxies) are not fields here, so they land in the start-up warning.

use super::centrifugo::Duration;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// `http.status_to_code_transforms[i].to_error`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TransformError {
    /// Centrifugo error code sent to the client (non-zero to apply).
    pub code: u32,
    /// Its message.
    pub message: String,
    /// Marked temporary (SDKs retry).
    pub temporary: bool,
}

/// `http.status_to_code_transforms[i].to_disconnect`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TransformDisconnect {
    /// Disconnect code (non-zero to apply).
    pub code: u32,
    /// Close reason.
    pub reason: String,
}

/// One `http.status_to_code_transforms` rule: a backend HTTP status answered to the client as
/// an error or a disconnect instead of error 100.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StatusTransform {
    /// The backend's HTTP status.
    pub status_code: u16,
    /// The error it becomes (when its code is set).
    pub to_error: TransformError,
    /// Else the disconnect it becomes.
    pub to_disconnect: TransformDisconnect,
}

/// A proxy's `http` section (its `tls` key is not implemented: HTTPS endpoints are checked
/// against the system's root certificates).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyHttp {
    /// Headers added to every request to this proxy; forwarded client headers of the same
    /// name win.
    pub static_headers: BTreeMap<String, String>,
    /// Backend statuses mapped to client errors or disconnects.
    pub status_to_code_transforms: Vec<StatusTransform>,
}

// The three shapes Centrifugo gives a proxy (plain, with `enabled`, with `name`) share their
// keys; serde's `flatten` would swallow unknown keys (which must reach the warning list with
// their full path), so each shape is a struct of its own with the same fields.
macro_rules! proxy_shape {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty),* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            /// `http://` or `https://` URL the request is POSTed to.
            pub endpoint: String,
            /// Whole-request limit (connect, send, answer); the client then gets error 100.
            pub timeout: Duration,
            /// Headers of the client's HTTP request (WebSocket upgrade, stream request)
            /// forwarded to the backend, e.g. `Cookie`, `Authorization` (case-insensitive).
            pub http_headers: Vec<String>,
            /// Headers the client sent in its connect command's `headers` map (client
            /// controlled) forwarded to the backend.
            pub emulated_headers: Vec<String>,
            /// Send `b64data` (base64) instead of `data`.
            pub binary_encoding: bool,
            /// Send the connection's `meta` (from the connect proxy) with each request.
            pub include_connection_meta: bool,
            /// `http.static_headers`, `http.status_to_code_transforms`.
            pub http: ProxyHttp,
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $($f: Default::default(),)*
                    endpoint: String::new(),
                    timeout: Duration(1000),
                    http_headers: Vec::new(),
                    emulated_headers: Vec::new(),
                    binary_encoding: false,
                    include_connection_meta: false,
                    http: ProxyHttp::default(),
                }
            }
        }

        impl $name {
            /// The proxy's common settings.
            pub fn proxy(&self) -> Proxy {
                Proxy {
                    endpoint: self.endpoint.clone(),
                    timeout: self.timeout,
                    http_headers: self.http_headers.clone(),
                    emulated_headers: self.emulated_headers.clone(),
                    binary_encoding: self.binary_encoding,
                    include_connection_meta: self.include_connection_meta,
                    http: self.http.clone(),
                }
            }
        }
    };
}

proxy_shape!(
    /// A proxy: `channel.proxy.subscribe` / `publish` / `sub_refresh`, `rpc.proxy`.
    Proxy {}
);

proxy_shape!(
    /// `client.proxy.connect`, `client.proxy.refresh`: a proxy with an on switch.
    SwitchProxy {
        /// Use it.
        enabled: bool
    }
);

proxy_shape!(
    /// An item of the top-level `proxies` list, referenced by name from namespaces.
    NamedProxy {
        /// Letters, digits, `-`, `_`, `.`; at least two; not `default`.
        name: String
    }
);

/// `client.proxy`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientProxies {
    /// Connect commands without a token are decided by the backend.
    pub connect: SwitchProxy,
    /// Connection expiry is extended by the backend (server-side refresh) instead of a
    /// client refresh with a new token.
    pub refresh: SwitchProxy,
}

/// `channel.proxy`: the proxies a namespace's `*_proxy_name` `default` means.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelProxies {
    /// Subscribe decisions.
    pub subscribe: Proxy,
    /// Client publications (allow, deny, replace data).
    pub publish: Proxy,
    /// Server-side subscription refresh.
    pub sub_refresh: Proxy,
}

/// RPC options of methods without a namespace or of an RPC namespace.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RpcOptions {
    /// Send the namespace's `rpc` commands to the proxy (else error 108).
    pub proxy_enabled: bool,
    /// Which proxy: `default` (`rpc.proxy`) or a `proxies` name.
    pub proxy_name: String,
}

impl Default for RpcOptions {
    fn default() -> Self {
        RpcOptions { proxy_enabled: false, proxy_name: DEFAULT.into() }
    }
}

/// An item of `rpc.namespaces`: methods named `name:...`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RpcNamespace {
    /// The method prefix before `rpc.namespace_boundary`.
    pub name: String,
    /// See [`RpcOptions::proxy_enabled`].
    pub proxy_enabled: bool,
    /// See [`RpcOptions::proxy_name`].
    pub proxy_name: String,
}

impl Default for RpcNamespace {
    fn default() -> Self {
        RpcNamespace { name: String::new(), proxy_enabled: false, proxy_name: DEFAULT.into() }
    }
}

/// `rpc.ping`: a built-in method answered with an empty result.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RpcPing {
    /// Answer `method` without the backend.
    pub enabled: bool,
    /// The method's name.
    pub method: String,
}

impl Default for RpcPing {
    fn default() -> Self {
        RpcPing { enabled: false, method: "ping".into() }
    }
}

/// `rpc`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// The proxy `proxy_name: default` means.
    pub proxy: Proxy,
    /// Options of methods without a namespace.
    pub without_namespace: RpcOptions,
    /// RPC namespaces.
    pub namespaces: Vec<RpcNamespace>,
    /// The built-in ping method.
    pub ping: RpcPing,
    /// Separator between an RPC namespace and the rest of a method name.
    pub namespace_boundary: String,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            proxy: Proxy::default(),
            without_namespace: RpcOptions::default(),
            namespaces: Vec::new(),
            ping: RpcPing::default(),
            namespace_boundary: ":".into(),
        }
    }
}

impl RpcConfig {
    /// The options of `method`; None when it names an RPC namespace that does not exist
    /// (Centrifugo: error 104 method not found).
    pub fn options(&self, method: &str) -> Option<RpcOptions> {
        let b = self.namespace_boundary.as_str();
        match (!b.is_empty()).then(|| method.split_once(b)).flatten() {
            Some((ns, _)) => self
                .namespaces
                .iter()
                .find(|n| n.name == ns)
                .map(|n| RpcOptions { proxy_enabled: n.proxy_enabled, proxy_name: n.proxy_name.clone() }),
            None => Some(self.without_namespace.clone()),
        }
    }
}

/// The name a namespace uses when it names none.
pub const DEFAULT: &str = "default";

/// What a proxy is called for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `client.proxy.connect`.
    Connect,
    /// `client.proxy.refresh`.
    Refresh,
    /// Namespaces' `subscribe_proxy_*`.
    Subscribe,
    /// Namespaces' `publish_proxy_*`.
    Publish,
    /// Namespaces' `sub_refresh_proxy_*`.
    SubRefresh,
    /// RPC options' `proxy_*`.
    Rpc,
}

impl Kind {
    /// Every kind, in order (`kind as usize` indexes it).
    pub const ALL: [Kind; 6] =
        [Kind::Connect, Kind::Refresh, Kind::Subscribe, Kind::Publish, Kind::SubRefresh, Kind::Rpc];

    /// For logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Refresh => "refresh",
            Kind::Subscribe => "subscribe",
            Kind::Publish => "publish",
            Kind::SubRefresh => "sub_refresh",
            Kind::Rpc => "rpc",
        }
    }
}

/// The proxies in use, resolved from the configuration: what the transport looks up per
/// call (by kind, and by name for channel and RPC proxies).
#[derive(Debug, Clone, Default)]
pub struct ProxySet {
    /// `client.proxy.connect` when enabled.
    pub connect: Option<Proxy>,
    /// `client.proxy.refresh` when enabled.
    pub refresh: Option<Proxy>,
    defaults: HashMap<Kind, Proxy>,
    named: HashMap<String, Proxy>,
    /// Lower-case names of the client request headers some proxy forwards (the ones a
    /// connection keeps from its HTTP request).
    pub http_headers: Vec<String>,
    /// Lower-case names of connect-command headers some proxy forwards.
    pub emulated_headers: Vec<String>,
}

impl ProxySet {
    /// The proxies `cfg` configures (validated already).
    pub fn new(cfg: &super::Config) -> ProxySet {
        let mut set = ProxySet {
            connect: cfg.client.proxy.connect.enabled.then(|| cfg.client.proxy.connect.proxy()),
            refresh: cfg.client.proxy.refresh.enabled.then(|| cfg.client.proxy.refresh.proxy()),
            ..Default::default()
        };
        let cp = &cfg.channel.proxy;
        for (k, p) in [
            (Kind::Subscribe, &cp.subscribe),
            (Kind::Publish, &cp.publish),
            (Kind::SubRefresh, &cp.sub_refresh),
            (Kind::Rpc, &cfg.rpc.proxy),
        ] {
            if !p.endpoint.is_empty() {
                set.defaults.insert(k, p.clone());
            }
        }
        for p in &cfg.proxies {
            set.named.insert(p.name.clone(), p.proxy());
        }
        let mut all: Vec<&Proxy> = set.defaults.values().chain(set.named.values()).collect();
        all.extend(set.connect.iter().chain(set.refresh.iter()));
        for p in all {
            for (list, names) in
                [(&mut set.http_headers, &p.http_headers), (&mut set.emulated_headers, &p.emulated_headers)]
            {
                for h in names {
                    let h = h.to_ascii_lowercase();
                    if !list.contains(&h) {
                        list.push(h);
                    }
                }
            }
        }
        set
    }

    /// The proxy a namespace (or RPC options) names for `kind`: `default` is the section's
    /// own (`channel.proxy.*`, `rpc.proxy`), anything else a `proxies` item.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Proxy> {
        match kind {
            Kind::Connect => self.connect.as_ref(),
            Kind::Refresh => self.refresh.as_ref(),
            _ if name.is_empty() || name == DEFAULT => self.defaults.get(&kind),
            _ => self.named.get(name),
        }
    }

    /// Whether any proxy is configured (the proxy threads are started only then).
    pub fn any(&self) -> bool {
        self.connect.is_some() || self.refresh.is_some() || !self.defaults.is_empty() || !self.named.is_empty()
    }
}

/// Check one proxy as Centrifugo does (an endpoint, a timeout), and that Herald can call it
/// (HTTP or HTTPS: Herald has no gRPC client). `key` names it in the message.
fn check(key: &str, p: &Proxy) -> Result<(), String> {
    if p.endpoint.is_empty() {
        return Err(format!("key `{key}.endpoint`: not set"));
    }
    let uri: ureq::http::Uri =
        p.endpoint.parse().map_err(|e| format!("key `{key}.endpoint`: `{}` is not a URL: {e}", p.endpoint))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "key `{key}.endpoint`: `{}` must be an http:// or https:// URL (Herald does not implement gRPC proxies)",
            p.endpoint
        ));
    }
    if p.timeout.0 == 0 {
        return Err(format!("key `{key}.timeout`: must be above 0"));
    }
    for (i, t) in p.http.status_to_code_transforms.iter().enumerate() {
        let k = format!("{key}.http.status_to_code_transforms[{i}]");
        if t.status_code == 0 {
            return Err(format!("key `{k}.status_code`: not set"));
        }
        if t.to_error.code == 0 && t.to_disconnect.code == 0 {
            return Err(format!("key `{k}`: neither to_error.code nor to_disconnect.code is set"));
        }
    }
    for h in p.http_headers.iter().chain(&p.emulated_headers) {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
            return Err(format!("key `{key}`: `{h}` is not an HTTP header name"));
        }
    }
    Ok(())
}

/// The start-up checks of every proxy key (messages name the key).
pub fn validate(cfg: &super::Config) -> Result<(), String> {
    for (key, p) in
        [("client.proxy.connect", &cfg.client.proxy.connect), ("client.proxy.refresh", &cfg.client.proxy.refresh)]
    {
        if p.enabled {
            check(key, &p.proxy())?;
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, p) in cfg.proxies.iter().enumerate() {
        let key = format!("proxies[{i}]");
        let good = p.name.len() >= 2 && p.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !good {
            return Err(format!("key `{key}.name`: `{}` must be at least two letters, digits, -, _ or .", p.name));
        }
        if p.name == DEFAULT {
            return Err(format!("key `{key}.name`: `{DEFAULT}` is reserved"));
        }
        if names.contains(&p.name.as_str()) {
            return Err(format!("key `{key}.name`: `{}` defined twice", p.name));
        }
        names.push(&p.name);
        check(&key, &p.proxy())?;
    }
    let named = |n: &str| n.is_empty() || n == DEFAULT || names.contains(&n);
    let cp = &cfg.channel.proxy;
    let mut spaces: Vec<(String, &super::centrifugo::ChannelOptions)> =
        vec![("channel.without_namespace".into(), &cfg.channel.without_namespace)];
    for (i, n) in cfg.channel.namespaces.iter().enumerate() {
        spaces.push((format!("channel.namespaces[{i}]"), &n.options));
    }
    for (key, o) in spaces {
        for (what, enabled, name, default, section) in [
            ("subscribe", o.subscribe_proxy_enabled, &o.subscribe_proxy_name, &cp.subscribe, "channel.proxy.subscribe"),
            ("publish", o.publish_proxy_enabled, &o.publish_proxy_name, &cp.publish, "channel.proxy.publish"),
            (
                "sub_refresh",
                o.sub_refresh_proxy_enabled,
                &o.sub_refresh_proxy_name,
                &cp.sub_refresh,
                "channel.proxy.sub_refresh",
            ),
        ] {
            if !named(name) {
                return Err(format!("key `{key}.{what}_proxy_name`: no proxy `{name}` in `proxies`"));
            }
            if enabled && (name.is_empty() || name == DEFAULT) {
                check(section, default)?;
            }
        }
    }
    let r = &cfg.rpc;
    let mut rpc: Vec<(String, bool, &str)> =
        vec![("rpc.without_namespace".into(), r.without_namespace.proxy_enabled, &r.without_namespace.proxy_name)];
    for (i, n) in r.namespaces.iter().enumerate() {
        let key = format!("rpc.namespaces[{i}]");
        if n.name.is_empty() || !n.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
            return Err(format!("key `{key}.name`: `{}` must be non-empty letters, digits, _ or -", n.name));
        }
        if r.namespaces[..i].iter().any(|m| m.name == n.name) {
            return Err(format!("key `{key}.name`: rpc namespace `{}` defined twice", n.name));
        }
        rpc.push((key, n.proxy_enabled, &n.proxy_name));
    }
    for (key, enabled, name) in rpc {
        if !named(name) {
            return Err(format!("key `{key}.proxy_name`: no proxy `{name}` in `proxies`"));
        }
        if enabled && (name.is_empty() || name == DEFAULT) {
            check("rpc.proxy", &r.proxy)?;
        }
    }
    if r.ping.enabled && r.ping.method.is_empty() {
        return Err("key `rpc.ping.method`: must not be empty".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn shapes_defaults_and_lookup() {
        let cfg = Config::from_json(
            r#"{"client":{"proxy":{"connect":{"enabled":true,"endpoint":"http://127.0.0.1:1/connect",
                  "http_headers":["Cookie","Authorization"]}}},
                "channel":{"proxy":{"subscribe":{"endpoint":"http://127.0.0.1:1/sub","timeout":"250ms"}},
                  "namespaces":[{"name":"a","subscribe_proxy_enabled":true},
                                {"name":"b","publish_proxy_enabled":true,"publish_proxy_name":"other"}]},
                "proxies":[{"name":"other","endpoint":"https://backend.example/pub","emulated_headers":["X-Token"]}],
                "rpc":{"without_namespace":{"proxy_enabled":true,"proxy_name":"other"},
                  "namespaces":[{"name":"off"}]}}"#,
        )
        .unwrap();
        assert!(!cfg.notices.iter().any(|n| n.contains("does not implement")), "{:?}", cfg.notices);
        let set = ProxySet::new(&cfg);
        assert!(set.any());
        assert_eq!(set.connect.as_ref().unwrap().timeout, Duration(1000), "Centrifugo's default 1s");
        assert_eq!(set.get(Kind::Subscribe, "default").unwrap().timeout, Duration(250));
        assert_eq!(set.get(Kind::Subscribe, "").unwrap().endpoint, "http://127.0.0.1:1/sub");
        assert_eq!(set.get(Kind::Publish, "other").unwrap().endpoint, "https://backend.example/pub");
        assert!(set.get(Kind::Publish, "default").is_none());
        assert!(set.refresh.is_none());
        assert_eq!(set.http_headers, vec!["cookie", "authorization"]);
        assert_eq!(set.emulated_headers, vec!["x-token"]);
        assert_eq!(cfg.rpc.options("m").unwrap().proxy_name, "other");
        assert!(!cfg.rpc.options("off:m").unwrap().proxy_enabled);
        assert!(cfg.rpc.options("nope:m").is_none(), "unknown rpc namespace");
        assert!(!ProxySet::new(&Config::default()).any());
    }

    #[test]
    fn unimplemented_proxy_keys_are_warned_not_refused() {
        let cfg = Config::from_json(
            r#"{"client":{"proxy":{"connect":{"enabled":true,"endpoint":"http://h/c","grpc_metadata":["x"],
                  "http":{"tls":{"enabled":true}}}}},
                "channel":{"proxy":{"subscribe_stream":{"endpoint":"grpc://h"}}},
                "proxies":[{"name":"nm","endpoint":"http://h/n","grpc":{"compression":true}}],
                "rpc":{"namespaces":[{"name":"r","proxy_enabled":false}]}}"#,
        )
        .unwrap();
        let warn = cfg.notices.iter().find(|n| n.contains("does not implement")).expect("a warning");
        for k in [
            "client.proxy.connect.grpc_metadata",
            "client.proxy.connect.http.tls",
            "channel.proxy.subscribe_stream",
            "proxies[0].grpc",
        ] {
            assert!(warn.contains(k), "{k} in {warn}");
        }
    }

    #[test]
    fn start_up_checks_name_the_key() {
        for (json, needle) in [
            (r#"{"client":{"proxy":{"connect":{"enabled":true}}}}"#, "client.proxy.connect.endpoint"),
            (r#"{"client":{"proxy":{"refresh":{"enabled":true,"endpoint":"grpc://h:1"}}}}"#, "gRPC"),
            (r#"{"client":{"proxy":{"connect":{"enabled":true,"endpoint":"http://h","timeout":"0"}}}}"#, "timeout"),
            (r#"{"channel":{"namespaces":[{"name":"a","subscribe_proxy_enabled":true}]}}"#, "channel.proxy.subscribe"),
            (
                r#"{"channel":{"without_namespace":{"publish_proxy_enabled":true,"publish_proxy_name":"x"}}}"#,
                "publish_proxy_name",
            ),
            (r#"{"proxies":[{"name":"default","endpoint":"http://h"}]}"#, "reserved"),
            (r#"{"proxies":[{"name":"a b","endpoint":"http://h"}]}"#, "proxies[0].name"),
            (r#"{"proxies":[{"name":"ab","endpoint":"http://h"},{"name":"ab","endpoint":"http://h"}]}"#, "twice"),
            (r#"{"rpc":{"without_namespace":{"proxy_enabled":true}}}"#, "rpc.proxy.endpoint"),
            (r#"{"rpc":{"namespaces":[{"name":"x","proxy_name":"nope"}]}}"#, "rpc.namespaces[0].proxy_name"),
            (
                r#"{"proxies":[{"name":"ab","endpoint":"http://h","http":{"status_to_code_transforms":[{"status_code":404}]}}]}"#,
                "status_to_code_transforms[0]",
            ),
            (r#"{"proxies":[{"name":"ab","endpoint":"http://h","http_headers":["a b"]}]}"#, "header name"),
        ] {
            let e = Config::from_json(json).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }
}
