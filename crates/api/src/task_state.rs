//! The order of task states.
//!
//! States are numbered so that comparing numbers compares progress: a task only ever moves to
//! a higher state. The manager owns the states up to ASSIGNED; the agent the ones after.
//! Terminal states (COMPLETE and above) never change again.

use crate::v1::TaskState;

/// Whether a task may move from `from` to `to`: only forward.
pub fn is_forward(from: TaskState, to: TaskState) -> bool {
    (to as i32) > (from as i32)
}

/// Whether `state` is terminal: the task has stopped and will not run again.
pub fn is_terminal(state: TaskState) -> bool {
    (state as i32) >= (TaskState::Complete as i32)
}

/// The short upper-case name used in tables and messages ("RUNNING").
pub fn name(state: TaskState) -> &'static str {
    state.as_str_name().trim_start_matches("TASK_STATE_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_move_forward() {
        assert!(is_forward(TaskState::New, TaskState::Pending));
        assert!(is_forward(TaskState::Assigned, TaskState::Running));
        assert!(!is_forward(TaskState::Running, TaskState::Starting));
        assert!(!is_forward(TaskState::Running, TaskState::Running));
        assert!(is_terminal(TaskState::Failed));
        assert!(!is_terminal(TaskState::Running));
        assert_eq!(name(TaskState::Running), "RUNNING");
    }
}
