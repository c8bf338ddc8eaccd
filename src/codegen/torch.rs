//! The PyTorch backend: how `torch` spells each operation the generator in
//! [`crate::codegen`] emits (`torch.eye(n, dtype=_dtype, device=_device)`,
//! `(a @ b)`, `x.T.reshape(-1, 1)`, …). What a function computes, and in
//! which order, is decided there, as for NumPy; this module only writes it.
//!
//! The code imports `torch` and nothing else: tensors in, tensors out. The
//! result has the dtype of the tensor parameters (promoted together and with
//! a Python float, so float32 in gives float32 out and integers give the
//! default float dtype) and the device of the first; constants are built
//! with `dtype=_dtype, device=_device`. A function with no tensor parameter
//! returns the default dtype on the default device. Nothing is moved to the
//! CPU, converted to NumPy or read back as a Python number, no input is
//! updated in place, and every operation is one autograd records, so the
//! generated code runs on any device and can itself be differentiated.
//!
//! PyTorch has no column-major reshape: `vec` in column order is the
//! transpose read row by row (`x.T.reshape(-1, 1)`), and `vec⁻¹` in column
//! order reshapes to the transposed shape and transposes back. Reshapes are
//! `reshape`, never `view`, so that they also apply to the transposed
//! (non-contiguous) tensors the generator passes them.

use super::Backend;
use crate::error::Error;
use crate::ir::{Builtin, VecOrder};
use crate::typeck::Env;

pub use super::Function;

/// The PyTorch backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Torch;

/// The module: `import torch`, helpers, then one function per entry. Fails
/// when a function would build an array larger than
/// [`MAX_ENTRIES`](super::MAX_ENTRIES).
pub fn module(env: &Env, functions: &[Function]) -> Result<String, Error> {
    super::module(&Torch, env, functions)
}

/// Helpers the generated code may call, as (name, Python source).
const HELPERS: &[(&str, &str)] = &[
    (
        "_dtype_device",
        "def _dtype_device(*tensors):\n    \
         \"\"\"The dtype of results (the tensors' dtypes promoted with a float's), and the first tensor's device.\"\"\"\n    \
         dtype = getattr(tensors[0], \"dtype\", None)\n    \
         if isinstance(dtype, torch.dtype) and dtype.is_floating_point and all(\n        \
         getattr(t, \"dtype\", None) == dtype for t in tensors[1:]\n    ):\n        \
         return dtype, tensors[0].device\n    \
         dtype = torch.result_type(tensors[0], 1.0)\n    \
         for t in tensors[1:]:\n        dtype = torch.promote_types(dtype, torch.result_type(t, 1.0))\n    \
         return dtype, tensors[0].device\n",
    ),
    (
        "_kron",
        "def _kron(a, b):\n    \
         \"\"\"A ⊗ B by broadcasting (torch.kron fails on some transposed tensors).\"\"\"\n    \
         return (a[:, None, :, None] * b[None, :, None, :]).reshape(a.shape[0] * b.shape[0], a.shape[1] * b.shape[1])\n",
    ),
    (
        "_commutation",
        "def _commutation(r, c, order, dtype, device):\n    \
         \"\"\"K with K @ vec(A) = vec(A.T) for an r x c matrix A.\"\"\"\n    \
         index = torch.arange(r * c, device=device)\n    \
         source = index.reshape(r, c).T if order == 'C' else index.reshape(c, r).T\n    \
         return torch.eye(r * c, dtype=dtype, device=device)[source.reshape(-1)]\n",
    ),
    (
        "_layer_norm_backward",
        "def _layer_norm_backward(g, c, s, gain, params=False):\n    \
         \"\"\"∂L/∂H of N = C / s * gain (+ bias) (C = H - its row means, s = sqrt(mean(C * C) + eps) by rows), from\n    \
         g = ∂L/∂N; with params, also ∂L/∂gain and ∂L/∂bias, 1-D. One fused kernel, as autograd's layer norm;\n    \
         the formula itself when the result is to be differentiated, as the kernel is not differentiable in s,\n    \
         or when the dtypes differ.\n    \
         \"\"\"\n    \
         rstd = torch.reciprocal(s)\n    \
         tensors = (g, c, s) if gain is None else (g, c, s, gain)\n    \
         if (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)) or any(\n        \
         t.dtype != g.dtype for t in tensors\n    ):\n        \
         x = c * rstd\n        \
         gx = g if gain is None else g * gain\n        \
         dh = (gx - gx.mean(1, keepdim=True) - x * (gx * x).mean(1, keepdim=True)) * rstd\n        \
         return (dh, (g * x).sum(0), g.sum(0)) if params else dh\n    \
         weight = None if gain is None else gain.reshape(-1)\n    \
         # The bias's gradient is the column sums of g: its value is not read, only its shape.\n    \
         mask = [True, params, params]\n    \
         out = torch.ops.aten.native_layer_norm_backward(\n        \
         g, c, [c.shape[1]], torch.zeros_like(s), rstd, weight, weight if params else None, mask\n    )\n    \
         return out if params else out[0]\n",
    ),
];

impl Backend for Torch {
    fn name(&self) -> &str {
        "PyTorch"
    }

    fn reserved(&self) -> &[&str] {
        &["torch"]
    }

    fn header(&self) -> &str {
        "import torch\n\n\n"
    }

    fn helpers(&self) -> Vec<(&str, &str)> {
        let table = crate::functions::BUILTINS.iter().filter_map(|b| b.torch_helper);
        HELPERS.iter().copied().chain(table).collect()
    }

    fn builtin(&self, f: &Builtin) -> Option<&str> {
        Some(f.torch).filter(|code| !code.is_empty())
    }

    fn dtype_line(&self, arrays: &[String]) -> String {
        if arrays.is_empty() {
            "_dtype, _device = torch.get_default_dtype(), None".to_string()
        } else {
            format!("_dtype, _device = _dtype_device({})", arrays.join(", "))
        }
    }

    // A copy: no result may be an input tensor itself, which a caller's
    // in-place update (an optimiser step) would then corrupt.
    fn array(&self, x: &str) -> String {
        format!("{x}.to(_dtype, copy=True)")
    }

    fn fresh_array(&self, x: &str) -> String {
        format!("{x}.to(_dtype)")
    }

    fn filled(&self, x: &str, rows: &str, cols: &str) -> String {
        format!("{x}.to(_dtype).expand({rows}, {cols}).contiguous()")
    }

    fn eye(&self, n: &str) -> String {
        format!("torch.eye({n}, dtype=_dtype, device=_device)")
    }

    fn zeros(&self, rows: &str, cols: &str) -> String {
        format!("torch.zeros(({rows}, {cols}), dtype=_dtype, device=_device)")
    }

    fn ones(&self, rows: &str, cols: &str) -> String {
        format!("torch.ones(({rows}, {cols}), dtype=_dtype, device=_device)")
    }

    /// `torch.full` takes only a Python number; the value may be a 0-d
    /// tensor (a trace, a determinant), which `torch.as_tensor` keeps on its
    /// device and in the autograd graph.
    fn full(&self, rows: &str, cols: &str, value: &str) -> String {
        let tensor = format!("torch.as_tensor({value}, dtype=_dtype, device=_device)");
        if rows == "1" && cols == "1" {
            format!("{tensor}.reshape(1, 1)")
        } else {
            format!("{tensor}.expand({rows}, {cols})")
        }
    }

    fn commutation(&self, r: &str, c: &str, o: VecOrder) -> String {
        let order = if o == VecOrder::Row { "C" } else { "F" };
        format!("_commutation({r}, {c}, '{order}', _dtype, _device)")
    }

    fn matrix_power(&self, x: &str, k: i64) -> String {
        format!("torch.linalg.matrix_power({x}, {k})")
    }

    fn inv(&self, x: &str) -> String {
        format!("torch.linalg.inv({x})")
    }

    /// `torch.kron` reshapes with `view` inside, which fails on a
    /// transposed operand (PyTorch 2.x: "view size is not compatible with
    /// input tensor's size and stride"), so the product is a broadcast
    /// multiplication, reshaped.
    fn kron(&self, a: &str, b: &str) -> String {
        format!("_kron({a}, {b})")
    }

    fn swap_axes(&self, x: &str) -> String {
        format!("{x}.transpose(0, 1)")
    }

    fn diag_matrix(&self, v: &str) -> String {
        format!("torch.diag({v}.reshape(-1))")
    }

    fn diagonal(&self, x: &str) -> String {
        format!("torch.diagonal({x}).reshape(-1, 1)")
    }

    fn trace(&self, x: &str) -> String {
        format!("torch.trace({x})")
    }

    fn det(&self, x: &str) -> String {
        format!("torch.linalg.det({x})")
    }

    fn logdet(&self, x: &str) -> String {
        format!("torch.linalg.slogdet({x})[1]")
    }

    fn sum(&self, x: &str) -> String {
        format!("torch.sum({x})")
    }

    fn sum_axis(&self, x: &str, axis: usize) -> String {
        format!("torch.sum({x}, dim={axis}, keepdim=True)")
    }

    fn broadcast(&self, x: &str, rows: &str, cols: &str) -> String {
        format!("{x}.expand({rows}, {cols})")
    }

    fn norm(&self, x: &str) -> String {
        format!("torch.linalg.norm({x})")
    }

    // Autograd's own fused kernels: one pass over the arrays instead of
    // three, and differentiable again.
    fn fuses_sums(&self) -> bool {
        true
    }

    fn add_product(&self, c: &str, a: &str, b: &str, alpha: Option<&str>) -> Option<String> {
        Some(match alpha {
            None => format!("torch.addmm({c}, {a}, {b})"),
            Some(k) => format!("torch.addmm({c}, {a}, {b}, alpha={k})"),
        })
    }

    fn add_hadamard(&self, c: &str, a: &str, b: &str, alpha: Option<&str>) -> Option<String> {
        Some(match alpha {
            None => format!("torch.addcmul({c}, {a}, {b})"),
            Some(k) => format!("torch.addcmul({c}, {a}, {b}, value={k})"),
        })
    }

    fn times_one_minus_square(&self, a: &str, b: &str) -> Option<String> {
        Some(format!("torch.ops.aten.tanh_backward({a}, {b})"))
    }

    fn softmax_backward(&self, g: &str, s: &str) -> Option<String> {
        Some(format!("torch.ops.aten._softmax_backward_data({g}, {s}, 1, {s}.dtype)"))
    }

    // The kernel subtracts a mean and multiplies by `rstd`: given the
    // centred rows and a zero mean it normalises them as given, so the
    // input need not be kept for the backward pass.
    fn layer_norm_backward(&self, g: &str, c: &str, s: &str, gain: Option<&str>, params: bool) -> Option<String> {
        let gain = gain.unwrap_or("None");
        Some(if params {
            format!("_layer_norm_backward({g}, {c}, {s}, {gain}, params=True)")
        } else {
            format!("_layer_norm_backward({g}, {c}, {s}, {gain})")
        })
    }

    fn times_step(&self, a: &str, b: &str) -> Option<String> {
        Some(format!("torch.ops.aten.threshold_backward({a}, {b}, 0)"))
    }
}
