//! Published ports and networks of a service: `--publish` (docker's short and long syntax),
//! `--network`, their `update` forms, and how a service's endpoint shows in `inspect`.

use shoal_api::v1::{
    EndpointSpec, ListNetworksRequest, NetworkAttachmentConfig, PortConfig, Service, ServiceSpec,
    TaskSpecFields, endpoint_spec, port_config,
};

use crate::commands::client::Client;
use crate::commands::output::Json;

/// A port to publish, as docker writes it: `[PUBLISHED:]TARGET[/PROTOCOL]` (`8080:80`,
/// `80`, `53:53/udp`; no published port: one is allocated from 30000–32767), or the long
/// syntax `mode=host,published=8080,target=80,protocol=udp`.
pub fn parse_publish(s: &str) -> Result<PortConfig, String> {
    let bad = |why: &str| {
        format!(
            "invalid --publish {s:?}: {why}; write PUBLISHED:TARGET[/PROTOCOL] (8080:80) or \
             mode=host,published=8080,target=80"
        )
    };
    let mut port = PortConfig::default();
    let number = |v: &str, what: &str| -> Result<u32, String> {
        match v.trim().parse::<u32>() {
            Ok(n) if n <= 65535 => Ok(n),
            _ => Err(bad(&format!(
                "{what} {v:?} is not a port number (0 to 65535)"
            ))),
        }
    };
    if s.contains('=') {
        for field in s.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| bad(&format!("{field:?} is not KEY=VALUE")))?;
            match k.trim() {
                "mode" => {
                    port.publish_mode = match v.trim() {
                        "ingress" => port_config::PublishMode::Ingress,
                        "host" => port_config::PublishMode::Host,
                        other => {
                            return Err(bad(&format!("unknown mode {other:?} (ingress, host)")));
                        }
                    } as i32
                }
                "published" => port.published_port = number(v, "published port")?,
                "target" => port.target_port = number(v, "target port")?,
                "protocol" => port.protocol = protocol(v).map_err(|e| bad(&e))?,
                other => return Err(bad(&format!("unknown field {other:?}"))),
            }
        }
    } else {
        let (ports, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        port.protocol = protocol(proto).map_err(|e| bad(&e))?;
        match ports.split_once(':') {
            Some((published, target)) => {
                port.published_port = number(published, "published port")?;
                port.target_port = number(target, "target port")?;
            }
            None => port.target_port = number(ports, "target port")?,
        }
    }
    if port.target_port == 0 {
        return Err(bad("a target port (1 to 65535) is required"));
    }
    Ok(port)
}

fn protocol(s: &str) -> Result<i32, String> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "tcp" => port_config::Protocol::Tcp,
        "udp" => port_config::Protocol::Udp,
        "sctp" => port_config::Protocol::Sctp,
        other => return Err(format!("unknown protocol {other:?} (tcp, udp, sctp)")),
    } as i32)
}

fn protocol_name(p: i32) -> String {
    port_config::Protocol::try_from(p)
        .map(|p| p.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| p.to_string())
}

fn mode_name(m: i32) -> &'static str {
    if m == port_config::PublishMode::Host as i32 {
        "host"
    } else {
        "ingress"
    }
}

/// `create`: the ports and networks the flags give.
pub fn apply_create(spec: &mut ServiceSpec, ports: &[PortConfig], networks: &[String]) {
    if !ports.is_empty() {
        spec.endpoint
            .get_or_insert_with(EndpointSpec::default)
            .ports
            .extend(ports.iter().cloned());
    }
    if !networks.is_empty() {
        let task: &mut TaskSpecFields = spec.task.get_or_insert_with(Default::default);
        for n in networks {
            if !task.networks.iter().any(|c| &c.target == n) {
                task.networks.push(NetworkAttachmentConfig {
                    target: n.clone(),
                    ..Default::default()
                });
            }
        }
    }
}

/// `update`: ports added (replacing a port with the same target and protocol) and removed
/// (by target port, `80` or `80/udp`), networks added and removed (by ID).
pub fn apply_update(
    spec: &mut ServiceSpec,
    add: &[PortConfig],
    rm: &[String],
    network_add: &[String],
    network_rm: &[String],
) -> Result<(), String> {
    if !add.is_empty() || !rm.is_empty() {
        let mut remove = Vec::new();
        for r in rm {
            let (port, proto) = r.split_once('/').unwrap_or((r, "tcp"));
            let target: u32 = port
                .trim()
                .parse()
                .map_err(|_| format!("invalid --publish-rm {r:?}: write TARGET[/PROTOCOL]"))?;
            remove.push((target, protocol(proto)?));
        }
        let endpoint = spec.endpoint.get_or_insert_with(EndpointSpec::default);
        endpoint
            .ports
            .retain(|p| !remove.contains(&(p.target_port, p.protocol)));
        for p in add {
            endpoint
                .ports
                .retain(|q| !(q.target_port == p.target_port && q.protocol == p.protocol));
            endpoint.ports.push(p.clone());
        }
    }
    if !network_add.is_empty() || !network_rm.is_empty() {
        let task: &mut TaskSpecFields = spec.task.get_or_insert_with(Default::default);
        task.networks.retain(|c| !network_rm.contains(&c.target));
        for n in network_add {
            if !task.networks.iter().any(|c| &c.target == n) {
                task.networks.push(NetworkAttachmentConfig {
                    target: n.clone(),
                    ..Default::default()
                });
            }
        }
    }
    Ok(())
}

/// The IDs of the networks named (by name, ID or unique ID prefix), for `--network-rm`:
/// a service's spec names its networks by ID.
pub async fn network_ids(c: &mut Client, names: &[String]) -> Result<Vec<String>, String> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let networks = c
        .control()
        .list_networks(ListNetworksRequest { filters: None })
        .await
        .map_err(|s| c.error("ListNetworks", &s))?
        .into_inner()
        .networks;
    names
        .iter()
        .map(|n| {
            crate::commands::network::RESOLVER
                .resolve(&networks, n)
                .map(|n| crate::commands::network::id(n).to_string())
        })
        .collect()
}

fn port_json(p: &PortConfig) -> Json {
    Json::object([
        ("Protocol", Json::str(protocol_name(p.protocol))),
        ("TargetPort", Json::UInt(p.target_port.into())),
        ("PublishedPort", Json::UInt(p.published_port.into())),
        ("PublishMode", Json::str(mode_name(p.publish_mode))),
    ])
}

fn resolution_json(spec: &EndpointSpec) -> Json {
    Json::str(
        if spec.mode == endpoint_spec::ResolutionMode::Dnsrr as i32 {
            "dnsrr"
        } else {
            "vip"
        },
    )
}

/// `Spec.EndpointSpec`, if the spec has one.
pub fn endpoint_spec_json(spec: &ServiceSpec) -> Option<Json> {
    let e = spec.endpoint.as_ref()?;
    Some(Json::object([
        ("Mode", resolution_json(e)),
        (
            "Ports",
            Json::Array(e.ports.iter().map(port_json).collect()),
        ),
    ]))
}

/// `Spec.TaskTemplate.Networks`, if the task attaches to networks.
pub fn networks_json(spec: &ServiceSpec) -> Option<Json> {
    let task = spec.task.as_ref()?;
    if task.networks.is_empty() {
        return None;
    }
    Some(Json::Array(
        task.networks
            .iter()
            .map(|n| {
                Json::object([
                    ("Target", Json::str(&n.target)),
                    (
                        "Aliases",
                        Json::Array(n.aliases.iter().map(Json::str).collect()),
                    ),
                ])
            })
            .collect(),
    ))
}

/// `Endpoint`: the ports as allocated and the virtual IPs, if the service has them.
pub fn endpoint_json(service: &Service) -> Option<Json> {
    let e = service.endpoint.as_ref()?;
    let spec = e.spec.clone().unwrap_or_default();
    Some(Json::object([
        (
            "Spec",
            Json::object([
                ("Mode", resolution_json(&spec)),
                (
                    "Ports",
                    Json::Array(spec.ports.iter().map(port_json).collect()),
                ),
            ]),
        ),
        (
            "Ports",
            Json::Array(e.ports.iter().map(port_json).collect()),
        ),
        (
            "VirtualIPs",
            Json::Array(
                e.virtual_ips
                    .iter()
                    .map(|v| {
                        Json::object([
                            ("NetworkID", Json::str(&v.network_id)),
                            ("Addr", Json::str(&v.addr)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_parses_docker_short_and_long_syntax() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!((p.published_port, p.target_port), (8080, 80));
        assert_eq!(p.protocol, port_config::Protocol::Tcp as i32);
        assert_eq!(p.publish_mode, port_config::PublishMode::Ingress as i32);
        let p = parse_publish("80").unwrap();
        assert_eq!((p.published_port, p.target_port), (0, 80));
        let p = parse_publish("53:53/udp").unwrap();
        assert_eq!(p.protocol, port_config::Protocol::Udp as i32);
        let p = parse_publish("mode=host,published=8080,target=80,protocol=sctp").unwrap();
        assert_eq!(p.publish_mode, port_config::PublishMode::Host as i32);
        assert_eq!(p.protocol, port_config::Protocol::Sctp as i32);
        assert_eq!((p.published_port, p.target_port), (8080, 80));
        for bad in [
            "",
            "x",
            "8080:",
            "70000:80",
            "80/icmp",
            "mode=bridge,target=80",
            "published=80",
            "a:b",
            "target",
        ] {
            let e = parse_publish(bad).unwrap_err();
            assert!(e.starts_with("invalid --publish"), "{bad}: {e}");
        }
    }

    #[test]
    fn update_replaces_and_removes_ports_and_networks() {
        let mut spec = ServiceSpec::default();
        apply_create(
            &mut spec,
            &[
                parse_publish("8080:80").unwrap(),
                parse_publish("53/udp").unwrap(),
            ],
            &["front".into()],
        );
        apply_update(
            &mut spec,
            &[parse_publish("9090:80").unwrap()],
            &["53/udp".into()],
            &["back".into()],
            &["front".into()],
        )
        .unwrap();
        let ports = &spec.endpoint.as_ref().unwrap().ports;
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].published_port, 9090);
        let targets: Vec<&str> = spec
            .task
            .as_ref()
            .unwrap()
            .networks
            .iter()
            .map(|n| n.target.as_str())
            .collect();
        assert_eq!(targets, ["back"]);
        assert!(apply_update(&mut spec, &[], &["x".into()], &[], &[]).is_err());
    }
}
