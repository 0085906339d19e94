//! The ring-buffer record decoder on arbitrary bytes: it must return `Ok` or `Err`, never
//! panic, and what it returns must be usable by the output code (names, formatting).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::decode::{Decoded, decode, errno_name};
use tracer_common::EVENT_SIZE;

fuzz_target!(|data: &[u8]| {
    let decoded = decode(data);
    if data.len() < EVENT_SIZE {
        assert!(decoded.is_err(), "decoded a {}-byte record", data.len());
        return;
    }
    // Bytes after the event are ignored (the ring buffer pads records to 8 bytes).
    assert_eq!(decoded, decode(&data[..EVENT_SIZE]));
    let mut out = String::new();
    match decoded {
        Ok(Decoded::Transition(t)) => {
            out += &format!(
                "{t:?} {} {} {} {} {}",
                t.sock, t.old, t.new, t.task.comm, t.tuple.local.addr
            );
        }
        Ok(Decoded::Context(c)) => {
            out += &format!("{c:?} {} {}", c.kind.name(), errno_name(c.value));
            if let Some(s) = c.state {
                out += s.name();
            }
            if let Some(s) = c.sock {
                out += &s.to_string();
            }
        }
        Ok(Decoded::Accept(a)) => {
            out += &format!("{a:?} {} {} {}", a.sock, a.state, a.task.comm);
        }
        Ok(Decoded::Stats(s)) => {
            out += &format!("{s:?} {}", s.sock);
        }
        Err(e) => out += &e.to_string(),
    }
    assert!(!out.is_empty());
});
