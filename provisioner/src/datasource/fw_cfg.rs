//! QEMU fw_cfg: `-fw_cfg name=opt/org.keel/user-data,file=...` shows up (with the qemu_fw_cfg
//! module loaded) as `/sys/firmware/qemu_fw_cfg/by_name/opt/org.keel/user-data/raw`.

use std::path::PathBuf;

use super::{Context, Datasource, DatasourceError, Fetched};

pub const USER_DATA_PATH: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.keel/user-data/raw";
const NAME: &str = "fw-cfg";

pub struct FwCfg {
    path: PathBuf,
}

impl FwCfg {
    pub fn new(ctx: &Context) -> FwCfg {
        FwCfg {
            path: ctx.system_path(USER_DATA_PATH),
        }
    }
}

impl Datasource for FwCfg {
    fn name(&self) -> &str {
        NAME
    }

    fn available(&self) -> bool {
        self.path.is_file()
    }

    fn fetch(&self) -> Result<Fetched, DatasourceError> {
        super::fetch_user_data_file(NAME, &self.path, format!("{NAME}:opt/org.keel/user-data"))
    }
}
