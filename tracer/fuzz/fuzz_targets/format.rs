//! The tracefs `format` parser and the choices made from what it parsed: the program and
//! layout for `sock:inet_sock_set_state` (`choose`) and a context tracepoint's layout
//! (`ctx_layout`). Any text must give `Ok` or `Err`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::format::{Choice, FAST, choose, ctx_layout, parse};
use tracer_common::ABSENT;

fuzz_target!(|data: &[u8]| {
    // tracer reads the file with `read_to_string`; lossy conversion keeps every valid text
    // as it is and still lets the fuzzer's byte mutations reach the parser.
    let text = String::from_utf8_lossy(data);
    let Ok(fields) = parse(&text) else { return };
    assert!(!fields.is_empty());
    for f in &fields {
        assert!(!f.name.is_empty());
    }
    match choose(&fields) {
        Ok(Choice::Fast) => {}
        Ok(Choice::Portable(l)) => {
            assert_ne!(l, FAST);
            assert!(l.protocol_size == 1 || l.protocol_size == 2);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    match ctx_layout(&fields) {
        Ok(l) => {
            assert!(l.skaddr != ABSENT || l.sport != ABSENT || l.sockaddr == 1);
            assert_eq!(l.enabled, 1);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
