//! Unit tests of the process executor that run nothing. The tests on real processes need the
//! shim binary and live in `tests/process.rs`.

use super::*;

#[test]
fn users_resolve_by_name_and_number() {
    assert_eq!(resolve_user("").unwrap(), None);
    assert_eq!(resolve_user("root").unwrap(), Some((0, 0)));
    assert_eq!(resolve_user("0:5").unwrap(), Some((0, 5)));
    assert!(matches!(
        resolve_user("no-such-user-here"),
        Err(ExecutorError::InvalidSpec(_))
    ));
    assert!(matches!(
        resolve_user("0:wheel"),
        Err(ExecutorError::NotImplemented(_))
    ));
}

#[test]
fn describe_names_the_process_runtime() {
    let description = ProcessExecutor::new(ProcessConfig::new("/nonexistent")).describe();
    assert_eq!(description.runtimes, vec!["process".to_string()]);
    assert!(description.resources.unwrap().nano_cpus > 0);
}

#[test]
fn the_default_shim_is_this_executable() {
    let config = ProcessConfig::new("/nonexistent");
    assert_eq!(config.shim.program, std::env::current_exe().unwrap());
    assert_eq!(config.shim.args, vec![OsString::from("process-shim")]);
}
