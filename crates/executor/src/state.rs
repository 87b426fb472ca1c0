//! The task state machine: given what happened to a task's program, which state the task is
//! in now and what the worker should do next.
//!
//! It is synchronous and owns no I/O or timers (the house rule "pure cores, thin async
//! shells"): the worker feeds it [`Event`]s (prepared, started, exited, shutdown requested,
//! an error that is temporary or fatal) and performs the [`Action`] of the [`Step`] it gets
//! back, after the step's delay. Golden scripts in `testscripts/` drive it.
//!
//! The path: ACCEPTED →(begin) PREPARING →(prepared) READY, STARTING →(started) RUNNING
//! →(exited) COMPLETE (code 0) or FAILED (any other code, a signal, or an unknown status).
//!
//! Invariants:
//! - States only move forward (`shoal_api::task_state::is_forward`), and a terminal state
//!   never changes: later events are ignored, and the step says so.
//! - A fatal error before STARTING rejects the task (REJECTED: it never ran); from STARTING
//!   on it fails it (FAILED). This is SwarmKit's rule in `exec.Do`.
//! - A shutdown request before STARTING ends the task at once (SHUTDOWN, nothing runs); from
//!   STARTING on it asks for [`Action::Shutdown`], and the exit that follows is reported as
//!   SHUTDOWN whatever its code — the program was told to stop.
//! - A success (prepared, started) clears the last error and the retry count.
//! - Temporary errors repeat the failed operation after a delay, at most
//!   [`RetryPolicy::max_retries`] times in a row (the count restarts after every success);
//!   then the error is treated as fatal. The delay doubles from `base` up to `max`
//!   (defaults: 5 retries, 100 ms, 200 ms, 400 ms, 800 ms, 1.6 s; capped at 5 s).
//!   A failed shutdown that runs out of retries, or fails fatally, asks for
//!   [`Action::Terminate`].
//!
//! Departures from SwarmKit: SwarmKit retries temporary errors without a bound (its agent
//! backs off forever); we give up after a few, so a task stuck on a resource shortage is
//! reported and rescheduled rather than left PREPARING. SwarmKit also holds a task in READY
//! until its desired state is RUNNING; here READY is passed straight through to STARTING
//! (the desired-state hold is not implemented yet — the worker must not call
//! [`TaskMachine::begin`] before it wants the task to run).

use std::time::Duration;

use shoal_api::task_state::{is_forward, is_terminal};
use shoal_api::v1::TaskState;

use crate::{ErrorClass, Exit};

/// Something that happened to the task's program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `Controller::prepare` succeeded.
    Prepared,
    /// `Controller::start` succeeded.
    Started,
    /// `Controller::wait` returned: the program ended.
    Exited(Exit),
    /// The task's desired state became SHUTDOWN (or later).
    ShutdownRequested,
    /// The last operation failed.
    Error { class: ErrorClass, message: String },
}

/// What the worker should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing: wait for the next event.
    None,
    Prepare,
    Start,
    Wait,
    Shutdown,
    Terminate,
}

/// The outcome of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The states entered, in order, each with its status message (empty if unchanged).
    pub entered: Vec<(TaskState, String)>,
    /// What to do next...
    pub action: Action,
    /// ...after this long (non-zero only for retries).
    pub delay: Duration,
    /// Set when the event did not fit the state and changed nothing.
    pub ignored: bool,
}

impl Step {
    fn act(action: Action) -> Self {
        Step {
            entered: Vec::new(),
            action,
            delay: Duration::ZERO,
            ignored: false,
        }
    }

    fn ignored() -> Self {
        Step {
            ignored: true,
            ..Step::act(Action::None)
        }
    }
}

/// How temporary errors are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries in a row before a temporary error counts as fatal.
    pub max_retries: u32,
    /// Delay before the first retry; each next one doubles it.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// One task's state, driven by events.
#[derive(Clone, Debug)]
pub struct TaskMachine {
    state: TaskState,
    message: String,
    err: String,
    shutdown_requested: bool,
    retries: u32,
    policy: RetryPolicy,
}

impl Default for TaskMachine {
    fn default() -> Self {
        Self::new(RetryPolicy::default())
    }
}

impl TaskMachine {
    /// A machine for a task the agent just accepted.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            state: TaskState::Accepted,
            message: "accepted".into(),
            err: String::new(),
            shutdown_requested: false,
            retries: 0,
            policy,
        }
    }

    pub fn state(&self) -> TaskState {
        self.state
    }

    /// The status message of the current state.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The last error, empty if none.
    pub fn err(&self) -> &str {
        &self.err
    }

    /// Temporary errors retried in a row so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Starts working on an accepted task: PREPARING, then prepare.
    pub fn begin(&mut self) -> Step {
        if self.state != TaskState::Accepted {
            return Step::ignored();
        }
        let mut step = Step::act(Action::Prepare);
        self.enter(&mut step, TaskState::Preparing, "preparing".into());
        step
    }

    /// Feeds one event.
    pub fn handle(&mut self, event: Event) -> Step {
        if is_terminal(self.state) {
            return Step::ignored();
        }
        match event {
            Event::Prepared if self.state == TaskState::Preparing => {
                self.retries = 0;
                self.err.clear();
                let mut step = Step::act(Action::Start);
                self.enter(&mut step, TaskState::Ready, "prepared".into());
                self.enter(&mut step, TaskState::Starting, "starting".into());
                step
            }
            Event::Started if self.state == TaskState::Starting => {
                self.retries = 0;
                self.err.clear();
                let mut step = Step::act(Action::Wait);
                self.enter(&mut step, TaskState::Running, "started".into());
                step
            }
            Event::Exited(exit) if self.running() => {
                let mut step = Step::act(Action::None);
                let (state, message) = if self.shutdown_requested {
                    (TaskState::Shutdown, "shutdown".to_string())
                } else {
                    match exit {
                        Exit::Code(0) => (TaskState::Complete, "finished".to_string()),
                        Exit::Code(code) => (TaskState::Failed, format!("exited with code {code}")),
                        Exit::Signal(signal) => (
                            TaskState::Failed,
                            format!("killed by signal {}", signal_name(signal)),
                        ),
                        Exit::Unknown => (
                            TaskState::Failed,
                            "ended with an unknown exit status (adopted process, not our child)"
                                .to_string(),
                        ),
                    }
                };
                if state == TaskState::Failed {
                    self.err = message.clone();
                }
                self.enter(&mut step, state, message);
                step
            }
            Event::ShutdownRequested => {
                if self.shutdown_requested {
                    return Step::ignored();
                }
                self.shutdown_requested = true;
                self.retries = 0;
                if self.running() {
                    Step::act(Action::Shutdown)
                } else {
                    let mut step = Step::act(Action::None);
                    self.enter(
                        &mut step,
                        TaskState::Shutdown,
                        "shutdown before start".into(),
                    );
                    step
                }
            }
            Event::Error { class, message } => self.error(class, message),
            _ => Step::ignored(),
        }
    }

    /// STARTING or RUNNING: the program may exist.
    fn running(&self) -> bool {
        matches!(self.state, TaskState::Starting | TaskState::Running)
    }

    fn error(&mut self, class: ErrorClass, message: String) -> Step {
        self.err = message.clone();
        let retry = match (self.shutdown_requested && self.running(), self.state) {
            (true, _) => Action::Shutdown,
            (false, TaskState::Accepted | TaskState::Preparing) => Action::Prepare,
            (false, TaskState::Ready | TaskState::Starting) => Action::Start,
            (false, _) => Action::Wait,
        };
        if class == ErrorClass::Temporary && self.retries < self.policy.max_retries {
            self.retries += 1;
            let mut step = Step::act(retry);
            step.delay = self.policy.delay(self.retries);
            return step;
        }
        let message = if class == ErrorClass::Temporary {
            let plural = if self.retries == 1 {
                "retry"
            } else {
                "retries"
            };
            format!("{message} (gave up after {} {plural})", self.retries)
        } else {
            message
        };
        self.err = message.clone();
        if retry == Action::Shutdown {
            // The program would not stop: kill it; its exit will end the task.
            self.retries = 0;
            return Step::act(Action::Terminate);
        }
        let state = if (self.state as i32) < (TaskState::Starting as i32) {
            TaskState::Rejected
        } else {
            TaskState::Failed
        };
        let mut step = Step::act(Action::None);
        self.enter(&mut step, state, message);
        step
    }

    fn enter(&mut self, step: &mut Step, state: TaskState, message: String) {
        debug_assert!(
            is_forward(self.state, state),
            "{:?} → {state:?}",
            self.state
        );
        self.state = state;
        self.message = message.clone();
        step.entered.push((state, message));
    }
}

/// "SIGKILL (9)" for 9; "signal 42" for signals without a name here.
pub fn signal_name(signal: i32) -> String {
    match crate::process::signal_to_name(signal) {
        Some(name) => format!("{name} ({signal})"),
        None => format!("signal {signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1), Duration::from_millis(100));
        assert_eq!(policy.delay(3), Duration::from_millis(400));
        assert_eq!(policy.delay(10), Duration::from_secs(5));
        assert_eq!(policy.delay(100), Duration::from_secs(5));
    }

    #[test]
    fn the_happy_path() {
        let mut m = TaskMachine::default();
        assert_eq!(m.begin().action, Action::Prepare);
        assert_eq!(m.handle(Event::Prepared).action, Action::Start);
        assert_eq!(m.handle(Event::Started).action, Action::Wait);
        m.handle(Event::Exited(Exit::Code(0)));
        assert_eq!(m.state(), TaskState::Complete);
        assert!(m.handle(Event::Started).ignored);
    }
}
