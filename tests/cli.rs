//! The command line and the REPL, run as a user runs them: bad inputs and
//! their messages, the examples, the seed network, the REPL in a terminal,
//! and inputs that must never panic.

#[path = "bad_inputs.rs"]
mod bad_inputs;
#[path = "browser.rs"]
mod browser;
#[path = "examples.rs"]
mod examples;
#[path = "no_panic.rs"]
mod no_panic;
#[path = "repl.rs"]
mod repl;
#[path = "seed.rs"]
mod seed;
#[path = "serve.rs"]
mod serve;
#[path = "serve_load.rs"]
mod serve_load;
