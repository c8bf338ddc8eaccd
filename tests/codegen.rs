//! Generated code and typesetting, run by their consumers: NumPy code in
//! Python, LaTeX in KaTeX under Node.js.

#[path = "examples_numpy.rs"]
mod examples_numpy;
#[path = "latex_katex.rs"]
mod latex_katex;
#[path = "numpy_codegen.rs"]
mod numpy_codegen;
#[path = "common/python.rs"]
mod python;
