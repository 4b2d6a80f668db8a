//! Who may read a channel: one decision per (channel, credentials), used by every endpoint.
//!
//! Owns: [`subscribe`], the rule set shared by the simple endpoints (`/messages/`,
//! `/listen/`, `/stream/`, `/sse/`, `/ws/`: no credentials, so they ask as
//! [`Who::Anonymous`]) and the Centrifugo protocol's subscribe without a subscription token
//! (as [`Who::Client`]). Called by the endpoints before they read history or subscribe.
//! Pure over the configuration: no IO, no clock.
//!
//! Rules, in order:
//! 1. a private channel (`$` prefix, also after a namespace: `ns:$x`) needs a subscription
//!    token: refused to anyone without one;
//! 2. a user-limited channel (`ns:name#42,43` in a namespace with
//!    `allow_user_limited_channels`) is for the users it names: refused to anonymous
//!    readers and to other users;
//! 3. a channel of a configured namespace needs `allow_subscribe_for_client`, and for an
//!    anonymous reader also `allow_subscribe_for_anonymous`;
//! 4. `simple_access_namespaces` opens a namespace's channels (rules 2 and 3, not 1) to
//!    the simple endpoints.
//!
//! Channels with no namespace (or a prefix that names no configured namespace) stay open
//! to the simple endpoints: that is their documented contract. A Centrifugo client is
//! held to `channel.without_namespace` there, and an undefined namespace is "unknown
//! channel" (102) for it, as in Centrifugo.

use crate::config::Config;

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    /// A simple endpoint: no credentials at all.
    Anonymous,
    /// A connected Centrifugo client (`user` is "" when it connected without a token).
    Client {
        /// Its user id.
        user: &'a str,
    },
}

/// Why a read was refused (mapped to HTTP 403 with this text, or Centrifugo's 103).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Rule 1.
    Private,
    /// Rule 2.
    UserLimited,
    /// Rule 3: the namespace does not let clients subscribe.
    NoClientSubscribe(String),
    /// Rule 3: the namespace does not let anonymous clients subscribe.
    NoAnonymousSubscribe(String),
    /// A Centrifugo client named a namespace that is not configured.
    UnknownNamespace,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::Private => f.write_str("private channel: it needs a subscription token (Centrifugo protocol)"),
            Denied::UserLimited => f.write_str("user-limited channel: only the users it names may read it"),
            Denied::NoClientSubscribe(ns) => {
                write!(f, "namespace `{ns}` does not allow client subscriptions (allow_subscribe_for_client)")
            }
            Denied::NoAnonymousSubscribe(ns) => write!(
                f,
                "namespace `{ns}` does not allow anonymous subscriptions (allow_subscribe_for_anonymous; \
                 or list it in simple_access_namespaces)"
            ),
            Denied::UnknownNamespace => f.write_str("unknown channel namespace"),
        }
    }
}

/// May `who` read `channel` (subscribe, or read its history on a simple endpoint)?
pub fn subscribe(cfg: &Config, channel: &str, who: Who<'_>) -> Result<(), Denied> {
    let chans = &cfg.channel;
    if chans.is_private(channel) {
        return Err(Denied::Private);
    }
    let resolved = chans.resolve(channel);
    let (ns, opts) = match (resolved, who) {
        (Some(r), _) => r,
        (None, Who::Anonymous) => return Ok(()),
        (None, Who::Client { .. }) => return Err(Denied::UnknownNamespace),
    };
    if ns.is_empty() && matches!(who, Who::Anonymous) {
        return Ok(());
    }
    if matches!(who, Who::Anonymous) && cfg.simple_access_namespaces.iter().any(|n| n == ns) {
        return Ok(());
    }
    if opts.allow_user_limited_channels {
        if let Some(mut users) = chans.limited_users(channel) {
            return match who {
                Who::Client { user } if !user.is_empty() && users.any(|u| u == user) => Ok(()),
                _ => Err(Denied::UserLimited),
            };
        }
    }
    if !opts.allow_subscribe_for_client {
        return Err(Denied::NoClientSubscribe(ns.to_string()));
    }
    let anonymous = match who {
        Who::Anonymous => true,
        Who::Client { user } => user.is_empty(),
    };
    if anonymous && !opts.allow_subscribe_for_anonymous {
        return Err(Denied::NoAnonymousSubscribe(ns.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Config {
        Config::from_json(json).unwrap()
    }

    const NS: &str = r#"{"channel":{"without_namespace":{"allow_subscribe_for_client":true},
        "namespaces":[
          {"name":"secret"},
          {"name":"members","allow_subscribe_for_client":true},
          {"name":"public","allow_subscribe_for_client":true,"allow_subscribe_for_anonymous":true},
          {"name":"personal","allow_user_limited_channels":true,"allow_subscribe_for_client":true}]}}"#;

    #[test]
    fn simple_endpoints() {
        let c = cfg(NS);
        let a = Who::Anonymous;
        assert_eq!(subscribe(&c, "news", a), Ok(()), "no namespace: open");
        assert_eq!(subscribe(&c, "nope:x", a), Ok(()), "undefined namespace: plain channel");
        assert_eq!(subscribe(&c, "$private", a), Err(Denied::Private));
        assert_eq!(subscribe(&c, "public:$x", a), Err(Denied::Private));
        assert_eq!(subscribe(&c, "secret:plans", a), Err(Denied::NoClientSubscribe("secret".into())));
        assert_eq!(subscribe(&c, "members:x", a), Err(Denied::NoAnonymousSubscribe("members".into())));
        assert_eq!(subscribe(&c, "public:x", a), Ok(()));
        assert_eq!(subscribe(&c, "personal:#42", a), Err(Denied::UserLimited));
        assert!(subscribe(&c, "secret:plans", a).unwrap_err().to_string().contains("allow_subscribe_for_client"));
    }

    #[test]
    fn opt_in_namespace() {
        let json = NS.replacen("{\"channel\"", "{\"simple_access_namespaces\":[\"secret\"],\"channel\"", 1);
        let c = cfg(&json);
        assert_eq!(subscribe(&c, "secret:plans", Who::Anonymous), Ok(()));
        assert_eq!(subscribe(&c, "$secret:plans", Who::Anonymous), Err(Denied::Private), "private stays closed");
        assert!(Config::from_json(r#"{"simple_access_namespaces":["missing"]}"#).is_err());
    }

    #[test]
    fn centrifugo_clients() {
        let c = cfg(NS);
        let u = Who::Client { user: "42" };
        let anon = Who::Client { user: "" };
        assert_eq!(subscribe(&c, "news", u), Ok(()));
        assert_eq!(subscribe(&c, "nope:x", u), Err(Denied::UnknownNamespace));
        assert_eq!(subscribe(&c, "members:x", u), Ok(()));
        assert_eq!(subscribe(&c, "members:x", anon), Err(Denied::NoAnonymousSubscribe("members".into())));
        assert_eq!(subscribe(&c, "personal:#42", u), Ok(()));
        assert_eq!(subscribe(&c, "personal:#43", u), Err(Denied::UserLimited));
        assert_eq!(subscribe(&c, "personal:#42", anon), Err(Denied::UserLimited));
    }

    #[test]
    fn namespace_boundary() {
        let c = cfg(r#"{"client":{"channel_namespace_boundary":"/"},"channel":{"namespaces":[{"name":"secret"}]}}"#);
        assert_eq!(subscribe(&c, "secret/plans", Who::Anonymous), Err(Denied::NoClientSubscribe("secret".into())));
        assert_eq!(subscribe(&c, "secret:plans", Who::Anonymous), Ok(()));
    }
}
