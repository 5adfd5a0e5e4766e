#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| geolb_fuzz_targets::remote_backend_unix(data));
