//! fleetctl: fleet's command-line client (see `fleet::fleetctl`).

fn main() {
    std::process::exit(fleet::fleetctl::main());
}
