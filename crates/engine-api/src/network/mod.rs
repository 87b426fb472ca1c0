//! The `network` endpoints of the Engine API (`/networks…`), and the shapes of networks.
//!
//! Shoal's networks are the swarm-scoped `overlay` networks of the Control API: each gets a
//! subnet from the allocator (the next free /24 of 10.0.0.0/8 unless one is given), and
//! services attached to it get addresses in it. They are shown in moby's `Network` shape
//! (`network.Inspect`, note `"Id"`), as moby shows a swarm network seen from the cluster:
//! `Scope:"swarm"`, `Driver`, `EnableIPv4:true`, `EnableIPv6`, `IPAM{Driver, Options,
//! Config[{Subnet, IPRange?, Gateway?, AuxiliaryAddresses?}]}`, `Internal`, `Attachable`,
//! `Ingress`, `ConfigFrom{Network}`, `ConfigOnly`, `Containers:{}`, `Options`, `Labels`.
//!
//! Endpoints: list (filters `driver`, `id`, `label`, `name`, `scope`, `type`), create (201
//! `{"Id","Warning":""}`), inspect by ID, name or ID prefix (`scope`, `verbose` accepted),
//! remove (204; refused while a service uses the network).
//!
//! # Where it departs from moby
//!
//! - Only swarm-scoped overlay networks exist: the engine's own local networks (`bridge`,
//!   `host`, `none`) belong to the node's Docker Engine and are neither listed nor created
//!   here. A create with another driver, a local scope, `ConfigOnly`/`ConfigFrom`, IPv6, an
//!   IPAM driver other than `default`, more than one subnet, an `IPRange` or auxiliary
//!   addresses answers 501 saying what to do instead; so does `Ingress`, since Shoal creates
//!   the `ingress` network itself when a service first publishes a port.
//! - No data plane carries traffic yet (see the manager's allocator): `Containers` is always
//!   empty and `Peers` is never sent.
//! - The `name` and `id` list filters match substrings; moby matches them as regular
//!   expressions, which for plain names is the same.

pub mod create;
pub mod inspect;
pub mod list;
pub mod remove;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_api::v1;

use crate::error::EngineError;
use crate::secret::file_object::{labels_from_proto, labels_to_proto};
use crate::shapes;

/// The only driver Shoal's networks have.
pub const OVERLAY: &str = "overlay";
/// The only IPAM driver Shoal has.
pub const DEFAULT_IPAM: &str = "default";
/// The scope of every network here.
pub const SWARM_SCOPE: &str = "swarm";

/// `IPAM`: the address management of a network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Ipam {
    pub driver: String,
    pub options: BTreeMap<String, String>,
    pub config: Vec<IpamConfig>,
}

/// One subnet of a network (`IPAMConfig`; moby omits the empty fields).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct IpamConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    #[serde(rename = "IPRange", skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(
        rename = "AuxiliaryAddresses",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub auxiliary_addresses: BTreeMap<String, String>,
}

/// `ConfigFrom`: the config-only network a network takes its configuration from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ConfigReference {
    pub network: String,
}

/// A network as `GET /networks` shows it (moby's `network.Inspect`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Network {
    pub name: String,
    #[serde(rename = "Id")]
    pub id: String,
    pub created: String,
    pub scope: String,
    pub driver: String,
    #[serde(rename = "EnableIPv4")]
    pub enable_ipv4: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_from: ConfigReference,
    pub config_only: bool,
    pub containers: BTreeMap<String, serde_json::Value>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

impl Network {
    /// A Control API network in moby's shape: the driver and its options as allocated
    /// (`driver_state`), the IPAM as allocated, with the options the user gave.
    pub fn from_proto(network: &v1::Network) -> Self {
        let meta = network.meta.clone().unwrap_or_default();
        let spec = network.spec.clone().unwrap_or_default();
        let annotations = spec.annotations.clone().unwrap_or_default();
        let driver = network
            .driver_state
            .clone()
            .or_else(|| spec.driver_config.clone())
            .unwrap_or_default();
        let allocated = network
            .ipam
            .clone()
            .or(spec.ipam.clone())
            .unwrap_or_default();
        let given_options = spec
            .ipam
            .as_ref()
            .and_then(|i| i.driver.as_ref())
            .map(|d| d.options.clone())
            .unwrap_or_default();
        let ipam_driver = allocated.driver.clone().unwrap_or_default();
        let ipam = Ipam {
            driver: if ipam_driver.name.is_empty() {
                DEFAULT_IPAM.to_string()
            } else {
                ipam_driver.name
            },
            options: if ipam_driver.options.is_empty() {
                given_options
            } else {
                ipam_driver.options
            },
            config: allocated
                .configs
                .iter()
                .map(|c| IpamConfig {
                    subnet: c.subnet.clone(),
                    ip_range: c.range.clone(),
                    gateway: c.gateway.clone(),
                    auxiliary_addresses: c.reserved.clone(),
                })
                .collect(),
        };
        Network {
            name: annotations.name,
            id: meta.id,
            created: shapes::time(meta.created_at.as_ref()),
            scope: SWARM_SCOPE.to_string(),
            driver: if driver.name.is_empty() {
                OVERLAY.to_string()
            } else {
                driver.name
            },
            enable_ipv4: true,
            enable_ipv6: spec.ipv6_enabled,
            ipam,
            internal: spec.internal,
            attachable: spec.attachable,
            ingress: spec.ingress,
            config_from: ConfigReference::default(),
            config_only: false,
            containers: BTreeMap::new(),
            options: driver.options,
            labels: labels_from_proto(&annotations.labels),
        }
    }
}

/// The body of `POST /networks/create` (moby's `network.CreateRequest`). `CheckDuplicate` is
/// accepted and ignored: names are always unique here, as in moby since API 1.44.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkCreate {
    pub name: String,
    pub check_duplicate: Option<bool>,
    pub driver: String,
    pub scope: String,
    #[serde(rename = "EnableIPv4")]
    pub enable_ipv4: Option<bool>,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM")]
    pub ipam: Option<Ipam>,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_only: bool,
    pub config_from: Option<ConfigReference>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

impl NetworkCreate {
    /// The Control API spec of the network asked for, or why Shoal cannot make it.
    pub fn to_spec(&self) -> Result<v1::NetworkSpec, EngineError> {
        let unsupported = |what: String| EngineError::not_implemented(what);
        if self.name.is_empty() {
            return Err(EngineError::bad_request(
                "invalid Name: a network needs a name; give Name in the request body",
            ));
        }
        if !self.driver.is_empty() && self.driver != OVERLAY {
            return Err(unsupported(format!(
                "network driver {:?} is not supported: Shoal serves swarm-scoped overlay \
                 networks only (use --driver overlay); local networks belong to the node's \
                 Docker Engine",
                self.driver
            )));
        }
        match self.scope.as_str() {
            "" | SWARM_SCOPE => {}
            "local" | "global" => {
                return Err(unsupported(format!(
                    "network scope {:?} is not supported: Shoal's networks are swarm-scoped \
                     (use --scope swarm, or leave it out)",
                    self.scope
                )));
            }
            other => {
                return Err(EngineError::bad_request(format!(
                    "invalid Scope {other:?}: use swarm (or leave it out)"
                )));
            }
        }
        if self.config_only
            || self
                .config_from
                .as_ref()
                .is_some_and(|c| !c.network.is_empty())
        {
            return Err(unsupported(
                "config-only networks (ConfigOnly, ConfigFrom) are not supported by Shoal; \
                 give the IPAM configuration to the network itself"
                    .into(),
            ));
        }
        if self.ingress {
            return Err(unsupported(
                "creating an ingress network is not supported: Shoal creates the ingress \
                 network itself when a service first publishes a port in ingress mode"
                    .into(),
            ));
        }
        if self.enable_ipv4 == Some(false) || self.enable_ipv6 == Some(true) {
            return Err(unsupported(
                "Shoal's networks are IPv4 only so far: leave EnableIPv4 on and EnableIPv6 off"
                    .into(),
            ));
        }
        let ipam = self.ipam.clone().unwrap_or_default();
        if !ipam.driver.is_empty() && ipam.driver != DEFAULT_IPAM {
            return Err(unsupported(format!(
                "IPAM driver {:?} is not supported: Shoal has the default one only (leave \
                 --ipam-driver out)",
                ipam.driver
            )));
        }
        if ipam.config.len() > 1 {
            return Err(unsupported(
                "a network has one subnet so far: give at most one IPAM config (--subnet)".into(),
            ));
        }
        let mut configs = Vec::new();
        if let Some(config) = ipam.config.first() {
            if !config.ip_range.is_empty() {
                return Err(unsupported(
                    "IPRange is not supported: addresses are taken from the whole subnet \
                     (leave --ip-range out)"
                        .into(),
                ));
            }
            if !config.auxiliary_addresses.is_empty() {
                return Err(unsupported(
                    "AuxiliaryAddresses are not supported (leave --aux-address out)".into(),
                ));
            }
            configs.push(v1::IpamConfig {
                family: if config.subnet.contains(':') {
                    v1::ipam_config::AddressFamily::Ipv6
                } else {
                    v1::ipam_config::AddressFamily::Ipv4
                } as i32,
                subnet: config.subnet.clone(),
                range: String::new(),
                gateway: config.gateway.clone(),
                reserved: Default::default(),
            });
        }
        let ipam = (!configs.is_empty() || !ipam.options.is_empty()).then(|| v1::IpamOptions {
            driver: Some(v1::Driver {
                name: DEFAULT_IPAM.to_string(),
                options: ipam.options.clone(),
            }),
            configs,
        });
        Ok(v1::NetworkSpec {
            annotations: Some(v1::Annotations {
                name: self.name.clone(),
                labels: labels_to_proto(&self.labels),
            }),
            driver_config: Some(v1::Driver {
                name: OVERLAY.to_string(),
                options: self.options.clone(),
            }),
            ipv6_enabled: false,
            internal: self.internal,
            ipam,
            attachable: self.attachable,
            ingress: false,
        })
    }
}

/// `{"Id": …, "Warning": ""}`: the answer to a create.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Created {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Warning")]
    pub warning: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lenient;

    /// `docker network create -d overlay net1` (engine-api.md §6).
    const CLI_CREATE: &[u8] = br#"{"Driver":"overlay","Scope":"","IPAM":{"Driver":"default","Options":{},"Config":[]},"Internal":false,
   "Attachable":false,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,"Options":{},"Labels":{},"Name":"net1"}"#;

    fn allocated(spec: v1::NetworkSpec) -> v1::Network {
        v1::Network {
            meta: Some(v1::Meta {
                id: "k3o0w8yq7c5u2l1m9n4b6v8x2".into(),
                version: 9,
                created_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 42,
                }),
                updated_at: None,
            }),
            driver_state: spec.driver_config.clone(),
            ipam: Some(v1::IpamOptions {
                driver: Some(v1::Driver {
                    name: "default".into(),
                    options: Default::default(),
                }),
                configs: vec![v1::IpamConfig {
                    family: v1::ipam_config::AddressFamily::Ipv4 as i32,
                    subnet: "10.0.1.0/24".into(),
                    range: String::new(),
                    gateway: "10.0.1.1".into(),
                    reserved: Default::default(),
                }],
            }),
            spec: Some(spec),
            pending_delete: false,
        }
    }

    #[test]
    fn the_cli_create_body_decodes_to_an_overlay_spec() {
        let create: NetworkCreate = lenient::require(CLI_CREATE).unwrap();
        assert_eq!(create.name, "net1");
        let spec = create.to_spec().unwrap();
        assert_eq!(spec.annotations.as_ref().unwrap().name, "net1");
        assert_eq!(spec.driver_config.as_ref().unwrap().name, "overlay");
        assert_eq!(spec.ipam, None, "no subnet asked: the allocator chooses");
        assert!(!spec.internal && !spec.attachable && !spec.ingress);
    }

    #[test]
    fn the_docker_py_create_body_decodes() {
        // docker-py create_network(name, driver='overlay', ipam=IPAMConfig(pool_configs=[…]),
        // attachable=True, labels={…}).
        let create: NetworkCreate = lenient::require(
            br#"{"Name":"dockerpytest_1","Driver":"overlay","Options":{"o":"1"},
                "IPAM":{"Driver":"default","Config":[{"Subnet":"10.9.0.0/24","Gateway":"10.9.0.254"}],"Options":null},
                "CheckDuplicate":null,"Internal":false,"Labels":{"k":"v"},"Attachable":true,
                "EnableIPv6":false}"#,
        )
        .unwrap();
        let spec = create.to_spec().unwrap();
        let ipam = spec.ipam.as_ref().unwrap();
        assert_eq!(ipam.configs[0].subnet, "10.9.0.0/24");
        assert_eq!(ipam.configs[0].gateway, "10.9.0.254");
        assert!(spec.attachable);
        assert_eq!(spec.driver_config.as_ref().unwrap().options["o"], "1");
        assert_eq!(spec.annotations.as_ref().unwrap().labels[0].key, "k");
    }

    #[test]
    fn what_shoal_cannot_make_is_refused_clearly() {
        let refused = |body: &str| {
            let create: NetworkCreate = lenient::require(body.as_bytes()).unwrap();
            create.to_spec().unwrap_err()
        };
        for (body, status, says) in [
            (r#"{"Name":"n","Driver":"bridge"}"#, 501, "bridge"),
            (r#"{"Name":"n","Scope":"local"}"#, 501, "scope"),
            (r#"{"Name":"n","Scope":"galaxy"}"#, 400, "Scope"),
            (r#"{"Name":"n","ConfigOnly":true}"#, 501, "config-only"),
            (
                r#"{"Name":"n","ConfigFrom":{"Network":"x"}}"#,
                501,
                "ConfigFrom",
            ),
            (r#"{"Name":"n","Ingress":true}"#, 501, "ingress"),
            (r#"{"Name":"n","EnableIPv6":true}"#, 501, "IPv4"),
            (
                r#"{"Name":"n","IPAM":{"Driver":"dhcp"}}"#,
                501,
                "IPAM driver",
            ),
            (
                r#"{"Name":"n","IPAM":{"Config":[{"Subnet":"10.1.0.0/24"},{"Subnet":"10.2.0.0/24"}]}}"#,
                501,
                "one subnet",
            ),
            (
                r#"{"Name":"n","IPAM":{"Config":[{"Subnet":"10.1.0.0/16","IPRange":"10.1.1.0/24"}]}}"#,
                501,
                "IPRange",
            ),
            (r#"{"Driver":"overlay"}"#, 400, "Name"),
        ] {
            let e = refused(body);
            assert_eq!(e.status, status, "{body}: {e:?}");
            assert!(e.message.contains(says), "{body}: {e:?}");
        }
    }

    #[test]
    fn a_network_shows_as_moby_shows_a_swarm_network() {
        let create: NetworkCreate = lenient::require(
            br#"{"Name":"net1","Driver":"overlay","Attachable":true,"Labels":{"tier":"front"},
                "Options":{"encrypted":""}}"#,
        )
        .unwrap();
        let shown = Network::from_proto(&allocated(create.to_spec().unwrap()));
        assert_eq!(shown.scope, "swarm");
        let json = serde_json::to_string_pretty(&shown).unwrap();
        insta::assert_snapshot!("network", json);
    }

    #[test]
    fn what_a_client_sent_is_what_it_reads_back() {
        let create: NetworkCreate = lenient::require(CLI_CREATE).unwrap();
        let shown = Network::from_proto(&allocated(create.to_spec().unwrap()));
        assert_eq!(shown.name, create.name);
        assert_eq!(shown.driver, create.driver);
        assert_eq!(shown.ipam.driver, "default");
        assert_eq!(shown.internal, create.internal);
        assert_eq!(shown.attachable, create.attachable);
        assert_eq!(shown.ingress, create.ingress);
        assert_eq!(shown.options, create.options);
        assert_eq!(shown.labels, create.labels);
    }
}
