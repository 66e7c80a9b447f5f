//! The addresses a TCP listener binds, found as Mosquitto finds them: the
//! listener's address (an IP address, or a host name and every address it
//! resolves to), or the unspecified address of both families without one
//! (the loopback ones for an `http_api` listener); `socket_domain` keeps
//! one family; `bind_interface` puts, for each family, the interface's own
//! address in place of the unspecified one.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use culex_core::conf::{ListenerConf, ListenerProtocol, SocketDomain};

/// The addresses of a TCP listener, and what to warn about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// In the order to bind them.
    pub(crate) addrs: Vec<SocketAddr>,
    /// Lines for the start-up log.
    pub(crate) warnings: Vec<String>,
}

/// Every interface's addresses: (interface name, address).
pub(crate) type Interfaces = Vec<(String, IpAddr)>;

/// The addresses `listener` (a TCP one) binds. `interfaces` is asked only
/// for `bind_interface`.
///
/// # Errors
///
/// A host name that does not resolve, nothing left of the listener's
/// family, or an interface with no address to bind: the message for the
/// log, as start-up stops.
pub(crate) fn resolve(
    listener: &ListenerConf,
    interfaces: impl FnOnce() -> io::Result<Interfaces>,
) -> Result<Resolved, String> {
    let port = listener.port;
    let mut candidates: Vec<SocketAddr> = match &listener.address {
        // The HTTP API answers to this machine only unless told otherwise.
        None if listener.protocol == ListenerProtocol::HttpApi && listener.bind_interface.is_none() => {
            vec![(Ipv4Addr::LOCALHOST, port).into(), (Ipv6Addr::LOCALHOST, port).into()]
        }
        None => vec![(Ipv4Addr::UNSPECIFIED, port).into(), (Ipv6Addr::UNSPECIFIED, port).into()],
        Some(host) => match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("Error creating listener: {host}: {e}."))?
                .collect(),
        },
    };
    let mut seen = Vec::new();
    candidates.retain(|addr| {
        !seen.contains(addr) && {
            seen.push(*addr);
            true
        }
    });
    candidates.retain(|addr| match listener.socket_domain {
        Some(SocketDomain::Ipv4) => addr.is_ipv4(),
        Some(SocketDomain::Ipv6) => addr.is_ipv6(),
        None => true,
    });
    let host = listener.address.as_deref().unwrap_or("every address");
    if candidates.is_empty() {
        return Err(format!("Error creating listener: {host} has no address of the listener's socket_domain."));
    }
    let Some(interface) = &listener.bind_interface else {
        return Ok(Resolved { addrs: candidates, warnings: Vec::new() });
    };
    let all = interfaces().map_err(|e| format!("Error: cannot list the network interfaces: {e}"))?;
    let mut resolved = Resolved { addrs: Vec::new(), warnings: Vec::new() };
    for candidate in candidates {
        let family = if candidate.is_ipv4() { "IPv4" } else { "IPv6" };
        let of_family: Vec<IpAddr> = all
            .iter()
            .filter(|(name, ip)| name.eq_ignore_ascii_case(interface) && ip.is_ipv4() == candidate.is_ipv4())
            .map(|(_, ip)| *ip)
            .collect();
        let chosen = match listener.address {
            // The listener's own address must be one of the interface's.
            Some(_) => of_family.iter().find(|ip| **ip == candidate.ip()),
            None => of_family.first(),
        };
        match chosen {
            Some(ip) => resolved.addrs.push(SocketAddr::new(*ip, port)),
            None if of_family.is_empty() => resolved
                .warnings
                .push(format!("Warning: Interface {interface} does not support {family} configuration.")),
            None => resolved.warnings.push(format!(
                "Warning: Interface address for {interface} does not match specified listener address ({host})."
            )),
        }
    }
    if resolved.addrs.is_empty() {
        return Err(format!(
            "Error: the listener on port {port} has no address on interface {interface} to bind to{}",
            resolved.warnings.iter().map(|w| format!(" ({w})")).collect::<String>()
        ));
    }
    Ok(resolved)
}

/// This machine's interfaces and their IP addresses.
///
/// # Errors
///
/// When the system cannot list them.
pub(crate) fn system_interfaces() -> io::Result<Interfaces> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(addresses
        .filter_map(|ifa| {
            let address = ifa.address?;
            let ip = match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
                (Some(v4), _) => IpAddr::V4(v4.ip()),
                (_, Some(v6)) => IpAddr::V6(v6.ip()),
                _ => return None,
            };
            Some((ifa.interface_name, ip))
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn listener(address: Option<&str>, domain: Option<SocketDomain>, interface: Option<&str>) -> ListenerConf {
        ListenerConf {
            address: address.map(str::to_owned),
            socket_domain: domain,
            bind_interface: interface.map(str::to_owned),
            ..ListenerConf::new(1883)
        }
    }

    fn interfaces() -> io::Result<Interfaces> {
        Ok(vec![
            ("lo".to_owned(), "127.0.0.1".parse().unwrap()),
            ("lo".to_owned(), "::1".parse().unwrap()),
            ("eth0".to_owned(), "10.0.0.5".parse().unwrap()),
            ("eth0".to_owned(), "10.0.0.6".parse().unwrap()),
        ])
    }

    fn addrs(listener: &ListenerConf) -> Vec<String> {
        resolve(listener, interfaces).unwrap().addrs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn without_an_address_both_families_are_bound_unless_socket_domain_says_one() {
        assert_eq!(addrs(&listener(None, None, None)), ["0.0.0.0:1883", "[::]:1883"]);
        assert_eq!(addrs(&listener(None, Some(SocketDomain::Ipv4), None)), ["0.0.0.0:1883"]);
        assert_eq!(addrs(&listener(None, Some(SocketDomain::Ipv6), None)), ["[::]:1883"]);
        assert_eq!(addrs(&listener(Some("::1"), None, None)), ["[::1]:1883"]);
    }

    #[test]
    fn a_host_name_binds_every_address_it_resolves_to() {
        let bound = addrs(&listener(Some("localhost"), None, None));
        assert!(bound.contains(&"127.0.0.1:1883".to_owned()), "{bound:?}");
        assert_eq!(addrs(&listener(Some("localhost"), Some(SocketDomain::Ipv4), None)), ["127.0.0.1:1883"]);
        let error = resolve(&listener(Some("no-such-host.invalid"), None, None), interfaces).unwrap_err();
        assert!(error.starts_with("Error creating listener: no-such-host.invalid: "), "{error}");
        let error = resolve(&listener(Some("127.0.0.1"), Some(SocketDomain::Ipv6), None), interfaces).unwrap_err();
        assert!(error.contains("no address of the listener's socket_domain"), "{error}");
    }

    #[test]
    fn bind_interface_takes_the_interfaces_address_of_each_family() {
        assert_eq!(addrs(&listener(None, None, Some("lo"))), ["127.0.0.1:1883", "[::1]:1883"]);
        // Names compare without case, as Mosquitto's strcasecmp.
        assert_eq!(addrs(&listener(None, Some(SocketDomain::Ipv4), Some("LO"))), ["127.0.0.1:1883"]);
        // A family the interface lacks is warned about and skipped.
        let resolved = resolve(&listener(None, None, Some("eth0")), interfaces).unwrap();
        assert_eq!(resolved.addrs, ["10.0.0.5:1883".parse::<SocketAddr>().unwrap()]);
        assert_eq!(resolved.warnings, ["Warning: Interface eth0 does not support IPv6 configuration."]);
        // The listener's address must be the interface's (any of them).
        assert_eq!(addrs(&listener(Some("10.0.0.6"), None, Some("eth0"))), ["10.0.0.6:1883"]);
    }

    #[test]
    fn bind_interface_with_nothing_to_bind_stops_start_up() {
        let error = resolve(&listener(Some("127.0.0.1"), None, Some("eth0")), interfaces).unwrap_err();
        assert_eq!(
            error,
            "Error: the listener on port 1883 has no address on interface eth0 to bind to (Warning: Interface \
             address for eth0 does not match specified listener address (127.0.0.1).)"
        );
        let error = resolve(&listener(None, None, Some("wlan9")), interfaces).unwrap_err();
        assert!(error.contains("Interface wlan9 does not support IPv4 configuration."), "{error}");
        assert!(error.contains("Interface wlan9 does not support IPv6 configuration."), "{error}");
    }
}
