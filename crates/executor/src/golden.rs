//! Golden-script tests of the task state machine: each file in `testscripts/` is one test.
//!
//! Commands:
//! - `new [max_retries=N]`: a fresh machine in ACCEPTED (base delay 100 ms, cap 5 s).
//! - `begin`
//! - `prepared`, `started`, `shutdown`
//! - `exit code=N` | `exit signal=N` | `exit unknown`
//! - `error temporary|fatal MESSAGE...`
//!
//! Each prints the states entered (`→ STATE: message`), the next action (with its delay) or
//! `ignored`, and `state=… err=…` after a `status` command.

use std::error::Error;
use std::time::Duration;

use goldenscript::{Argument, Command, Context};
use shoal_api::task_state;

use crate::state::{Event, RetryPolicy, Step, TaskMachine};
use crate::{ErrorClass, Exit};

struct Runner {
    machine: TaskMachine,
}

fn positional(command: &Command) -> Vec<&str> {
    command
        .args
        .iter()
        .filter_map(|a| match a {
            Argument::Positional(v) => Some(v.as_str()),
            _ => None,
        })
        .collect()
}

fn key(command: &Command, name: &str) -> Option<String> {
    command.args.iter().find_map(|a| match a {
        Argument::KeyValue(k, v) if k == name => Some(v.clone()),
        _ => None,
    })
}

fn show(step: &Step) -> String {
    if step.ignored {
        return "ignored\n".into();
    }
    let mut out = String::new();
    for (state, message) in &step.entered {
        out.push_str(&format!("→ {}: {message}\n", task_state::name(*state)));
    }
    out.push_str(&format!("action: {:?}", step.action).to_lowercase());
    if step.delay > Duration::ZERO {
        out.push_str(&format!(" after {:?}", step.delay));
    }
    out.push('\n');
    out
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn run(&mut self, command: &Command, _: &Context) -> Result<String, Box<dyn Error>> {
        let args = positional(command);
        let event = match command.name.as_str() {
            "new" => {
                let mut policy = RetryPolicy::default();
                if let Some(n) = key(command, "max_retries") {
                    policy.max_retries = n.parse()?;
                }
                self.machine = TaskMachine::new(policy);
                return Ok(format!("{}\n", task_state::name(self.machine.state())));
            }
            "status" => {
                return Ok(format!(
                    "state={} message={:?} err={:?} retries={}\n",
                    task_state::name(self.machine.state()),
                    self.machine.message(),
                    self.machine.err(),
                    self.machine.retries()
                ));
            }
            "begin" => return Ok(show(&self.machine.begin())),
            "prepared" => Event::Prepared,
            "started" => Event::Started,
            "shutdown" => Event::ShutdownRequested,
            "exit" => {
                let exit = if let Some(code) = key(command, "code") {
                    Exit::Code(code.parse()?)
                } else if let Some(signal) = key(command, "signal") {
                    Exit::Signal(signal.parse()?)
                } else if args.first() == Some(&"unknown") {
                    Exit::Unknown
                } else {
                    return Err("exit needs code=N, signal=N or unknown".into());
                };
                Event::Exited(exit)
            }
            "error" => {
                let class = match args.first() {
                    Some(&"temporary") => ErrorClass::Temporary,
                    Some(&"fatal") => ErrorClass::Fatal,
                    _ => return Err("error needs temporary or fatal".into()),
                };
                Event::Error {
                    class,
                    message: args[1..].join(" "),
                }
            }
            other => return Err(format!("unknown command {other}").into()),
        };
        Ok(show(&self.machine.handle(event)))
    }
}

test_each_file::test_each_path! { in "crates/executor/src/testscripts" as scripts => test_goldenscript }

fn test_goldenscript(path: &std::path::Path) {
    let mut runner = Runner {
        machine: TaskMachine::default(),
    };
    goldenscript::run(&mut runner, path).expect("goldenscript failed")
}
