//! From registry records to what the scheduler reasons about: a unit's requirements read from
//! its stored file, a machine's metadata. One place, so the engine and the agents (which run
//! global units) read a unit the same way.

use crate::model::{Machine, TargetState};
use crate::registry::JobRecord;
use crate::schedule::{JobView, MachineView};
use crate::unit::{Requirements, UnitFile, UnitName};

/// The hash fleet gives a unit file's text (the same for every spelling of the same options);
/// empty when the text does not parse, which never matches a stored hash.
pub fn unit_hash_of_text(text: &str) -> String {
    UnitFile::parse(text).map(|f| f.hash()).unwrap_or_default()
}

/// The scheduler's view of a unit. A unit whose name or `[X-Fleet]` section is invalid (the
/// API refuses those, so only a hand-edited registry has them) is treated as inactive: it is
/// neither scheduled nor run, and a warning says why.
pub fn job_view(job: &JobRecord) -> JobView {
    let requirements = UnitName::parse(&job.name)
        .map_err(|e| e.to_string())
        .and_then(|name| {
            let file = UnitFile::parse(&job.unit_text).map_err(|e| e.to_string())?;
            let (requirements, _warnings) =
                Requirements::from_unit(&name, &file).map_err(|e| e.to_string())?;
            Ok(requirements)
        });
    match requirements {
        Ok(requirements) => JobView {
            name: job.name.clone(),
            requirements,
            desired: job.desired,
            scheduled_to: job.target.clone(),
        },
        Err(problem) => {
            tracing::warn!(unit = %job.name, %problem, "unit cannot be scheduled");
            JobView {
                name: job.name.clone(),
                requirements: Requirements::default(),
                desired: TargetState::Inactive,
                scheduled_to: job.target.clone(),
            }
        }
    }
}

pub fn machine_view(machine: &Machine) -> MachineView {
    MachineView {
        id: machine.id.clone(),
        metadata: machine.metadata.clone(),
    }
}
