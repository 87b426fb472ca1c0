//! Store tests that golden scripts cannot express: concurrency, proposals applied out of the
//! order they were built in, size limits, and properties checked over random content.

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use prost::Message as _;
use shoal_api::clock::ManualClock;
use shoal_api::labels::Labels;
use shoal_api::v1::{
    Annotations, Meta, Secret, SecretSpec, Service, ServiceSpec, StoreSnapshot, Task, TaskState,
    TaskStatus,
};

use crate::{
    By, ChangeSet, Filter, LocalProposer, ProposeFuture, Proposer, Reader, StateMachine, Store,
    StoreError,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn service(id: &str, name: &str) -> Service {
    Service {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn task(id: &str, service_id: &str, slot: u64) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        service_id: service_id.into(),
        slot,
        ..Default::default()
    }
}

/// A proposer that holds proposals until the test applies them, in any order.
#[derive(Default)]
struct HeldProposer {
    held: Mutex<Vec<ChangeSet>>,
}

impl Proposer for HeldProposer {
    fn propose(&self, _: &Arc<StateMachine>, changes: ChangeSet) -> ProposeFuture {
        self.held.lock().unwrap().push(changes);
        Box::pin(std::future::ready(Ok(0)))
    }
}

fn held_store() -> (Store, Arc<HeldProposer>) {
    let proposer = Arc::new(HeldProposer::default());
    let clock = Arc::new(ManualClock::at_unix_seconds(1));
    (Store::with(proposer.clone(), clock, 64), proposer)
}

/// A held store that already holds service s1 ("web") at version 1.
fn held_store_with_web(rt: &tokio::runtime::Runtime) -> (Store, Arc<HeldProposer>) {
    let (store, proposer) = held_store();
    let seed = Store::new();
    rt.block_on(seed.update(|tx| tx.create(service("s1", "web"))))
        .unwrap();
    store.restore(seed.snapshot()).unwrap();
    (store, proposer)
}

#[test]
fn pipelined_updates_of_the_same_version_conflict_when_applied() {
    let rt = runtime();
    let (store, proposer) = held_store_with_web(&rt);

    // Two writers read version 1 and both propose an update before either is applied.
    for name in ["first", "second"] {
        rt.block_on(store.update(|tx| {
            let mut s = (*tx.get::<Service>("s1").unwrap()).clone();
            s.spec
                .as_mut()
                .unwrap()
                .annotations
                .as_mut()
                .unwrap()
                .labels
                .set_label("by", name);
            tx.update(s)
        }))
        .unwrap();
    }
    let held = std::mem::take(&mut *proposer.held.lock().unwrap());
    assert_eq!(held.len(), 2);
    let state = store.state_machine();
    assert_eq!(state.apply(held[0].clone()), Ok(2));
    let err = state.apply(held[1].clone()).unwrap_err();
    assert!(
        err.to_string().starts_with("update out of sequence"),
        "{err}"
    );
    let label = store.view(|tx| {
        tx.get::<Service>("s1")
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()
            .labels
            .get_label("by")
            .unwrap()
            .to_string()
    });
    assert_eq!(label, "first");
    assert_eq!(state.version(), 2);
}

#[test]
fn a_transaction_conflicts_when_an_object_it_read_changed() {
    let rt = runtime();
    let (store, proposer) = held_store_with_web(&rt);

    // A: reads the service, creates a task for it. B: updates the service.
    rt.block_on(store.update(|tx| {
        let s = tx.get::<Service>("s1").unwrap();
        tx.create(task("t1", s.meta.as_ref().unwrap().id.as_str(), 1))
    }))
    .unwrap();
    rt.block_on(store.update(|tx| {
        let s = (*tx.get::<Service>("s1").unwrap()).clone();
        tx.update(s)
    }))
    .unwrap();
    let held = std::mem::take(&mut *proposer.held.lock().unwrap());
    let state = store.state_machine();
    state.apply(held[1].clone()).unwrap();
    let err = state.apply(held[0].clone()).unwrap_err();
    assert!(matches!(err, StoreError::SequenceConflict { .. }), "{err}");
    assert_eq!(store.view(|tx| tx.count::<Task>()), 0);
}

#[test]
fn a_read_of_a_missing_object_conflicts_if_it_appears() {
    let rt = runtime();
    let (store, proposer) = held_store();
    rt.block_on(store.update(|tx| {
        assert!(tx.get::<Service>("s1").is_none());
        tx.create(service("s2", "only-if-s1-absent"))
    }))
    .unwrap();
    rt.block_on(store.update(|tx| tx.create(service("s1", "web"))))
        .unwrap();
    let held = std::mem::take(&mut *proposer.held.lock().unwrap());
    let state = store.state_machine();
    state.apply(held[1].clone()).unwrap();
    assert!(state.apply(held[0].clone()).unwrap_err().is_conflict());
}

#[test]
fn an_oversized_transaction_is_refused_and_writes_nothing() {
    let rt = runtime();
    let store = Store::new();
    let big = Secret {
        meta: Some(Meta {
            id: "x".into(),
            ..Default::default()
        }),
        spec: Some(SecretSpec {
            annotations: Some(Annotations {
                name: "big".into(),
                ..Default::default()
            }),
            data: vec![7; 2 << 20],
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = rt.block_on(store.update(|tx| tx.create(big))).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert_eq!(store.version(), 0);
    assert_eq!(store.view(|tx| tx.count::<Secret>()), 0);
}

#[test]
fn view_and_watch_misses_nothing_and_sees_nothing_twice() {
    const WRITES: usize = 3000;
    let store = Store::with(
        Arc::new(LocalProposer),
        Arc::new(shoal_api::clock::SystemClock),
        WRITES + 10,
    );
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let rt = runtime();
            for i in 0..WRITES {
                rt.block_on(store.update(|tx| tx.create(task(&format!("t{i:05}"), "s", i as u64))))
                    .unwrap();
            }
        })
    };
    // Subscribe while the writer runs.
    while store.version() < 500 {
        std::thread::yield_now();
    }
    let ((seen, version), mut sub) =
        store.view_and_watch(Filter::all(), |tx| (tx.count::<Task>(), tx.version()));
    writer.join().unwrap();
    let mut next_version = version + 1;
    let mut events = 0;
    while let Some((v, _)) = sub.try_next().unwrap() {
        assert_eq!(v, next_version, "commits arrive in order without gaps");
        next_version += 1;
        events += 1;
    }
    assert_eq!(seen + events, WRITES);
}

#[test]
fn a_thousand_watchers_each_see_every_commit() {
    let rt = runtime();
    let store = Store::new();
    let mut subs: Vec<_> = (0..1000).map(|_| store.watch(Filter::all())).collect();
    rt.block_on(async {
        let mut batch = store.batch();
        for i in 0..50 {
            batch
                .update(|tx| tx.create(task(&format!("t{i}"), "s", i)))
                .await
                .unwrap();
        }
        batch.commit().await.unwrap();
    });
    for sub in &mut subs {
        let mut n = 0;
        while sub.try_next().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 50);
    }
}

#[test]
fn lookup_by_task_state_follows_status_updates() {
    let rt = runtime();
    let store = Store::new();
    rt.block_on(store.update(|tx| tx.create(task("t1", "s", 1))))
        .unwrap();
    rt.block_on(store.update(|tx| {
        let mut t = (*tx.get::<Task>("t1").unwrap()).clone();
        t.status = Some(TaskStatus {
            state: TaskState::Running as i32,
            ..Default::default()
        });
        tx.update(t)
    }))
    .unwrap();
    store.view(|tx| {
        assert_eq!(tx.find::<Task>(By::TaskState(TaskState::Running)).len(), 1);
        assert_eq!(tx.find::<Task>(By::TaskState(TaskState::New)).len(), 0);
    });
}

#[test]
fn tasks_arriving_encoded_share_their_service_spec() {
    use shoal_api::v1::{TaskSpec, TaskSpecFields};
    let rt = runtime();
    let spec = TaskSpec::from(TaskSpecFields {
        force_update: 9,
        ..Default::default()
    });
    let mut s = service("s1", "web");
    s.spec.as_mut().unwrap().task = Some(spec);
    // A task carrying an equal but separate copy, as decoding produces.
    let mut t = task("t1", "s1", 1);
    t.spec = Some(TaskSpec::from(TaskSpecFields {
        force_update: 9,
        ..Default::default()
    }));
    let store = Store::new();
    rt.block_on(store.update(|tx| {
        tx.create(s.clone())?;
        tx.create(t.clone())
    }))
    .unwrap();
    let shared = |store: &Store| {
        store.view(|tx| {
            let s = tx.get::<Service>("s1").unwrap();
            let t = tx.get::<Task>("t1").unwrap();
            TaskSpec::ptr_eq(
                s.spec.as_ref().unwrap().task.as_ref().unwrap(),
                t.spec.as_ref().unwrap(),
            )
        })
    };
    assert!(shared(&store));
    let restored = Store::new();
    let bytes = store.snapshot().encode_to_vec();
    restored
        .restore(StoreSnapshot::decode(bytes.as_slice()).unwrap())
        .unwrap();
    assert!(shared(&restored));
    // A task whose spec differs keeps its own.
    let mut other = task("t2", "s1", 2);
    other.spec = Some(TaskSpec::from(TaskSpecFields {
        force_update: 1,
        ..Default::default()
    }));
    rt.block_on(store.update(|tx| tx.create(other.clone())))
        .unwrap();
    let t2 = store.view(|tx| tx.get::<Task>("t2").unwrap());
    assert_eq!(t2.spec.as_ref().unwrap().force_update, 1);
}

/// Applies a proposal only when its future is first polled, like a replicated proposer whose
/// commit comes later.
struct LazyProposer;

impl Proposer for LazyProposer {
    fn propose(&self, state: &Arc<StateMachine>, changes: ChangeSet) -> ProposeFuture {
        let state = state.clone();
        Box::pin(async move { state.apply(changes) })
    }
}

#[test]
fn a_batch_sees_its_own_writes_still_in_flight() {
    let rt = runtime();
    let store = Store::with(
        Arc::new(LazyProposer),
        Arc::new(ManualClock::at_unix_seconds(1)),
        64,
    );
    rt.block_on(async {
        let mut batch = store.batch();
        for i in 0..450 {
            batch
                .update(|tx| tx.create(task(&format!("t{i:03}"), "s", i)))
                .await
                .unwrap();
        }
        // t000 was written by a transaction that may still be in flight: the update must
        // wait for it instead of failing with "not found" or "out of sequence".
        for i in [0u64, 1, 449] {
            batch
                .update(|tx| {
                    let id = format!("t{i:03}");
                    let current = tx.get::<Task>(&id).ok_or(StoreError::NotFound {
                        kind: "task",
                        what: id,
                    })?;
                    let mut t = (*current).clone();
                    t.node_id = "n1".into();
                    tx.update(t)
                })
                .await
                .unwrap();
        }
        let transactions = batch.commit().await.unwrap();
        assert!(transactions >= 3, "{transactions}");
    });
    store.view(|tx| {
        assert_eq!(tx.count::<Task>(), 450);
        assert_eq!(tx.find::<Task>(By::Node("n1")).len(), 3);
    });
}

// --- Properties ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    CreateService(u8),
    CreateTask(u8, u8, u8),
    UpdateTask(u8, u8),
    RemoveTask(u8),
    RemoveService(u8),
    StaleUpdate(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..8).prop_map(Op::CreateService),
        (0u8..32, 0u8..8, 0u8..4).prop_map(|(t, s, slot)| Op::CreateTask(t, s, slot)),
        (0u8..32, 0u8..14).prop_map(|(t, state)| Op::UpdateTask(t, state)),
        (0u8..32).prop_map(Op::RemoveTask),
        (0u8..8).prop_map(Op::RemoveService),
        (0u8..32).prop_map(Op::StaleUpdate),
    ]
}

const STATES: [TaskState; 14] = [
    TaskState::New,
    TaskState::Pending,
    TaskState::Assigned,
    TaskState::Accepted,
    TaskState::Preparing,
    TaskState::Ready,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Complete,
    TaskState::Shutdown,
    TaskState::Failed,
    TaskState::Rejected,
    TaskState::Remove,
    TaskState::Orphaned,
];

/// Runs `op` on `store`, ignoring expected refusals.
fn run_op(rt: &tokio::runtime::Runtime, store: &Store, op: &Op) {
    let _ = rt.block_on(store.update(|tx| match *op {
        Op::CreateService(s) => tx.create(service(&format!("s{s}"), &format!("svc{s}"))),
        Op::CreateTask(t, s, slot) => {
            tx.create(task(&format!("t{t}"), &format!("s{s}"), slot as u64))
        }
        Op::UpdateTask(t, state) => {
            let mut task = (*tx
                .get::<Task>(&format!("t{t}"))
                .ok_or(StoreError::Unavailable(String::new()))?)
            .clone();
            task.status = Some(TaskStatus {
                state: STATES[state as usize] as i32,
                ..Default::default()
            });
            task.node_id = format!("n{}", state % 3);
            tx.update(task)
        }
        Op::RemoveTask(t) => tx.delete::<Task>(&format!("t{t}")),
        Op::RemoveService(s) => tx.delete::<Service>(&format!("s{s}")),
        Op::StaleUpdate(t) => {
            let mut task = (*tx
                .get::<Task>(&format!("t{t}"))
                .ok_or(StoreError::Unavailable(String::new()))?)
            .clone();
            task.meta.as_mut().unwrap().version += 1;
            tx.update(task)
        }
    }));
}

/// Every index answer equals a scan of all objects.
fn check_indexes(store: &Store) {
    store.view(|tx| {
        let tasks = tx.find::<Task>(By::All);
        for s in 0..8 {
            let id = format!("s{s}");
            let mut by_index: Vec<_> = tx
                .find::<Task>(By::Service(&id))
                .iter()
                .map(|t| t.meta.clone())
                .collect();
            let mut by_scan: Vec<_> = tasks
                .iter()
                .filter(|t| t.service_id == id)
                .map(|t| t.meta.clone())
                .collect();
            by_index.sort_by(|a, b| a.as_ref().unwrap().id.cmp(&b.as_ref().unwrap().id));
            by_scan.sort_by(|a, b| a.as_ref().unwrap().id.cmp(&b.as_ref().unwrap().id));
            assert_eq!(by_index, by_scan);
            for slot in 0..4 {
                let n = tx.find::<Task>(By::Slot(&id, slot)).len();
                assert_eq!(
                    n,
                    tasks
                        .iter()
                        .filter(|t| t.service_id == id && t.slot == slot)
                        .count()
                );
            }
        }
        for state in STATES {
            let n = tx.find::<Task>(By::TaskState(state)).len();
            let scan = tasks
                .iter()
                .filter(|t| t.status.as_ref().map(|s| s.state).unwrap_or(0) == state as i32)
                .count();
            assert_eq!(n, scan, "{state:?}");
        }
        for n in 0..3 {
            let node = format!("n{n}");
            assert_eq!(
                tx.find::<Task>(By::Node(&node)).len(),
                tasks.iter().filter(|t| t.node_id == node).count()
            );
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Snapshot → bytes → restore gives back equal content, equal indexes and equal bytes.
    #[test]
    fn snapshot_round_trips(ops in proptest::collection::vec(op(), 0..120)) {
        let rt = runtime();
        let store = Store::new();
        for op in &ops {
            run_op(&rt, &store, op);
        }
        check_indexes(&store);
        let snapshot = store.snapshot();
        let bytes = snapshot.encode_to_vec();
        prop_assert_eq!(store.state_machine().encode_snapshot(), bytes.clone());
        let restored = Store::new();
        restored.restore(StoreSnapshot::decode(bytes.as_slice()).unwrap()).unwrap();
        prop_assert_eq!(restored.snapshot().encode_to_vec(), bytes);
        prop_assert_eq!(restored.version(), store.version());
        check_indexes(&restored);
    }

    /// Two state machines applying the same transactions, including refused ones, end with the
    /// same content and the same verdicts.
    #[test]
    fn apply_is_deterministic(ops in proptest::collection::vec(op(), 0..120)) {
        let rt = runtime();
        let (builder, proposer) = held_store();
        let replicas = [StateMachine::new(4), StateMachine::new(4)];
        let mut verdicts = [Vec::new(), Vec::new()];
        for op in &ops {
            run_op(&rt, &builder, op);
            let held = std::mem::take(&mut *proposer.held.lock().unwrap());
            for changes in held {
                // The builder's view follows replica 0, applied through its state machine.
                let wire = changes.to_proto().encode_to_vec();
                for (r, replica) in replicas.iter().enumerate() {
                    let decoded = ChangeSet::from_proto(shoal_api::v1::Transaction::decode(wire.as_slice()).unwrap()).unwrap();
                    verdicts[r].push(replica.apply(decoded).map_err(|e| e.to_string()));
                }
                builder.restore(replicas[0].snapshot()).unwrap();
            }
        }
        prop_assert_eq!(&verdicts[0], &verdicts[1]);
        prop_assert_eq!(replicas[0].snapshot().encode_to_vec(), replicas[1].snapshot().encode_to_vec());
    }

    /// The same content inserted in any order snapshots to the same bytes.
    #[test]
    fn snapshot_bytes_do_not_depend_on_insertion_order(
        ids in proptest::collection::btree_set(0u32..10_000, 0..60),
        seed in any::<u64>(),
    ) {
        let rt = runtime();
        let clock = Arc::new(ManualClock::at_unix_seconds(7));
        let mut ids: Vec<u32> = ids.into_iter().collect();
        let a = Store::with(Arc::new(LocalProposer), clock.clone(), 4);
        let b = Store::with(Arc::new(LocalProposer), clock, 4);
        rt.block_on(a.update(|tx| ids.iter().try_for_each(|i| tx.create(task(&format!("t{i}"), "s", *i as u64))))).unwrap();
        // A simple deterministic shuffle.
        let mut state = seed | 1;
        for i in (1..ids.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            ids.swap(i, (state % (i as u64 + 1)) as usize);
        }
        rt.block_on(b.update(|tx| ids.iter().try_for_each(|i| tx.create(task(&format!("t{i}"), "s", *i as u64))))).unwrap();
        prop_assert_eq!(a.snapshot().encode_to_vec(), b.snapshot().encode_to_vec());
    }
}
