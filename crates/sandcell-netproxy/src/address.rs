//! Addresses a name may never lead to: the host itself, its networks, and the cloud's
//! metadata service. Only an address the operator listed explicitly gets past this.

use crate::policy::contains;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not on the public internet, or `None` when it is.
pub(crate) fn special_kind(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => {
            // An IPv4 address written as IPv6 (mapped, or NAT64's well-known prefix) is
            // judged as the IPv4 address it reaches.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_kind(v4);
            }
            let nat64: IpAddr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0).into();
            if contains(nat64, 96, addr) {
                let low = (u128::from(v6) & 0xffff_ffff) as u32;
                return v4_kind(Ipv4Addr::from(low));
            }
            v6_kind(v6)
        }
    }
}

fn v4_kind(v4: Ipv4Addr) -> Option<&'static str> {
    let in_net = |net: [u8; 4], prefix: u8| contains(Ipv4Addr::from(net).into(), prefix, v4.into());
    if v4 == Ipv4Addr::new(169, 254, 169, 254) {
        Some("the cloud metadata address")
    } else if in_net([0, 0, 0, 0], 8) {
        Some("an unspecified address")
    } else if in_net([127, 0, 0, 0], 8) {
        Some("a loopback address")
    } else if in_net([10, 0, 0, 0], 8)
        || in_net([172, 16, 0, 0], 12)
        || in_net([192, 168, 0, 0], 16)
    {
        Some("a private address")
    } else if in_net([169, 254, 0, 0], 16) {
        Some("a link-local address")
    } else if in_net([100, 64, 0, 0], 10) {
        Some("a shared (CGNAT) address")
    } else if in_net([224, 0, 0, 0], 4) {
        Some("a multicast address")
    } else if in_net([240, 0, 0, 0], 4) {
        Some("a reserved address")
    } else {
        None
    }
}

fn v6_kind(v6: Ipv6Addr) -> Option<&'static str> {
    let addr = IpAddr::V6(v6);
    let in_net = |net: Ipv6Addr, prefix: u8| contains(net.into(), prefix, addr);
    if v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254) {
        Some("the cloud metadata address")
    } else if v6.is_unspecified() {
        Some("an unspecified address")
    } else if v6.is_loopback() {
        Some("a loopback address")
    } else if in_net(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7) {
        Some("a private address")
    } else if in_net(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10) {
        Some("a link-local address")
    } else if v6.is_multicast() {
        Some("a multicast address")
    } else if v6.to_ipv4().is_some() {
        // The deprecated IPv4-compatible form (::a.b.c.d).
        Some("a reserved address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_own_networks_are_special() {
        for special in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fd00:ec2::254",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(
                special_kind(special.parse().unwrap()).is_some(),
                "{special}"
            );
        }
        assert_eq!(
            special_kind("169.254.169.254".parse().unwrap()),
            Some("the cloud metadata address")
        );
    }

    #[test]
    fn public_addresses_are_not() {
        for public in [
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "64:ff9b::101:101",
        ] {
            assert_eq!(special_kind(public.parse().unwrap()), None, "{public}");
        }
    }
}
