//! IPv4 subnets and the address pool of one network.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 subnet: a network address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subnet {
    addr: u32,
    prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n`. The address must be the network's own (no host bits set), and the
    /// subnet must hold at least two host addresses (a /30).
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let bad = || format!("{s:?} is not an IPv4 subnet in CIDR notation such as 10.0.9.0/24");
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        if addr.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(format!(
                "{s:?} is an IPv6 subnet; only IPv4 subnets are supported so far"
            ));
        }
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        if prefix > 30 {
            return Err(format!(
                "subnet {s} is too small: it must hold a gateway and tasks (at most /30)"
            ));
        }
        let subnet = Subnet {
            addr: u32::from(addr) & mask(prefix),
            prefix,
        };
        if subnet.addr != u32::from(addr) {
            return Err(format!(
                "subnet {s} has host bits set; did you mean {subnet}?"
            ));
        }
        Ok(subnet)
    }

    pub fn new(addr: u32, prefix: u8) -> Subnet {
        Subnet {
            addr: addr & mask(prefix),
            prefix,
        }
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The first address of the subnet (the network address).
    pub fn base(&self) -> u32 {
        self.addr
    }

    /// The last address of the subnet (the broadcast address).
    pub fn last(&self) -> u32 {
        self.addr | !mask(self.prefix)
    }

    /// The addresses tasks, VIPs and the gateway may take: all but the network and broadcast
    /// addresses.
    pub fn hosts(&self) -> std::ops::RangeInclusive<u32> {
        self.addr + 1..=self.last() - 1
    }

    pub fn contains(&self, addr: u32) -> bool {
        addr & mask(self.prefix) == self.addr
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// `addr` in this subnet, CIDR notation: `10.0.1.5/24`.
    pub fn cidr(&self, addr: u32) -> String {
        format!("{}/{}", Ipv4Addr::from(addr), self.prefix)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// Parses an address, alone or in CIDR notation (`10.0.1.5` or `10.0.1.5/24`).
pub fn parse_addr(s: &str) -> Option<u32> {
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.trim().parse::<Ipv4Addr>().ok().map(u32::from)
}

/// Who holds an address of a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    Gateway,
    /// The virtual IP of a service.
    Vip(String),
    Task(String),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Gateway => write!(f, "the gateway"),
            Owner::Vip(id) => write!(f, "the virtual IP of service {id}"),
            Owner::Task(id) => write!(f, "task {id}"),
        }
    }
}

/// The addresses of one network: its subnet, gateway and who holds which address.
#[derive(Clone, Debug)]
pub struct Pool {
    pub name: String,
    pub subnet: Subnet,
    pub used: BTreeMap<u32, Owner>,
    /// Every host address below this one is in use: where the search for a free one starts.
    cursor: u32,
}

impl Pool {
    pub fn new(name: String, subnet: Subnet, gateway: u32) -> Pool {
        let mut pool = Pool {
            name,
            subnet,
            used: BTreeMap::new(),
            cursor: *subnet.hosts().start(),
        };
        pool.used.insert(gateway, Owner::Gateway);
        pool
    }

    /// Records an address held already (read from the store). `false` if it is outside the
    /// subnet or held by another owner (then it is not recorded).
    pub fn hold(&mut self, addr: u32, owner: Owner) -> bool {
        if !self.subnet.hosts().contains(&addr) {
            return false;
        }
        match self.used.get(&addr) {
            Some(o) => *o == owner,
            None => {
                self.used.insert(addr, owner);
                true
            }
        }
    }

    /// The lowest free host address, now held by `owner`; `None` when the subnet is full.
    pub fn allocate(&mut self, owner: Owner) -> Option<u32> {
        let hosts = self.subnet.hosts();
        let mut candidate = self.cursor.max(*hosts.start());
        for (&addr, _) in self.used.range(candidate..) {
            if addr != candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        if candidate > *hosts.end() {
            return None;
        }
        self.used.insert(candidate, owner);
        self.cursor = candidate + 1;
        Some(candidate)
    }

    /// Frees an address if `owner` holds it.
    pub fn release(&mut self, addr: u32, owner: &Owner) {
        if self.used.get(&addr) == Some(owner) {
            self.used.remove(&addr);
            self.cursor = self.cursor.min(addr);
        }
    }

    /// Addresses in use, the gateway's included.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_strictly() {
        let s = Subnet::parse("10.0.9.0/24").unwrap();
        assert_eq!(s.to_string(), "10.0.9.0/24");
        assert_eq!(s.cidr(*s.hosts().start()), "10.0.9.1/24");
        assert_eq!(s.cidr(*s.hosts().end()), "10.0.9.254/24");
        let e = Subnet::parse("10.0.9.5/24").unwrap_err();
        assert!(e.contains("did you mean 10.0.9.0/24"), "{e}");
        assert!(
            Subnet::parse("10.0.9.0/31")
                .unwrap_err()
                .contains("too small")
        );
        assert!(Subnet::parse("fd00::/64").unwrap_err().contains("IPv6"));
        for bad in ["", "10.0.0.0", "10.0.0.0/33", "x/24", "10.0.0/24"] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
        let a = Subnet::parse("10.0.0.0/16").unwrap();
        let b = Subnet::parse("10.0.5.0/24").unwrap();
        let c = Subnet::parse("10.1.0.0/24").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }

    #[test]
    fn pools_hand_out_the_lowest_free_address() {
        let s = Subnet::parse("10.0.0.0/30").unwrap();
        let mut pool = Pool::new("n".into(), s, *s.hosts().start());
        let a = pool.allocate(Owner::Task("a".into())).unwrap();
        assert_eq!(s.cidr(a), "10.0.0.2/30");
        assert_eq!(pool.allocate(Owner::Task("b".into())), None);
        pool.release(a, &Owner::Task("someone else".into()));
        assert_eq!(pool.allocate(Owner::Task("b".into())), None);
        pool.release(a, &Owner::Task("a".into()));
        assert_eq!(pool.allocate(Owner::Task("b".into())), Some(a));
    }
}
