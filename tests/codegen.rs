//! Generated code and typesetting, run by their consumers: NumPy, JAX and
//! PyTorch code in Python, LaTeX in KaTeX under Node.js.

#[path = "examples_numpy.rs"]
mod examples_numpy;
#[path = "frameworks_codegen.rs"]
mod frameworks_codegen;
#[path = "latex_katex.rs"]
mod latex_katex;
#[path = "numpy_codegen.rs"]
mod numpy_codegen;
#[path = "common/python.rs"]
mod python;
// The random scripts of the weak-spot properties; this binary uses only the generator.
#[path = "common/weak.rs"]
#[allow(dead_code)]
mod weak;
