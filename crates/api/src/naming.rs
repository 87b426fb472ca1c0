//! Names derived from objects, as docker shows them.

use crate::v1::Task;

/// A task's name as docker shows it: `<service>.<slot>.<id>` (`<service>.<node>.<id>` for
/// global tasks, which have no slot), or its own annotated name when it has one.
pub fn task_name(task: &Task) -> String {
    let id = task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    if let Some(name) = task.annotations.as_ref().map(|a| a.name.as_str())
        && !name.is_empty()
    {
        return name.to_string();
    }
    let service = task
        .service_annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .unwrap_or("");
    match (service, task.slot) {
        ("", _) => id.to_string(),
        (service, 0) => format!("{service}.{}.{id}", task.node_id),
        (service, slot) => format!("{service}.{slot}.{id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Annotations, Meta};

    #[test]
    fn tasks_are_named_as_docker_names_them() {
        let mut task = Task {
            meta: Some(Meta {
                id: "abc".into(),
                ..Default::default()
            }),
            service_annotations: Some(Box::new(Annotations {
                name: "web".into(),
                ..Default::default()
            })),
            slot: 2,
            node_id: "n1".into(),
            ..Default::default()
        };
        assert_eq!(task_name(&task), "web.2.abc");
        task.slot = 0;
        assert_eq!(task_name(&task), "web.n1.abc");
        task.service_annotations = None;
        assert_eq!(task_name(&task), "abc");
    }
}
