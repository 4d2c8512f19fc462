//! Batch validation on arbitrary bytes: never panics, and whatever it
//! accepts decodes as events with a kind.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mamori_proto::fuzz::validate(data);
});
