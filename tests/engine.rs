//! The library's own tests, in one binary: derivatives against finite
//! differences and the reference evaluator, backward programs, derivatives as values, Hessians, equality saturation,
//! operation counts, printing round trips, the random-script properties and
//! the golden table of textbook results.

#[path = "common/along.rs"]
mod along;
#[path = "backward.rs"]
mod backward;
#[path = "derivatives.rs"]
mod derivatives;
#[path = "derived.rs"]
mod derived;
#[path = "egraph.rs"]
mod egraph;
#[path = "hessians.rs"]
mod hessians;
#[path = "common/network.rs"]
mod network;
#[path = "op_count.rs"]
mod op_count;
#[path = "properties.rs"]
mod properties;
#[path = "common/python.rs"]
mod python;
#[path = "roundtrip.rs"]
mod roundtrip;
#[path = "textbook.rs"]
mod textbook;
