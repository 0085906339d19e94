//! Privileged integration tests: the real tracer binary, the real eBPF program, the real
//! kernel, real sockets on loopback. They assert exact per-socket state sequences.
//!
//! `#[ignore]`d for a plain `cargo test` (they need root); `cargo xtask test` runs them. Each
//! test filters on its own ports, so other traffic on the host cannot disturb it, and they
//! can run in parallel. `harness` holds what they share (the running tracer, sockets,
//! the fork lock); each other module is one area of behaviour.

mod harness;

mod accept;
mod bpf_log;
mod burst;
mod cgroups;
mod close_classes;
mod connections;
mod counters;
mod demo;
mod filters;
mod fin_wait2;
mod help;
mod lifecycle;
mod losses;
mod metrics;
mod netns;
mod owners;
mod privileges;
mod recording;
mod ring;
mod stuck;
mod time_wait;
mod top;
