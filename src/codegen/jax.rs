//! The JAX backend: how `jax.numpy` spells each operation the generator in
//! [`crate::codegen`] emits (`jnp.eye(n, dtype=_dtype)`, `(a @ b)`,
//! `x.T.reshape(-1, 1)`, …). What a function computes, and in which order,
//! is decided there, as for NumPy; this module only writes it.
//!
//! The code imports `jax.numpy as jnp` and nothing else. Its functions are
//! pure: they update no array in place, branch in Python only on shapes
//! (which `jax.jit` knows when it traces), and read sizes from shapes, so
//! `jax.jit` and `jax.grad` apply to them (a keyword-only size is then a
//! static argument). The result has the dtype of the array parameters
//! (`jnp.result_type` of them and a Python float: float32 in, float32 out;
//! float64 needs `jax_enable_x64`), and constants are built with
//! `dtype=_dtype`. A function with no array parameter returns JAX's default
//! float dtype.
//!
//! `vec` in column order is the transpose read row by row
//! (`x.T.reshape(-1, 1)`), never a reshape with `order='F'`, so that the
//! code reads the same in every backend.

use super::Backend;
use crate::error::Error;
use crate::ir::{Builtin, VecOrder};
use crate::typeck::Env;

pub use super::Function;

/// The JAX backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Jax;

/// The module: `import jax.numpy as jnp`, helpers, then one function per
/// entry. Fails when a function would build an array larger than
/// [`MAX_ENTRIES`](super::MAX_ENTRIES).
pub fn module(env: &Env, functions: &[Function]) -> Result<String, Error> {
    super::module(&Jax, env, functions)
}

/// Helpers the generated code may call, as (name, Python source).
const HELPERS: &[(&str, &str)] = &[(
    "_commutation",
    "def _commutation(r, c, order, dtype):\n    \"\"\"K with K @ vec(A) = vec(A.T) for an r x c matrix A.\"\"\"\n    \
     index = jnp.arange(r * c)\n    \
     source = index.reshape(r, c).T if order == 'C' else index.reshape(c, r).T\n    \
     return jnp.eye(r * c, dtype=dtype)[source.reshape(-1)]\n",
)];

impl Backend for Jax {
    fn name(&self) -> &str {
        "JAX"
    }

    fn reserved(&self) -> &[&str] {
        &["jnp", "jax"]
    }

    fn header(&self) -> &str {
        "import jax.numpy as jnp\n\n\n"
    }

    fn helpers(&self) -> Vec<(&str, &str)> {
        let table = crate::functions::BUILTINS.iter().filter_map(|b| b.jax_helper);
        HELPERS.iter().copied().chain(table).collect()
    }

    fn builtin(&self, f: &Builtin) -> Option<&str> {
        Some(f.jax).filter(|code| !code.is_empty())
    }

    fn dtype_line(&self, arrays: &[String]) -> String {
        if arrays.is_empty() {
            "_dtype = jnp.result_type(float)".to_string()
        } else {
            format!("_dtype = jnp.result_type({}, 1.0)", arrays.join(", "))
        }
    }

    // Under `jax.jit` the compiler decides when buffers are freed.
    fn release(&self, _names: &[&str]) -> Option<String> {
        None
    }

    fn array(&self, x: &str) -> String {
        format!("jnp.asarray({x}, dtype=_dtype)")
    }

    fn filled(&self, x: &str, rows: &str, cols: &str) -> String {
        format!("jnp.full(({rows}, {cols}), {x}[0, 0], dtype=_dtype)")
    }

    fn eye(&self, n: &str) -> String {
        format!("jnp.eye({n}, dtype=_dtype)")
    }

    fn zeros(&self, rows: &str, cols: &str) -> String {
        format!("jnp.zeros(({rows}, {cols}), dtype=_dtype)")
    }

    fn ones(&self, rows: &str, cols: &str) -> String {
        format!("jnp.ones(({rows}, {cols}), dtype=_dtype)")
    }

    fn full(&self, rows: &str, cols: &str, value: &str) -> String {
        format!("jnp.full(({rows}, {cols}), {value}, dtype=_dtype)")
    }

    fn commutation(&self, r: &str, c: &str, o: VecOrder) -> String {
        let order = if o == VecOrder::Row { "C" } else { "F" };
        format!("_commutation({r}, {c}, '{order}', _dtype)")
    }

    fn matrix_power(&self, x: &str, k: i64) -> String {
        format!("jnp.linalg.matrix_power({x}, {k})")
    }

    fn inv(&self, x: &str) -> String {
        format!("jnp.linalg.inv({x})")
    }

    fn kron(&self, a: &str, b: &str) -> String {
        format!("jnp.kron({a}, {b})")
    }

    fn swap_axes(&self, x: &str) -> String {
        format!("jnp.swapaxes({x}, 0, 1)")
    }

    fn diag_matrix(&self, v: &str) -> String {
        format!("jnp.diag({v}.reshape(-1))")
    }

    fn diagonal(&self, x: &str) -> String {
        format!("jnp.diagonal({x}).reshape(-1, 1)")
    }

    fn trace(&self, x: &str) -> String {
        format!("jnp.trace({x})")
    }

    fn det(&self, x: &str) -> String {
        format!("jnp.linalg.det({x})")
    }

    fn logdet(&self, x: &str) -> String {
        format!("jnp.linalg.slogdet({x})[1]")
    }

    fn sum(&self, x: &str) -> String {
        format!("jnp.sum({x})")
    }

    fn sum_axis(&self, x: &str, axis: usize) -> String {
        format!("jnp.sum({x}, axis={axis}, keepdims=True)")
    }

    fn broadcast(&self, x: &str, rows: &str, cols: &str) -> String {
        format!("jnp.broadcast_to({x}, ({rows}, {cols}))")
    }

    fn norm(&self, x: &str) -> String {
        format!("jnp.linalg.norm({x})")
    }
}
