//! The recording reader on arbitrary bytes, and whatever it accepts fed through the whole
//! pipeline (table, ladder pairing, summary, JSON and text sinks, text rows and timelines),
//! as `tracer replay` does:
//! errors are fine, panics and unbounded growth are not.
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use tracer::{
    clock::WallClock,
    ladder::Pairer,
    output::{Json, Text},
    pipeline::{Pipeline, View},
    record::{Item, Reader},
    summary::Summary,
};

fuzz_target!(|data: &[u8]| {
    let clock = WallClock::fixed(0);
    // Both sinks, every view: each renders what the table hands it.
    let mut json = Pipeline::new(Json::new(io::sink(), clock));
    let mut text = Pipeline::new(Text::new(io::sink(), clock, false, true));
    text.view = View::Ladder;
    text.pairer = Some(Pairer::new());
    // Text rows and timeline blocks, coloured (the default view).
    let mut rows = Pipeline::new(Text::new(io::sink(), clock, true, true));
    json.summary = Some(Summary::new());
    json.stuck_ns = Some(1_000_000);
    // A small cap so eviction paths run too.
    json.table.max_conns = 64;
    text.table.max_conns = 64;
    rows.table.max_conns = 64;
    let (mut last_j, mut last_t, mut last_r) = (0u64, 0u64, 0u64);
    for item in Reader::new(data) {
        let Ok(item) = item else { break };
        let end = matches!(item, Item::End { .. });
        let _ = json.feed(item.clone(), &mut last_j);
        let _ = rows.feed(item.clone(), &mut last_r);
        let _ = text.feed(item, &mut last_t);
        if end {
            break;
        }
    }
    let _ = json.finish(last_j);
    let _ = rows.finish(last_r);
    let _ = text.finish(last_t);
});
