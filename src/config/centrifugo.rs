//! Centrifugo v6 configuration sections that Herald understands: `client`, `http_api`,
//! `channel` (namespaces and their options). Key names are Centrifugo's, so a Centrifugo
//! config file for these features works as it is; an unknown key is an error naming it.
//!
//! Owns: parsing and resolving channel options. Called at start-up (parse, validate) and by
//! the Centrifugo transport and API (resolve a channel's namespace).

use serde::{Deserialize, Deserializer};

/// A duration given as Centrifugo does (`"25s"`, `"300ms"`, `"5m"`, `"1h"`) or as a number
/// of seconds; stored in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Duration(pub u64);

impl Duration {
    /// Parse `"1h2m3s"`, `"250ms"`, `"0"`; None when malformed.
    pub fn parse(s: &str) -> Option<Duration> {
        let s = s.trim();
        if s == "0" {
            return Some(Duration(0));
        }
        let mut total: f64 = 0.0;
        let mut rest = s;
        if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            if num_end == 0 {
                return None;
            }
            let n: f64 = rest[..num_end].parse().ok()?;
            rest = &rest[num_end..];
            let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
            let mult = match &rest[..unit_end] {
                "ms" => 1.0,
                "s" => 1000.0,
                "m" => 60_000.0,
                "h" => 3_600_000.0,
                _ => return None,
            };
            rest = &rest[unit_end..];
            total += n * mult;
        }
        Some(Duration(total.round() as u64))
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration(s * 1000)),
            Raw::Text(t) => Duration::parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!("`{t}` is not a duration like \"25s\", \"500ms\", \"5m\""))
            }),
        }
    }
}

/// `client.token`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// HS256 secret for connection and subscription tokens.
    pub hmac_secret_key: String,
    /// If set, tokens must carry this `aud`.
    pub audience: String,
    /// If set, tokens must carry this `iss`.
    pub issuer: String,
    /// PEM public key (`-----BEGIN PUBLIC KEY-----`) for RS256/RS384/RS512 tokens.
    pub rsa_public_key: String,
    /// PEM public key for ES256 (P-256), ES384 (P-384) or ES512 (P-521) tokens.
    pub ecdsa_public_key: String,
    /// `http://` or `https://` URL of a JWK Set: RS* and ES* tokens are checked with the
    /// key their `kid` names, fetched in the background (see `reactor::jwks`). When set, as
    /// in Centrifugo, the HMAC secret and PEM keys above are not used.
    pub jwks_public_endpoint: String,
}

impl TokenConfig {
    /// The public keys configured, parsed (errors name the key).
    pub fn public_keys(&self, section: &str) -> Result<Vec<crate::proto::jwk::PublicKey>, String> {
        let mut keys = Vec::new();
        for (name, pem, rsa) in
            [("rsa_public_key", &self.rsa_public_key, true), ("ecdsa_public_key", &self.ecdsa_public_key, false)]
        {
            if pem.trim().is_empty() {
                continue;
            }
            let k = crate::proto::jwk::PublicKey::from_pem(pem).map_err(|e| format!("key `{section}.{name}`: {e}"))?;
            if matches!(k, crate::proto::jwk::PublicKey::Rsa(_)) != rsa {
                return Err(format!(
                    "key `{section}.{name}`: that is {} key",
                    if rsa { "not an RSA" } else { "an RSA, not an EC" }
                ));
            }
            keys.push(k);
        }
        Ok(keys)
    }
}

/// Check a `jwks_public_endpoint` (`key` names it in errors): an absolute `http://` or
/// `https://` URL with a host. Centrifugo's `{{var}}` templates, filled from
/// `issuer_regex` / `audience_regex` groups, need keys Herald does not implement, so they
/// are refused rather than fetched literally.
pub fn check_jwks_endpoint(key: &str, url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Ok(());
    }
    if url.contains("{{") {
        return Err(format!(
            "key `{key}`: URL templates ({{{{...}}}}) need issuer_regex/audience_regex, which Herald does not implement"
        ));
    }
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("key `{key}`: `{url}` is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
        return Err(format!("key `{key}`: `{url}` must be an http:// or https:// URL with a host"));
    }
    Ok(())
}

/// `client.subscription_token`: a separate secret for subscription tokens (if enabled).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubTokenConfig {
    /// Verify subscription tokens with `hmac_secret_key` below instead of the connection
    /// token settings (`client.token`). Default false; also ignored while the key is empty.
    pub enabled: bool,
    /// HS256 secret for subscription tokens when `enabled`. Default empty. Audience and
    /// issuer are not checked on subscription tokens verified with this key.
    pub hmac_secret_key: String,
    /// PEM public key for RS* subscription tokens when `enabled`.
    pub rsa_public_key: String,
    /// PEM public key for ES256/ES384/ES512 subscription tokens when `enabled`.
    pub ecdsa_public_key: String,
    /// JWK Set URL for RS* / ES* subscription tokens when `enabled` (then, as in
    /// Centrifugo, this section's HMAC secret and PEM keys are not used).
    pub jwks_public_endpoint: String,
}

/// `client`: the Centrifugo client protocol.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// `client.token`: how connection tokens (and, unless `subscription_token` is enabled,
    /// subscription tokens) are verified.
    pub token: TokenConfig,
    /// `client.subscription_token`: an optional separate secret for subscription tokens.
    pub subscription_token: SubTokenConfig,
    /// Origins allowed to open `/connection/*` (empty: any).
    pub allowed_origins: Vec<String>,
    /// Connect with no token as the anonymous user "".
    pub allow_anonymous_connect_without_token: bool,
    /// Server `{}` ping interval.
    pub ping_interval: Duration,
    /// How long a client may take to answer a ping before 3012 "no pong".
    pub pong_timeout: Duration,
    /// Most channels one client may subscribe to (106 limit exceeded above).
    pub channel_limit: usize,
    /// Channel namespace boundary.
    pub channel_namespace_boundary: Option<String>,
    /// `client.proxy`: the connect and refresh proxies.
    pub proxy: super::proxy::ClientProxies,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            token: TokenConfig::default(),
            subscription_token: SubTokenConfig::default(),
            allowed_origins: Vec::new(),
            allow_anonymous_connect_without_token: false,
            ping_interval: Duration(25_000),
            pong_timeout: Duration(8_000),
            channel_limit: 128,
            channel_namespace_boundary: None,
            proxy: Default::default(),
        }
    }
}

/// `http_api`: the server API at `/api`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpApiConfig {
    /// Key expected in `X-API-Key` or `Authorization: apikey KEY`.
    pub key: String,
    /// Allow the API without a key (only sensible behind a firewall).
    pub insecure: bool,
}

/// `admin`: Centrifugo v6's admin web interface settings (`admin.enabled`,
/// `admin.password`, `admin.secret`). In Herald they open the status page (`/status`):
/// the page posts the password to `/status/auth` and gets a token signed with `secret`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Accept the admin password on the status page. Default false.
    pub enabled: bool,
    /// The password to log in to the status page (at least 8 characters when enabled).
    pub password: String,
    /// HMAC-SHA256 key of the login tokens (at least 8 characters when enabled).
    pub secret: String,
}

impl AdminConfig {
    /// Both password and secret are required when enabled.
    pub fn validate(&self) -> Result<(), String> {
        if self.enabled {
            if self.password.len() < 8 {
                return Err("key `admin.password`: must be at least 8 characters when admin.enabled".into());
            }
            if self.secret.len() < 8 {
                return Err("key `admin.secret`: must be at least 8 characters when admin.enabled".into());
            }
        }
        Ok(())
    }
}

/// `websocket`: Centrifugo v6's WebSocket section; Herald reads its permessage-deflate
/// keys. Each one set here overrides Herald's own top-level `ws_compression*` key.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebsocketConfig {
    /// `websocket.compression`: negotiate permessage-deflate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<bool>,
    /// `websocket.compression_min_size`: smaller messages go uncompressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_min_size: Option<usize>,
    /// `websocket.compression_level`: zlib level 1-9.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<u32>,
}

/// Per-namespace channel options (Centrifugo v6 names). Default is deny.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelOptions {
    /// Keep the channel's presence set: each subscriber's client id, user and info is added
    /// on subscribe and removed on unsubscribe or disconnect. Without it `presence` and
    /// `presence_stats` answer 108 "not available".
    pub presence: bool,
    /// Publish a join push when a client subscribes and a leave push when it unsubscribes
    /// or disconnects. A subscriber receives them only if it asked (`join_leave` in its
    /// subscribe request) or `force_push_join_leave` is set; uni-directional clients never do.
    pub join_leave: bool,
    /// Deliver join/leave pushes to every bidirectional subscriber whether or not it asked.
    /// Has no effect unless `join_leave` is on.
    pub force_push_join_leave: bool,
    /// Publications kept in the channel's history (default 0). History, and with it
    /// recovery and the `history` call, is on only when this and `history_ttl` are both
    /// above zero (see [`ChannelOptions::history`]). When `without_namespace` leaves it off,
    /// channels without a namespace keep the top-level `history_size` / `history_ttl_ms`
    /// history for the simple endpoints (see `Config::history_policy`).
    pub history_size: usize,
    /// How long a publication stays in the channel's history (stored in ms; default 0).
    pub history_ttl: Duration,
    /// Make every subscription to a channel with history positioned (the reply carries the
    /// stream position: epoch and offset), as if the client asked for recovery. Herald treats it the same
    /// as `force_recovery`. No effect without history.
    pub force_positioning: bool,
    /// Make every subscription to a channel with history recoverable even if the client did
    /// not ask, so that a client resubscribing with `recover` gets the publications it
    /// missed. No effect without history.
    pub force_recovery: bool,
    /// Any authenticated client may subscribe without a subscription token (anonymous ones
    /// also need `allow_subscribe_for_anonymous`). On the simple endpoints a namespace
    /// without it is refused unless listed in `simple_access_namespaces`.
    pub allow_subscribe_for_client: bool,
    /// Anonymous clients (user "") may subscribe too; only together with
    /// `allow_subscribe_for_client`.
    pub allow_subscribe_for_anonymous: bool,
    /// A client subscribed to the channel may publish to it from the client side.
    pub allow_publish_for_subscriber: bool,
    /// Any client may publish to the channel from the client side, subscribed or not.
    pub allow_publish_for_client: bool,
    /// Anonymous clients may publish too; only together with one of the two options above.
    pub allow_publish_for_anonymous: bool,
    /// A client subscribed to the channel may call `history` on it.
    pub allow_history_for_subscriber: bool,
    /// Any client may call `history` on the channel, subscribed or not.
    pub allow_history_for_client: bool,
    /// The anonymous user (connected without a token) may call `history` too (on top of
    /// one of the two options above).
    pub allow_history_for_anonymous: bool,
    /// A client subscribed to the channel may call `presence` / `presence_stats` on it.
    pub allow_presence_for_subscriber: bool,
    /// Any client may call `presence` / `presence_stats` on the channel, subscribed or not.
    pub allow_presence_for_client: bool,
    /// The anonymous user (connected without a token) may call `presence` /
    /// `presence_stats` too (on top of one of the two options above).
    pub allow_presence_for_anonymous: bool,
    /// Channels whose name ends in `#user1,user2` (see `channel.user_boundary`) may be
    /// subscribed without a token, only by the users listed; anonymous readers are refused.
    pub allow_user_limited_channels: bool,
    /// Subscriptions without a subscription token are decided by the subscribe proxy (user
    /// limited channels a user may read are not asked).
    pub subscribe_proxy_enabled: bool,
    /// Which subscribe proxy: `default` (`channel.proxy.subscribe`) or a `proxies` name.
    pub subscribe_proxy_name: String,
    /// Client publications are decided (and may be rewritten) by the publish proxy instead
    /// of the `allow_publish_*` options.
    pub publish_proxy_enabled: bool,
    /// Which publish proxy: `default` (`channel.proxy.publish`) or a `proxies` name.
    pub publish_proxy_name: String,
    /// Subscriptions with an expiry are extended by the sub_refresh proxy (server side)
    /// instead of a client `sub_refresh` with a new token.
    pub sub_refresh_proxy_enabled: bool,
    /// Which sub_refresh proxy: `default` (`channel.proxy.sub_refresh`) or a `proxies` name.
    pub sub_refresh_proxy_name: String,
}

impl ChannelOptions {
    /// History is on when both size and TTL are set.
    pub fn history(&self) -> bool {
        self.history_size > 0 && self.history_ttl.0 > 0
    }
}

/// A named namespace: `{"name": "chat", ...options}`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Namespace {
    /// The prefix before the namespace boundary (`chat` in `chat:room`): non-empty ASCII
    /// letters, digits, `_` or `-`, unique among namespaces (checked by
    /// [`ChannelConfig::validate`]).
    pub name: String,
    /// Options of every channel in this namespace, given as sibling keys of `name`.
    #[serde(flatten)]
    pub options: ChannelOptions,
}

impl<'de> Deserialize<'de> for Namespace {
    // By hand: serde's `flatten` would swallow unknown keys, and an unknown option must be
    // an error naming it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let name = match map.remove("name") {
            Some(serde_json::Value::String(s)) => s,
            Some(_) => return Err(serde::de::Error::custom("`name` must be a string")),
            None => return Err(serde::de::Error::missing_field("name")),
        };
        let options = ChannelOptions::deserialize(serde_json::Value::Object(map)).map_err(serde::de::Error::custom)?;
        Ok(Namespace { name, options })
    }
}

/// `channel`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// Options of channels with no namespace.
    pub without_namespace: ChannelOptions,
    /// The defined namespaces. A client naming a channel in a namespace not listed here
    /// gets 102 "unknown channel". Default empty.
    pub namespaces: Vec<Namespace>,
    /// Prefix of private channels (subscription token required), default `$`.
    pub private_prefix: Option<String>,
    /// Separator of user ids in user-limited channels, default `#`.
    pub user_boundary: Option<String>,
    /// `channel.proxy`: the proxies namespaces name `default`.
    pub proxy: super::proxy::ChannelProxies,
    /// Separator between namespace and the rest of a channel name, default `:`; set from
    /// `client.channel_namespace_boundary` when the configuration is loaded.
    #[serde(skip)]
    pub namespace_boundary: Option<String>,
}

impl ChannelConfig {
    /// Split `[$]ns:rest` into (namespace name or "", options) — None for an undefined
    /// namespace (error 102 unknown channel).
    pub fn resolve<'a>(&'a self, channel: &str) -> Option<(&'a str, &'a ChannelOptions)> {
        let prefix = self.private_prefix.as_deref().unwrap_or("$");
        let name = channel.strip_prefix(prefix).unwrap_or(channel);
        match name.split_once(self.boundary()) {
            Some((ns, _)) => self.namespaces.iter().find(|n| n.name == ns).map(|n| (n.name.as_str(), &n.options)),
            None => Some(("", &self.without_namespace)),
        }
    }

    /// Whether the channel is private (needs a subscription token).
    pub fn is_private(&self, channel: &str) -> bool {
        let prefix = self.private_prefix.as_deref().unwrap_or("$");
        if prefix.is_empty() {
            return false;
        }
        channel.starts_with(prefix)
            || channel.split_once(self.boundary()).is_some_and(|(_, rest)| rest.starts_with(prefix))
    }

    /// The namespace boundary in use.
    pub fn boundary(&self) -> &str {
        self.namespace_boundary.as_deref().filter(|b| !b.is_empty()).unwrap_or(":")
    }

    /// The users a `#` user-limited channel allows (None if the channel is not one).
    pub fn limited_users<'c>(&self, channel: &'c str) -> Option<impl Iterator<Item = &'c str>> {
        let b = self.user_boundary.as_deref().unwrap_or("#");
        channel.split_once(b).map(|(_, users)| users.split(','))
    }

    /// Check namespace names and option combinations; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        for (i, n) in self.namespaces.iter().enumerate() {
            if n.name.is_empty() || !n.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(format!(
                    "key `channel.namespaces[{i}].name`: `{}` must be non-empty letters, digits, _ or -",
                    n.name
                ));
            }
            if self.namespaces[..i].iter().any(|m| m.name == n.name) {
                return Err(format!("key `channel.namespaces[{i}].name`: namespace `{}` defined twice", n.name));
            }
        }
        Ok(())
    }

    /// History (size, ttl ms) of a channel, None when it has no history.
    pub fn history_of(&self, channel: &str) -> Option<(usize, u64)> {
        self.resolve(channel).map(|(_, o)| o).filter(|o| o.history()).map(|o| (o.history_size, o.history_ttl.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("25s"), Some(Duration(25_000)));
        assert_eq!(Duration::parse("1m30s"), Some(Duration(90_000)));
        assert_eq!(Duration::parse("250ms"), Some(Duration(250)));
        assert_eq!(Duration::parse("1.5h"), Some(Duration(5_400_000)));
        assert_eq!(Duration::parse("0"), Some(Duration(0)));
        assert_eq!(Duration::parse("5x"), None);
        assert_eq!(Duration::parse(""), None);
        assert_eq!(Duration::parse("s"), None);
    }

    #[test]
    fn jwks_endpoints_checked() {
        for ok in ["", "https://idp.example/.well-known/jwks.json", "http://127.0.0.1:8080/keys?x=1", "https://u:p@h/"]
        {
            assert_eq!(check_jwks_endpoint("k", ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("https://idp.example/{{tenant}}/jwks", "templates"),
            ("ftp://idp.example/jwks", "http://"),
            ("/jwks.json", "http://"),
            ("idp.example/jwks", "URL"),
            ("https://", "URL"),
            ("https://exa mple/", "URL"),
        ] {
            let e = check_jwks_endpoint("client.token.jwks_public_endpoint", bad).unwrap_err();
            assert!(e.starts_with("key `client.token.jwks_public_endpoint`") && e.contains(why), "{bad}: {e}");
        }
        let cfg = crate::config::Config::from_json(
            r#"{"client":{"token":{"hmac_secret_key":"s","jwks_public_endpoint":"http://127.0.0.1:1/j"}}}"#,
        )
        .unwrap();
        assert!(
            cfg.notices.iter().any(|n| n.starts_with("not used while `client.token.jwks_public_endpoint`")
                && n.contains("client.token.hmac_secret_key")),
            "{:?}",
            cfg.notices
        );
        assert!(!cfg.notices.iter().any(|n| n.contains("does not implement")), "{:?}", cfg.notices);
        let bad = crate::config::Config::from_json(
            r#"{"client":{"subscription_token":{"enabled":true,"jwks_public_endpoint":"gopher://x"}}}"#,
        );
        assert!(bad.unwrap_err().contains("client.subscription_token.jwks_public_endpoint"));
    }

    #[test]
    fn namespaces() {
        let c: ChannelConfig = serde_json::from_str(
            r#"{"without_namespace":{"allow_subscribe_for_client":true},
                "namespaces":[{"name":"chat","history_size":10,"history_ttl":"60s","presence":true}]}"#,
        )
        .unwrap();
        assert_eq!(c.resolve("news").unwrap().0, "");
        assert!(c.resolve("news").unwrap().1.allow_subscribe_for_client);
        assert_eq!(c.resolve("chat:room").unwrap().0, "chat");
        assert_eq!(c.resolve("$chat:room").unwrap().0, "chat");
        assert!(c.resolve("nope:room").is_none());
        assert!(c.is_private("$secret"));
        assert!(c.is_private("chat:$secret"));
        assert!(!c.is_private("chat:open"));
        assert_eq!(c.history_of("chat:x"), Some((10, 60_000)));
        assert_eq!(c.history_of("news"), None);
        assert_eq!(c.limited_users("chat:dm#1,2").unwrap().collect::<Vec<_>>(), vec!["1", "2"]);
        let bad: Result<ChannelConfig, _> = serde_json::from_str(r#"{"namespaces":[{"name":"a","presenc":true}]}"#);
        assert!(bad.is_err());
        let mut c = c;
        c.namespace_boundary = Some("/".into());
        assert_eq!(c.resolve("chat/room").unwrap().0, "chat");
        assert_eq!(c.resolve("chat:room").unwrap().0, "", "`:` is no boundary any more");
        assert!(c.is_private("chat/$secret"));
    }
}
