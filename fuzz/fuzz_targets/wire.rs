//! The wire reader on arbitrary bytes: never panics, and agrees with
//! prost's decoder on every event it can read.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mamori_proto::fuzz::wire(data);
});
