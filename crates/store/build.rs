//! Rebuilds the crate when golden scripts are added or removed, so that each one becomes a test.
fn main() {
    println!("cargo:rerun-if-changed=src/testscripts");
}
