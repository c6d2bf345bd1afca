//! libFuzzer target: the XML stream reader (src/xml/reader.rs) against the
//! strict references, with the property of src/xml/fuzz/property.rs and the
//! structure-aware mutations of src/xml/fuzz/mutate.rs. Every allocation
//! is counted, so the memory bound is checked here too.
#![no_main]
#![allow(dead_code, unused_imports)]

use libfuzzer_sys::{fuzz_mutator, fuzz_target};

/// The server's XML module, as the server builds it.
#[path = "../../src/xml/mod.rs"]
mod xml;

/// The property and mutations shared with the bounded run in `cargo test`.
#[path = "../../src/xml/fuzz/mod.rs"]
mod fuzz;

#[global_allocator]
static GLOBAL: fuzz::alloc::CountingAlloc = fuzz::alloc::CountingAlloc;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = fuzz::property::check(data) {
        panic!("{finding}");
    }
});

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let mut rng = fuzz::mutate::Rng::new(seed as u64);
    if rng.below(4) == 0 {
        // A quarter of the time, libFuzzer's own byte-level mutations keep it exploring.
        return libfuzzer_sys::fuzzer_mutate(data, size, max_size);
    }
    let mut input = data[..size].to_vec();
    fuzz::mutate::mutate(&mut input, &[], &mut rng, max_size);
    data[..input.len()].copy_from_slice(&input);
    input.len()
});
