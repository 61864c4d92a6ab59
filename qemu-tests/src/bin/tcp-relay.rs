//! `tcp-relay HOST:PORT`: keel_image::vm::relay as a program of its own, for tests that give
//! QEMU a guest forward without the keel binary.

fn main() {
    let Some(target) = std::env::args().nth(1) else {
        eprintln!("usage: tcp-relay HOST:PORT");
        std::process::exit(2);
    };
    if let Err(e) = keel_image::vm::relay::run(&target) {
        eprintln!("tcp-relay: {e}");
        std::process::exit(1);
    }
}
