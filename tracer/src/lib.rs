//! tracer: the Linux kernel's TCP state machine, live.
//!
//! One pipe, each stage a module, data flowing one way: [`source`] (eBPF loader, [`ring`]
//! buffer) → [`decode`] (bytes → typed events) → [`enrich`] (sock_diag, /proc) → [`table`]
//! (per-socket timelines) → sinks ([`output`]: text, JSON; [`ladder`]: text and SVG diagrams;
//! [`summary`], [`metrics`], [`record`]). [`pipeline`] wires the stages after the source;
//! [`app`] is the live loop, replay and demo.
//!
//! Imports run one way: `tracer-common` → [`decode`], [`clock`], [`units`], [`cgroup`] → [`table`] →
//! [`filter`], [`enrich`], views → [`pipeline`] → [`app`].
pub mod app;
pub mod btf;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod decode;
pub mod diagram;
pub mod enrich;
pub mod files;
pub mod filter;
pub mod format;
pub mod ladder;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod reader;
pub mod record;
pub mod ring;
pub mod source;
pub mod summary;
pub mod svgdoc;
pub mod table;
pub mod top;
pub mod tuple;
pub mod units;

pub use app::run;
