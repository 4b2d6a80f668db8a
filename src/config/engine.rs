//! Centrifugo v6's `engine` section: `type` (`memory`, the embedded default, or `redis`)
//! and `engine.redis` (addresses, key prefix, credentials, database, timeouts). Key names
//! are Centrifugo's; its other Redis keys (Sentinel, Cluster, TLS to Redis...) are named in
//! the start-up warning like every known key Herald does not implement.
//!
//! Owns: parsing and checking the section, and resolving addresses into socket addresses
//! at start-up (with an error naming the address that is wrong).

use super::centrifugo::Duration;
use serde::Deserialize;

/// `engine`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// `memory` (default) or `redis`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `engine.redis`.
    pub redis: RedisConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { kind: "memory".into(), redis: RedisConfig::default() }
    }
}

/// Addresses given as one string or a list.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Addresses {
    /// `"redis://127.0.0.1:6379"`.
    One(String),
    /// `["redis://a:6379", "redis://b:6379"]`: one shard each.
    Many(Vec<String>),
}

impl Addresses {
    /// The addresses in order.
    pub fn list(&self) -> Vec<String> {
        match self {
            Addresses::One(s) => s.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect(),
            Addresses::Many(v) => v.clone(),
        }
    }
}

/// `engine.redis`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// One address per shard: `redis://[user:password@]host:port[/db]`, `host:port`, or
    /// `tcp://host:port`. Channels are spread over the shards by name (jump consistent
    /// hashing: adding a shard moves about 1/n of the channels).
    pub address: Addresses,
    /// Prefix of every key and pub/sub channel.
    pub prefix: String,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long a command may wait for its answer before the connection is dropped and
    /// its commands fail.
    pub io_timeout: Duration,
    /// Database number (`SELECT`), unless the address names one.
    pub db: u32,
    /// ACL user, unless the address names one.
    pub user: String,
    /// Password, unless the address names one.
    pub password: String,
    /// How long a presence entry lives in Redis without a refresh (its node refreshes it
    /// every third of this): how soon a dead node's clients leave presence.
    pub presence_ttl: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            address: Addresses::Many(vec!["redis://127.0.0.1:6379".into()]),
            prefix: "centrifugo".into(),
            connect_timeout: Duration(1000),
            io_timeout: Duration(4000),
            db: 0,
            user: String::new(),
            password: String::new(),
            presence_ttl: Duration(60_000),
        }
    }
}

/// One shard's address, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAddress {
    /// As written in the configuration (for messages).
    pub text: String,
    /// `host:port`.
    pub host_port: String,
    /// ACL user.
    pub user: String,
    /// Password.
    pub password: String,
    /// Database.
    pub db: u32,
}

impl RedisConfig {
    /// Parse every address (credentials and db in the address win over the section's).
    pub fn addresses(&self) -> Result<Vec<RedisAddress>, String> {
        let list = self.address.list();
        if list.is_empty() {
            return Err("engine.redis.address is empty: name at least one Redis (redis://host:port)".into());
        }
        list.iter().map(|a| self.parse(a)).collect()
    }

    fn parse(&self, text: &str) -> Result<RedisAddress, String> {
        let bad = |why: &str| format!("engine.redis.address `{text}`: {why}");
        let rest = if let Some(r) = text.strip_prefix("redis://") {
            r
        } else if let Some(r) = text.strip_prefix("tcp://") {
            r
        } else if text.contains("://") {
            return Err(bad(
                "only redis:// and tcp:// addresses are supported (no TLS, unix sockets, Sentinel or Cluster)",
            ));
        } else {
            text
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (host_port, db) = match rest.split_once('/') {
            Some((h, d)) if !d.is_empty() => {
                (h, Some(d.parse::<u32>().map_err(|_| bad("the database must be a number"))?))
            }
            Some((h, _)) => (h, None),
            None => (rest, None),
        };
        let (host, port) = host_port.rsplit_once(':').ok_or_else(|| bad("expected host:port"))?;
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        port.parse::<u16>().map_err(|_| bad("the port must be a number from 1 to 65535"))?;
        let (mut user, mut password) = (self.user.clone(), self.password.clone());
        if let Some(a) = auth {
            match a.split_once(':') {
                Some((u, p)) => {
                    user = u.to_string();
                    password = p.to_string();
                }
                None => password = a.to_string(),
            }
        }
        Ok(RedisAddress {
            text: text.to_string(),
            host_port: host_port.to_string(),
            user,
            password,
            db: db.unwrap_or(self.db),
        })
    }
}

impl EngineConfig {
    /// Check the section (type known, addresses well formed).
    pub fn validate(&self) -> Result<(), String> {
        match self.kind.as_str() {
            "memory" => Ok(()),
            "redis" => self.redis.addresses().map(|_| ()),
            other => Err(format!(
                "engine.type `{other}` is not available in Herald (memory, the embedded default, or redis)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let mut c = RedisConfig { password: "pw".into(), ..Default::default() };
        let a = c.addresses().unwrap();
        assert_eq!((a[0].host_port.as_str(), a[0].password.as_str(), a[0].db), ("127.0.0.1:6379", "pw", 0));
        c.address = Addresses::Many(vec!["redis://u:p@h:1/3".into(), "h2:2".into()]);
        let a = c.addresses().unwrap();
        assert_eq!(
            (a[0].user.as_str(), a[0].password.as_str(), a[0].db, a[0].host_port.as_str()),
            ("u", "p", 3, "h:1")
        );
        assert_eq!(a[1].host_port, "h2:2");
        c.address = Addresses::One("a:1,b:2".into());
        assert_eq!(c.addresses().unwrap().len(), 2);
        for bad in ["rediss://h:1", "h", "h:x", ":1", "redis://h:1/x"] {
            c.address = Addresses::One(bad.into());
            let e = c.addresses().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        c.address = Addresses::Many(vec![]);
        assert!(c.addresses().is_err());
    }
}
