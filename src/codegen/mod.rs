//! Code that evaluates answers: one Python function per query, which
//! computes the intermediates it needs once, applies `diag(v)` and `A ⊗ B`
//! without building them, and keeps its inputs' dtype.
//!
//! **Why the split.** NumPy, JAX and PyTorch code for an answer differ only
//! in how each operation is spelled (`np.trace(x)`, `jnp.trace(x)`,
//! `torch.trace(x)`); what a function computes does not. So this module is
//! the generator, which decides everything that is not spelling, and a
//! [`Backend`] writes each operation it asks for. [`numpy`], [`jax`] and
//! [`torch`] are the NumPy, JAX and PyTorch backends; a new framework is
//! another implementation of [`Backend`], and every backend gives a query
//! the same function with the same parameters.
//!
//! **What the generator decides.** Each function takes the declared
//! matrices its answer depends on (in alphabetical order, 2-D arrays of their
//! declared shapes; scalars 1×1), then the differentials `d_X` a `d(F)`
//! answer reads, then `f`, `f_prime`, `f_prime2` for each declared function
//! it uses, and finally, keyword-only, every symbolic size that no array
//! parameter carries ([`parameters`]). It reads the other sizes from the
//! arrays' shapes, computes the definitions the answer needs in script order,
//! names repeated subexpressions once as temporaries (`_t1`, `_t2`, …),
//! orders each product chain by [`crate::cost`], and returns a 2-D array of
//! the answer's shape.
//!
//! **Names.** Every Python name is an ASCII identifier that is not a keyword
//! (see [`Identifiers`]): Greek letters are spelled out (`λ` is `lam`, `σ` is
//! `sigma`, `Λ` is `Lambda`), and two user names that would meet on one
//! identifier get suffixes `_2`, `_3`. Names the generator makes itself start
//! with `_` (`_t1`, `_dtype`, `_sigmoid`), which user names never do, and
//! user names avoid every backend's module aliases (`np`, `jnp`, `jax`,
//! `torch`; [`RESERVED`]).
//!
//! **Sizes.** A symbolic size is read from the arrays' shapes
//! (`n = A.shape[0]`, `m = v.shape[0] // (2 * n)` for `v: 2·n·m`); a size no
//! array parameter carries is a keyword-only parameter. Sizes are Python
//! integers in every backend, and every size in the generated code goes
//! through one function, [`size_expr`].
//!
//! **Dtype.** The result has the dtype of the array parameters; constants
//! are built with it. How that dtype is found and named is the backend's
//! ([`Backend::dtype_line`]).
//!
//! **Memory.** Products with `diag(v)`, `A ⊗ B`, commutation matrices and
//! identities are applied by broadcasting and reshapes, so none of them is
//! built unless the answer is one. Any array the generated code would
//! materialise with more than [`MAX_ENTRIES`] entries (known sizes only) is
//! refused at generation time with an error naming the array, instead of
//! emitting code that allocates gigabytes.

pub mod jax;
mod layer_norm;
mod lower;
mod names;
pub mod numpy;
pub mod torch;

pub use names::{ascii, identifier, size_expr, Identifiers, RESERVED};

use crate::error::{Error, Span};
use crate::ir::{self, Builtin, Expr, Func, Op, VecOrder};
use crate::shape::{Dim, Shape};
use crate::typeck::Env;
use names::dim_parts;
use num_rational::BigRational;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write;

/// The largest array (in entries) that generated code may build: 2²⁶
/// entries, 512 MiB in float64. Larger arrays with known sizes are refused
/// when the code is generated.
pub const MAX_ENTRIES: u64 = 1 << 26;

/// A function to generate: its Python name, the expression, and a docstring.
#[derive(Debug, Clone)]
pub struct Function {
    /// The Python function name (a valid identifier).
    pub name: String,
    /// What it returns.
    pub expr: Expr,
    /// A one-line docstring.
    pub doc: String,
    /// The query it answers, for errors.
    pub span: Span,
    /// The named adjoints `expr` uses, computed in this order before it.
    pub adjoints: Vec<(crate::ir::Name, Expr)>,
    /// For a backward program, the gradients: the function then returns
    /// `(expr, (gradients…))`, the value and the gradients, like
    /// `jax.value_and_grad`.
    pub gradients: Vec<Expr>,
    /// For a backward program, the definition each named adjoint belongs
    /// to (`δd2` to `d2`); empty otherwise.
    pub adjoint_of: std::rc::Rc<HashMap<crate::ir::Name, crate::ir::Name>>,
    /// For a backward program, the variable of each gradient; empty
    /// otherwise.
    pub wrt: Vec<crate::ir::Name>,
}

impl Function {
    /// What it computes: its value, then its gradients.
    fn outputs(&self) -> Vec<Expr> {
        std::iter::once(self.expr.clone()).chain(self.gradients.iter().cloned()).collect()
    }
}

/// Whether a term of a sum is added or subtracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// `+ t` (the first term of a sum is always `Plus`).
    Plus,
    /// `- t`.
    Minus,
}

/// How one framework spells what the generator emits.
///
/// Every argument named `x`, `a`, `b` is the code of a 2-D array (or, where
/// said, of a number), already spelled by this backend; sizes (`n`, `rows`,
/// `dims`) are Python integer expressions from [`size_expr`]. Each method
/// returns the code of one expression or one line, without indentation.
/// Results that are arrays must be 2-D unless the method says otherwise;
/// operations that yield a number ([`trace`](Backend::trace),
/// [`sum`](Backend::sum), …) may yield any scalar the backend's
/// [`full`](Backend::full) accepts as a value.
///
/// The provided methods spell what NumPy, JAX and PyTorch write alike
/// (`a @ b`, `x.T`, `x.reshape(…)`); a backend overrides those it spells
/// otherwise.
pub trait Backend {
    /// The framework's name, for errors (`NumPy`).
    fn name(&self) -> &str;

    /// The module aliases its code refers to (`np`); each must be in
    /// [`RESERVED`], so that user names avoid them in every backend.
    fn reserved(&self) -> &[&str];

    /// The start of a module: its imports and the blank lines after them.
    fn header(&self) -> &str;

    /// The helper functions its code may call, as (name, Python source), in
    /// the order they are written; a module defines the ones it calls, after
    /// the header. Names start with `_`.
    fn helpers(&self) -> Vec<(&str, &str)>;

    /// The template for a built-in function of the table, with `{x}` for the
    /// argument (a 2-D array), or `None` when this backend has no spelling
    /// for it. A backend reads its own field of [`Builtin`].
    fn builtin(&self, f: &Builtin) -> Option<&str>;

    /// A call of a user function (or one of its derivatives), `f` being a
    /// parameter, on an array: it acts entry by entry.
    fn call(&self, f: &str, x: &str) -> String {
        format!("{f}({x})")
    }

    /// A number literal, usable as a scalar in entrywise operations.
    fn number(&self, r: &BigRational) -> String {
        python_float(r)
    }

    /// The `def` line of a function: its positional parameters, then its
    /// keyword-only parameters (sizes), if any.
    fn signature(&self, name: &str, positional: &[String], keyword: &[String]) -> String {
        python_signature(name, positional, keyword)
    }

    /// The docstring line of a function, from one line of text.
    fn docstring(&self, doc: &str) -> String {
        python_docstring(doc)
    }

    /// The line computing the dtype that results and constants have, from
    /// the array parameters (possibly none).
    fn dtype_line(&self, arrays: &[String]) -> String;

    /// Whether [`add_product`](Backend::add_product) and
    /// [`add_hadamard`](Backend::add_hadamard) spell anything.
    fn fuses_sums(&self) -> bool {
        false
    }

    /// `c + a @ b`, times `alpha` when given, in one operation (`c` may
    /// be a broadcast row), or `None` when the backend has none.
    fn add_product(&self, _c: &str, _a: &str, _b: &str, _alpha: Option<&str>) -> Option<String> {
        None
    }

    /// `c + a * b`, times `alpha` when given, in one operation, or `None`.
    fn add_hadamard(&self, _c: &str, _a: &str, _b: &str, _alpha: Option<&str>) -> Option<String> {
        None
    }

    /// A line releasing names whose arrays are no longer needed (`del a, b`),
    /// or `None` where that is of no use (code that is traced and compiled).
    fn release(&self, names: &[&str]) -> Option<String> {
        Some(format!("del {}", names.join(", ")))
    }

    /// A line binding a name: a size, a temporary or a definition.
    fn assign(&self, name: &str, value: &str) -> String {
        format!("{name} = {value}")
    }

    /// The size of an array parameter along an axis (0 rows, 1 columns), as
    /// a Python integer.
    fn shape(&self, x: &str, axis: usize) -> String {
        format!("{x}.shape[{axis}]")
    }

    /// A result: an array of the answer's shape, in the dtype.
    fn array(&self, x: &str) -> String;

    /// A result computed by its own operation, a new array that no input
    /// and no other result holds: in the dtype, but not copied again.
    fn fresh_array(&self, x: &str) -> String {
        self.array(x)
    }

    /// A result that is a number: a `rows × cols` array filled with the
    /// single entry of `x`, a 1×1 array.
    fn filled(&self, x: &str, rows: &str, cols: &str) -> String;

    /// The `n × n` identity, in the dtype.
    fn eye(&self, n: &str) -> String;

    /// The `rows × cols` zero matrix, in the dtype.
    fn zeros(&self, rows: &str, cols: &str) -> String;

    /// The `rows × cols` all-ones matrix, in the dtype.
    fn ones(&self, rows: &str, cols: &str) -> String;

    /// A `rows × cols` array of one scalar `value`, in the dtype.
    fn full(&self, rows: &str, cols: &str, value: &str) -> String;

    /// The commutation matrix `K_(r,c)` built (`K vec(A) = vec(Aᵀ)` for an
    /// `r × c` matrix `A`), in the dtype.
    fn commutation(&self, r: &str, c: &str, order: VecOrder) -> String;

    /// `a b`, the matrix product.
    fn matmul(&self, a: &str, b: &str) -> String {
        format!("({a} @ {b})")
    }

    /// `xᵀ`.
    fn transpose(&self, x: &str) -> String {
        format!("{x}.T")
    }

    /// A sum of terms with signs, in order.
    fn add(&self, terms: &[(Sign, String)]) -> String {
        python_sum(terms)
    }

    /// `a ∘ b`, entry by entry, broadcasting an operand that is a number or
    /// a 1×1 array, or an `n × 1` or `1 × n` array against an `n × m` or
    /// `m × n` one.
    fn mul(&self, a: &str, b: &str) -> String {
        format!("({a} * {b})")
    }

    /// `a ./ b`, entry by entry, broadcasting as [`mul`](Backend::mul).
    fn div(&self, a: &str, b: &str) -> String {
        format!("({a} / {b})")
    }

    /// `x .^ k`, entry by entry.
    fn pow(&self, x: &str, k: &BigRational) -> String {
        python_power(x, k)
    }

    /// `xᵏ`, the matrix power.
    fn matrix_power(&self, x: &str, k: i64) -> String;

    /// `x⁻¹`.
    fn inv(&self, x: &str) -> String;

    /// `A ⊗ B`, built (only when an answer is a Kronecker product that is
    /// not applied to something).
    fn kron(&self, a: &str, b: &str) -> String;

    /// `vec(x)`, stacking rows (`Row`) or columns (`Col`), as a column.
    fn vec(&self, x: &str, order: VecOrder) -> String {
        match order {
            VecOrder::Row => format!("{x}.reshape(-1, 1)"),
            VecOrder::Col => format!("{x}.T.reshape(-1, 1)"),
        }
    }

    /// `vec⁻¹(x)`: the `rows × cols` matrix whose `vec` in that order is `x`.
    fn unvec(&self, x: &str, rows: &str, cols: &str, order: VecOrder) -> String {
        match order {
            VecOrder::Row => format!("{x}.reshape({rows}, {cols})"),
            VecOrder::Col => format!("{x}.reshape({cols}, {rows}).T"),
        }
    }

    /// Any array's entries in row-major order, reshaped row-major to `dims`
    /// (two or three sizes).
    fn reshape(&self, x: &str, dims: &[String]) -> String {
        format!("{x}.reshape({})", dims.join(", "))
    }

    /// A 3-D array with its first two axes swapped.
    fn swap_axes(&self, x: &str) -> String;

    /// A row or column vector's entries as a column (`n × 1`).
    fn column(&self, x: &str) -> String {
        format!("{x}.reshape(-1, 1)")
    }

    /// A row or column vector's entries as a row (`1 × n`).
    fn row(&self, x: &str) -> String {
        format!("{x}.reshape(1, -1)")
    }

    /// `diag(v)` built, from a row or column vector.
    fn diag_matrix(&self, v: &str) -> String;

    /// The diagonal of a square matrix, as a column.
    fn diagonal(&self, x: &str) -> String;

    /// `tr(x)`, a number.
    fn trace(&self, x: &str) -> String;

    /// `det(x)`, a number.
    fn det(&self, x: &str) -> String;

    /// `log |det(x)|`, a number.
    fn logdet(&self, x: &str) -> String;

    /// The sum of the entries, a number.
    fn sum(&self, x: &str) -> String;

    /// The sums down each column (`axis` 0, a row) or along each row
    /// (`axis` 1, a column): `1ᵀ X` and `X 1` without the ones.
    fn sum_axis(&self, x: &str, axis: usize) -> String;

    /// A row or column repeated to `rows × cols` without copying it:
    /// `1 r` and `c 1ᵀ` without the ones.
    fn broadcast(&self, x: &str, rows: &str, cols: &str) -> String;

    /// The Frobenius norm, a number.
    fn norm(&self, x: &str) -> String;

    /// `a ∘ (1 - b ∘ b)`, the backward of `tanh` through its output `b`,
    /// as one operation when the backend has one (`a` and `b` of one
    /// shape); `None` writes it out.
    fn times_one_minus_square(&self, _a: &str, _b: &str) -> Option<String> {
        None
    }

    /// `s ∘ (g - rowsums(g ∘ s))`, the backward of `s = softmax(x)` along
    /// rows, as one operation when the backend has one (`g` and `s` of one
    /// shape); `None` writes it out.
    fn softmax_backward(&self, _g: &str, _s: &str) -> Option<String> {
        None
    }

    /// `a ∘ step(b)`, the backward of `relu`, as one operation when the
    /// backend has one (`a` and `b` of one shape); `None` writes it out.
    fn times_step(&self, _a: &str, _b: &str) -> Option<String> {
        None
    }

    /// The adjoint of `H` for a layer norm `N = C ./ (s 1ᵀ) ∘ 1 γ (+ 1 β)` of
    /// the rows of `H` (`C = H - mean(H) 1ᵀ`, `s = sqrt(mean(C ∘ C) + ε)`),
    /// from the adjoint `g` of `N`, the centred rows `c`, the standard
    /// deviations `s` (a column) and the gain `gain` (a row; none is all
    /// ones). With `params` (only given a gain), a tuple: that adjoint, then
    /// the gradients of `γ` and `β` as 1-D arrays. A backend that has no such
    /// call returns `None` whatever the arguments: the generator then writes
    /// the chain rule's form.
    fn layer_norm_backward(&self, _g: &str, _c: &str, _s: &str, _gain: Option<&str>, _params: bool) -> Option<String> {
        None
    }
}

/// The module for a backend: its header, the helpers the functions call,
/// then one function per entry. Fails when a function would build an array
/// larger than [`MAX_ENTRIES`], or uses a built-in function the backend
/// cannot spell.
pub fn module(backend: &dyn Backend, env: &Env, functions: &[Function]) -> Result<String, Error> {
    debug_assert!(backend.reserved().iter().all(|r| RESERVED.contains(r)), "{} aliases", backend.name());
    let fused: Vec<(Function, Vec<layer_norm::LayerNorm>)> = functions.iter().map(|f| fuse(backend, env, f)).collect();
    let mut syms = BTreeSet::new();
    let mut adjoints = Vec::new();
    for (f, _) in &fused {
        syms.extend(needs(&env.with_definitions(&f.adjoints), &f.outputs()).syms);
        adjoints.extend(f.adjoints.iter().filter(|(n, _)| !env.names.contains_key(&**n)).cloned());
    }
    // Every function's adjoint names get identifiers, from one table.
    adjoints.sort_by(|a, b| a.0.cmp(&b.0));
    adjoints.dedup_by(|a, b| a.0 == b.0);
    let ids = Identifiers::with_sizes(&env.with_definitions(&adjoints), syms);
    let mut out = String::from(backend.header());
    let bodies: Vec<String> = fused
        .iter()
        .map(|(f, norms)| function(backend, &env.with_definitions(&f.adjoints), &ids, f, norms))
        .collect::<Result<_, _>>()?;
    let all = bodies.join("\n\n");
    for (helper, code) in backend.helpers() {
        if all.contains(&format!("{helper}(")) {
            out.push_str(code);
            out.push_str("\n\n");
        }
    }
    out.push_str(&all);
    Ok(out)
}

/// `f` with the adjoint of each written-out layer norm's input computed by
/// the backend's fused layer-norm backward, when it has one: the adjoint is
/// given the textbook form (see [`layer_norm`]), and the norms are returned
/// for the generator to spell.
fn fuse(backend: &dyn Backend, env: &Env, f: &Function) -> (Function, Vec<layer_norm::LayerNorm>) {
    let spelled = backend.layer_norm_backward("g", "c", "s", None, false).is_some();
    if !spelled || f.adjoint_of.is_empty() {
        return (f.clone(), vec![]);
    }
    let norms = layer_norm::layer_norms(env, &f.expr, &f.adjoints, &f.adjoint_of, &f.wrt);
    let mut f = f.clone();
    for n in &norms {
        if let Some((_, body)) = f.adjoints.iter_mut().find(|(a, _)| *a == n.target) {
            *body = n.adjoint();
        }
    }
    (f, norms)
}

/// The parameters of the function computing `e`, in order, as a Python
/// parameter list: keyword-only sizes last, after `*`. They are the same
/// for every backend.
pub fn parameters(env: &Env, e: &Expr) -> Vec<String> {
    let n = needs(env, std::slice::from_ref(e));
    let ids = Identifiers::with_sizes(env, n.syms.iter().cloned());
    let Signature { mut positional, keyword, .. } = signature(env, &ids, &n);
    if !keyword.is_empty() {
        positional.push("*".to_string());
        positional.extend(keyword);
    }
    positional
}

/// A Python float literal for a number (`2.0`, `0.5`), for backends whose
/// numbers are Python floats.
pub fn python_float(r: &BigRational) -> String {
    use num_traits::ToPrimitive;
    let v = r.to_f64().unwrap_or(f64::NAN);
    if r.is_integer() {
        format!("{v:.1}")
    } else {
        format!("{v:?}")
    }
}

/// A Python `def` line: the positional parameters, then `*` and the
/// keyword-only ones, if any. Every Python backend writes it so.
pub fn python_signature(name: &str, positional: &[String], keyword: &[String]) -> String {
    let mut params = positional.to_vec();
    if !keyword.is_empty() {
        params.push("*".to_string());
        params.extend_from_slice(keyword);
    }
    format!("def {name}({}):", params.join(", "))
}

/// A Python docstring of one line, its backslashes and quotes escaped.
pub fn python_docstring(doc: &str) -> String {
    format!("\"\"\"{}\"\"\"", doc.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A parenthesised Python sum of terms with signs (`(a - b + c)`), for
/// backends whose arrays add with `+` and `-`.
pub fn python_sum(terms: &[(Sign, String)]) -> String {
    let mut text = String::from("(");
    for (i, (sign, term)) in terms.iter().enumerate() {
        if i > 0 {
            text.push_str(if *sign == Sign::Minus { " - " } else { " + " });
        }
        text.push_str(term);
    }
    text.push(')');
    text
}

/// `x ** k` in Python: an integer power as an integer, others as a float.
pub fn python_power(x: &str, k: &BigRational) -> String {
    if k.is_integer() {
        format!("({x} ** {k})")
    } else {
        format!("({x} ** {})", python_float(k))
    }
}

/// The number of entries of a shape, when its sizes are known.
fn entries(rows: &Dim, cols: &Dim) -> Option<u128> {
    Some(u128::from(rows.as_num()?) * u128::from(cols.as_num()?))
}

/// Every defined name `e` needs, in definition order, and the declared
/// matrices, functions, differentials and sizes it reads.
struct Needs {
    defs: Vec<String>,
    mats: BTreeSet<String>,
    funcs: BTreeMap<String, BTreeSet<u32>>,
    diffs: BTreeSet<String>,
    syms: BTreeSet<String>,
}

/// The sizes an operation names besides its shape (a commutation matrix's
/// factors; a size used as a value belongs here too).
fn dims_of(op: &Op) -> Vec<&Dim> {
    match op {
        Op::Commutation(r, c, _) => vec![r, c],
        Op::Size(d) => vec![d],
        _ => vec![],
    }
}

fn needs(env: &Env, outputs: &[Expr]) -> Needs {
    let mut n = Needs {
        defs: vec![],
        mats: BTreeSet::new(),
        funcs: BTreeMap::new(),
        diffs: BTreeSet::new(),
        syms: BTreeSet::new(),
    };
    let mut defs = BTreeSet::new();
    let mut seen = HashSet::new();
    let mut stack = outputs.to_vec();
    while let Some(x) = stack.pop() {
        if !seen.insert(x.clone()) {
            continue;
        }
        for d in [&x.shape.rows, &x.shape.cols].into_iter().chain(dims_of(&x.op)) {
            n.syms.extend(d.symbols().map(String::from));
        }
        match &x.op {
            Op::Var { name, .. } => match env.definition(name) {
                Some(body) => {
                    if defs.insert(name.to_string()) {
                        stack.push(body.clone());
                    }
                }
                None => {
                    n.mats.insert(name.to_string());
                }
            },
            Op::Diff(name) => {
                n.diffs.insert(name.to_string());
            }
            Op::Apply(Func::User(f, k), _) => {
                n.funcs.entry(f.to_string()).or_default().insert(*k);
            }
            _ => {}
        }
        stack.extend(x.op.children().into_iter().cloned());
    }
    n.defs = env.defs.iter().filter(|d| defs.contains(*d)).cloned().collect();
    n
}

/// A size read from an array parameter's shape: `size = array.shape[axis]`,
/// divided by `divisor` (a size expression) when there is one.
struct SizeRead {
    size: String,
    array: String,
    axis: usize,
    divisor: Option<String>,
}

/// How each symbolic size is obtained: the sizes read from the array
/// parameters' shapes (`n = A.shape[0]`), in the order they can be read, and
/// the sizes left over, which become keyword-only parameters. A parameter of
/// size `c·n·m` gives `n` once `m` is known (`n = v.shape[0] // (c * m)`).
fn resolve_sizes(
    arrays: &[(String, Shape)],
    needed: &BTreeSet<String>,
    ids: &Identifiers,
) -> (Vec<SizeRead>, Vec<String>) {
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut reads = Vec::new();
    loop {
        let mut progress = false;
        for (arg, shape) in arrays {
            for (axis, d) in [&shape.rows, &shape.cols].into_iter().enumerate() {
                let (coef, syms) = dim_parts(d);
                let unknown: Vec<&String> = syms.iter().filter(|s| !known.contains(*s)).collect();
                let [sym] = unknown[..] else { continue };
                if syms.iter().filter(|s| *s == sym).count() != 1 {
                    continue;
                }
                let rest = Dim::num(coef);
                let rest = syms.iter().filter(|s| *s != sym).fold(rest, |acc, s| acc.mul(&Dim::sym(s)));
                let divisor = if rest.is_one() {
                    None
                } else if rest.as_num().is_some() {
                    Some(size_expr(&rest, &|s| ids.size(s)))
                } else {
                    Some(format!("({})", size_expr(&rest, &|s| ids.size(s))))
                };
                reads.push(SizeRead { size: ids.size(sym), array: arg.clone(), axis, divisor });
                known.insert(sym.clone());
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    let keyword = needed.iter().filter(|s| !known.contains(*s)).map(|s| ids.size(s)).collect();
    (reads, keyword)
}

/// What a function's `def` line and first lines need: its positional and
/// keyword-only parameters, the array parameters with their shapes, and how
/// sizes are read from those.
struct Signature {
    positional: Vec<String>,
    keyword: Vec<String>,
    arrays: Vec<(String, Shape)>,
    reads: Vec<SizeRead>,
}

fn signature(env: &Env, ids: &Identifiers, n: &Needs) -> Signature {
    let shape_of = |name: &str| env.leaf(name).map(|l| l.shape.clone());
    let mut arrays: Vec<(String, Shape)> = Vec::new();
    for m in &n.mats {
        arrays.extend(shape_of(m).map(|s| (ids.name(m), s)));
    }
    for d in &n.diffs {
        arrays.extend(shape_of(d).map(|s| (ids.diff(d), s)));
    }
    let mut positional: Vec<String> = n.mats.iter().map(|m| ids.name(m)).collect();
    positional.extend(n.diffs.iter().map(|d| ids.diff(d)));
    for (f, orders) in &n.funcs {
        let top = orders.iter().max().copied().unwrap_or(0).max(1);
        positional.extend((0..=top).map(|k| ids.func(f, k)));
    }
    let (reads, keyword) = resolve_sizes(&arrays, &n.syms, ids);
    Signature { positional, keyword, arrays, reads }
}

fn function(
    backend: &dyn Backend,
    env: &Env,
    ids: &Identifiers,
    f: &Function,
    norms: &[layer_norm::LayerNorm],
) -> Result<String, Error> {
    let outputs = f.outputs();
    let n = needs(env, &outputs);
    let sig = signature(env, ids, &n);
    let mut g = Gen {
        backend,
        env,
        ids,
        temps: HashMap::new(),
        ntemps: 0,
        lines: vec![],
        counts: HashMap::new(),
        too_big: None,
        unspelled: None,
    };
    let arrays: Vec<String> = sig.arrays.iter().map(|(a, _)| a.clone()).collect();
    g.lines.push(backend.dtype_line(&arrays));
    for r in &sig.reads {
        let read = backend.shape(&r.array, r.axis);
        let value = match &r.divisor {
            None => read,
            Some(d) => format!("{read} // {d}"),
        };
        g.lines.push(backend.assign(&r.size, &value));
    }
    // What is computed is rewritten to do less work ([`lower`]); what the
    // function returns keeps its value and shape.
    let bodies: Vec<Expr> = n.defs.iter().map(|d| lower::lower(env.definition(d).expect("definition"))).collect();
    let outputs: Vec<Expr> = outputs.iter().map(lower::lower).collect();
    for body in &bodies {
        count(body, &mut g.counts);
    }
    for o in &outputs {
        count(o, &mut g.counts);
    }
    // With several results, each gradient is computed as soon as the
    // definitions it names are, into a name of its own: its adjoint is then
    // still fresh in cache, and can be released early, as autodiff does.
    let scheduled = outputs.len() > 1;
    // Gradients a fused layer-norm backward gives with its adjoint.
    let norms: Vec<&layer_norm::LayerNorm> = norms.iter().filter(|m| n.defs.contains(&m.target.to_string())).collect();
    let provided: HashSet<usize> =
        norms.iter().filter_map(|m| m.params).flat_map(|(a, b)| a.into_iter().chain(b)).map(|k| k + 1).collect();
    let mut due: Vec<Vec<usize>> = vec![vec![]; n.defs.len() + 1];
    if scheduled {
        for (k, o) in outputs.iter().enumerate().skip(1).filter(|(k, _)| !provided.contains(k)) {
            let mut names = vec![];
            o.var_names(&mut names);
            let after = n.defs.iter().rposition(|d| names.iter().any(|x| **x == **d));
            due[after.map_or(0, |i| i + 1)].push(k);
        }
    }
    let mut results: Vec<String> = vec![String::new(); outputs.len()];
    let mut bound = HashSet::new();
    let mut result = |g: &mut Gen, k: usize| {
        let code = g.result(&outputs[k]);
        if scheduled && k > 0 {
            let name = format!("_g{k}");
            g.lines.push(backend.assign(&name, &code));
            results[k] = name;
        } else {
            results[k] = code;
        }
    };
    for &k in &due[0] {
        result(&mut g, k);
    }
    let mut given = vec![];
    for (i, (d, body)) in n.defs.iter().zip(&bodies).enumerate() {
        let name = ids.name(d);
        let line = match norms.iter().find(|m| *m.target == **d) {
            Some(m) => {
                let code = g.layer_norm_backward(m).expect("fuse keeps norms only for a backend that spells them");
                let (targets, taken) = g.fused_targets(&name, m, &outputs);
                given.extend(taken);
                backend.assign(&targets, &code)
            }
            None => {
                let code = g.expr(body);
                backend.assign(&name, &code)
            }
        };
        g.lines.push(line);
        bound.insert(name);
        for &k in &due[i + 1] {
            result(&mut g, k);
        }
    }
    result(&mut g, 0);
    for (k, code) in given {
        results[k] = code;
    }
    bound.extend(g.temps.values().cloned());
    let value = if f.gradients.is_empty() {
        results[0].clone()
    } else {
        format!("{}, ({},)", results[0], results[1..].join(", "))
    };
    let lines = release(backend, &g.lines, &bound, &value);
    if let Some(what) = g.too_big {
        return Err(Error::Limit {
            message: format!(
                "the {} code for this query would build {what}, more than {MAX_ENTRIES} entries; \
                 ask for a gradient ∂L/∂X or a product with a vector instead of the whole matrix",
                backend.name()
            ),
            span: f.span,
        });
    }
    if let Some(b) = g.unspelled {
        return Err(Error::Unsupported {
            message: format!("the {} code has no spelling for the built-in function `{}`", backend.name(), b),
            span: f.span,
        });
    }
    let mut out = String::new();
    let _ = writeln!(out, "{}", backend.signature(&f.name, &sig.positional, &sig.keyword));
    let _ = writeln!(out, "    {}", backend.docstring(&f.doc));
    for l in &lines {
        let _ = writeln!(out, "    {l}");
    }
    let _ = writeln!(out, "    return {value}");
    Ok(out)
}

/// The lines with a line releasing each name of `bound` after its last use,
/// where the backend releases names ([`Backend::release`]): arrays that are
/// no longer needed are freed while the function runs, so its peak memory is
/// that of what is live, as with autodiff, and the allocator reuses memory
/// still in cache. Names are read off the code as Python identifiers; a name
/// that only looks used is released later, never earlier.
fn release(backend: &dyn Backend, lines: &[String], bound: &HashSet<String>, returned: &str) -> Vec<String> {
    fn identifiers(code: &str) -> impl Iterator<Item = &str> {
        code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|t| !t.is_empty())
    }
    let kept: HashSet<&str> = identifiers(returned).collect();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        for t in identifiers(line) {
            if bound.contains(t) && !kept.contains(t) {
                last.insert(t, i);
            }
        }
    }
    let mut after: Vec<Vec<&str>> = vec![vec![]; lines.len()];
    for (name, i) in last {
        after[i].push(name);
    }
    let mut out = Vec::with_capacity(lines.len());
    for (line, names) in lines.iter().zip(&mut after) {
        out.push(line.clone());
        names.sort_unstable();
        if let Some(r) = (!names.is_empty()).then(|| backend.release(names)).flatten() {
            out.push(r);
        }
    }
    out
}

/// Whether the code of a result builds a new array: an arithmetic
/// operation written out in place (not a name, which another result or an
/// input may share, and not a view: a transpose, a broadcast, a reshape, a
/// diagonal).
fn fresh(e: &Expr, code: &str) -> bool {
    let mut inner = code.trim();
    while let Some(c) = inner.strip_prefix('(').and_then(|c| c.strip_suffix(')')) {
        inner = c.trim();
    }
    let name = inner.chars().all(|c| c.is_alphanumeric() || c == '_');
    let computed = match &e.op {
        Op::MatMul(..) => lower::broadcast(e).is_none(),
        Op::Add(_) | Op::Hadamard(..) | Op::HadamardDiv(..) | Op::HadamardPow(..) | Op::Div(..) => true,
        Op::Scale(..) => !e.shape.is_scalar(),
        _ => false,
    };
    computed && !name
}

fn count(e: &Expr, counts: &mut HashMap<Expr, usize>) {
    let c = counts.entry(e.clone()).or_insert(0);
    *c += 1;
    if *c == 1 {
        for k in e.op.children() {
            count(k, counts);
        }
    }
}

/// The state of generating one function's body.
struct Gen<'a> {
    backend: &'a dyn Backend,
    env: &'a Env,
    ids: &'a Identifiers,
    /// Temporaries for repeated subexpressions.
    temps: HashMap<Expr, String>,
    ntemps: usize,
    lines: Vec<String>,
    counts: HashMap<Expr, usize>,
    /// The first array found too large to build.
    too_big: Option<String>,
    /// The first built-in function the backend cannot spell.
    unspelled: Option<&'static str>,
}

/// `h` when `e` is `step(h)`.
fn step_of(e: &Expr) -> Option<&Expr> {
    match &e.op {
        Op::Apply(Func::Builtin(g), h) if g.ascii == crate::functions::STEP.ascii => Some(h),
        _ => None,
    }
}

/// `h` when `e` is `1 - h ∘ h` or `1 - h.^2` (1 the all-ones matrix, or
/// the number 1 when `h` is 1×1).
fn one_minus_square(e: &Expr) -> Option<&Expr> {
    let Op::Add(ts) = &e.op else { return None };
    let [t0, t1] = ts.as_slice() else { return None };
    let one = |t: &Expr| {
        let (c, base) = t.split_coef();
        c == BigRational::from_integer(1.into()) && (matches!(base.op, Op::Ones) || matches!(t.op, Op::Num(_)))
    };
    let minus_square = |t: &Expr| -> Option<Expr> {
        let (c, base) = t.split_coef();
        if c != BigRational::from_integer((-1).into()) {
            return None;
        }
        match &base.op {
            Op::HadamardPow(h, k) if *k == BigRational::from_integer(2.into()) => Some(h.clone()),
            Op::Hadamard(h, g) if h == g => Some(h.clone()),
            _ => None,
        }
    };
    let square = if one(t0) {
        minus_square(t1)
    } else if one(t1) {
        minus_square(t0)
    } else {
        None
    }?;
    // The operand as it is inside `e`, so that temporaries are shared.
    fn find<'a>(e: &'a Expr, h: &Expr) -> Option<&'a Expr> {
        if e == h {
            return Some(e);
        }
        e.op.children().into_iter().find_map(|k| find(k, h))
    }
    find(e, &square)
}

/// Whether a factor is applied to a matrix without being built.
fn structured(f: &Expr) -> bool {
    match &f.op {
        Op::Kron(..) | Op::Commutation(..) | Op::DiagMat(_) | Op::Identity | Op::Ones => true,
        Op::Transpose(x) => matches!(x.op, Op::Commutation(..)),
        Op::Scale(a, x) => a.as_num().is_some() && structured(x),
        Op::MatMul(..) => f.factors().iter().any(structured),
        _ => false,
    }
}

impl Gen<'_> {
    /// A size in Python: see [`size_expr`].
    fn dim(&self, d: &Dim) -> String {
        size_expr(d, &|s| self.ids.size(s))
    }

    /// Notes an array the code builds, refusing it when it is too large.
    fn guard(&mut self, rows: &Dim, cols: &Dim, what: impl FnOnce() -> String) {
        if self.too_big.is_none() && entries(rows, cols).is_some_and(|n| n > u128::from(MAX_ENTRIES)) {
            self.too_big = Some(format!("{} ({}×{})", what(), rows, cols));
        }
    }

    /// The code of `e`, introducing temporaries for repeated subexpressions.
    fn expr(&mut self, e: &Expr) -> String {
        if let Some(t) = self.temps.get(e) {
            return t.clone();
        }
        let code = self.code(e);
        let leaf = e.op.children().is_empty();
        if !leaf && self.counts.get(e).copied().unwrap_or(0) > 1 {
            let t = self.temp(code);
            self.temps.insert(e.clone(), t.clone());
            return t;
        }
        code
    }

    /// The code of a result: a new array of the inputs' dtype, which shares
    /// memory with no input and no other result.
    fn result(&mut self, o: &Expr) -> String {
        let b = self.backend;
        let code = self.expr(o);
        if matches!(o.op, Op::Num(_) | Op::Scale(..)) && o.split_coef().1.as_num().is_some() {
            let (r, c) = (self.dim(&o.shape.rows), self.dim(&o.shape.cols));
            b.filled(&code, &r, &c)
        } else if fresh(o, &code) {
            b.fresh_array(&code)
        } else {
            b.array(&code)
        }
    }

    /// A 1×1 value made of numbers and sizes only (`2 / T`, `1 / sqrt(d)`)
    /// as a Python number, for a factor or divisor: no array is built for
    /// it, and a Python number keeps the dtype of the array it multiplies.
    fn constant(&self, e: &Expr) -> Option<String> {
        if !e.shape.is_scalar() {
            return None;
        }
        let b = self.backend;
        let sqrt = |f: &Func| matches!(f, Func::Builtin(g) if g.ascii == crate::functions::SQRT.ascii);
        Some(match &e.op {
            Op::Num(r) => b.number(r),
            Op::Size(d) => self.dim(d),
            Op::Scale(a, x) | Op::Hadamard(a, x) => format!("({} * {})", self.constant(a)?, self.constant(x)?),
            Op::Div(a, x) | Op::HadamardDiv(a, x) => format!("({} / {})", self.constant(a)?, self.constant(x)?),
            Op::Power(x, k) => python_power(&self.constant(x)?, &BigRational::from_integer((*k).into())),
            Op::HadamardPow(x, k) => python_power(&self.constant(x)?, k),
            Op::Apply(f, x) if sqrt(f) => format!("({} ** 0.5)", self.constant(x)?),
            _ => return None,
        })
    }

    /// A new temporary holding `code`.
    fn temp(&mut self, code: String) -> String {
        self.ntemps += 1;
        let t = format!("_t{}", self.ntemps);
        self.lines.push(self.backend.assign(&t, &code));
        t
    }

    fn code(&mut self, e: &Expr) -> String {
        let b = self.backend;
        let s = &e.shape;
        if !matches!(e.op, Op::Var { .. } | Op::Diff(_)) {
            self.guard(&s.rows, &s.cols, || {
                let text = crate::print::text(e);
                if text.chars().count() <= 80 {
                    format!("`{text}`")
                } else {
                    "an intermediate matrix".to_string()
                }
            });
        }
        let scalar = |x: String| b.full("1", "1", &x);
        match &e.op {
            Op::Var { name, .. } => self.ids.name(name),
            Op::Diff(name) => self.ids.diff(name),
            Op::Num(r) => scalar(b.number(r)),
            Op::Identity => b.eye(&self.dim(&s.rows)),
            Op::Zero => b.zeros(&self.dim(&s.rows), &self.dim(&s.cols)),
            Op::Ones => b.ones(&self.dim(&s.rows), &self.dim(&s.cols)),
            Op::Size(d) => scalar(self.dim(d)),
            Op::Commutation(r, c, o) => b.commutation(&self.dim(r), &self.dim(c), *o),
            Op::Add(ts) => {
                if let Some(code) = self.fused_sum(ts) {
                    return code;
                }
                let mut terms = Vec::new();
                for (i, t) in ts.iter().enumerate() {
                    let (c, _) = t.split_coef();
                    let negative = i > 0 && c < BigRational::from_integer(0.into());
                    let term = if negative { crate::ir::neg(t.clone()) } else { t.clone() };
                    let code = self.operand(&term);
                    terms.push((if negative { Sign::Minus } else { Sign::Plus }, code));
                }
                b.add(&terms)
            }
            // A number scales the smallest factor of a product.
            Op::Scale(a, x) if a.as_num().is_some() && matches!(x.op, Op::MatMul(..)) => {
                let mut factors = x.factors();
                let area = |f: &Expr| crate::cost::area(&f.shape);
                let smallest =
                    (0..factors.len()).min_by(|&i, &j| area(&factors[i]).total_cmp(&area(&factors[j]))).unwrap_or(0);
                factors[smallest] = crate::ir::scalar_mul(a.clone(), factors[smallest].clone());
                let rebuilt = factors.into_iter().reduce(crate::ir::node_matmul).expect("factors");
                self.chain(&rebuilt)
            }
            Op::Scale(a, x) => match a.as_num() {
                Some(r) => {
                    let x = self.expr(x);
                    b.mul(&b.number(r), &x)
                }
                None => {
                    let a = self.constant(a).unwrap_or_else(|| self.expr(a));
                    b.mul(&a, &self.expr(x))
                }
            },
            Op::MatMul(..) => self.chain(e),
            Op::Div(a, x) => {
                let a = self.expr(a);
                b.div(&a, &self.constant(x).unwrap_or_else(|| self.expr(x)))
            }
            Op::Transpose(x) => b.transpose(&self.expr(x)),
            Op::Inverse(x) => b.inv(&self.expr(x)),
            // ‖y‖²: the sum of squares, not the square of a square root.
            Op::Power(x, 2) if matches!(x.op, Op::Norm(_)) => {
                let Op::Norm(y) = &x.op else { unreachable!() };
                let y = self.expr(y);
                scalar(b.sum(&b.mul(&y, &y)))
            }
            // A power of a 1×1 value is a power of a number.
            Op::Power(x, k) if x.shape.is_scalar() => b.pow(&self.expr(x), &BigRational::from_integer((*k).into())),
            Op::Power(x, k) => b.matrix_power(&self.expr(x), *k),
            Op::Hadamard(x, y) => {
                if let Some(code) = self.fused_backward(x, y).or_else(|| self.softmax_backward(x, y)) {
                    return code;
                }
                let x = self.expr(x);
                b.mul(&x, &self.expr(y))
            }
            Op::HadamardDiv(x, y) => {
                let x = self.operand(x);
                b.div(&x, &self.expr(y))
            }
            Op::HadamardPow(x, k) => b.pow(&self.expr(x), k),
            Op::Kron(x, y) => {
                let x = self.expr(x);
                b.kron(&x, &self.expr(y))
            }
            Op::Vec(x, o) => b.vec(&self.expr(x), *o),
            Op::Unvec(x, o) => {
                let x = self.expr(x);
                b.unvec(&x, &self.dim(&s.rows), &self.dim(&s.cols), *o)
            }
            Op::DiagMat(x) => b.diag_matrix(&self.expr(x)),
            Op::DiagVec(x) => b.diagonal(&self.expr(x)),
            Op::Trace(x) => scalar(b.trace(&self.expr(x))),
            Op::Det(x) => scalar(b.det(&self.expr(x))),
            Op::Logdet(x) => scalar(b.logdet(&self.expr(x))),
            Op::Sum(x) => scalar(b.sum(&self.expr(x))),
            Op::Norm(x) => scalar(b.norm(&self.expr(x))),
            Op::Apply(f, x) => {
                let a = self.expr(x);
                match f {
                    Func::Builtin(f) => match b.builtin(f) {
                        Some(template) => template.replace("{x}", &a),
                        None => {
                            self.unspelled.get_or_insert(f.name);
                            b.call(f.ascii, &a)
                        }
                    },
                    Func::User(n, k) => b.call(&self.ids.func(n, *k), &a),
                }
            }
        }
    }

    /// `a ∘ (1 - h ∘ h)` and `a ∘ step(h)` (either factor first) in one
    /// operation of the backend, when it has one: an eager framework then
    /// runs one kernel instead of three, as its own autodiff does.
    fn fused_backward(&mut self, x: &Expr, y: &Expr) -> Option<String> {
        if x.shape != y.shape {
            return None;
        }
        for (a, f) in [(x, y), (y, x)] {
            if let Some(h) = step_of(f) {
                if h.shape == a.shape {
                    let (ac, hc) = (self.expr(a), self.expr(h));
                    if let Some(code) = self.backend.times_step(&ac, &hc) {
                        return Some(code);
                    }
                }
            }
            if let Some(h) = one_minus_square(f) {
                if h.shape == a.shape {
                    let (ac, hc) = (self.expr(a), self.expr(h));
                    if let Some(code) = self.backend.times_one_minus_square(&ac, &hc) {
                        return Some(code);
                    }
                }
            }
        }
        None
    }

    /// The adjoint of a layer norm's input by the backend's fused call.
    fn layer_norm_backward(&mut self, n: &layer_norm::LayerNorm) -> Option<String> {
        let (g, c, s) = (self.expr(&n.grad), self.expr(&lower::lower(&n.centred)), self.expr(&lower::lower(&n.sd)));
        let gain = n.gain.as_ref().map(|x| self.expr(&lower::lower(x)));
        self.backend.layer_norm_backward(&g, &c, &s, gain.as_deref(), n.params.is_some())
    }

    /// What the line of a fused layer-norm backward assigns: the adjoint's
    /// `name` alone, or with the gain's and bias's gradients
    /// (`delta_H, _g3, _`); and the code of each gradient it gives (by its
    /// place among the function's `outputs`), reshaped to its shape.
    fn fused_targets(&self, name: &str, n: &layer_norm::LayerNorm, outputs: &[Expr]) -> (String, Vec<(usize, String)>) {
        let Some((gain, bias)) = n.params else { return (name.to_string(), vec![]) };
        let mut targets = vec![name.to_string()];
        let mut given = vec![];
        for k in [gain, bias] {
            match k.map(|k| k + 1) {
                Some(k) => {
                    let t = format!("_g{k}");
                    let shape = &outputs[k].shape;
                    let dims = [self.dim(&shape.rows), self.dim(&shape.cols)];
                    given.push((k, self.backend.fresh_array(&self.backend.reshape(&t, &dims))));
                    targets.push(t);
                }
                None => targets.push("_".to_string()),
            }
        }
        (targets.join(", "), given)
    }

    /// `s ∘ (g - ((g ∘ s) 1) 1ᵀ)` (either order of each product and of the
    /// difference) where `s` is a softmax along rows: the softmax's
    /// backward, in one operation of the backend when it has one.
    fn softmax_backward(&mut self, x: &Expr, y: &Expr) -> Option<String> {
        for (s, rest) in [(x, y), (y, x)] {
            let Op::Add(ts) = &rest.op else { continue };
            if ts.len() != 2 || !self.row_softmax(s) {
                continue;
            }
            for (g, t) in [(&ts[0], &ts[1]), (&ts[1], &ts[0])] {
                let (c, b) = t.split_coef();
                if c != -BigRational::from_integer(1.into()) {
                    continue;
                }
                let Some((sums, true)) = lower::broadcast(&b) else { continue };
                let Op::MatMul(h, o) = &sums.op else { continue };
                let Op::Hadamard(p, q) = &h.op else { continue };
                if matches!(o.op, Op::Ones) && ((p == g && q == s) || (p == s && q == g)) {
                    let (gc, sc) = (self.expr(g), self.expr(s));
                    if let Some(code) = self.backend.softmax_backward(&gc, &sc) {
                        return Some(code);
                    }
                }
            }
        }
        None
    }

    /// Whether `s` is a softmax along rows (of a matrix that is not a
    /// column), written out or as a name defined as one.
    fn row_softmax(&self, s: &Expr) -> bool {
        let softmax =
            |e: &Expr| matches!(&e.op, Op::Apply(Func::Builtin(b), _) if b.ascii == crate::functions::SOFTMAX.ascii);
        let defined = match &s.op {
            Op::Var { name, .. } => self.env.definition(name).is_some_and(softmax),
            _ => softmax(s),
        };
        defined && !s.shape.cols.is_one()
    }

    /// A term of a sum: a multiple of the all-ones matrix is just the number,
    /// which the backend broadcasts.
    fn operand(&mut self, e: &Expr) -> String {
        let (c, base) = e.split_coef();
        if matches!(base.op, Op::Ones) {
            self.backend.number(&c)
        } else {
            self.expr(e)
        }
    }

    /// The two operands of the last multiplication of a chain of factors
    /// that are all built, in the order of fewest operations by the cost
    /// model; of orders that cost alike, the one that multiplies from the
    /// right, as backpropagation does, so that a transposed input on the
    /// left multiplies a product of untransposed arrays. `None` for a chain
    /// with a structured factor, which [`chain`](Gen::chain) applies without
    /// building it.
    fn operands(&mut self, factors: &[Expr]) -> Option<(String, String)> {
        if factors.len() < 2 || factors.iter().any(structured) {
            return None;
        }
        let n = factors.len();
        let size = crate::cost::size;
        let dims: Vec<f64> =
            factors.iter().map(|f| size(&f.shape.rows)).chain([size(&factors[n - 1].shape.cols)]).collect();
        // cost[i][j]: the fewest operations for factors i..=j; split[i][j]:
        // the last multiplication is (i..=k)(k+1..=j).
        let mut cost = vec![vec![0.0f64; n]; n];
        let mut split = vec![vec![0usize; n]; n];
        for len in 2..=n {
            for i in 0..=n - len {
                let j = i + len - 1;
                let mut best = (f64::INFINITY, i);
                for k in i..j {
                    let c = cost[i][k] + cost[k + 1][j] + dims[i] * dims[k + 1] * dims[j + 1];
                    if c < best.0 * (1.0 - 1e-12) {
                        best = (c, k);
                    }
                }
                (cost[i][j], split[i][j]) = best;
            }
        }
        let k = split[0][n - 1];
        let a = self.product(factors, &split, 0, k);
        let b = self.product(factors, &split, k + 1, n - 1);
        Some((a, b))
    }

    /// The code of the product of factors `i..=j` in the order of `split`.
    fn product(&mut self, factors: &[Expr], split: &[Vec<usize>], i: usize, j: usize) -> String {
        if i == j {
            return self.expr(&factors[i]);
        }
        let k = split[i][j];
        let a = self.product(factors, split, i, k);
        let b = self.product(factors, split, k + 1, j);
        self.guard(&factors[i].shape.rows, &factors[j].shape.cols, || "a partial product".to_string());
        self.backend.matmul(&a, &b)
    }

    /// `c + α a b` or `c + α a ∘ b` (`c` a sum of the other terms) in one
    /// operation of the backend when it has one, which writes the result
    /// once instead of twice: an eager framework then makes one pass over
    /// it fewer. Products whose factors have a fused backward of their own
    /// ([`fused_backward`](Gen::fused_backward)) are left to it.
    fn fused_sum(&mut self, ts: &[Expr]) -> Option<String> {
        let b = self.backend;
        if ts.len() < 2 || !b.fuses_sums() {
            return None;
        }
        let array = |t: &Expr| !matches!(t.split_coef().1.op, Op::Ones | Op::Num(_));
        if !ts.iter().all(array) {
            return None;
        }
        let product = |t: &Expr| {
            let (_, base) = t.split_coef();
            matches!(base.op, Op::MatMul(..)) && !structured(&base) && lower::broadcast(&base).is_none()
        };
        let hadamard = |t: &Expr| {
            let (_, base) = t.split_coef();
            let Op::Hadamard(x, y) = &base.op else { return false };
            let fused = |f: &Expr| step_of(f).is_some() || one_minus_square(f).is_some() || self.row_softmax(f);
            x.shape == y.shape && !fused(x) && !fused(y)
        };
        let (k, matmul) = match ts.iter().position(product) {
            Some(k) => (k, true),
            None => (ts.iter().position(hadamard)?, false),
        };
        let (c, base) = ts[k].split_coef();
        let rest: Vec<Expr> = ts.iter().enumerate().filter(|&(i, _)| i != k).map(|(_, t)| t.clone()).collect();
        let rest = crate::ir::sum_of(rest);
        let rest = self.expr(&rest);
        let one = BigRational::from_integer(1.into());
        let alpha = (c != one).then(|| b.number(&c));
        if matmul {
            let (x, y) = self.operands(&base.factors())?;
            b.add_product(&rest, &x, &y, alpha.as_deref())
        } else {
            let Op::Hadamard(x, y) = &base.op else { return None };
            let x = self.expr(x);
            b.add_hadamard(&rest, &x, &self.expr(y), alpha.as_deref())
        }
    }

    /// A product chain. It starts from one factor that is built (an end,
    /// preferring the one that makes each step a matrix-vector product) and
    /// applies the others to it, so diagonal, Kronecker, commutation and
    /// identity factors act without being built.
    fn chain(&mut self, e: &Expr) -> String {
        let factors = e.factors();
        if let Some((a, b)) = self.operands(&factors) {
            return self.backend.matmul(&a, &b);
        }
        let last = factors.len() - 1;
        let column = e.shape.cols.is_one() && !e.shape.rows.is_one();
        let plain = |i: usize| !structured(&factors[i]);
        let area = |f: &Expr| crate::cost::area(&f.shape);
        let pivot = if column && plain(last) {
            last
        } else if plain(0) {
            0
        } else if plain(last) {
            last
        } else {
            (0..=last).find(|&i| plain(i)).unwrap_or_else(|| {
                (0..=last).min_by(|&i, &j| area(&factors[i]).total_cmp(&area(&factors[j]))).unwrap_or(0)
            })
        };
        let mut code = self.expr(&factors[pivot]);
        let mut shape = factors[pivot].shape.clone();
        let order: Vec<(bool, usize)> =
            (0..pivot).rev().map(|i| (false, i)).chain((pivot + 1..=last).map(|i| (true, i))).collect();
        for (right, i) in order {
            let f = &factors[i];
            if right {
                code = self.times_right(&code, &shape, f);
                shape = Shape::new(shape.rows.clone(), f.shape.cols.clone());
            } else {
                code = self.apply(f, &code, &shape);
                shape = Shape::new(f.shape.rows.clone(), shape.cols.clone());
            }
            self.guard(&shape.rows, &shape.cols, || "a partial product".to_string());
        }
        code
    }

    /// `f @ x` for a factor `f` and computed `x` of shape `xs`, without
    /// building `f` when it is structured.
    fn apply(&mut self, f: &Expr, x: &str, xs: &Shape) -> String {
        let b = self.backend;
        let c = &xs.cols;
        match &f.op {
            Op::Identity => x.to_string(),
            // ones(m, k) X: the column sums, repeated down m rows.
            Op::Ones => {
                let (m, k) = (&f.shape.rows, &f.shape.cols);
                let sums = if k.is_one() { x.to_string() } else { b.sum_axis(x, 0) };
                if m.is_one() {
                    sums
                } else {
                    b.broadcast(&sums, &self.dim(m), &self.dim(c))
                }
            }
            Op::DiagMat(v) => b.mul(&b.column(&self.expr(v)), x),
            Op::Scale(a, g) if a.as_num().is_some() && structured(g) => {
                let inner = self.apply(g, x, xs);
                b.mul(&b.number(a.as_num().expect("number")), &inner)
            }
            Op::MatMul(..) if structured(f) => {
                let mut code = x.to_string();
                let mut shape = xs.clone();
                for g in f.factors().iter().rev() {
                    code = self.apply(g, &code, &shape);
                    shape = Shape::new(g.shape.rows.clone(), shape.cols.clone());
                    self.guard(&shape.rows, &shape.cols, || "a partial product".to_string());
                }
                code
            }
            Op::Commutation(r, k, o) => self.commute(r, k, *o, x, c),
            Op::Transpose(g) if matches!(g.op, Op::Commutation(..)) => {
                let Op::Commutation(r, k, o) = &g.op else { unreachable!() };
                self.commute(k, r, *o, x, c)
            }
            // (A ⊗ B) X for A p×q, B r×s and X (q·s)×c: each column of X is
            // vec of a q×s block; A and B act on its two axes in turn, in the
            // order that keeps the intermediate smaller.
            Op::Kron(a, bf) => {
                let (p, q) = (&a.shape.rows, &a.shape.cols);
                let (r, s) = (&bf.shape.rows, &bf.shape.cols);
                let big = crate::cost::size;
                let (dp, dq, dr, ds, dc) = (self.dim(p), self.dim(q), self.dim(r), self.dim(s), self.dim(c));
                let times = |m: &str, n: &str| format!("{m} * {n}");
                if big(p) * big(s) <= big(r) * big(q) {
                    self.guard(&p.mul(s), c, || "a Kronecker product's partial result".to_string());
                    let t = b.reshape(x, &[dq.clone(), times(&ds, &dc)]);
                    let t = self.apply(a, &t, &Shape::new(q.clone(), s.mul(c)));
                    let t = b.swap_axes(&b.reshape(&t, &[dp.clone(), ds.clone(), dc.clone()]));
                    let t = b.reshape(&t, &[ds, times(&dp, &dc)]);
                    let t = self.apply(bf, &t, &Shape::new(s.clone(), p.mul(c)));
                    let t = b.swap_axes(&b.reshape(&t, &[dr.clone(), dp.clone(), dc.clone()]));
                    b.reshape(&t, &[times(&dp, &dr), dc])
                } else {
                    self.guard(&r.mul(q), c, || "a Kronecker product's partial result".to_string());
                    let t = b.swap_axes(&b.reshape(x, &[dq.clone(), ds.clone(), dc.clone()]));
                    let t = b.reshape(&t, &[ds, times(&dq, &dc)]);
                    let t = self.apply(bf, &t, &Shape::new(s.clone(), q.mul(c)));
                    let t = b.swap_axes(&b.reshape(&t, &[dr.clone(), dq.clone(), dc.clone()]));
                    let t = b.reshape(&t, &[dq, times(&dr, &dc)]);
                    let t = self.apply(a, &t, &Shape::new(q.clone(), r.mul(c)));
                    b.reshape(&t, &[times(&dp, &dr), dc])
                }
            }
            _ => b.matmul(&self.expr(f), x),
        }
    }

    /// `K_(r,k) X`: each column of `X`, read as vec of an r×k matrix, becomes
    /// vec of its transpose.
    fn commute(&mut self, r: &Dim, k: &Dim, o: VecOrder, x: &str, c: &Dim) -> String {
        let b = self.backend;
        let (dr, dk, dc) = (self.dim(r), self.dim(k), self.dim(c));
        let (first, second) = if o == VecOrder::Row { (&dr, &dk) } else { (&dk, &dr) };
        let t = b.swap_axes(&b.reshape(x, &[first.clone(), second.clone(), dc.clone()]));
        b.reshape(&t, &[format!("{dr} * {dk}"), dc])
    }

    /// `x @ f` for computed `x` of shape `xs` and a factor `f`: `(fᵀ xᵀ)ᵀ`
    /// when `f` is structured.
    fn times_right(&mut self, x: &str, xs: &Shape, f: &Expr) -> String {
        let b = self.backend;
        match &f.op {
            Op::DiagMat(v) => b.mul(x, &b.row(&self.expr(v))),
            Op::Identity => x.to_string(),
            // X ones(k, n): the row sums, repeated across n columns.
            Op::Ones => {
                let (k, n) = (&f.shape.rows, &f.shape.cols);
                let sums = if k.is_one() { x.to_string() } else { b.sum_axis(x, 1) };
                if n.is_one() {
                    sums
                } else {
                    b.broadcast(&sums, &self.dim(&xs.rows), &self.dim(n))
                }
            }
            _ if structured(f) => {
                let ft = crate::ir::transpose(f.clone());
                let inner = self.apply(&ft, &b.transpose(x), &xs.transposed());
                b.transpose(&inner)
            }
            _ => b.matmul(x, &self.expr(f)),
        }
    }
}

#[cfg(test)]
mod tests;

/// One function per answer, named for what it computes (`grad_L_W1`,
/// `jacobian_F_x`, `d_L`, `hessian_f_x`; `q1`, `q2`, … by position for an
/// expression that is not a name; `expr_3` for a bare expression), with
/// `_2`, `_3` added to names that would meet.
pub fn functions(env: &Env, answers: &[crate::derive::Answer]) -> Vec<Function> {
    let items: Vec<Item> = answers.iter().cloned().map(Item::Answer).collect();
    functions_of(env, &items)
}

/// What a function is generated for: an answer, or a backward program.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per query, built once: boxing buys nothing
pub enum Item {
    /// One function computing the answer.
    Answer(crate::derive::Answer),
    /// One function running the forward pass once and the backward pass
    /// once: `value_and_grad_L`, returning `(L, (∂L/∂X, …))`.
    Backward(crate::derive::Backward),
}

/// One function per item, named as [`functions`] names them, a backward
/// program of `L` as `value_and_grad_L`.
pub fn functions_of(env: &Env, items: &[Item]) -> Vec<Function> {
    use crate::derive::Lhs;
    let ids = Identifiers::new(env);
    let mut used = std::collections::BTreeSet::new();
    let mut unique = |base: String| {
        let mut name = base.clone();
        let mut k = 2;
        while !used.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let ident = |s: &str| if env.names.contains_key(s) { ids.name(s) } else { format!("q{}", i + 1) };
            let a = match item {
                Item::Answer(a) => a,
                Item::Backward(b) => {
                    let value = b.gradients.first().map_or_else(|| ir::int(0), |g| g.function.clone());
                    let names: Vec<&str> = b.gradients.iter().filter_map(|g| g.wrt()).collect();
                    return Function {
                        name: unique(format!("value_and_grad_{}", ident(&b.label))),
                        expr: value,
                        doc: format!("{} and ∂{}/∂({}), in one backward pass", b.label, b.label, names.join(", ")),
                        span: b.span,
                        adjoints: b.adjoints.clone(),
                        gradients: b.gradients.iter().map(|g| g.expr.clone()).collect(),
                        adjoint_of: b.gradients.first().map(|g| g.adjoint_of.clone()).unwrap_or_default(),
                        wrt: b.gradients.iter().map(|g| crate::ir::Name::from(g.wrt().unwrap_or_default())).collect(),
                    };
                }
            };
            let base = match &a.lhs {
                Some(Lhs::Differential(f)) => format!("d_{}", ident(f)),
                Some(Lhs::SecondDifferential(f)) => format!("d2_{}", ident(f)),
                Some(Lhs::ThirdDifferential(f)) => format!("d3_{}", ident(f)),
                Some(Lhs::Gradient { f, x }) => format!("grad_{}_{}", ident(f), ident(x)),
                Some(Lhs::Jacobian { f, x, .. }) => format!("jacobian_{}_{}", ident(f), ident(x)),
                Some(Lhs::Hessian { f, x, .. }) => format!("hessian_{}_{}", ident(f), ident(x)),
                None => format!("expr_{}", i + 1),
            };
            let name = unique(base);
            let expr = match a.kind() {
                crate::ast::QueryKind::Shape => a.function.clone(),
                _ => a.expr.clone(),
            };
            let doc = match &a.lhs {
                None => crate::print::text(&expr),
                Some(lhs) => {
                    format!("{} = {}", crate::render::lhs_text(lhs, crate::print::Notation::Unicode), a.text())
                }
            };
            Function {
                name,
                expr,
                doc,
                span: a.span,
                adjoints: a.adjoints.clone(),
                gradients: vec![],
                adjoint_of: Default::default(),
                wrt: vec![],
            }
        })
        .collect()
}
