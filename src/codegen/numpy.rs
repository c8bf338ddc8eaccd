//! The NumPy backend: how NumPy spells each operation the generator in
//! [`crate::codegen`] emits (`np.eye(n, dtype=_dtype)`, `(a @ b)`,
//! `x.reshape(-1, 1, order='F')`, …). What a function computes, and in which
//! order, is decided there; this module only writes it.
//!
//! The result has the dtype of the array parameters (`np.result_type` of
//! them and a Python float, so float32 in gives float32 out, integers give
//! float64), and constants are built with `dtype=_dtype`.
//!
//! [`module`] and [`parameters`] are the generator's, for NumPy; the names
//! and sizes ([`Identifiers`], [`identifier`], [`ascii`], [`size_expr`]) are
//! shared by every backend and re-exported here.

use super::Backend;
use crate::error::Error;
use crate::ir::{Builtin, VecOrder};
use crate::typeck::Env;

pub use super::{ascii, identifier, parameters, size_expr, Function, Identifiers, MAX_ENTRIES};

/// The NumPy backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct NumPy;

/// The module: `import numpy as np`, helpers, then one function per entry.
/// Fails when a function would build an array larger than [`MAX_ENTRIES`].
pub fn module(env: &Env, functions: &[Function]) -> Result<String, Error> {
    super::module(&NumPy, env, functions)
}

/// Helpers the generated code may call, as (name, Python source).
const HELPERS: &[(&str, &str)] = &[(
    "_commutation",
    "def _commutation(r, c, order, dtype):\n    \"\"\"K with K @ vec(A) = vec(A.T) for an r x c matrix A.\"\"\"\n    \
     k = np.zeros((r * c, r * c), dtype=dtype)\n    for i in range(r):\n        for j in range(c):\n            \
     src = i * c + j if order == 'C' else j * r + i\n            dst = j * r + i if order == 'C' else i * c + j\n            \
     k[dst, src] = 1\n    return k\n",
)];

/// NumPy's name of a `vec` order: `'C'` for rows, `'F'` for columns.
fn order(o: VecOrder) -> &'static str {
    if o == VecOrder::Row {
        "C"
    } else {
        "F"
    }
}

impl Backend for NumPy {
    fn name(&self) -> &str {
        "NumPy"
    }

    fn reserved(&self) -> &[&str] {
        &["np"]
    }

    fn header(&self) -> &str {
        "import numpy as np\n\n\n"
    }

    fn helpers(&self) -> Vec<(&str, &str)> {
        let table = crate::functions::BUILTINS.iter().filter_map(|b| b.numpy_helper);
        HELPERS.iter().copied().chain(table).collect()
    }

    fn builtin(&self, f: &Builtin) -> Option<&str> {
        Some(f.numpy)
    }

    fn dtype_line(&self, arrays: &[String]) -> String {
        if arrays.is_empty() {
            "_dtype = np.float64".to_string()
        } else {
            format!("_dtype = np.result_type({}, 1.0)", arrays.join(", "))
        }
    }

    // A copy: no result may be an input array itself, or a read-only
    // broadcast view of one, that a caller's in-place update would corrupt.
    fn array(&self, x: &str) -> String {
        format!("np.array({x}, dtype=_dtype)")
    }

    fn fresh_array(&self, x: &str) -> String {
        format!("np.asarray({x}, dtype=_dtype)")
    }

    fn filled(&self, x: &str, rows: &str, cols: &str) -> String {
        format!("np.full(({rows}, {cols}), {x}[0, 0], dtype=_dtype)")
    }

    fn eye(&self, n: &str) -> String {
        format!("np.eye({n}, dtype=_dtype)")
    }

    fn zeros(&self, rows: &str, cols: &str) -> String {
        format!("np.zeros(({rows}, {cols}), dtype=_dtype)")
    }

    fn ones(&self, rows: &str, cols: &str) -> String {
        format!("np.ones(({rows}, {cols}), dtype=_dtype)")
    }

    fn full(&self, rows: &str, cols: &str, value: &str) -> String {
        format!("np.full(({rows}, {cols}), {value}, dtype=_dtype)")
    }

    fn commutation(&self, r: &str, c: &str, o: VecOrder) -> String {
        format!("_commutation({r}, {c}, '{}', _dtype)", order(o))
    }

    fn matrix_power(&self, x: &str, k: i64) -> String {
        format!("np.linalg.matrix_power({x}, {k})")
    }

    fn inv(&self, x: &str) -> String {
        format!("np.linalg.inv({x})")
    }

    fn kron(&self, a: &str, b: &str) -> String {
        format!("np.kron({a}, {b})")
    }

    fn vec(&self, x: &str, o: VecOrder) -> String {
        format!("{x}.reshape(-1, 1, order='{}')", order(o))
    }

    fn unvec(&self, x: &str, rows: &str, cols: &str, o: VecOrder) -> String {
        format!("{x}.reshape({rows}, {cols}, order='{}')", order(o))
    }

    fn swap_axes(&self, x: &str) -> String {
        format!("{x}.transpose(1, 0, 2)")
    }

    fn diag_matrix(&self, v: &str) -> String {
        format!("np.diag({v}.ravel())")
    }

    fn diagonal(&self, x: &str) -> String {
        format!("np.diag({x}).reshape(-1, 1)")
    }

    fn trace(&self, x: &str) -> String {
        format!("np.trace({x})")
    }

    fn det(&self, x: &str) -> String {
        format!("np.linalg.det({x})")
    }

    fn logdet(&self, x: &str) -> String {
        format!("np.linalg.slogdet({x})[1]")
    }

    fn sum(&self, x: &str) -> String {
        format!("np.sum({x})")
    }

    fn sum_axis(&self, x: &str, axis: usize) -> String {
        format!("np.sum({x}, axis={axis}, keepdims=True)")
    }

    fn broadcast(&self, x: &str, rows: &str, cols: &str) -> String {
        format!("np.broadcast_to({x}, ({rows}, {cols}))")
    }

    fn norm(&self, x: &str) -> String {
        format!("np.linalg.norm({x})")
    }
}
