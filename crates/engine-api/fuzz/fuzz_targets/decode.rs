//! Fuzzes the Engine API's request decoders (see `../decode.rs`):
//! `cargo +nightly fuzz run decode`.

#![no_main]

#[path = "../decode.rs"]
mod decode;

libfuzzer_sys::fuzz_target!(|data: &[u8]| decode::decode(data));
