//! The worker's task database: what this node was assigned and what became of it, on disk.
//!
//! One redb database (`<state>/worker/tasks.redb` when the agent wires it) with two tables
//! keyed by task ID:
//!
//! - `tasks`: the assigned [`Task`] as the dispatcher sent it, protobuf-encoded;
//! - `statuses`: the task's latest [`TaskStatus`] as the worker reported it, protobuf-encoded.
//!   Its `runtime_status` carries what the executor needs to find the task's program again
//!   (the process runtime's PID and start time: `Controller::runtime_status`), so that after
//!   an agent restart a running task is *adopted*, not started a second time.
//!
//! Invariants: every write is one redb write transaction committed with the default
//! durability (fsync before `commit` returns), so a status the worker has reported — and a
//! PID it may later need — is on disk before it is handed to the reporter; a crash never
//! exposes a torn commit. A status is only kept for a task that is in `tasks`; `remove`
//! deletes both in one transaction.
//!
//! Departures from SwarmKit: SwarmKit's `agent/storage.go` keeps the same facts in BoltDB
//! (task, status, an "assigned" flag) under one bucket per task; here two flat tables, and no
//! "assigned" flag — a task is assigned exactly while it is in `tasks`. Writes are made on
//! the caller's thread (a few small fsyncs per task life-cycle), not on a blocking pool.

use std::path::Path;

use prost::Message;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use shoal_api::v1::{Task, TaskStatus};

const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const STATUSES: TableDefinition<&str, &[u8]> = TableDefinition::new("statuses");

/// Why the task database failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("task database: {0}")]
    Storage(String),
    #[error("task database: cannot decode {what} of task {id}: {message}")]
    Corrupt {
        what: &'static str,
        id: String,
        message: String,
    },
}

fn storage(e: impl std::fmt::Display) -> DbError {
    DbError::Storage(e.to_string())
}

/// One task as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTask {
    pub task: Task,
    /// The last status reported, with its runtime data; `None` before the first report.
    pub status: Option<TaskStatus>,
}

/// The worker's durable record of its tasks.
pub struct TaskDb {
    db: redb::Database,
}

impl std::fmt::Debug for TaskDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskDb").finish_non_exhaustive()
    }
}

fn task_id(task: &Task) -> &str {
    task.meta
        .as_ref()
        .map(|m| m.id.as_str())
        .unwrap_or_default()
}

impl TaskDb {
    /// Opens (or creates) the database at `path`, creating its directory.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| DbError::Storage(format!("creating {}: {e}", dir.display())))?;
        }
        let db = redb::Database::create(path).map_err(storage)?;
        let write = db.begin_write().map_err(storage)?;
        write.open_table(TASKS).map_err(storage)?;
        write.open_table(STATUSES).map_err(storage)?;
        write.commit().map_err(storage)?;
        Ok(Self { db })
    }

    /// Records `task` (its latest assignment), keeping its status.
    pub fn put_task(&self, task: &Task) -> Result<(), DbError> {
        let id = task_id(task);
        let write = self.db.begin_write().map_err(storage)?;
        {
            let mut tasks = write.open_table(TASKS).map_err(storage)?;
            tasks
                .insert(id, task.encode_to_vec().as_slice())
                .map_err(storage)?;
        }
        write.commit().map_err(storage)
    }

    /// Records the latest status of task `id`. Ignored (returns `false`) when the task is not
    /// recorded: a status outliving its task's removal must not bring it back.
    pub fn put_status(&self, id: &str, status: &TaskStatus) -> Result<bool, DbError> {
        let write = self.db.begin_write().map_err(storage)?;
        let known = {
            let tasks = write.open_table(TASKS).map_err(storage)?;
            tasks.get(id).map_err(storage)?.is_some()
        };
        if known {
            let mut statuses = write.open_table(STATUSES).map_err(storage)?;
            statuses
                .insert(id, status.encode_to_vec().as_slice())
                .map_err(storage)?;
        }
        write.commit().map_err(storage)?;
        Ok(known)
    }

    /// Forgets task `id` (its assignment and its status).
    pub fn remove(&self, id: &str) -> Result<(), DbError> {
        let write = self.db.begin_write().map_err(storage)?;
        {
            write
                .open_table(TASKS)
                .map_err(storage)?
                .remove(id)
                .map_err(storage)?;
            write
                .open_table(STATUSES)
                .map_err(storage)?
                .remove(id)
                .map_err(storage)?;
        }
        write.commit().map_err(storage)
    }

    /// Task `id`, if recorded.
    pub fn get(&self, id: &str) -> Result<Option<StoredTask>, DbError> {
        let read = self.db.begin_read().map_err(storage)?;
        let tasks = read.open_table(TASKS).map_err(storage)?;
        let statuses = read.open_table(STATUSES).map_err(storage)?;
        let Some(bytes) = tasks.get(id).map_err(storage)? else {
            return Ok(None);
        };
        let task = decode_task(id, bytes.value())?;
        let status = match statuses.get(id).map_err(storage)? {
            Some(bytes) => Some(decode_status(id, bytes.value())?),
            None => None,
        };
        Ok(Some(StoredTask { task, status }))
    }

    /// Every recorded task, by ID.
    pub fn load(&self) -> Result<Vec<StoredTask>, DbError> {
        let read = self.db.begin_read().map_err(storage)?;
        let tasks = read.open_table(TASKS).map_err(storage)?;
        let statuses = read.open_table(STATUSES).map_err(storage)?;
        let mut all = Vec::new();
        for entry in tasks.iter().map_err(storage)? {
            let (key, value) = entry.map_err(storage)?;
            let id = key.value();
            let task = decode_task(id, value.value())?;
            let status = match statuses.get(id).map_err(storage)? {
                Some(bytes) => Some(decode_status(id, bytes.value())?),
                None => None,
            };
            all.push(StoredTask { task, status });
        }
        Ok(all)
    }
}

fn decode_task(id: &str, bytes: &[u8]) -> Result<Task, DbError> {
    Task::decode(bytes).map_err(|e| DbError::Corrupt {
        what: "the assignment",
        id: id.to_string(),
        message: e.to_string(),
    })
}

fn decode_status(id: &str, bytes: &[u8]) -> Result<TaskStatus, DbError> {
    TaskStatus::decode(bytes).map_err(|e| DbError::Corrupt {
        what: "the status",
        id: id.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use shoal_api::v1::{Meta, ProcessStatus, TaskState, task_status};

    use super::*;

    fn task(id: &str) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            desired_state: TaskState::Running as i32,
            ..Default::default()
        }
    }

    #[test]
    fn tasks_and_statuses_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker").join("tasks.redb");
        let status = TaskStatus {
            state: TaskState::Running as i32,
            message: "started".into(),
            runtime_status: Some(task_status::RuntimeStatus::Process(Box::new(
                ProcessStatus {
                    pid: 42,
                    start_time: 7,
                    ..Default::default()
                },
            ))),
            ..Default::default()
        };
        {
            let db = TaskDb::open(&path).unwrap();
            db.put_task(&task("a")).unwrap();
            db.put_task(&task("b")).unwrap();
            assert!(db.put_status("a", &status).unwrap());
            assert!(
                !db.put_status("ghost", &status).unwrap(),
                "no status without its task"
            );
            db.remove("b").unwrap();
        }
        let db = TaskDb::open(&path).unwrap();
        let all = db.load().unwrap();
        assert_eq!(
            all,
            vec![StoredTask {
                task: task("a"),
                status: Some(status)
            }]
        );
        assert_eq!(db.get("b").unwrap(), None);
        assert_eq!(db.get("ghost").unwrap(), None);
    }
}
