//! The engine's decision: given the live machines and every unit (its requirements, desired
//! state and current machine), which units to take off their machine and where to place the
//! units that should run. Pure and deterministic: no I/O, no clock, no randomness, and the
//! answer does not depend on the order of the inputs.
//!
//! # Rules, as fleet's engine had them
//!
//! * Global units are never scheduled: every agent runs them where
//!   [`global_unit_runs_here`] says so. A global unit that somehow has a machine is
//!   unscheduled.
//! * A scheduled unit is unscheduled when its desired state is inactive, its machine is gone,
//!   or its requirements no longer hold there: MachineID, MachineMetadata, its MachineOf
//!   targets not (or no longer) on that machine, a Conflicts match with a unit that stays
//!   there (either unit's patterns), a Replaces relation with a unit that stays there.
//! * A unit that should run (loaded or launched) and has no machine is placed on a machine
//!   that qualifies: MachineID pins it; MachineMetadata filters (values of one key are
//!   alternatives, different keys must all hold); Conflicts are checked both ways against
//!   what is on the machine, including what this same pass placed there; MachineOf allows
//!   only the machine its targets are (or are being) placed on, and waits while a target has
//!   none (or is not a unit the engine schedules: missing, or global). Among qualifying machines the least loaded wins (the number of non-global units on
//!   it, counting this pass's placements), ties going to the smaller machine ID.
//! * Conflicts between units that both already sit on one machine are settled by keeping the
//!   unit that comes first in the processing order (below) and moving the other.
//!
//! # Replaces
//!
//! `A` with `Replaces=B` (a glob pattern, like Conflicts) takes `B`'s place: when `A` is placed, machines where a unit it
//! replaces runs are preferred (if they otherwise qualify, the replaced unit not counting as
//! a conflict), and the replaced units there are unscheduled, to be placed elsewhere in the
//! same pass if some machine qualifies. From then on the two never share a machine: the
//! replaced unit may not be placed where its replacer is. With one machine the replaced unit
//! waits.
//!
//! Replaces relations that form a cycle (`A` replaces `B` and `B` replaces `A`, or longer
//! cycles; strongly connected components of the Replaces graph) would make units chase each
//! other forever. Instead the units of one cycle are mutually exclusive across the whole
//! cluster: at most one of them is scheduled. One that is already scheduled stays (so a cycle
//! never thrashes); when none is, the first in processing order that can be placed is; the
//! others wait until it is gone. Replaces between units that MachineOf binds to one machine
//! (the same MachineOf group) cannot be honoured and are ignored, and so are Replaces that
//! form a cycle only through MachineOf (a unit of group X replaces one of group Y, and a unit
//! of Y one of X): the groups would push each other around forever.
//!
//! # Processing order and convergence
//!
//! Units are processed by name, except that MachineOf targets come before their followers
//! and replacing units before the units they replace (a topological order; where those
//! relations form a cycle, the smallest remaining name goes next). The pass repeats its two
//! steps (unschedule what no longer fits, place what waits) until nothing changes, then
//! returns the difference between the start and the end. So a follower whose target moved in
//! this pass moves with it in the same pass, and calling [`reconcile`] again on the state its
//! decisions produce returns nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use crate::model::TargetState;
use crate::unit::Requirements;

/// A live machine, as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineView {
    pub id: String,
    pub metadata: BTreeMap<String, String>,
}

/// A unit, as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    pub name: String,
    pub requirements: Requirements,
    pub desired: TargetState,
    /// The machine the unit is scheduled to (None: unscheduled).
    pub scheduled_to: Option<String>,
}

/// One change to the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Schedule {
        unit: String,
        machine: String,
    },
    Unschedule {
        unit: String,
        machine: String,
        reason: String,
    },
}

impl Decision {
    pub fn unit(&self) -> &str {
        match self {
            Decision::Schedule { unit, .. } | Decision::Unschedule { unit, .. } => unit,
        }
    }

    pub fn machine(&self) -> &str {
        match self {
            Decision::Schedule { machine, .. } | Decision::Unschedule { machine, .. } => machine,
        }
    }
}

/// Applies decisions to an in-memory list of units, as the registry would: what the engine
/// keeps between passes when it has no registry (tests, benchmarks).
pub fn apply_decisions(jobs: &mut [JobView], decisions: &[Decision]) {
    for decision in decisions {
        let Some(job) = jobs.iter_mut().find(|j| j.name == decision.unit()) else {
            continue;
        };
        match decision {
            Decision::Schedule { machine, .. } => job.scheduled_to = Some(machine.clone()),
            Decision::Unschedule { machine, .. } => {
                if job.scheduled_to.as_deref() == Some(machine.as_str()) {
                    job.scheduled_to = None;
                }
            }
        }
    }
}

/// Whether either unit's Conflicts patterns match the other (never a unit with itself).
pub fn conflict_either_way(a: &JobView, b: &JobView) -> bool {
    a.name != b.name
        && (a.requirements.conflicts_with(&b.name) || b.requirements.conflicts_with(&a.name))
}

/// Whether the global unit `job` runs on `machine`, given the units there (`others_here`:
/// units scheduled to it and every global unit; `job` itself may be among them). It runs
/// when its desired state is not inactive, the machine's metadata matches, no non-global
/// unit here conflicts with it either way, and no global unit that runs here conflicts with
/// it either way. Conflicting global units are settled by name: going through the globals in
/// name order, each runs unless it conflicts with one already running, so of two mutually
/// conflicting globals the one with the smaller name runs on every machine that qualifies
/// for both. Every agent reaches the same answer on its own.
pub fn global_unit_runs_here(
    job: &JobView,
    machine: &MachineView,
    others_here: &[JobView],
) -> bool {
    if !job.requirements.global {
        return false;
    }
    let locals: Vec<&JobView> = others_here
        .iter()
        .filter(|o| !o.requirements.global && o.name != job.name)
        .collect();
    let mut globals: Vec<&JobView> = others_here
        .iter()
        .filter(|o| o.requirements.global && o.name != job.name)
        .chain(std::iter::once(job))
        .collect();
    globals.sort_by(|a, b| a.name.cmp(&b.name));
    globals.dedup_by(|a, b| a.name == b.name);

    let mut running: Vec<&JobView> = Vec::new();
    for global in globals {
        let eligible = global.desired != TargetState::Inactive
            && global.requirements.matches_metadata(&machine.metadata)
            && !locals
                .iter()
                .any(|local| conflict_either_way(global, local));
        let runs = eligible && !running.iter().any(|r| conflict_either_way(global, r));
        if global.name == job.name {
            return runs;
        }
        if runs {
            running.push(global);
        }
    }
    false
}

/// The engine's pass: what to unschedule and where to schedule, as described in the module
/// documentation. Unschedule decisions come first, then Schedule decisions, each in
/// processing order (so targets are scheduled before their followers).
pub fn reconcile(machines: &[MachineView], jobs: &[JobView]) -> Vec<Decision> {
    let mut decisions = Vec::new();

    // Global units first: they are the agents' business, never the engine's.
    let mut globals: Vec<&JobView> = jobs.iter().filter(|j| j.requirements.global).collect();
    globals.sort_by(|a, b| a.name.cmp(&b.name));
    for job in globals {
        if let Some(machine) = &job.scheduled_to {
            decisions.push(Decision::Unschedule {
                unit: job.name.clone(),
                machine: machine.clone(),
                reason: "global units are not scheduled by the engine".to_string(),
            });
        }
    }

    let cluster = Cluster::new(machines, jobs);
    let mut placement = Placement::start(&cluster);
    let mut reasons: Vec<Option<String>> = vec![None; cluster.jobs.len()];
    // Each round either changes nothing (and ends the loop) or moves units towards a fixed
    // point; the bound only guards against a rule combination not foreseen here.
    let rounds = 2 * cluster.jobs.len() + 8;
    for _ in 0..rounds {
        let unscheduled = cluster.unschedule_misfits(&mut placement, &mut reasons);
        let placed = cluster.place_waiting(&mut placement, &mut reasons);
        if !unscheduled && !placed {
            break;
        }
    }

    for &i in &cluster.order {
        let job = cluster.jobs[i];
        if let Some(before) = &job.scheduled_to {
            if placement.machine_of[i].as_ref() != Some(before) {
                decisions.push(Decision::Unschedule {
                    unit: job.name.clone(),
                    machine: before.clone(),
                    reason: reasons[i]
                        .clone()
                        .unwrap_or_else(|| "rescheduled".to_string()),
                });
            }
        }
    }
    for &i in &cluster.order {
        let job = cluster.jobs[i];
        if let Some(after) = &placement.machine_of[i] {
            if job.scheduled_to.as_ref() != Some(after) {
                decisions.push(Decision::Schedule {
                    unit: job.name.clone(),
                    machine: after.clone(),
                });
            }
        }
    }
    decisions
}

/// The non-global units and machines of one pass, with the relations between units worked
/// out once.
struct Cluster<'a> {
    machines: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
    /// Non-global units, by name (the first of duplicate names).
    jobs: Vec<&'a JobView>,
    /// The processing order: indices into `jobs`.
    order: Vec<usize>,
    /// Each unit's MachineOf targets, or the name of one that is not a known non-global
    /// unit, which leaves the unit unschedulable.
    targets: Vec<Result<Vec<usize>, String>>,
    /// The Replaces relations that are honoured: `replaces[a]` holds the units `a` replaces.
    replaces: Vec<BTreeSet<usize>>,
    /// For each unit in a Replaces cycle, the units of its cycle (itself included).
    cycle: Vec<Option<Rc<Vec<usize>>>>,
}

impl<'a> Cluster<'a> {
    fn new(machines: &'a [MachineView], jobs: &'a [JobView]) -> Cluster<'a> {
        let mut machine_map = BTreeMap::new();
        for machine in machines {
            machine_map
                .entry(machine.id.as_str())
                .or_insert(&machine.metadata);
        }
        let mut units: Vec<&JobView> = jobs.iter().filter(|j| !j.requirements.global).collect();
        units.sort_by(|a, b| a.name.cmp(&b.name));
        units.dedup_by(|later, first| later.name == first.name);
        let index: BTreeMap<&str, usize> = units
            .iter()
            .enumerate()
            .map(|(i, j)| (j.name.as_str(), i))
            .collect();
        let n = units.len();

        let targets: Vec<Result<Vec<usize>, String>> = units
            .iter()
            .enumerate()
            .map(|(i, job)| {
                job.requirements
                    .machine_of
                    .iter()
                    .map(|name| match index.get(name.as_str()) {
                        Some(&t) if t != i => Ok(t),
                        _ => Err(name.clone()),
                    })
                    .collect()
            })
            .collect();

        // MachineOf groups: units bound to share one machine.
        let mut union_find = UnionFind::new(n);
        for (i, t) in targets.iter().enumerate() {
            for &t in t.iter().flatten() {
                union_find.union(i, t);
            }
        }
        let group: Vec<usize> = (0..n).map(|i| union_find.find(i)).collect();

        let mut raw_replaces: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (a, job) in units.iter().enumerate() {
            if job.requirements.replaces.is_empty() {
                continue;
            }
            for (b, other) in units.iter().enumerate() {
                if a != b && job.requirements.replaces(&other.name) {
                    raw_replaces[a].push(b);
                }
            }
        }
        let component = strongly_connected_components(&raw_replaces);
        let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, c) in component.iter().enumerate() {
            members.entry(*c).or_default().push(i);
        }
        let shared: BTreeMap<usize, Rc<Vec<usize>>> = members
            .into_iter()
            .filter(|(_, m)| m.len() > 1)
            .map(|(c, m)| (c, Rc::new(m)))
            .collect();
        let cycle = component.iter().map(|c| shared.get(c).cloned()).collect();
        // Replaces between units of different cycles and different MachineOf groups; then,
        // seen between groups, drop those that still form a cycle (group X replaces a unit
        // of group Y and Y one of X): honouring them would move both groups forever.
        let between_groups: Vec<Vec<usize>> = raw_replaces
            .iter()
            .enumerate()
            .map(|(a, bs)| {
                bs.iter()
                    .copied()
                    .filter(|&b| component[a] != component[b] && group[a] != group[b])
                    .collect()
            })
            .collect();
        let mut group_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (a, bs) in between_groups.iter().enumerate() {
            group_edges[group[a]].extend(bs.iter().map(|&b| group[b]));
        }
        let group_component = strongly_connected_components(&group_edges);
        let replaces: Vec<BTreeSet<usize>> = between_groups
            .iter()
            .enumerate()
            .map(|(a, bs)| {
                bs.iter()
                    .copied()
                    .filter(|&b| group_component[group[a]] != group_component[group[b]])
                    .collect()
            })
            .collect();

        // Targets before followers, replacers before the replaced.
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, t) in targets.iter().enumerate() {
            for &t in t.iter().flatten() {
                edges[t].push(i);
            }
        }
        for (a, bs) in replaces.iter().enumerate() {
            edges[a].extend(bs.iter().copied());
        }
        let order = topological_order(&edges);

        Cluster {
            machines: machine_map,
            jobs: units,
            order,
            targets,
            replaces,
            cycle,
        }
    }

    fn conflict(&self, a: usize, b: usize) -> bool {
        conflict_either_way(self.jobs[a], self.jobs[b])
    }

    /// The unschedule step: goes through the scheduled units in processing order and takes
    /// off those that no longer fit, judged against the units already confirmed in this step.
    fn unschedule_misfits(
        &self,
        placement: &mut Placement,
        reasons: &mut [Option<String>],
    ) -> bool {
        let mut changed = false;
        let mut confirmed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut confirmed_units: BTreeSet<usize> = BTreeSet::new();
        for &i in &self.order {
            let Some(machine) = placement.machine_of[i].clone() else {
                continue;
            };
            let here = confirmed.get(&machine).map(Vec::as_slice).unwrap_or(&[]);
            match self.reason_to_leave(i, &machine, here, &confirmed_units, placement) {
                Some(reason) => {
                    placement.remove(i);
                    reasons[i].get_or_insert(reason);
                    changed = true;
                }
                None => {
                    confirmed.entry(machine).or_default().push(i);
                    confirmed_units.insert(i);
                }
            }
        }
        changed
    }

    /// Why unit `i` may not stay on `machine`, where the units `here` were confirmed to stay.
    /// Conflicts, Replaces and cycles are judged against confirmed units only, so that of
    /// two units that cannot share a machine the one earlier in the order stays. MachineOf
    /// is judged against where the targets are now: a target that is taken off later in
    /// this step takes its followers off in the next round.
    fn reason_to_leave(
        &self,
        i: usize,
        machine: &str,
        here: &[usize],
        confirmed: &BTreeSet<usize>,
        placement: &Placement,
    ) -> Option<String> {
        let job = self.jobs[i];
        let requirements = &job.requirements;
        if job.desired == TargetState::Inactive {
            return Some("desired state is inactive".to_string());
        }
        let Some(metadata) = self.machines.get(machine) else {
            return Some(format!("machine {machine} went away"));
        };
        if let Some(pin) = &requirements.machine_id {
            if pin != machine {
                return Some(format!("unit requires machine {pin}"));
            }
        }
        if !requirements.matches_metadata(metadata) {
            return Some(format!(
                "machine {machine} no longer has the required metadata"
            ));
        }
        match &self.targets[i] {
            Err(missing) => {
                return Some(format!(
                    "MachineOf target {missing} is not a unit the engine schedules"
                ));
            }
            Ok(targets) => {
                if let Some(&t) = targets
                    .iter()
                    .find(|&&t| placement.machine_of[t].as_deref() != Some(machine))
                {
                    return Some(format!(
                        "MachineOf target {} is not on machine {machine}",
                        self.jobs[t].name
                    ));
                }
            }
        }
        if let Some(cycle) = &self.cycle[i] {
            if let Some(&active) = cycle.iter().find(|m| confirmed.contains(m)) {
                return Some(format!(
                    "in a Replaces cycle with {}, which stays scheduled",
                    self.jobs[active].name
                ));
            }
        }
        for &other in here {
            if self.conflict(i, other) {
                return Some(format!("conflicts with {}", self.jobs[other].name));
            }
            if self.replaces[other].contains(&i) {
                return Some(format!("replaced by {}", self.jobs[other].name));
            }
            if self.replaces[i].contains(&other) {
                return Some(format!(
                    "replaces {}, which stays on machine {machine}",
                    self.jobs[other].name
                ));
            }
        }
        None
    }

    /// The place step: goes through the units that should run and have no machine, in
    /// processing order, and places each on the best qualifying machine, if any.
    fn place_waiting(&self, placement: &mut Placement, reasons: &mut [Option<String>]) -> bool {
        let mut changed = false;
        for &i in &self.order {
            let job = self.jobs[i];
            if placement.machine_of[i].is_some() || job.desired == TargetState::Inactive {
                continue;
            }
            if let Some(cycle) = &self.cycle[i] {
                if cycle.iter().any(|&m| placement.machine_of[m].is_some()) {
                    continue;
                }
            }
            let Some((machine, displaced)) = self.best_machine(i, placement) else {
                continue;
            };
            for r in displaced {
                placement.remove(r);
                reasons[r].get_or_insert_with(|| format!("replaced by {}", job.name));
            }
            placement.place(i, machine);
            changed = true;
        }
        changed
    }

    /// The machine unit `i` goes to, with the units it displaces there (those it replaces).
    fn best_machine(&self, i: usize, placement: &Placement) -> Option<(String, Vec<usize>)> {
        let requirements = &self.jobs[i].requirements;
        let candidates: Vec<&str> = match &self.targets[i] {
            Err(_) => return None,
            Ok(targets) if !targets.is_empty() => {
                // Only where every target is; wait while one has no machine.
                let first = placement.machine_of[targets[0]].as_deref()?;
                if targets
                    .iter()
                    .any(|&t| placement.machine_of[t].as_deref() != Some(first))
                {
                    return None;
                }
                vec![first]
            }
            Ok(_) => self.machines.keys().copied().collect(),
        };

        let mut best: Option<(Preference<'_>, Vec<usize>)> = None;
        for machine in candidates {
            let Some(metadata) = self.machines.get(machine) else {
                continue;
            };
            if requirements
                .machine_id
                .as_deref()
                .is_some_and(|pin| pin != machine)
            {
                continue;
            }
            if !requirements.matches_metadata(metadata) {
                continue;
            }
            let residents = placement.residents(machine);
            let mut displaced = Vec::new();
            let mut fits = true;
            for &r in residents {
                if self.replaces[i].contains(&r) {
                    displaced.push(r);
                } else if self.conflict(i, r) || self.replaces[r].contains(&i) {
                    fits = false;
                    break;
                }
            }
            if !fits {
                continue;
            }
            let preference = Preference {
                displaces_nothing: displaced.is_empty(),
                load: residents.len(),
                machine,
            };
            if best.as_ref().is_none_or(|(best, _)| preference < *best) {
                best = Some((preference, displaced));
            }
        }
        best.map(|(preference, displaced)| (preference.machine.to_string(), displaced))
    }
}

/// How a machine ranks for a unit: the smallest wins, so machines where a unit it replaces
/// runs come first, then the least loaded, then the smaller machine ID.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Preference<'m> {
    displaces_nothing: bool,
    load: usize,
    machine: &'m str,
}

/// Where every non-global unit is during the pass, and who is on each machine.
struct Placement {
    machine_of: Vec<Option<String>>,
    on_machine: BTreeMap<String, Vec<usize>>,
}

impl Placement {
    fn start(cluster: &Cluster<'_>) -> Placement {
        let mut placement = Placement {
            machine_of: vec![None; cluster.jobs.len()],
            on_machine: BTreeMap::new(),
        };
        for (i, job) in cluster.jobs.iter().enumerate() {
            if let Some(machine) = &job.scheduled_to {
                placement.place(i, machine.clone());
            }
        }
        placement
    }

    fn place(&mut self, i: usize, machine: String) {
        self.remove(i);
        let residents = self.on_machine.entry(machine.clone()).or_default();
        if let Err(at) = residents.binary_search(&i) {
            residents.insert(at, i);
        }
        self.machine_of[i] = Some(machine);
    }

    fn remove(&mut self, i: usize) {
        if let Some(machine) = self.machine_of[i].take() {
            if let Some(residents) = self.on_machine.get_mut(&machine) {
                residents.retain(|&r| r != i);
            }
        }
    }

    fn residents(&self, machine: &str) -> &[usize] {
        self.on_machine
            .get(machine)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// Kahn's algorithm, taking the smallest ready index first (indices are in name order); when
/// only cycles remain, the smallest remaining index goes next.
fn topological_order(edges: &[Vec<usize>]) -> Vec<usize> {
    let n = edges.len();
    let mut indegree = vec![0usize; n];
    for targets in edges {
        for &t in targets {
            indegree[t] += 1;
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut remaining: BTreeSet<usize> = (0..n).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(&fallback) = remaining.first() {
        let next = ready.pop_first().unwrap_or(fallback);
        remaining.remove(&next);
        order.push(next);
        for &t in &edges[next] {
            if remaining.contains(&t) {
                indegree[t] = indegree[t].saturating_sub(1);
                if indegree[t] == 0 {
                    ready.insert(t);
                }
            }
        }
    }
    order
}

/// Kosaraju's algorithm, iteratively: a component number for every node.
fn strongly_connected_components(edges: &[Vec<usize>]) -> Vec<usize> {
    let n = edges.len();
    let mut finished = Vec::with_capacity(n);
    let mut visited = vec![false; n];
    for start in 0..n {
        if visited[start] {
            continue;
        }
        visited[start] = true;
        let mut stack = vec![(start, 0usize)];
        while let Some((node, next_edge)) = stack.last_mut() {
            if let Some(&to) = edges[*node].get(*next_edge) {
                *next_edge += 1;
                if !visited[to] {
                    visited[to] = true;
                    stack.push((to, 0));
                }
            } else {
                finished.push(*node);
                stack.pop();
            }
        }
    }
    let mut reverse: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (from, targets) in edges.iter().enumerate() {
        for &to in targets {
            reverse[to].push(from);
        }
    }
    let mut component = vec![usize::MAX; n];
    let mut count = 0;
    for &start in finished.iter().rev() {
        if component[start] != usize::MAX {
            continue;
        }
        component[start] = count;
        let mut stack = vec![start];
        while let Some(node) = stack.pop() {
            for &from in &reverse[node] {
                if component[from] == usize::MAX {
                    component[from] = count;
                    stack.push(from);
                }
            }
        }
        count += 1;
    }
    component
}

struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> UnionFind {
        UnionFind {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::{UnitFile, UnitName};

    fn machine(id: &str, metadata: &[(&str, &str)]) -> MachineView {
        MachineView {
            id: id.to_string(),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn machines(ids: &[&str]) -> Vec<MachineView> {
        ids.iter().map(|id| machine(id, &[])).collect()
    }

    /// A launched, unscheduled unit whose `[X-Fleet]` section is `x_fleet` (option lines).
    fn job(name: &str, x_fleet: &str) -> JobView {
        let file = UnitFile::parse(&format!(
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\n{x_fleet}"
        ))
        .unwrap();
        let (requirements, _) =
            Requirements::from_unit(&UnitName::parse(name).unwrap(), &file).unwrap();
        JobView {
            name: name.to_string(),
            requirements,
            desired: TargetState::Launched,
            scheduled_to: None,
        }
    }

    fn on(mut job: JobView, machine: &str) -> JobView {
        job.scheduled_to = Some(machine.to_string());
        job
    }

    fn desired(mut job: JobView, state: TargetState) -> JobView {
        job.desired = state;
        job
    }

    /// One engine pass applied to `jobs`; checks that a second pass has nothing to do.
    fn pass(machines: &[MachineView], jobs: &mut [JobView]) -> Vec<Decision> {
        let decisions = reconcile(machines, jobs);
        apply_decisions(jobs, &decisions);
        let again = reconcile(machines, jobs);
        assert!(
            again.is_empty(),
            "not idempotent: {decisions:?} then {again:?}"
        );
        decisions
    }

    fn where_is(jobs: &[JobView], name: &str) -> Option<String> {
        jobs.iter()
            .find(|j| j.name == name)
            .and_then(|j| j.scheduled_to.clone())
    }

    fn scheduled_count(jobs: &[JobView]) -> usize {
        jobs.iter().filter(|j| j.scheduled_to.is_some()).count()
    }

    #[test]
    fn nothing_to_do_without_units() {
        assert!(reconcile(&machines(&["a"]), &[]).is_empty());
        let mut jobs = vec![job("a.service", "")];
        assert!(pass(&[], &mut jobs).is_empty());
        assert_eq!(where_is(&jobs, "a.service"), None);
    }

    #[test]
    fn machine_of_pairs_land_together() {
        let cluster = machines(&["m1", "m2", "m3"]);
        let mut jobs = Vec::new();
        for i in 0..3 {
            jobs.push(job(&format!("ping.{i}.service"), ""));
            jobs.push(job(
                &format!("pong.{i}.service"),
                &format!("MachineOf=ping.{i}.service\n"),
            ));
        }
        pass(&cluster, &mut jobs);
        let mut used = BTreeSet::new();
        for i in 0..3 {
            let ping = where_is(&jobs, &format!("ping.{i}.service")).unwrap();
            let pong = where_is(&jobs, &format!("pong.{i}.service")).unwrap();
            assert_eq!(ping, pong);
            used.insert(ping);
        }
        // Least loaded: the three pairs spread over the three machines.
        assert_eq!(used.len(), 3);
    }

    #[test]
    fn targets_are_scheduled_before_followers() {
        // The follower's name sorts first, yet its target is decided first.
        let mut jobs = vec![
            job("a-follower.service", "MachineOf=z-target.service\n"),
            job("z-target.service", ""),
        ];
        let decisions = pass(&machines(&["m1", "m2"]), &mut jobs);
        assert_eq!(
            decisions,
            vec![
                Decision::Schedule {
                    unit: "z-target.service".into(),
                    machine: "m1".into()
                },
                Decision::Schedule {
                    unit: "a-follower.service".into(),
                    machine: "m1".into()
                },
            ]
        );
    }

    #[test]
    fn followers_wait_for_their_target() {
        let cluster = machines(&["m1", "m2"]);
        let mut jobs = vec![
            desired(job("ping.service", ""), TargetState::Inactive),
            job("pong.service", "MachineOf=ping.service\n"),
            job("orphan.service", "MachineOf=missing.service\n"),
        ];
        assert!(pass(&cluster, &mut jobs).is_empty());
        jobs[0].desired = TargetState::Launched;
        pass(&cluster, &mut jobs);
        assert_eq!(where_is(&jobs, "ping.service"), Some("m1".into()));
        assert_eq!(where_is(&jobs, "pong.service"), Some("m1".into()));
        assert_eq!(where_is(&jobs, "orphan.service"), None);
        // The target stopped: the follower is unscheduled too and waits.
        jobs[0].desired = TargetState::Inactive;
        let decisions = pass(&cluster, &mut jobs);
        assert_eq!(decisions.len(), 2);
        assert_eq!(scheduled_count(&jobs), 0);
    }

    #[test]
    fn followers_of_a_global_unit_wait() {
        let mut jobs = vec![
            job("g.service", "Global=true\n"),
            job("f.service", "MachineOf=g.service\n"),
        ];
        assert!(pass(&machines(&["m1"]), &mut jobs).is_empty());
    }

    #[test]
    fn five_mutually_conflicting_units_on_three_machines() {
        let cluster = machines(&["m1", "m2", "m3"]);
        let mut jobs: Vec<JobView> = (0..5)
            .map(|i| job(&format!("conflict.{i}.service"), "Conflicts=conflict*\n"))
            .collect();
        pass(&cluster, &mut jobs);
        assert_eq!(scheduled_count(&jobs), 3);
        let used: BTreeSet<_> = jobs.iter().filter_map(|j| j.scheduled_to.clone()).collect();
        assert_eq!(used.len(), 3);
        assert_eq!(where_is(&jobs, "conflict.0.service"), Some("m1".into()));
        assert_eq!(where_is(&jobs, "conflict.1.service"), Some("m2".into()));
        assert_eq!(where_is(&jobs, "conflict.2.service"), Some("m3".into()));
        assert_eq!(where_is(&jobs, "conflict.3.service"), None);
        assert_eq!(where_is(&jobs, "conflict.4.service"), None);

        // One unit stops: a waiting one takes its machine.
        jobs[1].desired = TargetState::Inactive;
        pass(&cluster, &mut jobs);
        assert_eq!(where_is(&jobs, "conflict.1.service"), None);
        assert_eq!(where_is(&jobs, "conflict.3.service"), Some("m2".into()));
        assert_eq!(scheduled_count(&jobs), 3);
    }

    #[test]
    fn one_way_conflicts_hold_in_both_directions() {
        let cluster = machines(&["m1"]);
        // The conflicting unit first, then the unit it names.
        let mut jobs = vec![job(
            "conflicts-with-hello.service",
            "Conflicts=hello.service\n",
        )];
        pass(&cluster, &mut jobs);
        jobs.push(job("hello.service", ""));
        assert!(pass(&cluster, &mut jobs).is_empty());
        assert_eq!(where_is(&jobs, "hello.service"), None);
        // Destroying the conflicting unit lets the other run.
        jobs.remove(0);
        pass(&cluster, &mut jobs);
        assert_eq!(where_is(&jobs, "hello.service"), Some("m1".into()));

        // The other way round: the named unit runs, the conflicting one waits.
        jobs.push(job(
            "conflicts-with-hello.service",
            "Conflicts=hello.service\n",
        ));
        assert!(pass(&cluster, &mut jobs).is_empty());
        assert_eq!(where_is(&jobs, "conflicts-with-hello.service"), None);
    }

    #[test]
    fn multiple_conflicts() {
        let cluster = machines(&["m1", "m2", "m3"]);
        let mut jobs = vec![
            on(job("a.service", ""), "m1"),
            on(job("b.service", ""), "m2"),
            job("c.service", "Conflicts=a.service\nConflicts=b.service\n"),
            job("d.service", "Conflicts=a.service b.service c.service\n"),
        ];
        pass(&cluster, &mut jobs);
        assert_eq!(where_is(&jobs, "c.service"), Some("m3".into()));
        // d conflicts with everything that is placed: it waits.
        assert_eq!(where_is(&jobs, "d.service"), None);
    }

    #[test]
    fn units_that_conflict_on_one_machine_are_separated() {
        // Both already on m1 (say the file changed under a resubmit): the first in order
        // stays, the other moves.
        let cluster = machines(&["m1", "m2"]);
        let mut jobs = vec![
            on(job("a.service", "Conflicts=b.service\n"), "m1"),
            on(job("b.service", ""), "m1"),
        ];
        let decisions = pass(&cluster, &mut jobs);
        assert_eq!(
            decisions[0],
            Decision::Unschedule {
                unit: "b.service".into(),
                machine: "m1".into(),
                reason: "conflicts with a.service".into()
            }
        );
        assert_eq!(where_is(&jobs, "a.service"), Some("m1".into()));
        assert_eq!(where_is(&jobs, "b.service"), Some("m2".into()));
    }

    #[test]
    fn replaces_moves_the_replaced_unit_away() {
        let cluster = machines(&["m1", "m2"]);
        let mut jobs = vec![job("replace.0.service", "")];
        pass(&cluster, &mut jobs);
        assert_eq!(where_is(&jobs, "replace.0.service"), Some("m1".into()));

        jobs.push(job("replace.1.service", "Replaces=replace.0.service\n"));
        let decisions = pass(&cluster, &mut jobs);
        assert_eq!(
            decisions,
            vec![
                Decision::Unschedule {
                    unit: "replace.0.service".into(),
                    machine: "m1".into(),
                    reason: "replaced by replace.1.service".into()
                },
                Decision::Schedule {
                    unit: "replace.1.service".into(),
                    machine: "m1".into()
                },
                Decision::Schedule {
                    unit: "replace.0.service".into(),
                    machine: "m2".into()
                },
            ]
        );
    }

    #[test]
    fn a_replaced_unit_waits_when_there_is_nowhere_else() {
        let cluster = machines(&["m1"]);
        let mut jobs = vec![
            on(job("old.service", ""), "m1"),
            job("new.service", "Replaces=old.*\n"),
        ];
        pass(&cluster, &mut jobs);
        assert_eq!(where_is(&jobs, "new.service"), Some("m1".into()));
        assert_eq!(where_is(&jobs, "old.service"), None);
        // A second machine: the replaced unit runs there, never next to its replacer.
        let bigger = machines(&["m1", "m2"]);
        pass(&bigger, &mut jobs);
        assert_eq!(where_is(&jobs, "old.service"), Some("m2".into()));
    }

    #[test]
    fn a_replaced_unit_is_never_placed_next_to_its_replacer() {
        let cluster = machines(&["m1", "m2"]);
        let mut jobs = vec![
            on(job("new.service", "Replaces=old.service\n"), "m1"),
            on(job("filler.service", ""), "m2"),
            job("old.service", ""),
        ];
        pass(&cluster, &mut jobs);
        // m1 is less loaded than m2 would be... no: both have one unit; m1 wins ties but
        // hosts the replacer.
        assert_eq!(where_is(&jobs, "old.service"), Some("m2".into()));
    }

    #[test]
    fn a_replaces_cycle_leaves_one_active() {
        let cluster = machines(&["m1", "m2"]);
        // The first unit runs; then a unit that replaces it and that it replaces arrives.
        let mut jobs = vec![job("replace.0.service", "Replaces=replace.1.service\n")];
        pass(&cluster, &mut jobs);
        assert_eq!(where_is(&jobs, "replace.0.service"), Some("m1".into()));
        jobs.push(job("replace.1.service", "Replaces=replace.0.service\n"));
        assert!(pass(&cluster, &mut jobs).is_empty());
        assert_eq!(scheduled_count(&jobs), 1);

        // Whichever is scheduled stays, even when it is not the first name.
        let mut jobs = vec![
            job("replace.0.service", "Replaces=replace.1.service\n"),
            on(
                job("replace.1.service", "Replaces=replace.0.service\n"),
                "m2",
            ),
        ];
        assert!(pass(&cluster, &mut jobs).is_empty());
        assert_eq!(where_is(&jobs, "replace.1.service"), Some("m2".into()));

        // Submitted together: one runs, the first by name.
        let mut jobs = vec![
            job("b.service", "Replaces=c.service\n"),
            job("c.service", "Replaces=a.service\n"),
            job("a.service", "Replaces=b.service\n"),
        ];
        pass(&cluster, &mut jobs);
        assert_eq!(scheduled_count(&jobs), 1);
        assert!(where_is(&jobs, "a.service").is_some());

        // Both scheduled (an old state): one is taken off.
        let mut jobs = vec![
            on(job("x.service", "Replaces=y.service\n"), "m1"),
            on(job("y.service", "Replaces=x.service\n"), "m2"),
        ];
        pass(&cluster, &mut jobs);
        assert_eq!(where_is(&jobs, "x.service"), Some("m1".into()));
        assert_eq!(where_is(&jobs, "y.service"), None);

        // The active one stops: another of the cycle takes over.
        jobs[0].desired = TargetState::Inactive;
        pass(&cluster, &mut jobs);
        assert_eq!(where_is(&jobs, "x.service"), None);
        assert!(where_is(&jobs, "y.service").is_some());
    }

    #[test]
    fn machine_id_pins_and_waits_for_an_absent_machine() {
        let cluster = machines(&["m1", "m2", "m3"]);
        let mut jobs = vec![
            job("a.service", "MachineID=m3\n"),
            job("b.service", "MachineID=m3\n"),
            job("c.service", "MachineID=m9\n"),
            on(job("d.service", "MachineID=m2\n"), "m1"),
        ];
        pass(&cluster, &mut jobs);
        assert_eq!(where_is(&jobs, "a.service"), Some("m3".into()));
        assert_eq!(where_is(&jobs, "b.service"), Some("m3".into()));
        assert_eq!(where_is(&jobs, "c.service"), None);
        assert_eq!(where_is(&jobs, "d.service"), Some("m2".into()));

        let mut bigger = cluster.clone();
        bigger.push(machine("m9", &[]));
        pass(&bigger, &mut jobs);
        assert_eq!(where_is(&jobs, "c.service"), Some("m9".into()));
    }

    #[test]
    fn metadata_or_within_a_key_and_across_keys() {
        let cluster = vec![
            machine("m1", &[("region", "us-east-1"), ("disk", "hdd")]),
            machine("m2", &[("region", "eu-west-1"), ("disk", "ssd")]),
            machine("m3", &[("region", "us-west-1"), ("disk", "ssd")]),
            machine("m4", &[("region", "us-east-1"), ("disk", "ssd")]),
        ];
        let requirement =
            "MachineMetadata=region=us-east-1 disk=ssd\nMachineMetadata=region=us-west-1\n";
        let mut jobs = vec![
            job("a.service", requirement),
            job("b.service", requirement),
            job("c.service", requirement),
        ];
        pass(&cluster, &mut jobs);
        let a = where_is(&jobs, "a.service").unwrap();
        let b = where_is(&jobs, "b.service").unwrap();
        let c = where_is(&jobs, "c.service").unwrap();
        for m in [&a, &b, &c] {
            assert!(m == "m3" || m == "m4", "{m}");
        }
        assert_eq!(a, "m3");
        assert_eq!(b, "m4");

        // m3's metadata changes: its units move to the other machine that still qualifies.
        let mut changed = cluster.clone();
        changed[2] = machine("m3", &[("region", "us-west-1"), ("disk", "hdd")]);
        let decisions = pass(&changed, &mut jobs);
        assert!(decisions.iter().any(|d| matches!(d,
            Decision::Unschedule { reason, .. } if reason == "machine m3 no longer has the required metadata")));
        assert_eq!(where_is(&jobs, "a.service"), Some("m4".into()));
        assert_eq!(where_is(&jobs, "c.service"), Some("m4".into()));
    }

    #[test]
    fn units_move_off_a_machine_that_went_away_followers_with_their_target() {
        let cluster = machines(&["m1", "m2", "m3"]);
        let mut jobs = Vec::new();
        for i in 0..3 {
            jobs.push(job(&format!("ping.{i}.service"), ""));
            jobs.push(job(
                &format!("pong.{i}.service"),
                &format!("MachineOf=ping.{i}.service\n"),
            ));
        }
        pass(&cluster, &mut jobs);
        let gone = where_is(&jobs, "ping.1.service").unwrap();
        let before: Vec<_> = jobs.iter().map(|j| j.scheduled_to.clone()).collect();
        let remaining: Vec<MachineView> =
            cluster.iter().filter(|m| m.id != gone).cloned().collect();
        let decisions = pass(&remaining, &mut jobs);
        let moved_to = where_is(&jobs, "ping.1.service").unwrap();
        assert_ne!(moved_to, gone);
        assert_eq!(where_is(&jobs, "pong.1.service"), Some(moved_to));
        // Only the pair moved: two unschedules and two schedules.
        assert_eq!(decisions.len(), 4);
        assert!(decisions.iter().all(|d| d.unit().contains(".1.")));
        for (job, before) in jobs.iter().zip(before) {
            if !job.name.contains(".1.") {
                assert_eq!(job.scheduled_to, before);
            }
        }
        assert!(matches!(&decisions[0],
            Decision::Unschedule { reason, .. } if reason == &format!("machine {gone} went away")));
    }

    #[test]
    fn a_target_that_moves_takes_its_followers() {
        // The target is replaced off its machine; its follower goes along in the same pass.
        let cluster = machines(&["m1", "m2"]);
        let mut jobs = vec![
            on(job("db.service", ""), "m1"),
            on(job("db-backup.service", "MachineOf=db.service\n"), "m1"),
            on(job("filler.service", ""), "m2"),
            job("db2.service", "Replaces=db.service\n"),
        ];
        pass(&cluster, &mut jobs);
        assert_eq!(where_is(&jobs, "db2.service"), Some("m1".into()));
        assert_eq!(where_is(&jobs, "db.service"), Some("m2".into()));
        assert_eq!(where_is(&jobs, "db-backup.service"), Some("m2".into()));
    }

    #[test]
    fn least_loaded_machine_wins_ties_by_id() {
        // Machines given out of order: the smallest ID wins the first tie.
        let cluster = machines(&["c", "a", "b"]);
        let mut jobs = vec![job("u0.service", "")];
        pass(&cluster, &mut jobs);
        assert_eq!(where_is(&jobs, "u0.service"), Some("a".into()));

        let mut jobs = vec![
            on(job("x1.service", ""), "a"),
            on(job("x2.service", ""), "a"),
            on(job("x3.service", ""), "b"),
            job("u1.service", ""),
            job("u2.service", ""),
            job("u3.service", ""),
            job("u4.service", ""),
        ];
        pass(&cluster, &mut jobs);
        // Loads a=2 b=1 c=0: u1 → c; then b=1 c=1 tie → b; then a=2 b=2 c=1 → c; then all
        // have 2 → a.
        assert_eq!(where_is(&jobs, "u1.service"), Some("c".into()));
        assert_eq!(where_is(&jobs, "u2.service"), Some("b".into()));
        assert_eq!(where_is(&jobs, "u3.service"), Some("c".into()));
        assert_eq!(where_is(&jobs, "u4.service"), Some("a".into()));
    }

    #[test]
    fn global_units_do_not_count_towards_load_and_are_never_scheduled() {
        let cluster = machines(&["a", "b"]);
        let mut jobs = vec![
            on(job("g.service", "Global=true\n"), "a"),
            job("u.service", ""),
        ];
        let decisions = pass(&cluster, &mut jobs);
        assert_eq!(
            decisions[0],
            Decision::Unschedule {
                unit: "g.service".into(),
                machine: "a".into(),
                reason: "global units are not scheduled by the engine".into()
            }
        );
        assert_eq!(where_is(&jobs, "g.service"), None);
        assert_eq!(where_is(&jobs, "u.service"), Some("a".into()));
    }

    #[test]
    fn template_instances_spread_by_conflicts_and_sidekicks_follow_by_instance() {
        let cluster = machines(&["m1", "m2", "m3"]);
        let web = "Conflicts=web@*.service\n";
        let sidekick = "MachineOf=web@%i.service\n";
        let mut jobs = Vec::new();
        for i in 1..=4 {
            jobs.push(job(&format!("web@{i}.service"), web));
            jobs.push(job(&format!("web-discovery@{i}.service"), sidekick));
        }
        pass(&cluster, &mut jobs);
        let mut used = BTreeSet::new();
        for i in 1..=3 {
            let web = where_is(&jobs, &format!("web@{i}.service")).unwrap();
            assert_eq!(
                where_is(&jobs, &format!("web-discovery@{i}.service")),
                Some(web.clone())
            );
            used.insert(web);
        }
        assert_eq!(used.len(), 3);
        assert_eq!(where_is(&jobs, "web@4.service"), None);
        assert_eq!(where_is(&jobs, "web-discovery@4.service"), None);
    }

    #[test]
    fn inactive_units_are_unscheduled_and_not_placed() {
        let cluster = machines(&["m1"]);
        let mut jobs = vec![
            on(desired(job("a.service", ""), TargetState::Inactive), "m1"),
            desired(job("b.service", ""), TargetState::Inactive),
            desired(job("c.service", ""), TargetState::Loaded),
        ];
        let decisions = pass(&cluster, &mut jobs);
        assert_eq!(
            decisions,
            vec![
                Decision::Unschedule {
                    unit: "a.service".into(),
                    machine: "m1".into(),
                    reason: "desired state is inactive".into()
                },
                Decision::Schedule {
                    unit: "c.service".into(),
                    machine: "m1".into()
                },
            ]
        );
    }

    #[test]
    fn input_order_does_not_matter() {
        let cluster = machines(&["m2", "m1", "m3"]);
        let jobs = vec![
            job("b.service", "Conflicts=a.service\n"),
            job("a.service", ""),
            job("c.service", "MachineOf=b.service\n"),
            job("d.service", "Replaces=a.service\n"),
        ];
        let expected = reconcile(&cluster, &jobs);
        let mut reversed_jobs = jobs.clone();
        reversed_jobs.reverse();
        let mut reversed_machines = cluster.clone();
        reversed_machines.reverse();
        assert_eq!(reconcile(&reversed_machines, &reversed_jobs), expected);
    }

    #[test]
    fn a_global_unit_runs_where_its_metadata_matches() {
        let g = job("g.service", "Global=true\nMachineMetadata=role=web\n");
        let web = machine("m1", &[("role", "web")]);
        let db = machine("m2", &[("role", "db")]);
        assert!(global_unit_runs_here(&g, &web, &[]));
        assert!(!global_unit_runs_here(&g, &db, &[]));
        assert!(!global_unit_runs_here(
            &desired(g.clone(), TargetState::Inactive),
            &web,
            &[]
        ));
        // Not a global unit: not the agent's to run on its own.
        assert!(!global_unit_runs_here(&job("u.service", ""), &web, &[]));
        // The engine leaves it alone.
        assert!(reconcile(&[web, db], &[g]).is_empty());
    }

    #[test]
    fn a_global_unit_yields_to_a_conflicting_scheduled_unit() {
        let here = machine("m1", &[]);
        let g = job("g.service", "Global=true\nConflicts=batch*\n");
        let batch = on(job("batch.service", ""), "m1");
        assert!(!global_unit_runs_here(
            &g,
            &here,
            std::slice::from_ref(&batch)
        ));
        // And the other way round.
        let g2 = job("g2.service", "Global=true\n");
        let picky = on(job("picky.service", "Conflicts=g2.service\n"), "m1");
        assert!(!global_unit_runs_here(&g2, &here, &[picky]));
        assert!(global_unit_runs_here(&g2, &here, &[batch]));
    }

    #[test]
    fn of_two_conflicting_globals_the_first_name_runs() {
        let a = job(
            "global-a.service",
            "Global=true\nConflicts=global-b.service\n",
        );
        let b = job("global-b.service", "Global=true\n");
        let everyone = vec![a.clone(), b.clone()];
        for id in ["m1", "m2", "m3"] {
            let m = machine(id, &[]);
            assert!(global_unit_runs_here(&a, &m, &everyone));
            assert!(!global_unit_runs_here(&b, &m, &everyone));
        }
        // Where the first does not qualify, the second runs.
        let a_web = job(
            "global-a.service",
            "Global=true\nConflicts=global-b.service\nMachineMetadata=role=web\n",
        );
        let everyone = vec![a_web.clone(), b.clone()];
        let db = machine("db", &[("role", "db")]);
        assert!(!global_unit_runs_here(&a_web, &db, &everyone));
        assert!(global_unit_runs_here(&b, &db, &everyone));
        // A chain: a conflicts b, b conflicts c. a runs, b does not, so c runs.
        let a = job("ga.service", "Global=true\nConflicts=gb.service\n");
        let b = job("gb.service", "Global=true\nConflicts=gc.service\n");
        let c = job("gc.service", "Global=true\n");
        let all = vec![a.clone(), b.clone(), c.clone()];
        let m = machine("m", &[]);
        assert!(global_unit_runs_here(&a, &m, &all));
        assert!(!global_unit_runs_here(&b, &m, &all));
        assert!(global_unit_runs_here(&c, &m, &all));
    }

    /// A small deterministic PRNG (xorshift64*), so generated scenarios are the same on
    /// every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }

        fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const NAMES: &[&str] = &[
        "a.service",
        "b.service",
        "c.service",
        "d.service",
        "e.service",
        "web@1.service",
        "web@2.service",
        "web@3.service",
        "side@1.service",
        "side@2.service",
        "g1.service",
        "g2.service",
    ];
    const MACHINE_IDS: &[&str] = &["m1", "m2", "m3", "m4", "m5"];
    const PATTERNS: &[&str] = &[
        "a.service",
        "b*",
        "web@*.service",
        "*",
        "?.service",
        "side@[12].service",
        "c.service",
        "g*",
    ];

    fn random_metadata(rng: &mut Rng) -> BTreeMap<String, String> {
        let mut metadata = BTreeMap::new();
        if rng.chance(60) {
            metadata.insert("region".into(), rng.pick(&["east", "west"]).into());
        }
        if rng.chance(50) {
            metadata.insert("disk".into(), rng.pick(&["ssd", "hdd"]).into());
        }
        metadata
    }

    fn random_job(rng: &mut Rng, name: &str) -> JobView {
        let mut r = Requirements {
            global: name.starts_with('g') && rng.chance(70),
            ..Requirements::default()
        };
        if !r.global && rng.chance(15) {
            r.machine_id = Some(rng.pick(&["m1", "m2", "m3", "m9"]).into());
        }
        if !r.global && rng.chance(25) {
            let target = if name.starts_with("side@") {
                name.replace("side@", "web@")
            } else {
                rng.pick(NAMES).to_string()
            };
            r.machine_of.push(target);
        }
        if rng.chance(30) {
            r.machine_metadata
                .entry("region".into())
                .or_default()
                .insert(rng.pick(&["east", "west"]).into());
            if rng.chance(30) {
                r.machine_metadata
                    .entry("region".into())
                    .or_default()
                    .insert("west".into());
            }
        }
        if rng.chance(15) {
            r.machine_metadata
                .entry("disk".into())
                .or_default()
                .insert("ssd".into());
        }
        for _ in 0..rng.below(3) {
            if rng.chance(40) {
                r.conflicts.push(rng.pick(PATTERNS).into());
            }
        }
        if !r.global && rng.chance(20) {
            r.replaces.push(rng.pick(PATTERNS).into());
        }
        let desired = match rng.below(6) {
            0 => TargetState::Inactive,
            1 => TargetState::Loaded,
            _ => TargetState::Launched,
        };
        let scheduled_to = rng.chance(30).then(|| {
            rng.pick(&["m1", "m2", "m3", "m4", "m5", "gone"])
                .to_string()
        });
        JobView {
            name: name.to_string(),
            requirements: r,
            desired,
            scheduled_to,
        }
    }

    fn random_cluster(rng: &mut Rng) -> Vec<MachineView> {
        let count = rng.below(MACHINE_IDS.len() + 1);
        MACHINE_IDS[..count]
            .iter()
            .map(|id| MachineView {
                id: id.to_string(),
                metadata: random_metadata(rng),
            })
            .collect()
    }

    /// What must hold of any schedule `reconcile` leaves behind.
    fn check_invariants(machines: &[MachineView], jobs: &[JobView]) {
        let by_id: BTreeMap<&str, &MachineView> =
            machines.iter().map(|m| (m.id.as_str(), m)).collect();
        let units: Vec<&JobView> = jobs.iter().filter(|j| !j.requirements.global).collect();
        let index = |name: &str| units.iter().position(|j| j.name == name);
        let n = units.len();

        // MachineOf groups (units bound to one machine) and Replaces reachability, worked
        // out independently of the scheduler's own code.
        let mut group: Vec<usize> = (0..n).collect();
        let root = |group: &Vec<usize>, mut i: usize| {
            while group[i] != i {
                i = group[i];
            }
            i
        };
        for (i, job) in units.iter().enumerate() {
            for target in &job.requirements.machine_of {
                if let Some(t) = index(target).filter(|t| *t != i) {
                    let (a, b) = (root(&group, i), root(&group, t));
                    group[a.max(b)] = a.min(b);
                }
            }
        }
        let mut reach = vec![vec![false; n]; n];
        for (a, job) in units.iter().enumerate() {
            for (b, other) in units.iter().enumerate() {
                reach[a][b] = a != b && job.requirements.replaces(&other.name);
            }
        }
        for k in 0..n {
            for a in 0..n {
                for b in 0..n {
                    if reach[a][k] && reach[k][b] {
                        reach[a][b] = true;
                    }
                }
            }
        }
        let in_cycle_together = |a: usize, b: usize| a != b && reach[a][b] && reach[b][a];
        // The same between MachineOf groups, over the Replaces that join different groups
        // and are not within one cycle of units.
        let mut group_reach = vec![vec![false; n]; n];
        for (a, job) in units.iter().enumerate() {
            for (b, other) in units.iter().enumerate() {
                let (ga, gb) = (root(&group, a), root(&group, b));
                if ga != gb && !in_cycle_together(a, b) && job.requirements.replaces(&other.name) {
                    group_reach[ga][gb] = true;
                }
            }
        }
        for k in 0..n {
            for a in 0..n {
                for b in 0..n {
                    if group_reach[a][k] && group_reach[k][b] {
                        group_reach[a][b] = true;
                    }
                }
            }
        }

        for (i, job) in units.iter().enumerate() {
            let Some(at) = &job.scheduled_to else {
                continue;
            };
            let r = &job.requirements;
            assert_ne!(job.desired, TargetState::Inactive, "{} inactive", job.name);
            let machine = by_id
                .get(at.as_str())
                .unwrap_or_else(|| panic!("{} on {at}", job.name));
            assert!(
                r.matches_metadata(&machine.metadata),
                "{} metadata",
                job.name
            );
            if let Some(pin) = &r.machine_id {
                assert_eq!(pin, at, "{} pin", job.name);
            }
            for target in &r.machine_of {
                let t = index(target).unwrap_or_else(|| panic!("{} target", job.name));
                assert_eq!(
                    units[t].scheduled_to.as_ref(),
                    Some(at),
                    "{} follows",
                    job.name
                );
            }
            for (o, other) in units.iter().enumerate() {
                if o == i || other.scheduled_to.is_none() {
                    continue;
                }
                assert!(
                    !in_cycle_together(i, o),
                    "{} and {} of one Replaces cycle both scheduled",
                    job.name,
                    other.name
                );
                if other.scheduled_to.as_ref() != Some(at) {
                    continue;
                }
                assert!(
                    !conflict_either_way(job, other),
                    "{} with {}",
                    job.name,
                    other.name
                );
                if job.requirements.replaces(&other.name) {
                    // Honoured only between different MachineOf groups that do not replace
                    // each other in a cycle.
                    let (gi, go) = (root(&group, i), root(&group, o));
                    assert!(
                        gi == go || (group_reach[gi][go] && group_reach[go][gi]),
                        "{} replaces {} on {at}",
                        job.name,
                        other.name
                    );
                }
            }
        }
        for job in jobs.iter().filter(|j| j.requirements.global) {
            assert_eq!(job.scheduled_to, None, "global {} scheduled", job.name);
        }
    }

    /// Many generated scenarios, each evolving over several steps (machines leaving and
    /// joining, metadata and desired states changing): after every pass the schedule obeys
    /// the rules, a second pass has nothing to do, and the answer does not depend on the
    /// order of the inputs.
    #[test]
    fn generated_scenarios_converge_and_are_idempotent() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for scenario in 0..1500 {
            let mut cluster = random_cluster(&mut rng);
            let count = rng.below(NAMES.len() + 1);
            let mut names: Vec<&str> = NAMES.to_vec();
            // A random subset, in random order.
            for i in (1..names.len()).rev() {
                names.swap(i, rng.below(i + 1));
            }
            let mut jobs: Vec<JobView> = names[..count]
                .iter()
                .map(|name| random_job(&mut rng, name))
                .collect();
            for step in 0..4 {
                let decisions = reconcile(&cluster, &jobs);
                let mut shuffled_jobs = jobs.clone();
                shuffled_jobs.reverse();
                let mut shuffled_cluster = cluster.clone();
                shuffled_cluster.rotate_left(cluster.len().min(1));
                assert_eq!(
                    reconcile(&shuffled_cluster, &shuffled_jobs),
                    decisions,
                    "scenario {scenario} step {step}: order-dependent"
                );
                apply_decisions(&mut jobs, &decisions);
                let again = reconcile(&cluster, &jobs);
                assert!(
                    again.is_empty(),
                    "scenario {scenario} step {step}: not idempotent\nmachines {cluster:?}\njobs {jobs:#?}\nfirst {decisions:?}\nthen {again:?}"
                );
                check_invariants(&cluster, &jobs);

                // Evolve the scenario.
                match rng.below(4) {
                    0 if !cluster.is_empty() => {
                        cluster.remove(rng.below(cluster.len()));
                    }
                    1 => {
                        let id = rng.pick(MACHINE_IDS).to_string();
                        if !cluster.iter().any(|m| m.id == id) {
                            cluster.push(MachineView {
                                id,
                                metadata: random_metadata(&mut rng),
                            });
                        }
                    }
                    2 if !cluster.is_empty() => {
                        let i = rng.below(cluster.len());
                        cluster[i].metadata = random_metadata(&mut rng);
                    }
                    _ if !jobs.is_empty() => {
                        let i = rng.below(jobs.len());
                        jobs[i].desired = match rng.below(3) {
                            0 => TargetState::Inactive,
                            1 => TargetState::Loaded,
                            _ => TargetState::Launched,
                        };
                    }
                    _ => {}
                }
            }
        }
    }
}
