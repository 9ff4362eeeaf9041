//! What a session may reach: allowlist entries, the allowlist, and a session's policy
//! within the operator's ceiling.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An entry that cannot be read, or a policy the operator does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetPolicyError {
    #[error("The network entry {entry:?} is not a host name, a *.wildcard, an IP address or a CIDR (each with an optional :PORT); write it like pypi.example.org, *.example.org:443 or 10.0.0.0/8.")]
    BadEntry { entry: String },
    #[error("The network entry {entry:?} has a port that is not a number from 1 to 65535; write it like example.org:443.")]
    BadPort { entry: String },
    #[error("The package index {url:?} is not an http:// or https:// URL with a host; write it like https://pypi.example.org/simple/.")]
    BadIndex { url: String },
    #[error("The network entry {entry:?} is outside what the operator allows; ask for an entry within {ceiling}.")]
    OutsideCeiling { entry: String, ceiling: String },
}

/// Which hosts an entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// One host name, lower case, without a trailing dot.
    Name(String),
    /// Every name under this one (`*.example.org`: `a.example.org`, not `example.org`).
    Wildcard(String),
    /// An address range the operator listed: reachable even when private or loopback.
    Net { addr: IpAddr, prefix: u8 },
}

/// One allowlist entry: `host`, `*.domain`, `IP` or `CIDR`, each with an optional
/// `:PORT` (IPv6 with a port as `[::1]:8080`). Without a port, every port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetEntry {
    target: Target,
    port: Option<u16>,
}

impl FromStr for NetEntry {
    type Err = NetPolicyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || NetPolicyError::BadEntry {
            entry: text.to_string(),
        };
        let trimmed = text.trim();
        if trimmed.contains("://") {
            return Err(bad());
        }
        let (host, port) = split_port(trimmed).ok_or_else(bad)?;
        let port = match port {
            None => None,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => Some(port),
                _ => {
                    return Err(NetPolicyError::BadPort {
                        entry: text.to_string(),
                    })
                }
            },
        };
        let target = if let Some((addr, prefix)) = host.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let prefix: u8 = prefix.parse().map_err(|_| bad())?;
            if prefix > max_prefix(addr) {
                return Err(bad());
            }
            Target::Net {
                addr: masked(addr, prefix),
                prefix,
            }
        } else if let Ok(addr) = host.parse::<IpAddr>() {
            Target::Net {
                addr,
                prefix: max_prefix(addr),
            }
        } else if let Some(domain) = host.strip_prefix("*.") {
            Target::Wildcard(host_name(domain).ok_or_else(bad)?)
        } else {
            Target::Name(host_name(host).ok_or_else(bad)?)
        };
        Ok(Self { target, port })
    }
}

impl fmt::Display for NetEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.target {
            Target::Name(name) => name.clone(),
            Target::Wildcard(domain) => format!("*.{domain}"),
            Target::Net { addr, prefix } if *prefix == max_prefix(*addr) => match (addr, self.port)
            {
                (IpAddr::V6(v6), Some(_)) => format!("[{v6}]"),
                _ => addr.to_string(),
            },
            Target::Net { addr, prefix } => format!("{addr}/{prefix}"),
        };
        match self.port {
            Some(port) => write!(f, "{host}:{port}"),
            None => f.write_str(&host),
        }
    }
}

impl NetEntry {
    fn port_allows(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// Whether a request for `name` (a host name, lower case) may go ahead by name.
    fn names(&self, name: &str, port: u16) -> bool {
        self.port_allows(port)
            && match &self.target {
                Target::Name(listed) => listed == name,
                Target::Wildcard(domain) => is_under(name, domain),
                Target::Net { .. } => false,
            }
    }

    /// Whether the operator listed this address (and port) explicitly.
    fn lists(&self, addr: IpAddr, port: u16) -> bool {
        self.port_allows(port)
            && match self.target {
                Target::Net { addr: net, prefix } => contains(net, prefix, addr),
                _ => false,
            }
    }

    /// Whether everything `other` allows, this entry allows too.
    fn covers(&self, other: &NetEntry) -> bool {
        let ports = self.port.is_none() || self.port == other.port;
        ports
            && match (&self.target, &other.target) {
                (Target::Name(a), Target::Name(b)) => a == b,
                (Target::Wildcard(a), Target::Wildcard(b)) => a == b || is_under(b, a),
                (Target::Wildcard(domain), Target::Name(name)) => is_under(name, domain),
                (
                    Target::Net { addr, prefix },
                    Target::Net {
                        addr: inner,
                        prefix: inner_prefix,
                    },
                ) => prefix <= inner_prefix && contains(*addr, *prefix, *inner),
                _ => false,
            }
    }
}

/// The entries a session (or the operator's ceiling) allows; empty allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<NetEntry>,
}

impl Allowlist {
    /// Reads each entry; the first that cannot be read is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, NetPolicyError> {
        let entries = entries
            .iter()
            .map(|entry| entry.as_ref().parse())
            .collect::<Result<Vec<NetEntry>, _>>()?;
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries as the operator would write them.
    pub fn to_strings(&self) -> Vec<String> {
        self.entries.iter().map(NetEntry::to_string).collect()
    }

    /// Whether a request for the host name `name` on `port` is on the list by name.
    pub fn allows_name(&self, name: &str, port: u16) -> bool {
        self.entries.iter().any(|entry| entry.names(name, port))
    }

    /// Whether the operator listed `addr` (with `port`) as an address or range, which
    /// makes it reachable even when it is private or loopback.
    pub fn lists_address(&self, addr: IpAddr, port: u16) -> bool {
        self.entries.iter().any(|entry| entry.lists(addr, port))
    }

    /// Whether an entry of this list allows everything `entry` does.
    fn covers(&self, entry: &NetEntry) -> bool {
        self.entries.iter().any(|own| own.covers(entry))
    }

    /// The entries of this list that `ceiling` allows.
    pub fn narrowed_to(&self, ceiling: &Allowlist) -> Allowlist {
        Allowlist {
            entries: self
                .entries
                .iter()
                .filter(|entry| ceiling.covers(entry))
                .cloned()
                .collect(),
        }
    }

    /// Ok when every entry of this list is allowed by an entry of `ceiling`.
    pub fn within(&self, ceiling: &Allowlist) -> Result<(), NetPolicyError> {
        match self.entries.iter().find(|entry| !ceiling.covers(entry)) {
            None => Ok(()),
            Some(entry) => Err(NetPolicyError::OutsideCeiling {
                entry: entry.to_string(),
                ceiling: if ceiling.is_empty() {
                    "nothing (the operator allows no network)".into()
                } else {
                    ceiling.to_strings().join(", ")
                },
            }),
        }
    }
}

impl fmt::Display for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strings().join(", "))
    }
}

/// The package index `%pip install` uses: its URL, and the one host and port it may
/// reach for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageIndex {
    url: String,
    host: NetEntry,
}

impl PackageIndex {
    /// An `http://` or `https://` URL; its host (name or address) and port become the one
    /// entry of the package proxy's allowlist.
    pub fn parse(url: &str) -> Result<Self, NetPolicyError> {
        let bad = || NetPolicyError::BadIndex {
            url: url.to_string(),
        };
        let (rest, default_port) = if let Some(rest) = url.strip_prefix("http://") {
            (rest, 80)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (rest, 443)
        } else {
            return Err(bad());
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        let (host, port) = split_port(authority).ok_or_else(bad)?;
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(bad)?,
            None => default_port,
        };
        let host = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        let host = host.parse().map_err(|_| bad())?;
        Ok(Self {
            url: url.to_string(),
            host,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The index's host and port, as an allowlist of one.
    pub fn allowlist(&self) -> Allowlist {
        Allowlist {
            entries: vec![self.host.clone()],
        }
    }
}

/// A session's network: none (the default), or an allowlist reached through the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetPolicy {
    #[default]
    None,
    Allowlist(Allowlist),
}

impl NetPolicy {
    /// An empty list is no network at all.
    pub fn from_allowlist(allowlist: Allowlist) -> Self {
        if allowlist.is_empty() {
            Self::None
        } else {
            Self::Allowlist(allowlist)
        }
    }

    /// The allowlist, when the policy has one.
    pub fn allowlist(&self) -> Option<&Allowlist> {
        match self {
            Self::None => None,
            Self::Allowlist(list) => Some(list),
        }
    }

    /// One line for people: `none`, or `allowlist: a, b`.
    pub fn describe(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Allowlist(list) => format!("allowlist: {list}"),
        }
    }
}

/// Whether `name` is a name under `domain` (`a.example.org` under `example.org`).
fn is_under(name: &str, domain: &str) -> bool {
    name.strip_suffix(domain)
        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
}

/// `host[:port]`, `[v6]:port`, or a bare IPv6 address or range (no port).
fn split_port(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match text.matches(':').count() {
        0 => Some((text, None)),
        1 => text.split_once(':').map(|(h, p)| (h, Some(p))),
        _ => Some((text, None)), // IPv6 without a port
    }
}

/// A host name as it is compared: lower case, no trailing dot, letters, digits, `-`,
/// `_` and dots only.
pub(crate) fn host_name(text: &str) -> Option<String> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(name)
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(addr: IpAddr, prefix: u8) -> u128 {
    let width = u32::from(max_prefix(addr));
    let host_bits = width - u32::from(prefix);
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    all.checked_shl(host_bits).map_or(0, |m| m & all)
}

fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    let value = bits(addr) & mask(addr, prefix);
    match addr {
        IpAddr::V4(_) => IpAddr::V4((value as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(value.into()),
    }
}

/// Whether `addr` lies in `net/prefix` (same family only).
pub(crate) fn contains(net: IpAddr, prefix: u8, addr: IpAddr) -> bool {
    net.is_ipv4() == addr.is_ipv4() && bits(addr) & mask(net, prefix) == bits(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::parse(entries).unwrap()
    }

    #[test]
    fn entries_read_and_print_as_written() {
        for text in [
            "pypi.example.org",
            "pypi.example.org:443",
            "*.example.org",
            "*.example.org:8443",
            "127.0.0.1:8080",
            "10.0.0.0/8",
            "10.0.0.0/8:3128",
            "::1",
            "[::1]:8080",
            "fd00::/8",
        ] {
            let entry: NetEntry = text.parse().unwrap();
            assert_eq!(entry.to_string(), text);
        }
        assert_eq!(
            "PyPI.Example.org.".parse::<NetEntry>().unwrap().to_string(),
            "pypi.example.org"
        );
        assert_eq!(
            "10.1.2.3/8".parse::<NetEntry>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn bad_entries_say_what_to_write() {
        for text in [
            "",
            "http://x.org",
            "a b",
            "10.0.0.0/33",
            "*.",
            "x..org",
            "[::1",
        ] {
            let error = text.parse::<NetEntry>().unwrap_err();
            assert!(matches!(error, NetPolicyError::BadEntry { .. }), "{text}");
            assert!(error.to_string().ends_with('.'));
        }
        for text in ["x.org:0", "x.org:65536", "x.org:http"] {
            assert!(matches!(
                text.parse::<NetEntry>(),
                Err(NetPolicyError::BadPort { .. })
            ));
        }
    }

    #[test]
    fn names_match_exactly_or_under_a_wildcard() {
        let allowed = list(&["pypi.example.org", "*.data.example.org:443"]);
        assert!(allowed.allows_name("pypi.example.org", 80));
        assert!(!allowed.allows_name("evil-pypi.example.org", 80));
        assert!(allowed.allows_name("a.data.example.org", 443));
        assert!(allowed.allows_name("a.b.data.example.org", 443));
        assert!(!allowed.allows_name("a.data.example.org", 80));
        assert!(!allowed.allows_name("data.example.org", 443));
        assert!(!allowed.allows_name("xdata.example.org", 443));
    }

    #[test]
    fn addresses_are_listed_only_explicitly() {
        let allowed = list(&["127.0.0.1:8080", "10.0.0.0/8", "example.org"]);
        assert!(allowed.lists_address("127.0.0.1".parse().unwrap(), 8080));
        assert!(!allowed.lists_address("127.0.0.1".parse().unwrap(), 8081));
        assert!(allowed.lists_address("10.200.0.1".parse().unwrap(), 22));
        assert!(!allowed.lists_address("11.0.0.1".parse().unwrap(), 22));
        assert!(!allowed.lists_address("::ffff:10.0.0.1".parse().unwrap(), 22));
    }

    #[test]
    fn a_package_index_allows_its_host_and_port() {
        for (url, entry) in [
            ("https://pypi.example.org/simple/", "pypi.example.org:443"),
            ("http://127.0.0.1:8080/simple/", "127.0.0.1:8080"),
            ("http://[::1]:81/simple", "[::1]:81"),
            ("http://Mirror.example.org", "mirror.example.org:80"),
        ] {
            let index = PackageIndex::parse(url).unwrap();
            assert_eq!(index.allowlist().to_string(), entry, "{url}");
            assert_eq!(index.url(), url);
        }
        for url in [
            "ftp://x.org/",
            "https:///simple",
            "x.org/simple",
            "http://u:p@x.org/",
            "http://x.org:0/",
        ] {
            assert!(
                matches!(
                    PackageIndex::parse(url),
                    Err(NetPolicyError::BadIndex { .. })
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn a_session_asks_within_the_ceiling() {
        let ceiling = list(&["*.example.org", "pypi.org:443", "10.0.0.0/8"]);
        for inside in [
            "a.example.org",
            "a.example.org:443",
            "*.b.example.org",
            "pypi.org:443",
            "10.1.0.0/16",
            "10.1.2.3:80",
        ] {
            assert_eq!(list(&[inside]).within(&ceiling), Ok(()), "{inside}");
        }
        for outside in [
            "example.org",
            "pypi.org",
            "pypi.org:80",
            "other.org",
            "10.0.0.0/7",
            "11.0.0.1",
            "127.0.0.1",
        ] {
            let error = list(&[outside]).within(&ceiling).unwrap_err();
            assert!(matches!(error, NetPolicyError::OutsideCeiling { .. }));
        }
        assert!(list(&["a.org"]).within(&Allowlist::default()).is_err());
        assert_eq!(
            list(&["a.example.org", "other.org", "10.1.0.0/16"]).narrowed_to(&ceiling),
            list(&["a.example.org", "10.1.0.0/16"])
        );
        assert_eq!(Allowlist::default().within(&Allowlist::default()), Ok(()));
    }
}
