//! The workload: clients that create, update, read and remove configs through the managers'
//! control sockets while faults happen, and the history of what they saw.
//!
//! K clients (tokio tasks) each run a bounded number of operations (and stop early at a
//! deadline or when told to). Each operation goes to the control socket of a manager picked at
//! random for that operation, on a connection of its own, under a time limit; the instant it
//! was called and the instant it returned are read from one monotonic clock whose origin is the
//! start of the run. The "value" of a config is its label `faults.value`, a number unique to
//! each write, so that a read shows which write it saw. Updates name the ID and version the
//! client last saw (a read, or its own create or update), as `docker config` users would.
//!
//! # Outcomes
//!
//! Every answer is mapped by [`classify`] (pure, unit-tested) to one of:
//!
//! - **ok**: an answer of the model ([`Output`]): created, updated, found, removed, and also
//!   the refusals that are part of the object's semantics — `NotFound`, `AlreadyExists`,
//!   FailedPrecondition "update out of sequence". These are definite: the store decided.
//! - **failed** (definite): refused before anything was proposed to Raft, so the operation
//!   certainly had no effect: "this manager is not the leader" (the Control API's
//!   `require_leader`, before building the transaction), Unavailable "no leader: …" and "no
//!   leader known yet" (Raft refuses the proposal at once: nothing is appended), a forwarded
//!   call refused by a manager that no longer leads (refused before serving), "cannot reach
//!   the leader … to forward" (the dial failed, nothing was sent), a connection to the control
//!   socket that could not be opened, InvalidArgument. Failed operations are left out of the
//!   history: having no effect, they are indistinguishable from operations never issued.
//! - **unknown**: everything else — the client's time limit, a connection that broke after the
//!   request was sent, "forwarding the call to the leader … failed" (the leader may have
//!   received it), "the write's outcome is unknown", Internal, Cancelled, any message not
//!   recognised. The checker may place such a write anywhere after its call, or drop it: always
//!   safe, at worst it hides a violation, never invents one.
//!
//! Reads that do not answer are simply left out (a read changes nothing).
//!
//! Where this departs from Jepsen and etcd's robustness tests: Jepsen's clients are
//! single-threaded processes that open a fresh "process" after an indeterminate outcome; here
//! a client is a task with no state across operations except what it learned (IDs and
//! versions), so an unknown outcome needs no new client identity. etcd's traffic generators
//! use its native client with retries; we use no retries at all — every attempt is an
//! operation in the history — because a retry that hides a failure is exactly what the check
//! must see (TiDB's lost updates came from blind retries).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_api::v1::{
    Annotations, ConfigSpec, CreateConfigRequest, GetConfigRequest, Label, RemoveConfigRequest,
    UpdateConfigRequest,
};
use shoal_check::{ClientId, History, Operation};
use tonic::{Code, Status};

use crate::cluster::control;
use crate::model::{Incarnation, Input, Output, Value, Version};

/// The label that holds a config's value.
pub const VALUE_LABEL: &str = "faults.value";
/// The prefix of the workload's config names.
pub const NAME_PREFIX: &str = "faults-obj-";
/// The client ID used for the reads made after healing.
pub const FINAL_READER: u32 = 1_000;

/// How much work, and how it is spread.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub clients: usize,
    /// Operations per client, at most.
    pub ops_per_client: usize,
    /// How many config names the clients share.
    pub objects: usize,
    /// The client's limit on one operation (connect + call).
    pub op_timeout: Duration,
    /// Pause between two operations of one client.
    pub think: Duration,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            clients: 4,
            ops_per_client: 2_000,
            objects: 5,
            op_timeout: Duration::from_secs(4),
            think: Duration::from_millis(20),
        }
    }
}

/// How one operation ended, from its client's point of view.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Answer {
    /// The store decided (including NotFound, AlreadyExists and out of sequence).
    Ok(Output),
    /// Certainly had no effect.
    Failed(String),
    /// May or may not have taken effect.
    Unknown(String),
}

/// One recorded operation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Record {
    pub client: u32,
    /// The manager whose socket it went to.
    pub node: String,
    pub input: Input,
    pub call: Duration,
    /// When the answer (or failure) arrived; `None` for unknown outcomes.
    pub returned: Option<Duration>,
    pub answer: Answer,
}

impl Record {
    pub fn is_ok(&self) -> bool {
        matches!(self.answer, Answer::Ok(_))
    }

    /// Whether the store acknowledged a change (created, updated, removed).
    pub fn acknowledged_write(&self) -> bool {
        matches!(&self.answer, Answer::Ok(o) if o.acknowledges_write())
    }
}

/// The shared recorder: the clock's origin, the operations, and the interned config IDs.
#[derive(Debug)]
pub struct Recorder {
    origin: Instant,
    records: Mutex<Vec<Record>>,
    ids: Mutex<HashMap<String, Incarnation>>,
}

impl Recorder {
    pub fn new(origin: Instant) -> Arc<Recorder> {
        Arc::new(Recorder {
            origin,
            records: Mutex::new(Vec::new()),
            ids: Mutex::new(HashMap::new()),
        })
    }

    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    pub fn intern(&self, id: &str) -> Incarnation {
        let mut ids = self.ids.lock().unwrap();
        let next = ids.len() as Incarnation + 1;
        *ids.entry(id.to_string()).or_insert(next)
    }

    pub fn id_of(&self, incarnation: Incarnation) -> Option<String> {
        let ids = self.ids.lock().unwrap();
        ids.iter()
            .find(|(_, i)| **i == incarnation)
            .map(|(id, _)| id.clone())
    }

    pub fn push(&self, record: Record) {
        self.records.lock().unwrap().push(record);
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }
}

/// The history the checker reads: ok operations and unknown ones; failed ones left out.
pub fn history(records: &[Record]) -> History<Input, Output> {
    records
        .iter()
        .filter_map(|r| {
            let client = ClientId(r.client);
            match (&r.answer, r.returned) {
                (Answer::Ok(output), Some(at)) => Some(Operation::returned(
                    client,
                    r.input.clone(),
                    r.call,
                    at,
                    output.clone(),
                )),
                (Answer::Unknown(_), _) if r.input.is_write() => {
                    Some(Operation::unknown(client, r.input.clone(), r.call))
                }
                _ => None,
            }
        })
        .collect()
}

/// Maps a gRPC error of a call with input `input` to an answer.
pub fn classify(input: &Input, status: &Status) -> Answer {
    let message = status.message();
    match status.code() {
        Code::NotFound => Answer::Ok(Output::NotFound),
        Code::AlreadyExists if matches!(input, Input::Create { .. }) => {
            Answer::Ok(Output::AlreadyExists)
        }
        Code::FailedPrecondition if message.contains("out of sequence") => {
            Answer::Ok(Output::OutOfSequence)
        }
        Code::FailedPrecondition if message.contains("is not the leader") => {
            Answer::Failed(message.to_string())
        }
        Code::Unavailable
            if message.starts_with("no leader")
                || message.contains("but this manager is no longer the leader")
                || message.contains("cannot reach the leader") =>
        {
            Answer::Failed(message.to_string())
        }
        Code::InvalidArgument => Answer::Failed(format!("invalid argument: {message}")),
        code => Answer::Unknown(format!("{code:?}: {message}")),
    }
}

fn spec(name: &str, value: Value) -> ConfigSpec {
    ConfigSpec {
        annotations: Some(Annotations {
            name: name.to_string(),
            labels: vec![Label {
                key: VALUE_LABEL.into(),
                value: value.to_string(),
            }],
        }),
        data: b"shoal-faults".to_vec(),
        templating: None,
    }
}

/// A config as the model sees it: (ID, value, version).
fn observe(config: Option<shoal_api::v1::Config>) -> Option<(String, Value, Version)> {
    let config = config?;
    let meta = config.meta?;
    let value = config
        .spec?
        .annotations?
        .labels
        .iter()
        .find(|l| l.key == VALUE_LABEL)
        .and_then(|l| l.value.parse().ok())
        .unwrap_or(0);
    Some((meta.id, value, meta.version))
}

/// Runs one operation against the control socket `socket`. `id` is the config ID for updates
/// and removals. Returns the answer and, when the store told it, the config's ID.
pub async fn execute(
    socket: &std::path::Path,
    input: &Input,
    id: Option<&str>,
    recorder: &Recorder,
    limit: Duration,
) -> Answer {
    let start = Instant::now();
    let mut client = match control(socket, limit).await {
        Ok(client) => client,
        // Nothing was sent.
        Err(e) => return Answer::Failed(e),
    };
    let remaining = limit.saturating_sub(start.elapsed());
    let id = id.unwrap_or_default().to_string();
    let call = async {
        match input {
            Input::Create { name, value } => client
                .create_config(CreateConfigRequest {
                    spec: Some(spec(name, *value)),
                })
                .await
                .map(|r| match observe(r.into_inner().config) {
                    Some((id, _, version)) => Answer::Ok(Output::Created {
                        id: recorder.intern(&id),
                        version,
                    }),
                    None => Answer::Unknown("created, but the answer holds no config".into()),
                }),
            Input::Update {
                name,
                read_version,
                value,
                ..
            } => client
                .update_config(UpdateConfigRequest {
                    config_id: id.clone(),
                    config_version: *read_version,
                    spec: Some(spec(name, *value)),
                })
                .await
                .map(|r| match observe(r.into_inner().config) {
                    Some((_, _, version)) => Answer::Ok(Output::Updated { version }),
                    None => Answer::Unknown("updated, but the answer holds no config".into()),
                }),
            Input::Read { name } => client
                .get_config(GetConfigRequest {
                    config_id: name.clone(),
                })
                .await
                .map(|r| match observe(r.into_inner().config) {
                    Some((id, value, version)) => Answer::Ok(Output::Found {
                        id: recorder.intern(&id),
                        value,
                        version,
                    }),
                    None => Answer::Unknown("found, but the answer holds no config".into()),
                }),
            Input::Remove { .. } => client
                .remove_config(RemoveConfigRequest {
                    config_id: id.clone(),
                })
                .await
                .map(|_| Answer::Ok(Output::Removed)),
        }
    };
    match tokio::time::timeout(remaining, call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(status)) => classify(input, &status),
        Err(_) => Answer::Unknown(format!("timed out after {limit:?}")),
    }
}

/// What one client knows about a config name: its ID (and interned incarnation) and version.
#[derive(Clone, Debug)]
struct Known {
    id: String,
    incarnation: Incarnation,
    version: Version,
}

/// The names the workload uses.
pub fn names(objects: usize) -> Vec<String> {
    (0..objects).map(|i| format!("{NAME_PREFIX}{i}")).collect()
}

/// A running workload: its clients, and how to stop them.
pub struct Workload {
    pub recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Starts `spec.clients` clients against the managers' sockets (`(name, socket)`), each
    /// with its own random generator derived from `seed`. They stop after their operations,
    /// at `deadline`, or at [`Workload::stop`], whichever comes first.
    pub fn start(
        spec: &WorkloadSpec,
        managers: Vec<(String, PathBuf)>,
        seed: u64,
        recorder: Arc<Recorder>,
        deadline: Instant,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let names = names(spec.objects);
        let tasks = (0..spec.clients)
            .map(|c| {
                let spec = spec.clone();
                let managers = managers.clone();
                let names = names.clone();
                let recorder = recorder.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(
                        seed ^ 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(c as u64 + 1),
                    );
                    let mut known: HashMap<String, Known> = HashMap::new();
                    for n in 0..spec.ops_per_client {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            break;
                        }
                        let (node, socket) = &managers[rng.random_range(0..managers.len())];
                        let name = names[rng.random_range(0..names.len())].clone();
                        let value: Value = ((c as u64 + 1) << 32) | n as u64;
                        let roll = rng.random_range(0..100);
                        let k = known.get(&name).cloned();
                        let (input, id) = match (roll, k) {
                            (0..15, _) => (
                                Input::Create {
                                    name: name.clone(),
                                    value,
                                },
                                None,
                            ),
                            (15..55, Some(k)) => (
                                Input::Update {
                                    name: name.clone(),
                                    id: k.incarnation,
                                    read_version: k.version,
                                    value,
                                },
                                Some(k.id),
                            ),
                            (55..65, Some(k)) => (
                                Input::Remove {
                                    name: name.clone(),
                                    id: k.incarnation,
                                },
                                Some(k.id),
                            ),
                            _ => (Input::Read { name: name.clone() }, None),
                        };
                        let call = recorder.now();
                        let answer =
                            execute(socket, &input, id.as_deref(), &recorder, spec.op_timeout)
                                .await;
                        let returned = match answer {
                            Answer::Unknown(_) => None,
                            _ => Some(recorder.now()),
                        };
                        // Learn what the answer says about the object.
                        match (&input, &answer) {
                            (_, Answer::Ok(Output::Created { id: inc, version }))
                            | (
                                _,
                                Answer::Ok(Output::Found {
                                    id: inc, version, ..
                                }),
                            ) => {
                                if let Some(id) = recorder.id_of(*inc) {
                                    known.insert(
                                        name.clone(),
                                        Known {
                                            id,
                                            incarnation: *inc,
                                            version: *version,
                                        },
                                    );
                                }
                            }
                            (_, Answer::Ok(Output::Updated { version })) => {
                                if let Some(k) = known.get_mut(&name) {
                                    k.version = *version;
                                }
                            }
                            (_, Answer::Ok(Output::Removed | Output::NotFound)) => {
                                known.remove(&name);
                            }
                            _ => {}
                        }
                        recorder.push(Record {
                            client: c as u32,
                            node: node.clone(),
                            input,
                            call,
                            returned,
                            answer,
                        });
                        tokio::time::sleep(spec.think).await;
                    }
                })
            })
            .collect();
        Workload {
            recorder,
            stop,
            tasks,
        }
    }

    /// Tells the clients to stop after their current operation.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for every client (each bounded by its operation time limit). An error if a
    /// client panicked: its history would be incomplete.
    pub async fn join(self) -> Result<Arc<Recorder>, String> {
        self.stop();
        let mut panics = Vec::new();
        for (c, task) in self.tasks.into_iter().enumerate() {
            if let Err(e) = task.await {
                panics.push(format!("client {c}: {e}"));
            }
        }
        if panics.is_empty() {
            Ok(self.recorder)
        } else {
            Err(format!("workload clients failed: {}", panics.join("; ")))
        }
    }
}

/// After healing: reads every name until a definite answer (bounded by `limit`), adding each
/// read to the history as client [`FINAL_READER`]. Returns the names it could not read.
pub async fn final_reads(
    recorder: &Recorder,
    managers: &[(String, PathBuf)],
    objects: usize,
    limit: Duration,
) -> Vec<String> {
    let start = Instant::now();
    let mut unread = Vec::new();
    for name in names(objects) {
        let input = Input::Read { name: name.clone() };
        let mut attempt = 0usize;
        loop {
            let (node, socket) = &managers[attempt % managers.len()];
            attempt += 1;
            let call = recorder.now();
            let answer = execute(socket, &input, None, recorder, Duration::from_secs(5)).await;
            if let Answer::Ok(_) = answer {
                recorder.push(Record {
                    client: FINAL_READER,
                    node: node.clone(),
                    input: input.clone(),
                    call,
                    returned: Some(recorder.now()),
                    answer,
                });
                break;
            }
            if start.elapsed() > limit {
                unread.push(name.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    unread
}

/// Counts of outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
}

pub fn counts(records: &[Record]) -> Counts {
    let mut c = Counts::default();
    for r in records.iter().filter(|r| r.client != FINAL_READER) {
        match r.answer {
            Answer::Ok(_) => c.ok += 1,
            Answer::Failed(_) => c.failed += 1,
            Answer::Unknown(_) => c.unknown += 1,
        }
    }
    c
}

/// The reasons of failed and unknown outcomes, with how often each occurred (messages cut
/// at their first digit or 70 characters, so that addresses and counts do not split them).
pub fn reasons(records: &[Record]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for r in records {
        let (kind, why) = match &r.answer {
            Answer::Ok(_) => continue,
            Answer::Failed(why) => ("failed", why),
            Answer::Unknown(why) => ("unknown", why),
        };
        let cut: String = why
            .chars()
            .take_while(|c| !c.is_ascii_digit())
            .take(70)
            .collect();
        *out.entry(format!("{kind}: {}", cut.trim_end()))
            .or_insert(0) += 1;
    }
    out
}

/// The longest time within `[from, to]` with no acknowledged write completing: the gaps
/// between `from`, the completions of acknowledged writes, and `to`.
pub fn longest_write_gap(records: &[Record], from: Duration, to: Duration) -> Duration {
    let mut instants: Vec<Duration> = records
        .iter()
        .filter(|r| r.acknowledged_write())
        .filter_map(|r| r.returned)
        .filter(|&t| t >= from && t <= to)
        .collect();
    instants.sort();
    let mut previous = from;
    let mut longest = Duration::ZERO;
    for t in instants.into_iter().chain(std::iter::once(to)) {
        longest = longest.max(t.saturating_sub(previous));
        previous = t;
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update() -> Input {
        Input::Update {
            name: "a".into(),
            id: 1,
            read_version: 3,
            value: 9,
        }
    }

    #[test]
    fn refusals_of_the_store_are_answers() {
        let stale = Status::failed_precondition(
            "update out of sequence: config x has changed since it was read (version 3 was read, \
             it is now at 5); read it again and retry",
        );
        assert_eq!(
            classify(&update(), &stale),
            Answer::Ok(Output::OutOfSequence)
        );
        assert_eq!(
            classify(&update(), &Status::not_found("config x not found")),
            Answer::Ok(Output::NotFound)
        );
        let create = Input::Create {
            name: "a".into(),
            value: 1,
        };
        assert_eq!(
            classify(&create, &Status::already_exists("config a already exists")),
            Answer::Ok(Output::AlreadyExists)
        );
    }

    #[test]
    fn refusals_before_proposing_are_definite_failures() {
        for status in [
            Status::failed_precondition(
                "this manager is not the leader; the leader is at 10.0.0.1:4242",
            ),
            Status::unavailable(
                "no leader: quorum lost (1 of 3 managers reachable); bring managers back",
            ),
            Status::unavailable(
                "no leader known yet: this manager is still catching up with its cluster; retry shortly",
            ),
            Status::unavailable(
                "manager m2 forwarded this call here, but this manager is no longer the leader (leadership is moving); retry the call",
            ),
            Status::unavailable(
                "this manager is not the leader and cannot reach the leader at 10.0.0.1:4242 to forward the call (x); retry, or call the leader directly",
            ),
        ] {
            assert!(
                matches!(classify(&update(), &status), Answer::Failed(_)),
                "{status:?}"
            );
        }
    }

    #[test]
    fn anything_else_is_unknown() {
        for status in [
            Status::unavailable(
                "forwarding the call to the leader at 10.0.0.1:4242 failed (broken pipe); retry",
            ),
            Status::unavailable(
                "the write's outcome is unknown: it was not committed within two election timeouts",
            ),
            Status::internal("h2 protocol error"),
            Status::cancelled("operation was canceled"),
            Status::unknown("transport error"),
            Status::deadline_exceeded("deadline"),
        ] {
            assert!(
                matches!(classify(&update(), &status), Answer::Unknown(_)),
                "{status:?}"
            );
        }
    }

    fn record(input: Input, call: u64, returned: Option<u64>, answer: Answer) -> Record {
        Record {
            client: 0,
            node: "m1".into(),
            input,
            call: Duration::from_millis(call),
            returned: returned.map(Duration::from_millis),
            answer,
        }
    }

    #[test]
    fn failed_operations_and_unknown_reads_are_left_out_of_the_history() {
        let read = Input::Read { name: "a".into() };
        let records = vec![
            record(update(), 0, Some(1), Answer::Failed("no leader".into())),
            record(update(), 0, None, Answer::Unknown("timeout".into())),
            record(read.clone(), 0, None, Answer::Unknown("timeout".into())),
            record(read, 0, Some(3), Answer::Ok(Output::NotFound)),
        ];
        let h = history(&records);
        assert_eq!(h.len(), 2);
        assert!(h.operations()[0].is_unknown());
        assert_eq!(
            counts(&records),
            Counts {
                ok: 1,
                failed: 1,
                unknown: 2
            }
        );
    }

    #[test]
    fn the_write_gap_spans_the_window_edges() {
        let ok = |at| {
            record(
                update(),
                at,
                Some(at),
                Answer::Ok(Output::Updated { version: at }),
            )
        };
        let records = vec![ok(100), ok(300), ok(1_300), ok(1_400)];
        let ms = Duration::from_millis;
        assert_eq!(longest_write_gap(&records, ms(0), ms(2_000)), ms(1_000));
        assert_eq!(longest_write_gap(&records, ms(0), ms(5_000)), ms(3_600));
        assert_eq!(longest_write_gap(&[], ms(0), ms(50)), ms(50));
    }
}
