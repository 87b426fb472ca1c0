//! Golden files of `--help` for every command (insta snapshots in `tests/snapshots/`): the
//! command line is an interface, and a change to it shows up in review. Regenerate after an
//! intended change with `INSTA_UPDATE=always cargo test -p shoal --test help`.

use std::process::Command;

/// Every command path users type, the top level included.
const COMMANDS: &[&[&str]] = &[
    &[],
    &["daemon"],
    &["swarm"],
    &["swarm", "init"],
    &["swarm", "join"],
    &["swarm", "join-token"],
    &["swarm", "update"],
    &["swarm", "leave"],
    &["swarm", "unlock"],
    &["swarm", "unlock-key"],
    &["swarm", "backup"],
    &["swarm", "ca"],
    &["node"],
    &["node", "ls"],
    &["node", "inspect"],
    &["node", "ps"],
    &["node", "update"],
    &["node", "promote"],
    &["node", "demote"],
    &["node", "rm"],
    &["service"],
    &["service", "create"],
    &["service", "ls"],
    &["service", "inspect"],
    &["service", "ps"],
    &["service", "update"],
    &["service", "scale"],
    &["service", "rollback"],
    &["service", "logs"],
    &["service", "rm"],
    &["task"],
    &["task", "ls"],
    &["task", "inspect"],
    &["secret"],
    &["secret", "create"],
    &["config"],
    &["config", "create"],
    &["network"],
    &["network", "create"],
    &["version"],
];

#[test]
fn help_of_every_command() {
    for path in COMMANDS {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(*path)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "shoal {path:?} --help failed");
        let name = if path.is_empty() {
            "shoal".to_string()
        } else {
            format!("shoal-{}", path.join("-"))
        };
        insta::assert_snapshot!(name, String::from_utf8_lossy(&out.stdout));
    }
}
