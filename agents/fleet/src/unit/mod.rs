//! Units as fleet knows them: the unit file (text and options, its hash), the unit's name
//! (templates, instances, specifiers) and the scheduling requirements of its `[X-Fleet]`
//! section.

pub mod file;
pub mod glob;
pub mod name;
pub mod requirements;

pub use file::{UnitFile, UnitFileError};
pub use glob::glob_matches;
pub use name::{UnitName, UnitNameError};
pub use requirements::{Requirements, RequirementsError};
