//! A user-data file on the local filesystem: `/var/lib/keel/user-data` on an installed system,
//! or any path given explicitly (`keel-provision apply`, tests).

use std::path::{Path, PathBuf};

use super::{Datasource, DatasourceError, Fetched};

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
        super::fetch_user_data_file(NAME, &self.path, format!("{NAME}:{}", self.path.display()))
    }
}
