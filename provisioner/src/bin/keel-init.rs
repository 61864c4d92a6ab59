//! The initramfs `/init` of Keel. Everything lives in the library; PID 1 must never return.

fn main() {
    let init_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    provisioner::init::run_as_pid1(init_args)
}
