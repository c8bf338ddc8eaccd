//! Code that evaluates answers: one function per query, which computes the
//! intermediates it needs once, applies `diag(v)` and `A ⊗ B` without
//! building them, and keeps its inputs' dtype. NumPy is the backend today.

pub mod numpy;
