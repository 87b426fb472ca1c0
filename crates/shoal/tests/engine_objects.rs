//! The real `docker` CLI drives secrets, configs and overlay networks through the Engine API
//! socket of a `shoal daemon` (`docker secret|config|network create/ls/inspect/rm`), and raw
//! requests check what the CLI cannot send (bad input, stale versions, updates). The state is
//! checked with `shoal` on the control socket: a refused request changes nothing.

mod support;

use std::path::Path;

use support::cluster::Cluster;
use support::engine::{docker, docker_cli, docker_with_input, request};

/// The error line the docker CLI prints for a daemon's refusal.
fn refused(run: support::cli::Run) -> String {
    assert_eq!(
        run.code,
        Some(1),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.contains("Error response from daemon: "),
        "{}",
        run.stderr
    );
    run.stderr
}

/// The lines of `shoal KIND ls -q` (IDs).
fn shoal_ids(cluster: &Cluster, kind: &str) -> Vec<String> {
    let mut ids: Vec<String> = cluster
        .shoal(&[kind, "ls", "-q"])
        .ok()
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// `docker KIND inspect NAME` as JSON: the one object.
fn inspect(socket: &Path, kind: &str, name: &str) -> serde_json::Value {
    let out = docker(socket, &[kind, "inspect", name]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{out}");
    v[0].clone()
}

/// A raw request's status and `message` (or whole body).
fn answer(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let e = request(socket, method, path, body);
    let text = if e.body.is_empty() {
        String::new()
    } else {
        e.json()["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&e.body).into_owned())
    };
    (e.status, text)
}

#[test]
fn secrets_through_the_docker_cli() {
    if !docker_cli() {
        return;
    }
    let cluster = Cluster::start(&[]);
    let sock = cluster.engine_socket_of("m1");

    // docker secret create s1 - (the data on stdin).
    let id = docker_with_input(&sock, &["secret", "create", "s1", "-"], Some(b"hunter2\n"))
        .ok()
        .trim()
        .to_string();
    assert_eq!(id.len(), 25, "{id}");
    let s2 = docker_with_input(
        &sock,
        &["secret", "create", "--label", "env=prod", "s2", "-"],
        Some(b"other"),
    )
    .ok()
    .trim()
    .to_string();
    let mut both = vec![id.clone(), s2.clone()];
    both.sort();
    assert_eq!(shoal_ids(&cluster, "secret"), both);

    // ls, with and without filters.
    let out = docker(&sock, &["secret", "ls"]).ok();
    assert!(out.starts_with("ID "), "{out}");
    assert!(out.contains(" s1 ") && out.contains(" s2 "), "{out}");
    let names = |filter: &str| {
        let mut args = vec!["secret", "ls", "--format", "{{.Name}}"];
        if !filter.is_empty() {
            args.extend(["--filter", filter]);
        }
        docker(&sock, &args).ok()
    };
    assert_eq!(names(""), "s1\ns2\n");
    assert_eq!(names("name=s"), "s1\ns2\n");
    assert_eq!(names("label=env=prod"), "s2\n");
    assert_eq!(names(&format!("id={}", &id[..6])), "s1\n");
    assert_eq!(names("name=zz"), "");

    // inspect: never the data.
    let run = docker(&sock, &["secret", "inspect", "s1"]);
    assert!(
        !run.stdout.contains("hunter2") && !run.stdout.contains("aHVudGVyMgo="),
        "{}",
        run.stdout
    );
    let v = inspect(&sock, "secret", "s1");
    assert_eq!(v["ID"], id.as_str());
    assert_eq!(v["Spec"]["Name"], "s1");
    assert_eq!(v["Spec"]["Labels"], serde_json::json!({}));
    assert!(v["Spec"].get("Data").is_none(), "{v}");
    assert!(v["Version"]["Index"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        inspect(&sock, "secret", &s2)["Spec"]["Labels"]["env"],
        "prod"
    );
    let pretty = docker(&sock, &["secret", "inspect", "--pretty", "s2"]).ok();
    assert!(
        pretty.contains("s2") && pretty.contains("env=prod"),
        "{pretty}"
    );

    // Refusals change nothing.
    let e = refused(docker_with_input(
        &sock,
        &["secret", "create", "s1", "-"],
        Some(b"again"),
    ));
    assert!(e.contains("s1"), "{e}");
    let e = refused(docker(&sock, &["secret", "inspect", "nope"]));
    assert!(e.contains("secret nope not found"), "{e}");
    for (body, status, says) in [
        (r#"{"Name":"s1","Data":"aGk="}"#, 409, "s1"),
        (
            r#"{"Name":"s3","Data":"not base64!"}"#,
            400,
            "illegal base64 data",
        ),
        (r#"{"Labels":{},"Data":"aGk="}"#, 400, "Name"),
        (r#"{"Name":"s3"}"#, 400, "Data"),
        (
            r#"{"Name":"s3","Data":"aGk=","Driver":{"Name":"vault"}}"#,
            501,
            "driver",
        ),
        (r#"{"Name":"s3","Data":"aGk="#, 400, "invalid JSON"),
    ] {
        let (code, message) = answer(&sock, "POST", "/v1.50/secrets/create", Some(body));
        assert_eq!(code, status, "{body}: {message}");
        assert!(message.contains(says), "{body}: {message}");
    }
    let (code, message) = answer(&sock, "GET", "/v1.50/secrets/nope", None);
    assert_eq!((code, message.as_str()), (404, "secret nope not found"));
    assert_eq!(shoal_ids(&cluster, "secret"), both);

    // Update: labels only, at the version read.
    let version = v["Version"]["Index"].as_u64().unwrap();
    let update = |version: &str, body: &str| {
        answer(
            &sock,
            "POST",
            &format!("/v1.50/secrets/{id}/update?version={version}"),
            Some(body),
        )
    };
    let (code, message) = update(&version.to_string(), r#"{"Name":"s2","Labels":{"a":"b"}}"#);
    assert_eq!(
        (code, message.as_str()),
        (400, "only updates to Labels are allowed")
    );
    let (code, message) = update(
        &version.to_string(),
        r#"{"Name":"s1","Labels":{"a":"b"},"Data":"b3RoZXI="}"#,
    );
    assert_eq!(
        (code, message.as_str()),
        (400, "only updates to Labels are allowed")
    );
    let (code, message) = update("", r#"{"Name":"s1","Labels":{"a":"b"}}"#);
    assert_eq!(code, 400, "{message}");
    assert!(
        message.starts_with("invalid secret version ''"),
        "{message}"
    );
    assert_eq!(
        inspect(&sock, "secret", "s1")["Version"]["Index"].as_u64(),
        Some(version),
        "refused updates changed nothing"
    );
    let (code, message) = update(&version.to_string(), r#"{"Name":"s1","Labels":{"a":"b"}}"#);
    assert_eq!(code, 200, "{message}");
    let after = inspect(&sock, "secret", "s1");
    assert_eq!(after["Spec"]["Labels"], serde_json::json!({"a": "b"}));
    assert!(after["Version"]["Index"].as_u64().unwrap() > version);
    let (code, message) = update(&version.to_string(), r#"{"Name":"s1","Labels":{}}"#);
    assert_eq!(code, 500, "{message}");
    assert!(message.ends_with("update out of sequence"), "{message}");
    assert_eq!(
        inspect(&sock, "secret", "s1")["Spec"]["Labels"],
        serde_json::json!({"a": "b"})
    );

    // A secret a service uses is not removed.
    cluster
        .create_command_service("web", &["-d", "--secret", "s1"], &["sleep", "1000"])
        .ok();
    let e = refused(docker(&sock, &["secret", "rm", "s1"]));
    assert!(e.contains("in use by service web"), "{e}");
    let (code, _) = answer(&sock, "DELETE", &format!("/v1.50/secrets/{id}"), None);
    assert_eq!(code, 400);
    assert_eq!(shoal_ids(&cluster, "secret"), both);

    // rm: the CLI prints the name; the API answers 204.
    assert_eq!(docker(&sock, &["secret", "rm", "s2"]).ok(), "s2\n");
    assert_eq!(shoal_ids(&cluster, "secret"), vec![id.clone()]);
    cluster.shoal(&["service", "rm", "web"]).ok();
    let e = request(&sock, "DELETE", "/v1.50/secrets/s1", None);
    assert_eq!(e.status, 204, "{}", String::from_utf8_lossy(&e.body));
    assert!(e.body.is_empty());
    assert_eq!(shoal_ids(&cluster, "secret"), Vec::<String>::new());
    let e = refused(docker(&sock, &["secret", "rm", "s1"]));
    assert!(e.contains("secret s1 not found"), "{e}");
}

#[test]
fn configs_through_the_docker_cli() {
    if !docker_cli() {
        return;
    }
    let cluster = Cluster::start(&[]);
    let sock = cluster.engine_socket_of("m1");

    let id = docker_with_input(
        &sock,
        &["config", "create", "c1", "-"],
        Some(b"listen 80;\n"),
    )
    .ok()
    .trim()
    .to_string();
    assert_eq!(id.len(), 25, "{id}");
    assert_eq!(shoal_ids(&cluster, "config"), vec![id.clone()]);

    let out = docker(&sock, &["config", "ls"]).ok();
    assert!(out.starts_with("ID ") && out.contains(" c1 "), "{out}");
    assert_eq!(
        docker(&sock, &["config", "ls", "--format", "{{.ID}} {{.Name}}"]).ok(),
        format!("{id} c1\n")
    );

    // inspect shows the data, as moby does.
    let v = inspect(&sock, "config", "c1");
    assert_eq!(v["ID"], id.as_str());
    assert_eq!(v["Spec"]["Name"], "c1");
    assert_eq!(v["Spec"]["Data"], "bGlzdGVuIDgwOwo=");
    let pretty = docker(&sock, &["config", "inspect", "--pretty", "c1"]).ok();
    assert!(pretty.contains("listen 80;"), "{pretty}");

    // Templating is kept (API 1.37+).
    let (code, message) = answer(
        &sock,
        "POST",
        "/v1.50/configs/create",
        Some(r#"{"Name":"c2","Data":"eA==","Templating":{"Name":"golang"}}"#),
    );
    assert_eq!(code, 201, "{message}");
    assert_eq!(
        inspect(&sock, "config", "c2")["Spec"]["Templating"],
        serde_json::json!({"Name": "golang"})
    );
    let (code, message) = answer(
        &sock,
        "POST",
        "/v1.36/configs/create",
        Some(r#"{"Name":"c3","Data":"eA==","Templating":{"Name":"golang"}}"#),
    );
    assert_eq!(code, 400, "{message}");

    // Refusals change nothing.
    let e = refused(docker_with_input(
        &sock,
        &["config", "create", "c1", "-"],
        Some(b"x"),
    ));
    assert!(e.contains("c1"), "{e}");
    let (code, _) = answer(
        &sock,
        "POST",
        "/v1.50/configs/create",
        Some(r#"{"Name":"c1","Data":"eA=="}"#),
    );
    assert_eq!(code, 409);
    let (code, message) = answer(&sock, "GET", "/v1.50/configs/nope", None);
    assert_eq!((code, message.as_str()), (404, "config nope not found"));
    let version = v["Version"]["Index"].as_u64().unwrap();
    let (code, message) = answer(
        &sock,
        "POST",
        &format!("/v1.50/configs/c1/update?version={version}"),
        Some(r#"{"Name":"c1","Labels":{},"Data":"eA=="}"#),
    );
    assert_eq!(
        (code, message.as_str()),
        (400, "only updates to Labels are allowed")
    );
    assert_eq!(inspect(&sock, "config", "c1")["Version"]["Index"], version);

    // A label update keeps the data.
    let (code, message) = answer(
        &sock,
        "POST",
        &format!("/v1.50/configs/c1/update?version={version}"),
        Some(r#"{"Name":"c1","Labels":{"k":"v"}}"#),
    );
    assert_eq!(code, 200, "{message}");
    let after = inspect(&sock, "config", "c1");
    assert_eq!(after["Spec"]["Labels"], serde_json::json!({"k": "v"}));
    assert_eq!(after["Spec"]["Data"], "bGlzdGVuIDgwOwo=");

    assert_eq!(
        docker(&sock, &["config", "rm", "c1", "c2"]).ok(),
        "c1\nc2\n"
    );
    assert_eq!(shoal_ids(&cluster, "config"), Vec::<String>::new());
    let e = refused(docker(&sock, &["config", "inspect", "c1"]));
    assert!(e.contains("config c1 not found"), "{e}");
}

#[test]
fn overlay_networks_through_the_docker_cli() {
    if !docker_cli() {
        return;
    }
    let cluster = Cluster::start(&[]);
    let sock = cluster.engine_socket_of("m1");

    let id = docker(&sock, &["network", "create", "-d", "overlay", "net1"])
        .ok()
        .trim()
        .to_string();
    assert_eq!(id.len(), 25, "{id}");
    let net2 = docker(
        &sock,
        &[
            "network",
            "create",
            "--driver",
            "overlay",
            "--subnet",
            "10.77.0.0/24",
            "--gateway",
            "10.77.0.254",
            "--attachable",
            "--label",
            "tier=back",
            "net2",
        ],
    )
    .ok()
    .trim()
    .to_string();
    let networks = cluster.shoal(&["network", "ls"]).ok();
    assert!(
        networks.contains("net1") && networks.contains("net2"),
        "{networks}"
    );

    // ls: NETWORK ID, NAME, DRIVER, SCOPE.
    let out = docker(&sock, &["network", "ls"]).ok();
    assert!(out.starts_with("NETWORK ID"), "{out}");
    let row = out
        .lines()
        .find(|l| l.contains("net1"))
        .unwrap_or_else(|| panic!("{out}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns, [&id[..12], "net1", "overlay", "swarm"], "{out}");
    let names = |filter: &str| {
        docker(
            &sock,
            &["network", "ls", "--filter", filter, "--format", "{{.Name}}"],
        )
        .ok()
    };
    assert_eq!(names("label=tier=back"), "net2\n");
    assert_eq!(names("name=net1"), "net1\n");
    assert_eq!(names("scope=local"), "");
    assert_eq!(names("type=builtin"), "");
    assert!(names("driver=overlay").contains("net1"));

    // inspect: moby's shape.
    let v = inspect(&sock, "network", "net1");
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["Name"], "net1");
    assert_eq!(v["Scope"], "swarm");
    assert_eq!(v["Driver"], "overlay");
    assert_eq!(v["IPAM"]["Driver"], "default");
    assert!(
        v["IPAM"]["Config"][0]["Subnet"]
            .as_str()
            .is_some_and(|s| s.ends_with("/24")),
        "{v}"
    );
    assert_eq!(v["Containers"], serde_json::json!({}));
    let v = inspect(&sock, "network", &net2[..8]);
    assert_eq!(v["Name"], "net2");
    assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.77.0.0/24");
    assert_eq!(v["IPAM"]["Config"][0]["Gateway"], "10.77.0.254");
    assert_eq!(v["Attachable"], true);
    assert_eq!(v["Labels"], serde_json::json!({"tier": "back"}));
    let (code, _) = answer(&sock, "GET", "/v1.50/networks/net1?scope=swarm", None);
    assert_eq!(code, 200);
    let (code, message) = answer(&sock, "GET", "/v1.50/networks/net1?scope=local", None);
    assert_eq!((code, message.as_str()), (404, "network net1 not found"));

    // Refusals change nothing.
    let e = refused(docker(
        &sock,
        &["network", "create", "-d", "overlay", "net1"],
    ));
    assert!(e.contains("network with name net1 already exists"), "{e}");
    let (code, _) = answer(
        &sock,
        "POST",
        "/v1.50/networks/create",
        Some(r#"{"Name":"net1","Driver":"overlay","CheckDuplicate":true}"#),
    );
    assert_eq!(code, 409);
    let e = refused(docker(&sock, &["network", "create", "-d", "bridge", "br"]));
    assert!(e.contains("not supported"), "{e}");
    let e = refused(docker(
        &sock,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.77.0.0/25",
            "net3",
        ],
    ));
    assert!(e.contains("overlaps"), "{e}");
    let e = refused(docker(&sock, &["network", "inspect", "nope"]));
    assert!(e.contains("network nope not found"), "{e}");
    let mut ids: Vec<String> = cluster
        .shoal(&["network", "ls", "-q"])
        .ok()
        .lines()
        .map(str::to_string)
        .collect();
    ids.retain(|i| *i == id || *i == net2);
    assert_eq!(ids.len(), 2);
    let listed = cluster.shoal(&["network", "ls"]).ok();
    assert!(
        !listed.contains("net3") && !listed.contains(" br "),
        "{listed}"
    );

    // A network a service uses is not removed; once the service is gone, it is (the removal
    // waits for the service's tasks to stop).
    cluster
        .create_command_service("web", &["--network", "net1"], &["sleep", "1000"])
        .ok();
    let e = refused(docker(&sock, &["network", "rm", "net1"]));
    assert!(e.contains("in use by service web"), "{e}");
    assert!(cluster.shoal(&["network", "ls"]).ok().contains("net1"));
    cluster.shoal(&["service", "rm", "web"]).ok();
    assert_eq!(docker(&sock, &["network", "rm", "net1"]).ok(), "net1\n");
    let e = request(&sock, "DELETE", &format!("/v1.50/networks/{net2}"), None);
    assert_eq!(e.status, 204, "{}", String::from_utf8_lossy(&e.body));
    let listed = cluster.shoal(&["network", "ls"]).ok();
    assert!(
        !listed.contains("net1") && !listed.contains("net2"),
        "{listed}"
    );
    let e = refused(docker(&sock, &["network", "rm", "net1"]));
    assert!(e.contains("net1"), "{e}");
}
