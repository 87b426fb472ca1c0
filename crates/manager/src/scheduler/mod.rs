//! The scheduler's decision core: which node each unassigned task should run on.
//!
//! It is synchronous and owns no I/O, store access or timers (the house rule "pure cores,
//! thin async shells"). The leader's runner keeps it fed — [`Scheduler::reset`] after it
//! becomes leader, then [`Scheduler::node_changed`] / [`Scheduler::node_removed`] /
//! [`Scheduler::task_changed`] / [`Scheduler::task_removed`] for every store event — and
//! calls [`Scheduler::schedule`] with the pending tasks it has collected. It applies each
//! [`Decision`]: `Assign` sets the task's node (state ASSIGNED), `NoSuitableNode` leaves the
//! task PENDING with the reason in its status. The placements `schedule` returns are counted
//! in the scheduler's view at once; if the runner fails to commit one it must tell the
//! scheduler by passing the task back through `task_changed` (unassigned) or `task_removed`.
//! Feeding back the committed, assigned task is harmless: a task is counted once, by ID.
//!
//! **The view.** Per node: the node object and the load of its non-terminal tasks — how many,
//! how many per service, and the CPU, memory and generic resources they reserve. A task counts
//! from the moment it has a node until its status is terminal (COMPLETE and after) or it is
//! removed; so resources are freed when the agent reports the task stopped, not when its
//! desired state changes. Load is kept even for a node that is gone, so a node that comes back
//! finds its tasks counted.
//!
//! **Filters**, in pipeline order; a node must pass all of them:
//! 1. available: status READY and availability ACTIVE (PAUSE and DRAIN take no new tasks);
//! 2. resources: the task's `resources.reservations` (nano CPUs, memory bytes, generic
//!    resources) fit in the node's `description.resources` minus what its tasks reserve.
//!    Generic resources are counted per kind: a node offers the sum of its discrete values
//!    plus one per named value; a task asks for its discrete value (or one per named value);
//! 3. runtime: the task's runtime (`container` or `process`) is in `description.runtimes`;
//! 4. constraints: every `placement.constraints` expression holds — `node.id`,
//!    `node.hostname`, `node.ip` (an address or a CIDR subnet, against the status address),
//!    `node.role` (`manager` | `worker`), `node.platform.os`, `node.platform.arch`,
//!    `node.labels.<key>` (the node spec's labels), `engine.labels.<key>` (the engine's) with
//!    `==` or `!=`. Values compare case-insensitively; a missing label equals nothing, so
//!    `!=` holds on a node without it;
//! 5. platform: if `placement.platforms` is not empty, the node's OS and architecture match
//!    one entry (an empty field matches anything; `x86_64` is `amd64`, `aarch64` is `arm64`);
//! 6. host ports: no task the node runs publishes one of the host-mode ports (port and
//!    protocol) the task publishes (`task.endpoint.ports`, which the allocator copies from
//!    the service; ingress ports are unique cluster-wide and need no filter);
//! 7. max replicas: with `placement.max_replicas` > 0, the node runs fewer tasks of the
//!    service than that.
//!
//! **Ranking** among the nodes that pass: fewest tasks of the same service, then fewest tasks
//! in total, then the smaller node ID (so decisions are deterministic). With
//! `placement.preferences` (spread over `node.labels.X` or `engine.labels.X`, nested in
//! order), the passing nodes are first split by the label's value (nodes without the label
//! form one more group), and each task goes to the group — at every level — that holds the
//! fewest tasks of the service so far (ties: the group without the label, then the smaller
//! value); the ranking above picks the node inside the last group. A group whose nodes are
//! all full is skipped.
//!
//! **A task that fits nowhere** gets [`Decision::NoSuitableNode`] with SwarmKit's kind of
//! reason: `no suitable node (2 nodes not available for new tasks; insufficient resources on
//! 1 node)` — each node is counted once, under the first filter it fails, and the counts are
//! those at the moment the task was given up on (nodes filled by earlier tasks of the batch
//! count as insufficient resources, host ports or max replicas). With no nodes at all the
//! reason is `no suitable node (no nodes in the cluster)`.
//!
//! **Speed.** `schedule` groups the pending tasks by (service, spec version) and identical
//! spec (specs are shared, so the check is mostly a pointer comparison). Groups whose
//! service-independent requirements match (runtime, reservation, constraints, platforms)
//! share one *class*: the filters run once per class over all nodes (O(nodes)), leaving the
//! candidates in an ordered set keyed by (tasks, node ID) that every placement of the call
//! keeps up to date (a node that fills up leaves it). A group then needs only the nodes that
//! already run its service (a small heap keyed by (service tasks, tasks, ID), built from a
//! per-service index) and a walk along the class's order for the nodes that run none — those
//! always rank first. So a group costs O((its tasks + nodes running its service) × log
//! nodes), and a batch of many small services on a huge cluster does not pay O(nodes) per
//! service. Spread preferences build a tree over the class's candidates: O(nodes) per group.
//! Groups are placed one after the other, in the order of their first task; decisions come
//! back in the order of the input. Measured (release, `#[ignore]`d `timing` test, one and
//! 100 services): 1k nodes × 100k tasks ≈ 0.1 s, 100k nodes × 1k tasks ≈ 20 ms; run it with
//! `cargo test -p shoal-manager --release scheduler::tests::timing -- --ignored --nocapture`.
//!
//! Invariants (checked by property tests): a task is only assigned to a node that passes
//! every filter at that moment — never to a node that is not READY and ACTIVE, never beyond
//! its resources, never beyond `max_replicas`; every input task gets exactly one decision.
//!
//! **Departures from SwarmKit.** A malformed constraint refuses the task (`NoSuitableNode`
//! with `invalid placement constraint: …`) where SwarmKit ignores the constraint filter and
//! places the task anywhere; the API validates constraints, so this only bites specs written
//! around validation. There is no plugin or volume filter (Shoal has neither); nodes
//! where the service's tasks failed recently are avoided by the orchestrator, which places
//! those tasks with such nodes paused first (SwarmKit ranks them last inside the scheduler). The runtime filter is Shoal's own: SwarmKit has one runtime.
//! Spread groups count the service's tasks on the nodes that pass the filters only, and fill
//! greedily one task at a time rather than through SwarmKit's decision tree; the result is
//! the same evening-out.

pub mod enforcer;
mod filter;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;

use shoal_api::task_state::is_terminal;
use shoal_api::v1::{Node, Task, TaskState};

use filter::{Capacity, Filter, Requirement, Reservation};

/// What to do with one pending task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Assign the task to the node.
    Assign { task_id: String, node_id: String },
    /// Leave it pending: no node passes the filters. `reason` goes into the task's status.
    NoSuitableNode { task_id: String, reason: String },
}

impl Decision {
    /// The task the decision is about.
    pub fn task_id(&self) -> &str {
        match self {
            Decision::Assign { task_id, .. } | Decision::NoSuitableNode { task_id, .. } => task_id,
        }
    }
}

/// What a node's tasks hold, as the scheduler counts it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// Non-terminal tasks assigned to the node.
    pub tasks: u32,
    /// CPUs they reserve, in billionths.
    pub nano_cpus: i64,
    pub memory_bytes: i64,
}

/// One node's entry: the node (if it exists) and its tasks' load.
#[derive(Debug)]
struct Slot {
    id: String,
    node: Option<Arc<Node>>,
    capacity: Capacity,
    tasks: u32,
    reserved: Reservation,
    /// Tasks per interned service.
    services: HashMap<u32, u32>,
}

impl Slot {
    fn service_tasks(&self, service: u32) -> u32 {
        self.services.get(&service).copied().unwrap_or(0)
    }
}

/// A task counted on a node.
#[derive(Debug)]
struct Placed {
    slot: usize,
    service: u32,
    reservation: Arc<Reservation>,
}

/// The scheduler's view of the cluster and its placement logic. See the module docs.
#[derive(Debug, Default)]
pub struct Scheduler {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Node ID → slot, in ID order (the ranking's last tie-break).
    by_id: BTreeMap<String, usize>,
    /// Non-terminal tasks with a node.
    placed: HashMap<String, Placed>,
    /// Service IDs, interned.
    services: HashMap<String, u32>,
    /// Per service, the slots that run its tasks and how many.
    service_nodes: HashMap<u32, HashMap<usize, u32>>,
}

/// The nodes that pass the service-independent filters for one class of requirements
/// (runtime, reservation, constraints, platforms), for the length of one `schedule` call.
struct Class {
    requirement: Requirement,
    /// Nodes that exist.
    nodes: usize,
    /// Nodes that failed each filter, including those filled up since.
    failed: [usize; Filter::COUNT],
    /// Passing slots in node ID order: a slot's rank is its index here.
    candidates: Vec<usize>,
    /// Slot → rank, `u32::MAX` if not a candidate.
    rank_of: Vec<u32>,
    /// (tasks, rank) of the candidates that still fit the reservation.
    order: BTreeSet<(u32, u32)>,
}

impl Class {
    /// The slot's rank if it is a candidate that still fits.
    fn alive_rank(&self, slot: usize) -> Option<u32> {
        let rank = *self.rank_of.get(slot)?;
        (rank != u32::MAX).then_some(rank)
    }

    /// The slot's task count was `before`: move it in the order, or drop it if it no longer
    /// fits the class's reservation.
    fn update(&mut self, entry: &Slot, slot: usize, before: u32) {
        let Some(rank) = self.alive_rank(slot) else {
            return;
        };
        self.order.remove(&(before, rank));
        match self.requirement.still_fits(entry) {
            Ok(()) => {
                self.order.insert((entry.tasks, rank));
            }
            Err(filter) => {
                self.rank_of[slot] = u32::MAX;
                self.failed[filter as usize] += 1;
            }
        }
    }
}

impl Scheduler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the view from scratch (after a leader change): every node, and every task
    /// (those with a node and a non-terminal status count toward load and reservations).
    pub fn reset(
        &mut self,
        nodes: impl IntoIterator<Item = Arc<Node>>,
        tasks: impl IntoIterator<Item = Arc<Task>>,
    ) {
        *self = Self::new();
        for node in nodes {
            self.node_changed(node);
        }
        for task in tasks {
            self.task_changed(task);
        }
    }

    /// A node was created or updated.
    pub fn node_changed(&mut self, node: Arc<Node>) {
        let id = node_id(&node).to_string();
        let slot = self.slot_for(&id);
        let slot = &mut self.slots[slot];
        slot.capacity = Capacity::of(&node);
        slot.node = Some(node);
    }

    /// A node was removed. Its tasks stay counted until they are removed or end.
    pub fn node_removed(&mut self, id: &str) {
        if let Some(&slot) = self.by_id.get(id) {
            self.slots[slot].node = None;
            self.release_if_unused(slot);
        }
    }

    /// A task was created or updated: it counts on its node while it has one and its status
    /// is not terminal.
    pub fn task_changed(&mut self, task: Arc<Task>) {
        let id = task_id(&task);
        let state = TaskState::try_from(task.status.as_ref().map_or(0, |s| s.state))
            .unwrap_or(TaskState::New);
        if task.node_id.is_empty() || is_terminal(state) {
            self.task_removed(id);
            return;
        }
        let service = self.intern(&task.service_id);
        let reservation = Arc::new(Reservation::of_task(&task));
        let slot = self.slot_for(&task.node_id);
        self.count(id.to_string(), slot, service, reservation);
    }

    /// A task was removed: it no longer counts.
    pub fn task_removed(&mut self, id: &str) {
        if let Some(old) = self.placed.remove(id) {
            self.uncount(&old);
        }
    }

    /// What the node's tasks hold, if the scheduler knows the node or tasks on it.
    pub fn node_load(&self, node_id: &str) -> Option<NodeLoad> {
        let slot = &self.slots[*self.by_id.get(node_id)?];
        Some(NodeLoad {
            tasks: slot.tasks,
            nano_cpus: slot.reserved.nano_cpus,
            memory_bytes: slot.reserved.memory_bytes,
        })
    }

    /// How many non-terminal tasks of the service run on the node.
    pub fn service_tasks(&self, node_id: &str, service_id: &str) -> u32 {
        match (self.by_id.get(node_id), self.services.get(service_id)) {
            (Some(&slot), Some(&service)) => self.slots[slot].service_tasks(service),
            _ => 0,
        }
    }

    /// Whether `task` may run on the node it names itself (a global service's task is made
    /// for one node): the filter pipeline on that node alone, max replicas included, no
    /// ranking. An assignment is counted in the view at once, as [`Scheduler::schedule`]'s.
    pub fn place_on(&mut self, task: &Task, node_id: &str) -> Decision {
        let id = task_id(task).to_string();
        let refuse = |reason: String| Decision::NoSuitableNode {
            task_id: id.clone(),
            reason,
        };
        let requirement = match Requirement::of_task(task) {
            Ok(r) => r,
            Err(e) => return refuse(format!("invalid placement constraint: {e}")),
        };
        let Some(&slot) = self.by_id.get(node_id) else {
            return refuse(format!(
                "no suitable node (node {node_id} is not in the cluster)"
            ));
        };
        let Some(node) = self.slots[slot].node.clone() else {
            return refuse(format!(
                "no suitable node (node {node_id} is not in the cluster)"
            ));
        };
        let service = self.intern(&task.service_id);
        let entry = &self.slots[slot];
        let verdict = requirement.check(&node, entry).and_then(|()| {
            if requirement.max_replicas_reached(entry.service_tasks(service)) {
                Err(Filter::MaxReplicas)
            } else {
                Ok(())
            }
        });
        match verdict {
            Ok(()) => {
                self.count(id.clone(), slot, service, requirement.reservation.clone());
                Decision::Assign {
                    task_id: id,
                    node_id: node_id.to_string(),
                }
            }
            Err(filter) => refuse(format!(
                "no suitable node ({})",
                filter.explain(1, &requirement)
            )),
        }
    }

    /// Places the given unassigned tasks (desired state RUNNING or earlier, status NEW or
    /// PENDING): one decision per task, in the input's order. The assignments are counted in
    /// the view at once, so the tasks of one batch spread over the nodes.
    pub fn schedule(&mut self, pending: &[Arc<Task>]) -> Vec<Decision> {
        let mut decisions: Vec<Option<Decision>> = vec![None; pending.len()];
        let mut classes: Vec<Class> = Vec::new();
        for group in group_tasks(pending) {
            self.schedule_group(pending, &group, &mut classes, &mut decisions);
        }
        decisions
            .into_iter()
            .map(|d| d.expect("every task is in a group"))
            .collect()
    }

    fn schedule_group(
        &mut self,
        pending: &[Arc<Task>],
        members: &[usize],
        classes: &mut Vec<Class>,
        decisions: &mut [Option<Decision>],
    ) {
        let first = &pending[members[0]];
        let service = self.intern(&first.service_id);
        let requirement = match Requirement::of_task(first) {
            Ok(r) => r,
            Err(message) => {
                let reason = format!("invalid placement constraint: {message}");
                for &i in members {
                    decisions[i] = Some(Decision::NoSuitableNode {
                        task_id: task_id(&pending[i]).to_string(),
                        reason: reason.clone(),
                    });
                }
                return;
            }
        };
        let class = match classes
            .iter()
            .position(|c| c.requirement.same_class(&requirement))
        {
            Some(c) => c,
            None => {
                classes.push(self.filter_pass(&requirement));
                classes.len() - 1
            }
        };

        let mut remaining = members.iter();
        if requirement.spread.is_empty() {
            // Nodes that run tasks of the service, by (service tasks, tasks, rank)...
            let mut busy: BinaryHeap<Key> = BinaryHeap::new();
            if let Some(nodes) = self.service_nodes.get(&service) {
                let c = &classes[class];
                for (&slot, &count) in nodes {
                    if let Some(rank) = c.alive_rank(slot)
                        && !requirement.max_replicas_reached(count)
                    {
                        busy.push(Reverse((count, self.slots[slot].tasks, rank)));
                    }
                }
            }
            // ...and the others, which always rank first, walked in (tasks, rank) order.
            let mut cursor: Option<(u32, u32)> = None;
            for &i in remaining.by_ref() {
                let task = &pending[i];
                let c = &classes[class];
                let mut pick = None;
                while let Some(&(total, rank)) = match cursor {
                    None => c.order.iter().next(),
                    Some(last) => c.order.range((Excluded(last), Unbounded)).next(),
                } {
                    cursor = Some((total, rank));
                    if self.slots[c.candidates[rank as usize]].service_tasks(service) == 0 {
                        pick = Some(rank);
                        break;
                    }
                }
                let pick = pick.or_else(|| busy.pop().map(|Reverse((_, _, rank))| rank));
                let Some(rank) = pick else {
                    self.give_up(pending, i, &mut remaining, &classes[class], decisions);
                    break;
                };
                let slot = classes[class].candidates[rank as usize];
                self.assign(classes, task, slot, service, &requirement);
                let entry = &self.slots[slot];
                let count = entry.service_tasks(service);
                if classes[class].alive_rank(slot).is_some()
                    && !requirement.max_replicas_reached(count)
                {
                    busy.push(Reverse((count, entry.tasks, rank)));
                }
                decisions[i] = Some(Decision::Assign {
                    task_id: task_id(task).to_string(),
                    node_id: entry.id.clone(),
                });
            }
            return;
        }

        // Spread preferences: a tree over the class's nodes that take more of the service.
        let c = &classes[class];
        let mut ranks = Vec::new();
        for &(_, rank) in &c.order {
            let entry = &self.slots[c.candidates[rank as usize]];
            if !requirement.max_replicas_reached(entry.service_tasks(service)) {
                ranks.push(rank);
            }
        }
        ranks.sort_unstable();
        let mut tree = Tree::build(&requirement.spread, ranks, |rank| {
            let entry = &self.slots[c.candidates[rank as usize]];
            (
                entry.node.as_deref().expect("candidates exist"),
                Reverse((entry.service_tasks(service), entry.tasks, rank)),
            )
        });
        for &i in remaining.by_ref() {
            let task = &pending[i];
            let placed = tree.place(&mut |rank| {
                let slot = classes[class].candidates[rank as usize];
                self.assign(classes, task, slot, service, &requirement);
                let entry = &self.slots[slot];
                let count = entry.service_tasks(service);
                if classes[class].alive_rank(slot).is_none()
                    || requirement.max_replicas_reached(count)
                {
                    None
                } else {
                    Some(Reverse((count, entry.tasks, rank)))
                }
            });
            match placed {
                Some(rank) => {
                    let slot = classes[class].candidates[rank as usize];
                    decisions[i] = Some(Decision::Assign {
                        task_id: task_id(task).to_string(),
                        node_id: self.slots[slot].id.clone(),
                    });
                }
                None => {
                    self.give_up(pending, i, &mut remaining, &classes[class], decisions);
                    break;
                }
            }
        }
    }

    /// Task `i` and the rest of its group fit nowhere.
    fn give_up(
        &self,
        pending: &[Arc<Task>],
        i: usize,
        rest: &mut std::slice::Iter<'_, usize>,
        class: &Class,
        decisions: &mut [Option<Decision>],
    ) {
        // Every node still in the class is at the service's max replicas: nodes that filled
        // up left it, and the group's placement gives up only once no other node is left.
        let mut failed = class.failed;
        failed[Filter::MaxReplicas as usize] += class.order.len();
        let reason = explain(class.nodes, &failed, &class.requirement);
        for j in std::iter::once(i).chain(rest.copied()) {
            decisions[j] = Some(Decision::NoSuitableNode {
                task_id: task_id(&pending[j]).to_string(),
                reason: reason.clone(),
            });
        }
    }

    /// Runs the filters that do not depend on the service over every node, once per class.
    fn filter_pass(&self, requirement: &Requirement) -> Class {
        let mut class = Class {
            requirement: requirement.clone(),
            nodes: 0,
            failed: [0; Filter::COUNT],
            candidates: Vec::new(),
            rank_of: vec![u32::MAX; self.slots.len()],
            order: BTreeSet::new(),
        };
        for &slot in self.by_id.values() {
            let entry = &self.slots[slot];
            let Some(node) = &entry.node else { continue };
            class.nodes += 1;
            match requirement.check(node, entry) {
                Ok(()) => {
                    let rank = class.candidates.len() as u32;
                    class.rank_of[slot] = rank;
                    class.candidates.push(slot);
                    class.order.insert((entry.tasks, rank));
                }
                Err(filter) => class.failed[filter as usize] += 1,
            }
        }
        class
    }

    /// Counts `task` on `slot` and brings every class's order up to date.
    fn assign(
        &mut self,
        classes: &mut [Class],
        task: &Task,
        slot: usize,
        service: u32,
        requirement: &Requirement,
    ) {
        let id = task_id(task);
        let moved_from = self
            .placed
            .get(id)
            .map(|p| (p.slot, self.slots[p.slot].tasks));
        let before = self.slots[slot].tasks;
        self.count(
            id.to_string(),
            slot,
            service,
            requirement.reservation.clone(),
        );
        for class in classes.iter_mut() {
            class.update(&self.slots[slot], slot, before);
            if let Some((old, old_tasks)) = moved_from
                && old != slot
            {
                class.update(&self.slots[old], old, old_tasks);
            }
        }
    }

    fn intern(&mut self, service_id: &str) -> u32 {
        if let Some(&n) = self.services.get(service_id) {
            return n;
        }
        let n = self.services.len() as u32;
        self.services.insert(service_id.to_string(), n);
        n
    }

    /// The slot of a node ID, created if needed.
    fn slot_for(&mut self, id: &str) -> usize {
        if let Some(&slot) = self.by_id.get(id) {
            return slot;
        }
        let entry = Slot {
            id: id.to_string(),
            node: None,
            capacity: Capacity::default(),
            tasks: 0,
            reserved: Reservation::default(),
            services: HashMap::new(),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = entry;
                slot
            }
            None => {
                self.slots.push(entry);
                self.slots.len() - 1
            }
        };
        self.by_id.insert(id.to_string(), slot);
        slot
    }

    fn release_if_unused(&mut self, slot: usize) {
        let entry = &self.slots[slot];
        if entry.node.is_none() && entry.tasks == 0 {
            self.by_id.remove(&entry.id);
            self.free.push(slot);
        }
    }

    /// Counts a task on a slot, replacing what it counted before.
    fn count(&mut self, id: String, slot: usize, service: u32, reservation: Arc<Reservation>) {
        {
            let entry = &mut self.slots[slot];
            entry.tasks += 1;
            *entry.services.entry(service).or_default() += 1;
            entry.reserved.add(&reservation);
        }
        *self
            .service_nodes
            .entry(service)
            .or_default()
            .entry(slot)
            .or_default() += 1;
        let placed = Placed {
            slot,
            service,
            reservation,
        };
        if let Some(old) = self.placed.insert(id, placed) {
            self.uncount(&old);
        }
    }

    fn uncount(&mut self, old: &Placed) {
        let entry = &mut self.slots[old.slot];
        entry.tasks -= 1;
        entry.reserved.subtract(&old.reservation);
        if let Some(n) = entry.services.get_mut(&old.service) {
            *n -= 1;
            if *n == 0 {
                entry.services.remove(&old.service);
            }
        }
        if let Some(nodes) = self.service_nodes.get_mut(&old.service)
            && let Some(n) = nodes.get_mut(&old.slot)
        {
            *n -= 1;
            if *n == 0 {
                nodes.remove(&old.slot);
                if nodes.is_empty() {
                    self.service_nodes.remove(&old.service);
                }
            }
        }
        self.release_if_unused(old.slot);
    }
}

fn node_id(node: &Node) -> &str {
    node.meta.as_ref().map_or("", |m| m.id.as_str())
}

fn task_id(task: &Task) -> &str {
    task.meta.as_ref().map_or("", |m| m.id.as_str())
}

/// Splits the pending tasks into groups that share their placement requirements: same
/// service, spec version and spec. Groups come in the order of their first task.
fn group_tasks(pending: &[Arc<Task>]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<(&str, u64), Vec<usize>> = HashMap::new();
    for (i, task) in pending.iter().enumerate() {
        let candidates = index
            .entry((task.service_id.as_str(), task.spec_version))
            .or_default();
        let same = candidates
            .iter()
            .copied()
            .find(|&g| pending[groups[g][0]].spec == task.spec);
        match same {
            Some(g) => groups[g].push(i),
            None => {
                candidates.push(groups.len());
                groups.push(vec![i]);
            }
        }
    }
    groups
}

/// The reason a task fits nowhere.
fn explain(nodes: usize, failed: &[usize; Filter::COUNT], requirement: &Requirement) -> String {
    if nodes == 0 {
        return "no suitable node (no nodes in the cluster)".into();
    }
    let mut out = String::from("no suitable node (");
    let mut first = true;
    for filter in Filter::ALL {
        let n = failed[filter as usize];
        if n == 0 {
            continue;
        }
        if !first {
            out.push_str("; ");
        }
        first = false;
        let _ = write!(out, "{}", filter.explain(n, requirement));
    }
    out.push(')');
    out
}

/// Heap key of a candidate: fewest service tasks, fewest tasks, smallest ID (rank) first.
type Key = Reverse<(u32, u32, u32)>;

/// The candidates of one group, split by the spread preferences' label values.
enum Tree {
    Leaf(BinaryHeap<Key>),
    Branches(Vec<Branch>),
}

struct Branch {
    value: Option<String>,
    /// Tasks of the service on the branch's nodes.
    service_tasks: u64,
    tree: Tree,
    exhausted: bool,
}

impl Tree {
    /// Builds the tree over candidate ranks; `get(rank)` gives the node and key.
    fn build<'a>(
        spread: &[String],
        ranks: Vec<u32>,
        get: impl Fn(u32) -> (&'a Node, Key) + Copy,
    ) -> Tree {
        Self::build_level(spread, ranks, get)
    }

    fn build_level<'a>(
        spread: &[String],
        ranks: Vec<u32>,
        get: impl Fn(u32) -> (&'a Node, Key) + Copy,
    ) -> Tree {
        let Some((descriptor, rest)) = spread.split_first() else {
            return Tree::Leaf(ranks.into_iter().map(|r| get(r).1).collect());
        };
        let mut by_value: BTreeMap<Option<String>, (u64, Vec<u32>)> = BTreeMap::new();
        for rank in ranks {
            let (node, Reverse((service_tasks, _, _))) = get(rank);
            let value = filter::spread_value(node, descriptor).map(str::to_string);
            let entry = by_value.entry(value).or_default();
            entry.0 += u64::from(service_tasks);
            entry.1.push(rank);
        }
        Tree::Branches(
            by_value
                .into_iter()
                .map(|(value, (service_tasks, ranks))| Branch {
                    value,
                    service_tasks,
                    tree: Self::build_level(rest, ranks, get),
                    exhausted: false,
                })
                .collect(),
        )
    }

    /// Picks a node: `apply(rank)` counts the task on it and returns its new key, or `None`
    /// if it can take no more tasks of the group. Returns the rank, or `None` if no
    /// candidate is left.
    fn place(&mut self, apply: &mut dyn FnMut(u32) -> Option<Key>) -> Option<u32> {
        match self {
            Tree::Leaf(heap) => {
                let Reverse((_, _, rank)) = heap.pop()?;
                if let Some(key) = apply(rank) {
                    heap.push(key);
                }
                Some(rank)
            }
            Tree::Branches(branches) => loop {
                let branch = branches
                    .iter_mut()
                    .filter(|b| !b.exhausted)
                    .min_by(|a, b| (a.service_tasks, &a.value).cmp(&(b.service_tasks, &b.value)))?;
                match branch.tree.place(apply) {
                    Some(rank) => {
                        branch.service_tasks += 1;
                        return Some(rank);
                    }
                    None => branch.exhausted = true,
                }
            },
        }
    }
}
