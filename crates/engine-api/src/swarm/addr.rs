//! Docker's spellings of a node's addresses (`ListenAddr`, `AdvertiseAddr`, `RemoteAddrs`),
//! turned into the `host:port` the Control API's `Swarm.Init` and `Swarm.Join` take.
//!
//! As in moby: an address is an IP or a network interface's name, with an optional port;
//! `:2377` is every interface. A listen address without a port takes 2377, an advertise
//! address without one takes the listen port, an interface name stands for its (single) IPv4
//! address, and a manager address to join without a port takes 2377. With no advertise
//! address and a listen address on every interface, the machine's one global IPv4 address is
//! advertised; with several, the init is refused with moby's message (with none — a machine
//! with loopback only — the daemon's own choice stands).

use std::net::{IpAddr, Ipv4Addr};

use crate::error::EngineError;

/// The port managers listen on when an address does not say (Docker's).
pub const DEFAULT_PORT: u16 = 2377;

/// A network interface's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub interface: String,
    pub ip: IpAddr,
    pub up: bool,
    pub loopback: bool,
}

/// `host[:port]` split; IPv6 hosts in brackets.
fn split(raw: &str) -> Result<(String, Option<u16>), EngineError> {
    let bad = |why: &str| EngineError::bad_request(format!("invalid address {raw:?}: {why}"));
    if let Some(rest) = raw.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address opened with [ is not closed with ]"))?;
        let port = match after {
            "" => None,
            p => Some(
                parse_port(p.strip_prefix(':').ok_or_else(|| bad("expected :PORT"))?)
                    .ok_or_else(|| bad("the port is not a number from 0 to 65535"))?,
            ),
        };
        return Ok((host.to_string(), port));
    }
    if raw.matches(':').count() > 1 {
        // A bare IPv6 address.
        return Ok((raw.to_string(), None));
    }
    match raw.split_once(':') {
        Some((host, port)) => Ok((
            host.to_string(),
            Some(parse_port(port).ok_or_else(|| bad("the port is not a number from 0 to 65535"))?),
        )),
        None => Ok((raw.to_string(), None)),
    }
}

fn parse_port(p: &str) -> Option<u16> {
    (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .then(|| p.parse().ok())
        .flatten()
}

fn join(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// The IPv4 address of interface `name`, if there is such an interface.
fn interface_ip(
    name: &str,
    interfaces: &[InterfaceAddr],
    field: &str,
) -> Result<Option<IpAddr>, EngineError> {
    let of: Vec<&InterfaceAddr> = interfaces.iter().filter(|i| i.interface == name).collect();
    if of.is_empty() {
        return Ok(None);
    }
    let v4: Vec<IpAddr> = of.iter().map(|i| i.ip).filter(IpAddr::is_ipv4).collect();
    match v4.as_slice() {
        [one] => Ok(Some(*one)),
        [] => Err(EngineError::bad_request(format!(
            "interface {name} has no IPv4 address to use as the {field}"
        ))),
        [a, b, ..] => Err(EngineError::bad_request(format!(
            "interface {name} has more than one IPv4 address ({a} and {b}); give the {field} as \
             an IP address"
        ))),
    }
}

/// A host that is an IP or an interface's name, as an IP.
fn host_ip(host: &str, interfaces: &[InterfaceAddr], field: &str) -> Result<IpAddr, EngineError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    interface_ip(host, interfaces, field)?.ok_or_else(|| {
        EngineError::bad_request(format!(
            "invalid {field} {host:?}: must be an IP address or a network interface (with an \
             optional port number)"
        ))
    })
}

/// The Control API's listen address for Docker's `ListenAddr` (empty: the daemon's
/// `--listen-remote-api`), and its port.
pub fn listen_addr(
    raw: &str,
    interfaces: &[InterfaceAddr],
) -> Result<Option<(IpAddr, u16)>, EngineError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let (host, port) = split(raw)?;
    let ip = if host.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        host_ip(&host, interfaces, "ListenAddr")?
    };
    Ok(Some((ip, port.unwrap_or(DEFAULT_PORT))))
}

/// The Control API's advertise address for Docker's `AdvertiseAddr`, given the listen
/// address chosen (empty: the daemon's choice).
pub fn advertise_addr(
    raw: &str,
    listen: Option<(IpAddr, u16)>,
    interfaces: &[InterfaceAddr],
) -> Result<String, EngineError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return match listen {
            Some((ip, port)) if ip.is_unspecified() => Ok(system_addr(interfaces)?
                .map(|ip| join(ip, port))
                .unwrap_or_default()),
            // The daemon advertises its listen address.
            _ => Ok(String::new()),
        };
    }
    let (host, port) = split(raw)?;
    let ip = host_ip(&host, interfaces, "AdvertiseAddr")?;
    if ip.is_unspecified() {
        return Err(EngineError::bad_request(
            "advertise address must be a non-zero IP address",
        ));
    }
    let port = match (port, listen) {
        (Some(p), _) => p,
        (None, Some((_, p))) => p,
        (None, None) => {
            return Err(EngineError::bad_request(format!(
                "AdvertiseAddr {raw:?} has no port and no ListenAddr gives one: write \
                 {raw}:PORT"
            )));
        }
    };
    Ok(join(ip, port))
}

/// A manager's address to join (`RemoteAddrs`), with Docker's default port.
pub fn remote_addr(raw: &str) -> Result<String, EngineError> {
    let raw = raw.trim();
    let (host, port) = split(raw)?;
    if host.is_empty() {
        return Err(EngineError::bad_request(format!(
            "invalid remote address {raw:?}: name the manager's host"
        )));
    }
    let port = port.unwrap_or(DEFAULT_PORT);
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => join(ip, port),
        Err(_) => format!("{host}:{port}"),
    })
}

/// The machine's one global IPv4 address (moby's `resolveSystemAddr`), `None` if it has none;
/// refused when there are several to choose from.
fn system_addr(interfaces: &[InterfaceAddr]) -> Result<Option<IpAddr>, EngineError> {
    let mut chosen: Option<&InterfaceAddr> = None;
    for a in interfaces {
        if !a.up || a.loopback || !a.ip.is_ipv4() || a.ip.is_loopback() {
            continue;
        }
        if let IpAddr::V4(v4) = a.ip
            && (v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast())
        {
            continue;
        }
        match chosen {
            None => chosen = Some(a),
            Some(c) if c.ip == a.ip => {}
            Some(c) if c.interface == a.interface => {
                return Err(EngineError::bad_request(format!(
                    "could not choose an IP address to advertise since this system has \
                     multiple addresses on interface {} ({} and {})",
                    a.interface, c.ip, a.ip
                )));
            }
            Some(c) => {
                return Err(EngineError::bad_request(format!(
                    "could not choose an IP address to advertise since this system has \
                     multiple addresses on different interfaces ({} on {} and {} on {})",
                    c.ip, c.interface, a.ip, a.interface
                )));
            }
        }
    }
    Ok(chosen.map(|c| c.ip))
}

/// The machine's interface addresses (`getifaddrs`).
pub fn interfaces() -> Vec<InterfaceAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cursor = head;
        while let Some(ifa) = cursor.as_ref() {
            cursor = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            let family = (*ifa.ifa_addr).sa_family as i32;
            let ip = match family {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            };
            out.push(InterfaceAddr {
                interface: name,
                ip,
                up: ifa.ifa_flags & libc::IFF_UP as u32 != 0,
                loopback: ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0,
            });
        }
        libc::freeifaddrs(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, ip: &str) -> InterfaceAddr {
        InterfaceAddr {
            interface: name.into(),
            ip: ip.parse().unwrap(),
            up: true,
            loopback: name == "lo",
        }
    }

    fn machine() -> Vec<InterfaceAddr> {
        vec![
            iface("lo", "127.0.0.1"),
            iface("eth0", "10.1.2.3"),
            iface("eth0", "fe80::1"),
        ]
    }

    #[test]
    fn listen_addresses_as_docker_spells_them() {
        let m = machine();
        let l = |raw: &str| {
            listen_addr(raw, &m)
                .unwrap()
                .map(|(ip, port)| join(ip, port))
        };
        assert_eq!(l("0.0.0.0:2377").as_deref(), Some("0.0.0.0:2377"));
        assert_eq!(l(":4000").as_deref(), Some("0.0.0.0:4000"));
        assert_eq!(l("127.0.0.1").as_deref(), Some("127.0.0.1:2377"));
        assert_eq!(l("eth0:4242").as_deref(), Some("10.1.2.3:4242"));
        assert_eq!(l("[::1]:9").as_deref(), Some("[::1]:9"));
        assert_eq!(l(""), None);
        assert_eq!(listen_addr("nope0:1", &m).unwrap_err().status, 400);
        assert_eq!(listen_addr("1.2.3.4:http", &m).unwrap_err().status, 400);
    }

    #[test]
    fn advertise_addresses_take_the_listen_port() {
        let m = machine();
        let listen = Some(("0.0.0.0".parse().unwrap(), 12345));
        let a = |raw: &str| advertise_addr(raw, listen, &m);
        assert_eq!(a("127.0.0.1").unwrap(), "127.0.0.1:12345");
        assert_eq!(a("127.0.0.1:4000").unwrap(), "127.0.0.1:4000");
        assert_eq!(a("eth0").unwrap(), "10.1.2.3:12345");
        // Listening everywhere, nothing named: the machine's one address.
        assert_eq!(a("").unwrap(), "10.1.2.3:12345");
        let e = a("0.0.0.0").unwrap_err();
        assert_eq!(e.message, "advertise address must be a non-zero IP address");
        assert!(
            a("localhost")
                .unwrap_err()
                .message
                .contains("network interface")
        );
        // Listening on one address: the daemon advertises it.
        let one = Some(("127.0.0.1".parse().unwrap(), 5));
        assert_eq!(advertise_addr("", one, &m).unwrap(), "");
        assert_eq!(advertise_addr("", None, &m).unwrap(), "");
        assert_eq!(
            advertise_addr("10.0.0.1", None, &m).unwrap_err().status,
            400
        );
    }

    #[test]
    fn several_addresses_are_not_chosen_from() {
        let mut m = machine();
        m.push(iface("eth1", "192.168.1.9"));
        let e = advertise_addr("", Some(("0.0.0.0".parse().unwrap(), 1)), &m).unwrap_err();
        assert!(
            e.message.contains(
                "multiple addresses on different interfaces (10.1.2.3 on eth0 and 192.168.1.9 \
                 on eth1)"
            ),
            "{e}"
        );
        // Loopback only: the daemon chooses.
        let lo = vec![iface("lo", "127.0.0.1")];
        assert_eq!(
            advertise_addr("", Some(("0.0.0.0".parse().unwrap(), 1)), &lo).unwrap(),
            ""
        );
    }

    #[test]
    fn remote_addresses_get_dockers_port() {
        assert_eq!(remote_addr("10.0.0.1").unwrap(), "10.0.0.1:2377");
        assert_eq!(remote_addr("10.0.0.1:4000").unwrap(), "10.0.0.1:4000");
        assert_eq!(remote_addr("manager1").unwrap(), "manager1:2377");
        assert_eq!(remote_addr(":4000").unwrap_err().status, 400);
    }

    #[test]
    fn this_machine_has_a_loopback_interface() {
        assert!(interfaces().iter().any(|i| i.ip.is_loopback()));
    }
}
