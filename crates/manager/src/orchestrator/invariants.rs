//! The orchestrator's safety and liveness properties under random faults, checked over many
//! seeded runs: the `Inv` and `EventuallyAsDesired` properties of SwarmKit's TLA+ model of
//! task orchestration, for Shoal's rounds.
//!
//! A run drives the real round ([`Orchestrator::round`]) on an in-memory store, with the
//! agents of four nodes simulated in between: tasks wanted RUNNING start (or fail to), tasks
//! told to stop stop, running tasks fail now and then, each with some probability, so that
//! the agents lag behind the orchestrator as real ones do. Faults and operations, drawn from
//! the seed: a node goes DOWN (its machine crashed: its tasks are gone when it comes back) or
//! comes back, is drained, paused or made active again; a service is scaled, or updated (a
//! new command, so every task must be replaced). After every round and every agent step:
//!
//! - **never above replicas + update allowance**: a replicated service has at most
//!   `replicas` live tasks wanted RUNNING or READY — plus `parallelism` during a start-first
//!   update;
//! - **one running task per slot** (stop-first services): no two tasks of a slot run at
//!   once on nodes that are up;
//!
//! and once faults stop and every node is back and active, within a bounded number of
//! rounds, **eventually as desired**: every replicated service runs exactly `replicas` tasks
//! of its current spec, the global service one task on every node, every update has
//! completed, and no task waits for a node.
//!
//! A failing seed is printed; rerun it alone with `SHOAL_ORCHESTRATOR_SEED=<seed>`.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_api::task_state::is_terminal;
use shoal_api::v1::{
    GlobalService, Node, ProcessSpec, ReplicatedService, RestartPolicy, Service, Task, TaskState,
    TaskStatus, UpdateConfig, node_spec, node_status, restart_policy, service_spec, task_spec,
    update_config, update_status,
};
use shoal_store::{By, Reader, Store};

use super::tests::{leading, node, service};
use super::{Orchestrator, id_of, now, state_of};

const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];
/// Steps with faults, then at most this many to converge.
const FAULT_STEPS: usize = 120;
const SETTLE_STEPS: usize = 200;

/// A small deterministic generator (xorshift64*), so that a seed replays exactly.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `percent` %.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn command(n: u64) -> task_spec::Runtime {
    task_spec::Runtime::Process(Box::new(ProcessSpec {
        command: format!("serve --generation {n}"),
        ..Default::default()
    }))
}

/// A service restarting at once, updating one task at a time in `order`, carrying on
/// whatever fails (so that every update can complete once faults stop).
fn sim_service(id: &str, mode: service_spec::Mode, order: update_config::UpdateOrder) -> Service {
    let mut s = service(id, 0, command(0));
    let spec = s.spec.as_mut().unwrap();
    spec.mode = Some(mode);
    let mut task = (**spec.task.as_ref().unwrap()).clone();
    task.restart = Some(RestartPolicy {
        condition: restart_policy::Condition::Any as i32,
        delay: Some(prost_types::Duration::default()),
        ..Default::default()
    });
    spec.task = Some(task.into());
    spec.update = Some(UpdateConfig {
        parallelism: 1,
        monitor: Some(prost_types::Duration::default()),
        failure_action: update_config::FailureAction::Continue as i32,
        order: order as i32,
        ..Default::default()
    });
    s
}

fn replicas_of(service: &Service) -> Option<u64> {
    match service.spec.as_ref()?.mode.as_ref()? {
        service_spec::Mode::Replicated(r) => Some(r.replicas),
        _ => None,
    }
}

fn order_of(service: &Service) -> update_config::UpdateOrder {
    service
        .spec
        .as_ref()
        .and_then(|s| s.update.as_ref())
        .and_then(|u| update_config::UpdateOrder::try_from(u.order).ok())
        .unwrap_or_default()
}

fn node_up(node: &Node) -> bool {
    node.status.as_ref().map(|s| s.state) == Some(node_status::State::Ready as i32)
}

/// One step of every agent whose node is up.
async fn agents(store: &Store, rng: &mut Rng) {
    let nodes: HashMap<String, bool> = store
        .view(|tx| tx.find::<Node>(By::All))
        .iter()
        .map(|n| (id_of_node(n), node_up(n)))
        .collect();
    let tasks = in_replay_order(store.view(|tx| tx.find::<Task>(By::All)));
    let mut changes: Vec<(String, TaskState)> = Vec::new();
    for task in &tasks {
        if task.node_id.is_empty() || !nodes.get(&task.node_id).copied().unwrap_or(false) {
            continue;
        }
        let observed = state_of(task);
        if is_terminal(observed) {
            continue;
        }
        let next = if task.desired_state >= TaskState::Shutdown as i32 {
            rng.chance(60).then_some(TaskState::Shutdown)
        } else if task.desired_state == TaskState::Running as i32 {
            match observed {
                TaskState::Assigned if rng.chance(60) => Some(if rng.chance(10) {
                    TaskState::Failed
                } else {
                    TaskState::Running
                }),
                TaskState::Running if rng.chance(3) => Some(TaskState::Failed),
                _ => None,
            }
        } else {
            None
        };
        if let Some(state) = next {
            changes.push((id_of(&**task).to_string(), state));
        }
    }
    set_states(store, changes).await;
}

/// Tasks in an order that does not depend on their (random) IDs, so that the agents draw
/// from the generator in the same order when a seed is replayed.
fn in_replay_order(mut tasks: Vec<Arc<Task>>) -> Vec<Arc<Task>> {
    tasks.sort_by_key(|t| {
        (
            t.service_id.clone(),
            t.slot,
            t.node_id.clone(),
            t.spec_version,
            t.meta
                .as_ref()
                .and_then(|m| m.created_at.as_ref())
                .map(|c| (c.seconds, c.nanos)),
            t.desired_state,
            state_of(t),
        )
    });
    tasks
}

fn id_of_node(node: &Node) -> String {
    node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

async fn set_states(store: &Store, changes: Vec<(String, TaskState)>) {
    if changes.is_empty() {
        return;
    }
    store
        .update(move |tx| {
            for (id, state) in changes {
                let mut task = (*tx.get::<Task>(&id).unwrap()).clone();
                task.status = Some(TaskStatus {
                    state: state as i32,
                    timestamp: Some(now()),
                    ..Default::default()
                });
                tx.update(task)?;
            }
            Ok(())
        })
        .await
        .unwrap();
}

async fn update_node(store: &Store, id: &str, f: impl FnOnce(&mut Node) + Send + 'static) {
    let id = id.to_string();
    store
        .update(move |tx| {
            let mut node = (*tx.get::<Node>(&id).unwrap()).clone();
            f(&mut node);
            tx.update(node)
        })
        .await
        .unwrap();
}

async fn update_service(store: &Store, id: &str, f: impl FnOnce(&mut Service) + Send + 'static) {
    let id = id.to_string();
    store
        .update(move |tx| {
            let mut s = (*tx.get::<Service>(&id).unwrap()).clone();
            s.previous_spec = s.spec.clone().map(Box::new);
            s.previous_spec_version = s.spec_version;
            s.spec_version += 1;
            s.update_status = None;
            f(&mut s);
            tx.update(s)
        })
        .await
        .unwrap();
}

/// One fault or operation, drawn from the generator.
async fn fault(store: &Store, rng: &mut Rng, generation: &mut u64) {
    let node = NODES[rng.below(NODES.len() as u64) as usize];
    match rng.below(9) {
        0 => {
            update_node(store, node, |n| {
                n.status.as_mut().unwrap().state = node_status::State::Down as i32;
            })
            .await
        }
        1 => {
            // Back from a crash: what ran there is gone.
            let was_down = store
                .view(|tx| tx.get::<Node>(node))
                .is_some_and(|n| !node_up(&n));
            if was_down {
                let lost: Vec<(String, TaskState)> = store
                    .view(|tx| tx.find::<Task>(By::All))
                    .iter()
                    .filter(|t| t.node_id == node && !is_terminal(state_of(t)))
                    .map(|t| (id_of(&**t).to_string(), TaskState::Failed))
                    .collect();
                set_states(store, lost).await;
                update_node(store, node, |n| {
                    n.status.as_mut().unwrap().state = node_status::State::Ready as i32;
                })
                .await;
            }
        }
        2 => {
            let availability = match rng.below(3) {
                0 => node_spec::Availability::Drain,
                1 => node_spec::Availability::Pause,
                _ => node_spec::Availability::Active,
            };
            update_node(store, node, move |n| {
                n.spec.as_mut().unwrap().availability = availability as i32;
            })
            .await
        }
        3 | 4 => {
            let id = if rng.chance(50) {
                "stop-first"
            } else {
                "start-first"
            };
            let replicas = rng.below(6);
            update_service(store, id, move |s| {
                s.spec.as_mut().unwrap().mode =
                    Some(service_spec::Mode::Replicated(ReplicatedService {
                        replicas,
                    }));
            })
            .await
        }
        5 | 6 => {
            let id = ["stop-first", "start-first", "global"][rng.below(3) as usize];
            *generation += 1;
            let runtime = command(*generation);
            update_service(store, id, move |s| {
                let spec = s.spec.as_mut().unwrap();
                let mut task = (**spec.task.as_ref().unwrap()).clone();
                task.runtime = Some(runtime);
                spec.task = Some(task.into());
            })
            .await
        }
        _ => {} // a quiet step
    }
}

/// The safety properties, after every step. Returns what is violated.
fn check_safety(store: &Store) -> Result<(), String> {
    let (services, tasks, nodes) = store.view(|tx| {
        (
            tx.find::<Service>(By::All),
            tx.find::<Task>(By::All),
            tx.find::<Node>(By::All),
        )
    });
    let up: HashMap<String, bool> = nodes.iter().map(|n| (id_of_node(n), node_up(n))).collect();
    for service in &services {
        let Some(replicas) = replicas_of(service) else {
            continue;
        };
        let id = id_of(&**service);
        let order = order_of(service);
        let mine: Vec<&Arc<Task>> = tasks.iter().filter(|t| t.service_id == id).collect();
        let wanted = mine
            .iter()
            .filter(|t| {
                t.desired_state <= TaskState::Running as i32
                    && t.desired_state >= TaskState::Ready as i32
                    && !is_terminal(state_of(t))
            })
            .count() as u64;
        let allowance = match order {
            update_config::UpdateOrder::StartFirst => 1,
            update_config::UpdateOrder::StopFirst => 0,
        };
        if wanted > replicas + allowance {
            return Err(format!(
                "{id}: {wanted} live tasks wanted running, above {replicas} replicas + \
                 {allowance}; its tasks: {:#?}",
                describe(&mine)
            ));
        }
        if order == update_config::UpdateOrder::StopFirst {
            let mut per_slot: HashMap<u64, usize> = HashMap::new();
            for t in &mine {
                if state_of(t) == TaskState::Running && up.get(&t.node_id).copied().unwrap_or(false)
                {
                    *per_slot.entry(t.slot).or_default() += 1;
                }
            }
            if let Some((slot, n)) = per_slot.iter().find(|(_, n)| **n > 1) {
                return Err(format!("{id}: slot {slot} runs {n} tasks at once"));
            }
        }
    }
    Ok(())
}

fn describe(tasks: &[&Arc<Task>]) -> Vec<String> {
    tasks
        .iter()
        .map(|t| {
            format!(
                "{} slot {} on {} v{} desired {} observed {:?}",
                id_of(&***t),
                t.slot,
                t.node_id,
                t.spec_version,
                t.desired_state,
                state_of(t)
            )
        })
        .collect()
}

/// Whether the cluster is as desired (every node up and active by now).
fn as_desired(store: &Store) -> Result<(), String> {
    let (services, tasks) =
        store.view(|tx| (tx.find::<Service>(By::All), tx.find::<Task>(By::All)));
    for service in &services {
        let id = id_of(&**service);
        let current = service.spec.as_ref().and_then(|s| s.task.as_ref());
        let running: Vec<&Arc<Task>> = tasks
            .iter()
            .filter(|t| {
                t.service_id == id
                    && t.desired_state == TaskState::Running as i32
                    && state_of(t) == TaskState::Running
            })
            .collect();
        if let Some(stale) = running.iter().find(|t| t.spec.as_ref() != current) {
            return Err(format!("{id}: task {} runs an old spec", id_of(&***stale)));
        }
        match replicas_of(service) {
            Some(replicas) => {
                let mut slots: Vec<u64> = running.iter().map(|t| t.slot).collect();
                slots.sort();
                if slots != (1..=replicas).collect::<Vec<_>>() {
                    return Err(format!(
                        "{id}: running slots {slots:?}, want 1..={replicas}"
                    ));
                }
            }
            None => {
                let mut on: Vec<&str> = running.iter().map(|t| t.node_id.as_str()).collect();
                on.sort();
                if on != NODES {
                    let detail: Vec<String> = tasks
                        .iter()
                        .filter(|t| t.service_id == id)
                        .map(|t| {
                            format!(
                                "{} on {} v{} desired {} observed {:?}",
                                id_of(&**t),
                                t.node_id,
                                t.spec_version,
                                t.desired_state,
                                state_of(t)
                            )
                        })
                        .collect();
                    return Err(format!(
                        "{id}: runs on {on:?}, want one task on every node; its tasks: {detail:#?}"
                    ));
                }
            }
        }
        let state = service.update_status.as_ref().map(|s| s.state);
        if matches!(state, Some(s) if s == update_status::UpdateState::Updating as i32) {
            return Err(format!("{id}: its update has not completed"));
        }
    }
    if let Some(waiting) = tasks
        .iter()
        .find(|t| t.desired_state <= TaskState::Running as i32 && state_of(t) == TaskState::Pending)
    {
        return Err(format!("task {} waits for a node", id_of(&**waiting)));
    }
    Ok(())
}

async fn run(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let store = Store::new();
    store
        .update(|tx| {
            for id in NODES {
                tx.create(node(id))?;
            }
            tx.create(sim_service(
                "stop-first",
                service_spec::Mode::Replicated(ReplicatedService { replicas: 3 }),
                update_config::UpdateOrder::StopFirst,
            ))?;
            tx.create(sim_service(
                "start-first",
                service_spec::Mode::Replicated(ReplicatedService { replicas: 2 }),
                update_config::UpdateOrder::StartFirst,
            ))?;
            tx.create(sim_service(
                "global",
                service_spec::Mode::Global(GlobalService {}),
                update_config::UpdateOrder::StopFirst,
            ))
        })
        .await
        .unwrap();
    let raft = leading();
    let mut orchestrator = Orchestrator::with_leadership(store.clone(), raft);
    // The scheduler's view follows the store's changes between rounds, as in the loop.
    let mut changes = store.watch(shoal_store::Filter::all());
    let mut generation = 0;
    for step in 0..FAULT_STEPS {
        if rng.chance(30) {
            fault(&store, &mut rng, &mut generation).await;
        }
        orchestrator.catch_up(&mut changes);
        orchestrator
            .round()
            .await
            .map_err(|e| format!("round: {e}"))?;
        check_safety(&store).map_err(|e| format!("step {step}, after a round: {e}"))?;
        agents(&store, &mut rng).await;
        check_safety(&store).map_err(|e| format!("step {step}, after the agents: {e}"))?;
    }
    // Faults stop: every node back and active.
    for id in NODES {
        let was_down = store
            .view(|tx| tx.get::<Node>(id))
            .is_some_and(|n| !node_up(&n));
        if was_down {
            let lost: Vec<(String, TaskState)> = store
                .view(|tx| tx.find::<Task>(By::All))
                .iter()
                .filter(|t| t.node_id == id && !is_terminal(state_of(t)))
                .map(|t| (id_of(&**t).to_string(), TaskState::Failed))
                .collect();
            set_states(&store, lost).await;
        }
        update_node(&store, id, |n| {
            n.status.as_mut().unwrap().state = node_status::State::Ready as i32;
            n.spec.as_mut().unwrap().availability = node_spec::Availability::Active as i32;
        })
        .await;
    }
    let mut last = String::new();
    for step in 0..SETTLE_STEPS {
        orchestrator.catch_up(&mut changes);
        orchestrator
            .round()
            .await
            .map_err(|e| format!("round: {e}"))?;
        check_safety(&store).map_err(|e| format!("settling, step {step}: {e}"))?;
        match as_desired(&store) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        // No more task failures while settling: agents only start and stop.
        let mut calm = Rng::new(seed ^ step as u64);
        agents_without_failures(&store, &mut calm).await;
        check_safety(&store).map_err(|e| format!("settling, step {step}: {e}"))?;
    }
    Err(format!(
        "not as desired {SETTLE_STEPS} rounds after faults stopped: {last}"
    ))
}

/// Agents that start what is wanted running and stop what is told to stop, and never fail.
async fn agents_without_failures(store: &Store, rng: &mut Rng) {
    let tasks = in_replay_order(store.view(|tx| tx.find::<Task>(By::All)));
    let mut changes = Vec::new();
    for task in &tasks {
        let observed = state_of(task);
        if task.node_id.is_empty() || is_terminal(observed) || !rng.chance(70) {
            continue;
        }
        if task.desired_state >= TaskState::Shutdown as i32 {
            changes.push((id_of(&**task).to_string(), TaskState::Shutdown));
        } else if task.desired_state == TaskState::Running as i32 && observed == TaskState::Assigned
        {
            changes.push((id_of(&**task).to_string(), TaskState::Running));
        }
    }
    set_states(store, changes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_stay_within_bounds_under_faults_and_converge_once_they_stop() {
    let seeds: Vec<u64> = match std::env::var("SHOAL_ORCHESTRATOR_SEED") {
        Ok(seed) => vec![seed.parse().expect("SHOAL_ORCHESTRATOR_SEED is a number")],
        Err(_) => (1..=40).collect(),
    };
    for seed in seeds {
        if let Err(e) = run(seed).await {
            panic!("seed {seed}: {e} (rerun with SHOAL_ORCHESTRATOR_SEED={seed})");
        }
    }
}
