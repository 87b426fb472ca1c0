//! The fuzz target's decode function (`fuzz/decode.rs`) over a corpus of tricky inputs, so
//! that the stable toolchain (and CI) runs what `cargo +nightly fuzz run decode` runs.

#[path = "../fuzz/decode.rs"]
mod decode;

/// Inputs that have broken, or could break, a decoder: recorded bodies (engine-api.md §6),
/// JSON edge cases, Go leniency cases, bad base64, filters in both encodings, query strings
/// and paths.
const CORPUS: &[&[u8]] = &[
    b"",
    b" \n\t",
    b"null",
    b"[]",
    b"{}",
    b"{",
    b"\"x\"",
    b"1e400",
    b"-0",
    b"\xff\xfe{}",
    "\u{feff}{}".as_bytes(),
    br#"{"Name":"s1","Labels":{},"Data":"aGVsbG8K"}"#,
    br#"{"Data":"ZGF0YQ==","Name":"dockerpytest_1","Labels":null,"Driver":null}"#,
    br#"{"Name":"s","Data":"===="}"#,
    br#"{"Name":"s","Data":"\n\r"}"#,
    br#"{"Name":"s","Data":"aGk"}"#,
    br#"{"Name":"s","Data":"aGk=","Templating":{},"Driver":{"Name":""}}"#,
    br#"{"name":"folded","Name":"exact","NAME":"upper"}"#,
    br#"{"Labels":{"a":null}}"#,
    br#"{"Labels":{"a":"1","a":"2"}}"#,
    br#"{"Driver":"overlay","Scope":"","IPAM":{"Driver":"default","Options":{},"Config":[]},"Internal":false,"Attachable":false,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,"Options":{},"Labels":{},"Name":"net1"}"#,
    br#"{"Name":"n","IPAM":{"Config":[null,{"Subnet":"::/0","IPRange":null}]}}"#,
    br#"{"Name":"n","IPAM":{"Config":[{"Subnet":"10.0.0.0/33","Gateway":"x"}]},"EnableIPv6":null}"#,
    br#"{"Name":"n","Containers":{"x":{"a":[1,2.5,-0.0,1e308]}},"Created":"yesterday"}"#,
    br#"{"Name":"a","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"busybox:latest","Init":false,"DNSConfig":{}},"Resources":{"Limits":{},"Reservations":{}},"Placement":{},"ForceUpdate":0},"Mode":{"Replicated":{}},"EndpointSpec":{"Mode":"vip"}}"#,
    br#"{"Name":"x","TaskTemplate":{"ContainerSpec":{"Image":"alpine:3.10","Command":["echo","hello"],"Args":null},"RestartPolicy":{"Condition":"any","Delay":5,"MaxAttempts":5,"Window":0}},"Mode":{"replicated":{"Replicas":2}}}"#,
    br#"{"Mode":{"Replicated":{"Replicas":-1}},"TaskTemplate":{"ContainerSpec":null}}"#,
    br#"{"ListenAddr":"0.0.0.0:2377","AdvertiseAddr":"","Spec":{"Labels":null,"Orchestration":{},"Raft":{"ElectionTick":0,"HeartbeatTick":0},"Dispatcher":{},"CAConfig":{},"TaskDefaults":{},"EncryptionConfig":{"AutoLockManagers":false}},"AutoLockManagers":false,"Availability":"","DefaultAddrPool":[],"SubnetSize":24}"#,
    br#"{"AdvertiseAddr":"127.0.0.1","ListenAddr":"0.0.0.0:12345","DefaultAddrPool":["2.0.0.0/16"],"SubnetSize":28,"ForceNewCluster":false}"#,
    br#"{"Raft":{"SnapshotInterval":5000,"KeepOldSnapshots":null},"CAConfig":{"NodeCertExpiry":7776000000000000}}"#,
    br#"{"name":{"web":true},"label":{"a=b":true,"c":false}}"#,
    br#"{"name":["web"],"names":["x"],"id":[""],"label":["=","a="]}"#,
    br#"{"scope":["local","swarm"],"type":["custom"],"driver":["overlay"]}"#,
    br#"{"name":[1]}"#,
    br#"{"name":"web"}"#,
    b"status=True&filters=%7B%22name%22%3A%5B%22x%22%5D%7D&version=12",
    b"version=-1&force=yes&verbose=2&status=",
    b"a=1&a=2&%zz=%&filters=%7B",
    b"/_ping",
    b"/v1.50/",
    b"/v1.50/secrets/s1/update",
    b"/v1.99/secrets",
    b"/v1.23/secrets",
    b"/v0.1/x",
    b"/v99999999999.1/x",
    b"/v1.50",
    b"//v1.41//services//x",
    b"/%",
    b"/%zz",
    b"/%e2%82",
    b"/%C3%A9/%2F",
    b"/secrets/%+1",
];

#[test]
fn the_decoders_survive_tricky_input() {
    for input in CORPUS {
        decode::decode(input);
    }
    // Deep nesting: serde_json's recursion limit refuses it, with a 400.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    decode::decode(deep.as_bytes());
    let deep = format!(
        r#"{{"Labels":{}}}"#,
        "{\"a\":".repeat(200) + "1" + &"}".repeat(200)
    );
    decode::decode(deep.as_bytes());
}
