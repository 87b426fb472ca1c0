//! The `shoal` binary run as a user runs it.

use std::process::Command;

fn shoal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .expect("run shoal")
}

#[test]
fn version_prints_the_package_version() {
    let out = shoal(&["version"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
    let out = shoal(&["--version"]);
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("shoal "));
}

#[test]
fn help_lists_the_commands() {
    let out = shoal(&["--help"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("version"), "{stdout}");
}

#[test]
fn a_bad_format_is_an_error_with_exit_status_1() {
    let out = shoal(&["version", "--format", "yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("Error: unknown format \"yaml\""),
        "{stderr}"
    );
}

#[test]
fn an_unknown_command_is_refused() {
    let out = shoal(&["frobnicate"]);
    assert!(!out.status.success());
}
