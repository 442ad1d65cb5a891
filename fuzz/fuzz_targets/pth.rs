#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (rps_fuzz::target("pth").run)(data);
});
