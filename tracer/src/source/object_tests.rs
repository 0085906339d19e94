//! The embedded eBPF object against the names and types the loader uses: every program, map and
//! global of `tracer_common::names` exists in it, with the section (tracepoint), map type, key
//! and value sizes, and global size the loader assumes. The kernel side names them as Rust
//! identifiers, so a rename there is no compile error here: this test is the check.
use std::{collections::HashMap, mem::size_of};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
use tracer_common::{
    AcceptOffsets, AddrKey, Config, Counters, CtxLayout, KOwner, NetnsOffsets, RuntimeLayout, kind,
    names,
};

use super::EBPF_OBJECT;

const HASH: u32 = 1;
const ARRAY: u32 = 2;
const PERCPU_ARRAY: u32 = 6;
const LRU_HASH: u32 = 9;
const LPM_TRIE: u32 = 11;
const RINGBUF: u32 = 27;

/// Symbol name → (its section's name, its size), for every named symbol of the object.
fn symbols() -> HashMap<String, (String, u64)> {
    let file = object::File::parse(EBPF_OBJECT).expect("the embedded eBPF object is an ELF file");
    file.symbols()
        .filter_map(|s| {
            let name = s.name().ok()?.to_string();
            let section = file.section_by_index(s.section_index()?).ok()?;
            Some((name, (section.name().ok()?.to_string(), s.size())))
        })
        .collect()
}

/// Every program the loader loads: its name, and the (raw) tracepoint section it is compiled
/// for.
fn programs() -> Vec<(&'static str, String)> {
    let mut p = vec![
        (
            names::PROG_FAST,
            "tracepoint/sock/inet_sock_set_state".to_string(),
        ),
        (
            names::PROG_PORTABLE,
            "tracepoint/sock/inet_sock_set_state".to_string(),
        ),
        (
            names::DESTROY_FAST_PROGRAM,
            "tracepoint/tcp/tcp_destroy_sock".to_string(),
        ),
        (
            names::ERROR_REPORT_RAW_PROGRAM,
            format!("raw_tp/{}", names::ERROR_REPORT_RAW_TRACEPOINT),
        ),
        // Attached by the loader to each of ACCEPT_TRACEPOINTS; compiled for the first.
        (
            names::ACCEPT_PROGRAM,
            format!("tracepoint/syscalls/{}", names::ACCEPT_TRACEPOINTS[0]),
        ),
        (
            names::ACCEPT_BTF_PROGRAM,
            format!("tracepoint/syscalls/{}", names::ACCEPT_TRACEPOINTS[0]),
        ),
    ];
    for (prog, category, name, _, _) in names::CONTEXT_PROGRAMS {
        p.push((prog, format!("tracepoint/{category}/{name}")));
    }
    p
}

#[test]
fn every_program_exists_in_its_tracepoint_section() {
    let obj = aya_obj::Object::parse(EBPF_OBJECT).expect("aya parses the embedded object");
    let syms = symbols();
    for (name, section) in programs() {
        assert!(
            obj.programs.contains_key(name),
            "program {name} missing from the eBPF object (it has {:?})",
            obj.programs.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            syms.get(name).map(|(s, _)| s.as_str()),
            Some(section.as_str()),
            "program {name}"
        );
    }
    // Nothing in the object that the loader would not load: a new program needs a name here.
    let mut promised: Vec<&str> = programs().into_iter().map(|(n, _)| n).collect();
    let mut found: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
    promised.sort_unstable();
    found.sort_unstable();
    assert_eq!(found, promised);
}

#[test]
fn every_map_exists_with_its_type_and_sizes() {
    let obj = aya_obj::Object::parse(EBPF_OBJECT).expect("aya parses the embedded object");
    let u8s = size_of::<u8>() as u32;
    // (name, map type, key size, value size); a ring buffer has neither.
    let lpm_key = (size_of::<u32>() + size_of::<AddrKey>()) as u32;
    let maps: [(&str, u32, u32, u32); 14] = [
        (names::EVENTS, RINGBUF, 0, 0),
        (
            names::COUNTERS,
            PERCPU_ARRAY,
            4,
            size_of::<Counters>() as u32,
        ),
        (names::PORTS, HASH, 2, u8s),
        (names::OWNERS, LRU_HASH, 8, size_of::<KOwner>() as u32),
        (
            names::LISTEN_OWNERS,
            LRU_HASH,
            2,
            size_of::<KOwner>() as u32,
        ),
        (names::LISTEN_TGIDS, LRU_HASH, 8, 4),
        (names::PIDS, HASH, 4, u8s),
        (names::COMMS, HASH, 16, u8s),
        (names::CGROUPS, HASH, 8, u8s),
        (names::NETNS, HASH, 4, u8s),
        (names::ADDRS, LPM_TRIE, lpm_key, u8s),
        (
            names::STATS_SCRATCH,
            PERCPU_ARRAY,
            4,
            tracer_common::STATS_SCRATCH_SIZE as u32,
        ),
        // aya-log's own ring buffer (`--bpf-log`).
        ("AYA_LOGS", RINGBUF, 0, 0),
        // `--bpf-log`'s "logged once" flag (kernel-side only: the loader never opens it).
        ("LOGGED", ARRAY, 4, 4),
    ];
    for (name, map_type, key, value) in maps {
        let m = obj
            .maps
            .get(name)
            .unwrap_or_else(|| panic!("map {name} missing from the eBPF object"));
        assert_eq!(
            (m.map_type(), m.key_size(), m.value_size()),
            (map_type, key, value),
            "map {name}: (type, key size, value size)"
        );
    }
    // One COUNTERS slot per kind.
    assert_eq!(obj.maps[names::COUNTERS].max_entries(), kind::COUNT as u32);
}

#[test]
fn every_global_exists_with_its_size() {
    let mut globals: Vec<(&str, usize)> = vec![
        (names::CONFIG, size_of::<Config>()),
        (names::LAYOUT, size_of::<RuntimeLayout>()),
        (names::NETNS_OFFSETS, size_of::<NetnsOffsets>()),
        (names::ACCEPT_OFFSETS, size_of::<AcceptOffsets>()),
        (
            names::ERROR_REPORT_OFFSETS,
            size_of::<tracer_common::SockOffsets>(),
        ),
        (
            names::TCP_STATS_OFFSETS,
            size_of::<tracer_common::TcpStatsOffsets>(),
        ),
        (
            names::TCP_STATS_SPANS,
            size_of::<tracer_common::TcpStatsSpans>(),
        ),
        // aya-log's level: the loader writes a u8 (0 or 0xff for `--bpf-log`).
        (aya_log::LEVEL, size_of::<u8>()),
    ];
    for (_, _, _, _, global) in names::CONTEXT_PROGRAMS {
        globals.push((global, size_of::<CtxLayout>()));
    }
    let syms = symbols();
    for &(name, size) in &globals {
        let (section, sym_size) = syms
            .get(name)
            .unwrap_or_else(|| panic!("global {name} missing from the eBPF object"));
        assert!(
            [".rodata", ".data", ".bss"]
                .iter()
                .any(|s| section.starts_with(s)),
            "global {name} is in {section}, not in a data section aya can patch"
        );
        assert_eq!(*sym_size, size as u64, "global {name}: size");
    }
    // And through aya's own patching, the path `override_global(.., true)` takes at load.
    let mut obj = aya_obj::Object::parse(EBPF_OBJECT).expect("aya parses the embedded object");
    let zeros: Vec<Vec<u8>> = globals.iter().map(|&(_, size)| vec![0; size]).collect();
    obj.patch_map_data(
        globals
            .iter()
            .zip(&zeros)
            .map(|(&(name, _), z)| (name, (z.as_slice(), true)))
            .collect(),
    )
    .expect("every global can be overridden");
}
