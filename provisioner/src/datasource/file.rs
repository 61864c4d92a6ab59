//! A user-data file on the local filesystem: `/var/lib/keel/user-data` on an installed system,
//! or any path given explicitly (`keel-provision apply`, tests).

use std::path::{Path, PathBuf};

use super::{Datasource, DatasourceError, Fetched, Metadata};

pub const DEFAULT_USER_DATA_FILE: &str = "/var/lib/keel/user-data";
const NAME: &str = "file";

pub struct LocalFile {
    path: PathBuf,
}

impl LocalFile {
    pub fn new(path: impl AsRef<Path>) -> LocalFile {
        LocalFile {
            path: path.as_ref().to_path_buf(),
        }
    }
}

impl Datasource for LocalFile {
    fn name(&self) -> &str {
        NAME
    }

    fn available(&self) -> bool {
        self.path.is_file()
    }

    fn fetch(&self) -> Result<Fetched, DatasourceError> {
        let user_data = std::fs::read(&self.path).map_err(|error| DatasourceError::Read {
            datasource: NAME.to_string(),
            path: self.path.clone(),
            error,
        })?;
        Ok(Fetched {
            source: format!("{NAME}:{}", self.path.display()),
            user_data: Some(user_data),
            metadata: Metadata::default(),
        })
    }
}
