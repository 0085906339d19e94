//! Writes the seed corpus of the `decode` target (seeds/decode/): ring-buffer records built
//! from `tracer_common::Event` values, as the unit tests in tracer/src/decode.rs build them,
//! with the values of the real loopback runs in the README (a client closing first, its server
//! and listener, a refused connect with its resets and error, over IPv4 and IPv6), every
//! context kind, and a few records the decoder must reject. Each valid seed is checked to
//! decode. Regenerate with (from tracer/fuzz; `--cfg fuzzing` skips the eBPF build):
//!
//!     RUSTFLAGS='--cfg fuzzing' cargo run --example decode_seeds
use std::{fs, net::Ipv6Addr, path::Path};

use tracer::decode::decode;
use tracer_common::{AF_INET, AF_INET6, EVENT_SIZE, Event, kind};

fn bytes(ev: &Event) -> Vec<u8> {
    // SAFETY: `Event` is plain old data of exactly EVENT_SIZE bytes, without padding.
    unsafe { std::slice::from_raw_parts((ev as *const Event).cast::<u8>(), EVENT_SIZE) }.to_vec()
}

fn comm(name: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..name.len()].copy_from_slice(name);
    c
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&a);
    b
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().expect("IPv6 literal").octets()
}

/// A record of the README's first run (pid 7767, python3, loopback).
fn ev(kind: u32, sk: u64, (sport, dport): (u16, u16), old: u8, new: u8) -> Event {
    Event {
        kind,
        cpu: 1,
        ts_ns: 81_309_989_325_000,
        skaddr: sk,
        pid_tgid: (7767u64 << 32) | 7767,
        cgroup_id: 4242,
        uid_gid: 0,
        comm: comm(b"python3"),
        saddr: v4([127, 0, 0, 1]),
        daddr: v4([127, 0, 0, 1]),
        sport,
        dport,
        family: AF_INET,
        oldstate: old,
        newstate: new,
        value: 0,
        netns: 0,
    }
}

fn main() {
    const CLIENT: u64 = 0xffff_8881_043b_a500;
    const SERVER: u64 = 0xffff_8881_043b_8940;
    const LISTENER: u64 = 0xffff_8881_043b_e5c0;
    let t = kind::TRANSITION;
    let mut seeds: Vec<(String, Event)> = Vec::new();
    let mut add = |name: &str, e: Event| seeds.push((name.to_string(), e));

    // Client closing first, its server and listener: 12 transitions (TCP_* numbers).
    add(
        "v4-listener-close-listen",
        ev(t, LISTENER, (8080, 0), 7, 10),
    );
    add("v4-client-close-syn_sent", ev(t, CLIENT, (0, 8080), 7, 2));
    add(
        "v4-client-syn_sent-established",
        ev(t, CLIENT, (52940, 8080), 2, 1),
    );
    add(
        "v4-server-listen-syn_recv",
        ev(t, SERVER, (8080, 52940), 10, 3),
    );
    add(
        "v4-server-syn_recv-established",
        ev(t, SERVER, (8080, 52940), 3, 1),
    );
    add(
        "v4-client-established-fin_wait1",
        ev(t, CLIENT, (52940, 8080), 1, 4),
    );
    add(
        "v4-server-established-close_wait",
        ev(t, SERVER, (8080, 52940), 1, 8),
    );
    add(
        "v4-server-close_wait-last_ack",
        ev(t, SERVER, (8080, 52940), 8, 9),
    );
    add(
        "v4-client-fin_wait1-fin_wait2",
        ev(t, CLIENT, (52940, 8080), 4, 5),
    );
    add(
        "v4-client-fin_wait2-close",
        ev(t, CLIENT, (52940, 8080), 5, 7),
    );
    add(
        "v4-server-last_ack-close",
        ev(t, SERVER, (8080, 52940), 9, 7),
    );
    add(
        "v4-listener-listen-close",
        ev(t, LISTENER, (8080, 0), 10, 7),
    );
    add(
        "v4-self-fin_wait1-fin_wait1",
        ev(t, CLIENT, (52940, 8080), 4, 4),
    );
    add("v4-closing-close", ev(t, CLIENT, (52940, 8080), 11, 7));
    add(
        "v4-new_syn_recv-time_wait",
        ev(t, SERVER, (8080, 52940), 12, 6),
    );

    // A refused connect: RST sent without a socket, RST received, error report.
    let mut e = ev(kind::SEND_RESET, 0, (8081, 45046), 0, 0);
    e.value = 1;
    add("v4-send_reset-no-socket", e);
    let mut e = ev(kind::SEND_RESET, CLIENT, (33154, 8082), 7, 0);
    e.value = 2;
    add("v4-send_reset-in-close", e);
    add(
        "v4-receive_reset",
        ev(kind::RECEIVE_RESET, LISTENER, (45046, 8081), 2, 0),
    );
    let mut e = ev(kind::ERROR_REPORT, 0, (45046, 8081), 0, 0);
    e.value = 111;
    add("v4-error-econnrefused", e);
    let mut e = ev(kind::ERROR_REPORT, 0, (8082, 33154), 0, 0);
    e.value = 104;
    add("v4-error-econnreset", e);
    // Found by this fuzzer: errno_name(i32::MIN) overflowed in `abs`.
    let mut e = ev(kind::ERROR_REPORT, 0, (45046, 8081), 0, 0);
    e.value = i32::MIN;
    add("regress-error-errno-i32-min", e);
    let mut e = ev(kind::RETRANSMIT, CLIENT, (0, 9), 2, 0);
    e.value = -11;
    add("v4-retransmit-syn", e);
    add(
        "v4-retransmit_synack",
        ev(kind::RETRANSMIT_SYNACK, LISTENER, (8080, 52940), 10, 0),
    );
    add(
        "v4-destroy_sock",
        ev(kind::DESTROY_SOCK, SERVER, (8080, 52940), 0, 0),
    );
    let mut e = ev(kind::SEND_RESET, 0, (0, 0), 0, 0);
    e.family = 0;
    e.saddr = [0; 16];
    e.daddr = [0; 16];
    add("nofamily-send_reset", e);

    // IPv6, with a softirq task (swapper) on the CPU.
    let six = |mut e: Event| {
        e.family = AF_INET6;
        e.saddr = v6("::1");
        e.daddr = v6("fd00::1:2");
        e
    };
    add(
        "v6-client-close-syn_sent",
        six(ev(t, CLIENT, (0, 8080), 7, 2)),
    );
    let mut e = six(ev(t, SERVER, (8080, 40000), 1, 8));
    e.comm = comm(b"swapper/1");
    e.pid_tgid = 0;
    add("v6-softirq-established-close_wait", e);
    let mut e = six(ev(kind::ERROR_REPORT, 0, (40000, 8080), 0, 0));
    e.value = 110;
    add("v6-error-etimedout", e);

    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, e) in &seeds {
        let b = bytes(e);
        if let Err(err) = decode(&b) {
            panic!("seed {name} does not decode: {err}");
        }
        out.push((format!("{name}.bin"), b));
    }
    // The ring buffer rounds records up to 8 bytes; the decoder ignores what follows.
    let mut padded = bytes(&seeds[1].1);
    padded.extend_from_slice(&[0xaa; 16]);
    out.push(("v4-with-trailing-bytes.bin".into(), padded));
    // Records it must reject: short, unknown kind, state and family.
    out.push((
        "bad-short.bin".into(),
        bytes(&seeds[0].1)[..EVENT_SIZE - 1].to_vec(),
    ));
    let mut e = seeds[0].1;
    e.kind = 99;
    out.push(("bad-kind.bin".into(), bytes(&e)));
    let mut e = seeds[0].1;
    e.newstate = 13;
    out.push(("bad-state.bin".into(), bytes(&e)));
    let mut e = seeds[0].1;
    e.family = 1;
    out.push(("bad-family.bin".into(), bytes(&e)));

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/decode");
    fs::create_dir_all(&dir).expect("creating seeds/decode");
    for (name, b) in &out {
        fs::write(dir.join(name), b).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    }
    println!("wrote {} seeds to {}", out.len(), dir.display());
}
