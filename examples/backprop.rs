//! The seed network (a 2-layer network) through the library API: every query,
//! its answer, and the largest relative error against finite differences.
//!
//! ```sh
//! cargo run --example backprop
//! ```

use matdiff::Session;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let script = include_str!("backprop.mdiff");
    let mut session = Session::default();
    let answers = session.answers(script)?;
    let width = answers.iter().map(|a| session.render(a).find(" = ").unwrap_or(0)).max().unwrap_or(0);
    for a in &answers {
        let text = session.render(a);
        let (lhs, rhs) = text.split_once(" = ").unwrap_or((&text, ""));
        let err = session.check(a).map_err(|e| e.0)?.unwrap_or(0.0);
        println!("{lhs:<width$}  {rhs}   [error {err:.0e}]", width = width);
    }
    Ok(())
}
