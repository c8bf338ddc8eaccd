//! matdiff: symbolic matrix-differential calculus.
pub mod ast;
pub mod diff;
pub mod error;
pub mod eval;
pub mod ir;
pub mod print;
pub mod session;
pub mod shape;
pub mod simplify;
pub mod syntax;
pub mod typeck;
