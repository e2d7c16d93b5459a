//! The `cprkit-device` executable: the kit's vhost-user device daemon.
fn main() {
    std::process::exit(cprkit_device::run(std::env::args().skip(1).collect()))
}
