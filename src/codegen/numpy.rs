//! NumPy code generation: one Python function per query.
//!
//! Each function takes the declared matrices its answer depends on (in
//! alphabetical order, 2-D arrays of their declared shapes; scalars 1×1), then
//! the differentials `d_X` a `d(F)` answer reads, then `f`, `f_prime`,
//! `f_prime2` for each declared function it uses, and finally, keyword-only,
//! every symbolic size that no array parameter carries (`def g(*, n)` for an
//! answer `I_n`). It computes the intermediates it needs once, shares repeated
//! subexpressions, and returns a 2-D array of the answer's shape.
//!
//! **Names.** Every Python name is an ASCII identifier that is not a keyword
//! (see [`Identifiers`]): Greek letters are spelled out (`λ` is `lam`, `σ` is
//! `sigma`, `Λ` is `Lambda`), and two user names that would meet on one
//! identifier get suffixes `_2`, `_3`. Names the generator makes itself start
//! with `_` (`_t1`, `_dtype`, `_sigmoid`), which user names never do.
//!
//! **Sizes.** A symbolic size is read from the arrays' shapes
//! (`n = A.shape[0]`, `m = v.shape[0] // (2 * n)` for `v: 2·n·m`); a size no
//! array parameter carries is a keyword-only parameter. Every size in the
//! generated code goes through one function, [`size_expr`].
//!
//! **Dtype.** The result has the dtype of the array parameters
//! (`np.result_type` of them and a Python float, so float32 in gives float32
//! out, integers give float64); constants are built with `dtype=`.
//!
//! **Memory.** Products with `diag(v)`, `A ⊗ B`, commutation matrices and
//! identities are applied by broadcasting and reshapes, so none of them is
//! built unless the answer is one. Any array the generated code would
//! materialise with more than [`MAX_ENTRIES`] entries (known sizes only) is
//! refused at generation time with an error naming the array, instead of
//! emitting code that allocates gigabytes.

use crate::error::{Error, Span};
use crate::ir::{Expr, Func, Op, VecOrder};
use crate::shape::{Dim, Shape};
use crate::typeck::{Binding, Env};
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
}

const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "case", "class", "continue", "def",
    "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "match",
    "nonlocal", "not", "or", "pass", "raise", "return", "try", "type", "while", "with", "yield", "_",
];

/// Names the generated code itself refers to.
const RESERVED: &[&str] = &["np"];

const GREEK: &[(char, &str)] = &[
    ('α', "alpha"),
    ('β', "beta"),
    ('γ', "gamma"),
    ('δ', "delta"),
    ('ε', "epsilon"),
    ('ζ', "zeta"),
    ('η', "eta"),
    ('θ', "theta"),
    ('ι', "iota"),
    ('κ', "kappa"),
    ('λ', "lam"),
    ('μ', "mu"),
    ('ν', "nu"),
    ('ξ', "xi"),
    ('ο', "omicron"),
    ('π', "pi"),
    ('ρ', "rho"),
    ('ς', "varsigma"),
    ('σ', "sigma"),
    ('τ', "tau"),
    ('υ', "upsilon"),
    ('φ', "phi"),
    ('χ', "chi"),
    ('ψ', "psi"),
    ('ω', "omega"),
    ('Α', "Alpha"),
    ('Β', "Beta"),
    ('Γ', "Gamma"),
    ('Δ', "Delta"),
    ('Ε', "Epsilon"),
    ('Ζ', "Zeta"),
    ('Η', "Eta"),
    ('Θ', "Theta"),
    ('Ι', "Iota"),
    ('Κ', "Kappa"),
    ('Λ', "Lambda"),
    ('Μ', "Mu"),
    ('Ν', "Nu"),
    ('Ξ', "Xi"),
    ('Ο', "Omicron"),
    ('Π', "Pi"),
    ('Ρ', "Rho"),
    ('Σ', "Sigma"),
    ('Τ', "Tau"),
    ('Υ', "Upsilon"),
    ('Φ', "Phi"),
    ('Χ', "Chi"),
    ('Ψ', "Psi"),
    ('Ω', "Omega"),
];

/// An ASCII spelling of any text: letters, digits and `_` are kept, Greek
/// letters spelled out, superscript and subscript digits made digits, and
/// anything else becomes `_` (runs of `_` collapse, none at the ends).
/// The result may still be empty, start with a digit or be a keyword.
pub fn ascii(text: &str) -> String {
    const SUP: &str = "⁰¹²³⁴⁵⁶⁷⁸⁹";
    const SUB: &str = "₀₁₂₃₄₅₆₇₈₉";
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if let Some((_, g)) = GREEK.iter().find(|(g, _)| *g == c) {
            out.push_str(g);
        } else if let Some(i) = SUP.chars().position(|d| d == c).or_else(|| SUB.chars().position(|d| d == c)) {
            out.push(char::from(b'0' + i as u8));
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let mut s = String::new();
    for c in out.chars() {
        if !(c == '_' && s.ends_with('_')) {
            s.push(c);
        }
    }
    s.trim_matches('_').to_string()
}

/// A valid Python identifier from any text: [`ascii`], then `x` if it is
/// empty or starts with a digit, and `_` after a keyword or `np`.
pub fn identifier(text: &str) -> String {
    let mut s = ascii(text);
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, 'x');
    }
    if KEYWORDS.contains(&s.as_str()) || RESERVED.contains(&s.as_str()) {
        s.push('_');
    }
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    /// A declared matrix, a defined name or a declared function.
    Name,
    /// `d_X`.
    Diff,
    /// `f_prime`, `f_prime2`, … (k ≥ 1).
    Derivative(u32),
    /// A symbolic size.
    Size,
}

/// The Python identifier of every user name, differential, function
/// derivative and size, all distinct.
///
/// Names that are already ASCII identifiers keep their spelling; then sizes
/// that are; then `f_prime`-style and `d_X`-style names; then the rest
/// (Greek names, keywords). A name whose spelling is taken gets the first
/// free `name_2`, `name_3`, … in that order, so the assignment is the same
/// for every function of a module.
#[derive(Debug, Clone, Default)]
pub struct Identifiers {
    map: HashMap<(Kind, String), String>,
    taken: HashSet<String>,
}

impl Identifiers {
    /// The identifiers for the names and sizes of `env`.
    pub fn new(env: &Env) -> Identifiers {
        Identifiers::with_sizes(env, std::iter::empty())
    }

    /// The identifiers for `env` and some more sizes (found in answers).
    pub fn with_sizes(env: &Env, extra: impl IntoIterator<Item = String>) -> Identifiers {
        let mut wanted: Vec<(u8, Kind, String, String)> = Vec::new();
        let plain = |name: &str, candidate: &str| name == candidate;
        let mut sizes: BTreeSet<String> = extra.into_iter().collect();
        for (name, (b, _)) in &env.names {
            let base = identifier(name);
            let first = if plain(name, &base) { 0 } else { 3 };
            wanted.push((first, Kind::Name, name.clone(), base.clone()));
            match b {
                Binding::Matrix { shape, .. } => {
                    wanted.push((2, Kind::Diff, name.clone(), format!("d_{base}")));
                    sizes.extend(shape.rows.symbols().chain(shape.cols.symbols()).map(String::from));
                }
                Binding::Def { body, .. } => {
                    sizes.extend(body.shape.rows.symbols().chain(body.shape.cols.symbols()).map(String::from));
                }
                Binding::Func => {
                    for k in 1..=4 {
                        let suffix = if k == 1 { String::new() } else { k.to_string() };
                        wanted.push((2, Kind::Derivative(k), name.clone(), format!("{base}_prime{suffix}")));
                    }
                }
            }
        }
        for s in sizes {
            let base = identifier(&s);
            let first = if plain(&s, &base) { 1 } else { 3 };
            wanted.push((first, Kind::Size, s, base));
        }
        wanted.sort();
        let mut ids = Identifiers::default();
        for (_, kind, name, base) in wanted {
            let id = ids.claim(&base);
            ids.map.insert((kind, name), id);
        }
        ids
    }

    fn claim(&mut self, base: &str) -> String {
        let mut id = base.to_string();
        let mut k = 2;
        while self.taken.contains(&id) {
            id = format!("{base}_{k}");
            k += 1;
        }
        self.taken.insert(id.clone());
        id
    }

    fn get(&self, kind: Kind, name: &str, fallback: impl FnOnce() -> String) -> String {
        self.map.get(&(kind, name.to_string())).cloned().unwrap_or_else(fallback)
    }

    /// A declared matrix, defined name or declared function.
    pub fn name(&self, name: &str) -> String {
        self.get(Kind::Name, name, || identifier(name))
    }

    /// The differential `dX` of a declared matrix, as a parameter.
    pub fn diff(&self, name: &str) -> String {
        self.get(Kind::Diff, name, || format!("d_{}", identifier(name)))
    }

    /// The `k`-th derivative of a declared function (`k = 0` is the function).
    pub fn func(&self, name: &str, k: u32) -> String {
        match k {
            0 => self.name(name),
            _ => self.get(Kind::Derivative(k), name, || {
                let suffix = if k == 1 { String::new() } else { k.to_string() };
                format!("{}_prime{suffix}", identifier(name))
            }),
        }
    }

    /// A symbolic size.
    pub fn size(&self, sym: &str) -> String {
        self.get(Kind::Size, sym, || identifier(sym))
    }
}

/// A size as a Python expression: `3`, `n`, `2 * n * m`, given the Python
/// name of each symbol. This is the one place sizes become code.
pub fn size_expr(d: &Dim, name: &dyn Fn(&str) -> String) -> String {
    let (coef, syms) = dim_parts(d);
    let mut parts: Vec<String> = Vec::new();
    if coef != 1 || syms.is_empty() {
        parts.push(coef.to_string());
    }
    parts.extend(syms.iter().map(|s| name(s)));
    parts.join(" * ")
}

/// A size as its numeric coefficient and its symbols, with repetition
/// (`2·n·n` is `(2, [n, n])`), read without going through its text.
fn dim_parts(d: &Dim) -> (u64, Vec<String>) {
    let syms: Vec<String> = d.symbols().map(String::from).collect();
    let ones: HashMap<String, usize> = syms.iter().map(|s| (s.clone(), 1)).collect();
    // Only an unsolved inference variable makes this fail; typing leaves none.
    let coef = d.eval(&ones).unwrap_or(1) as u64;
    (coef, syms)
}

/// The number of entries of a shape, when its sizes are known.
fn entries(rows: &Dim, cols: &Dim) -> Option<u128> {
    Some(u128::from(rows.as_num()?) * u128::from(cols.as_num()?))
}

/// The module: `import numpy as np`, helpers, then one function per entry.
/// Fails when a function would build an array larger than [`MAX_ENTRIES`].
pub fn module(env: &Env, functions: &[Function]) -> Result<String, Error> {
    let mut syms = BTreeSet::new();
    for f in functions {
        syms.extend(needs(env, &f.expr).syms);
    }
    let ids = Identifiers::with_sizes(env, syms);
    let mut out = String::from("import numpy as np\n\n\n");
    let bodies: Vec<String> = functions.iter().map(|f| function(env, &ids, f)).collect::<Result<_, _>>()?;
    let all = bodies.join("\n\n");
    let table = crate::functions::BUILTINS.iter().filter_map(|b| b.numpy_helper);
    for (helper, code) in HELPERS.iter().copied().chain(table) {
        if all.contains(&format!("{}(", helper.trim_end_matches('('))) {
            out.push_str(code);
            out.push_str("\n\n");
        }
    }
    out.push_str(&all);
    Ok(out)
}

const HELPERS: &[(&str, &str)] = &[
    (
        "_commutation(",
        "def _commutation(r, c, order, dtype):\n    \"\"\"K with K @ vec(A) = vec(A.T) for an r x c matrix A.\"\"\"\n    \
         k = np.zeros((r * c, r * c), dtype=dtype)\n    for i in range(r):\n        for j in range(c):\n            \
         src = i * c + j if order == 'C' else j * r + i\n            dst = j * r + i if order == 'C' else i * c + j\n            \
         k[dst, src] = 1\n    return k\n",
    ),
];

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

fn needs(env: &Env, e: &Expr) -> Needs {
    let mut n = Needs {
        defs: vec![],
        mats: BTreeSet::new(),
        funcs: BTreeMap::new(),
        diffs: BTreeSet::new(),
        syms: BTreeSet::new(),
    };
    let mut defs = BTreeSet::new();
    let mut seen = HashSet::new();
    let mut stack = vec![e.clone()];
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

/// How each symbolic size is obtained: lines reading sizes from the array
/// parameters' shapes (`n = A.shape[0]`), and the sizes left over, which
/// become keyword-only parameters. A parameter of size `c·n·m` gives `n`
/// once `m` is known (`n = v.shape[0] // (c * m)`).
fn resolve_sizes(
    arrays: &[(String, Shape)],
    needed: &BTreeSet<String>,
    ids: &Identifiers,
) -> (Vec<String>, Vec<String>) {
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut lines = Vec::new();
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
                let read = format!("{arg}.shape[{axis}]");
                let value = if rest.is_one() {
                    read
                } else if rest.as_num().is_some() {
                    format!("{read} // {}", size_expr(&rest, &|s| ids.size(s)))
                } else {
                    format!("{read} // ({})", size_expr(&rest, &|s| ids.size(s)))
                };
                lines.push(format!("{} = {value}", ids.size(sym)));
                known.insert(sym.clone());
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    let keyword = needed.iter().filter(|s| !known.contains(*s)).map(|s| ids.size(s)).collect();
    (lines, keyword)
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

fn number(r: &num_rational::BigRational) -> String {
    use num_traits::ToPrimitive;
    let v = r.to_f64().unwrap_or(f64::NAN);
    if r.is_integer() {
        format!("{v:.1}")
    } else {
        format!("{v:?}")
    }
}

struct Gen<'a> {
    ids: &'a Identifiers,
    /// Temporaries for repeated subexpressions.
    temps: HashMap<Expr, String>,
    ntemps: usize,
    lines: Vec<String>,
    counts: HashMap<Expr, usize>,
    /// The first array found too large to build.
    too_big: Option<String>,
}

/// Whether a factor is applied to a matrix without being built.
fn structured(f: &Expr) -> bool {
    match &f.op {
        Op::Kron(..) | Op::Commutation(..) | Op::DiagMat(_) | Op::Identity => true,
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

    /// Python text of `e`, introducing temporaries for repeated subexpressions.
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

    /// A new temporary holding `code`.
    fn temp(&mut self, code: String) -> String {
        self.ntemps += 1;
        let t = format!("_t{}", self.ntemps);
        self.lines.push(format!("{t} = {code}"));
        t
    }

    fn code(&mut self, e: &Expr) -> String {
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
        let scalar = |x: String| format!("np.full((1, 1), {x}, dtype=_dtype)");
        match &e.op {
            Op::Var { name, .. } => self.ids.name(name),
            Op::Diff(name) => self.ids.diff(name),
            Op::Num(r) => scalar(number(r)),
            Op::Identity => format!("np.eye({}, dtype=_dtype)", self.dim(&s.rows)),
            Op::Zero => format!("np.zeros(({}, {}), dtype=_dtype)", self.dim(&s.rows), self.dim(&s.cols)),
            Op::Ones => format!("np.ones(({}, {}), dtype=_dtype)", self.dim(&s.rows), self.dim(&s.cols)),
            Op::Size(d) => scalar(self.dim(d)),
            Op::Commutation(r, c, o) => {
                format!(
                    "_commutation({}, {}, '{}', _dtype)",
                    self.dim(r),
                    self.dim(c),
                    if *o == VecOrder::Row { "C" } else { "F" }
                )
            }
            Op::Add(ts) => {
                let mut text = String::from("(");
                for (i, t) in ts.iter().enumerate() {
                    let (c, _) = t.split_coef();
                    let negative = i > 0 && c < num_rational::BigRational::from_integer(0.into());
                    let term = if negative { crate::ir::neg(t.clone()) } else { t.clone() };
                    if i > 0 {
                        text.push_str(if negative { " - " } else { " + " });
                    }
                    let code = self.operand(&term);
                    text.push_str(&code);
                }
                text.push(')');
                text
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
                Some(r) => format!("({} * {})", number(r), self.expr(x)),
                None => format!("({} * {})", self.expr(a), self.expr(x)),
            },
            Op::MatMul(..) => self.chain(e),
            Op::Div(a, x) => format!("({} / {})", self.expr(a), self.expr(x)),
            Op::Transpose(x) => format!("{}.T", self.expr(x)),
            Op::Inverse(x) => format!("np.linalg.inv({})", self.expr(x)),
            Op::Power(x, k) => format!("np.linalg.matrix_power({}, {k})", self.expr(x)),
            Op::Hadamard(a, b) => format!("({} * {})", self.expr(a), self.expr(b)),
            Op::HadamardDiv(a, b) => format!("({} / {})", self.operand(a), self.expr(b)),
            Op::HadamardPow(a, k) if k.is_integer() => format!("({} ** {})", self.expr(a), k),
            Op::HadamardPow(a, k) => format!("({} ** {})", self.expr(a), number(k)),
            Op::Kron(a, b) => format!("np.kron({}, {})", self.expr(a), self.expr(b)),
            Op::Vec(x, o) => {
                let order = if *o == VecOrder::Row { "C" } else { "F" };
                format!("{}.reshape(-1, 1, order='{order}')", self.expr(x))
            }
            Op::Unvec(x, o) => {
                let order = if *o == VecOrder::Row { "C" } else { "F" };
                format!("{}.reshape({}, {}, order='{order}')", self.expr(x), self.dim(&s.rows), self.dim(&s.cols))
            }
            Op::DiagMat(x) => format!("np.diag({}.ravel())", self.expr(x)),
            Op::DiagVec(x) => format!("np.diag({}).reshape(-1, 1)", self.expr(x)),
            Op::Trace(x) => scalar(format!("np.trace({})", self.expr(x))),
            Op::Det(x) => scalar(format!("np.linalg.det({})", self.expr(x))),
            Op::Logdet(x) => scalar(format!("np.linalg.slogdet({})[1]", self.expr(x))),
            Op::Sum(x) => scalar(format!("np.sum({})", self.expr(x))),
            Op::Norm(x) => scalar(format!("np.linalg.norm({})", self.expr(x))),
            Op::Apply(f, x) => {
                let a = self.expr(x);
                match f {
                    Func::Builtin(b) => b.numpy.replace("{x}", &a),
                    Func::User(n, k) => format!("{}({a})", self.ids.func(n, *k)),
                }
            }
        }
    }

    /// A term of a sum: a multiple of the all-ones matrix is just the number,
    /// which NumPy broadcasts.
    fn operand(&mut self, e: &Expr) -> String {
        let (c, base) = e.split_coef();
        if matches!(base.op, Op::Ones) {
            number(&c)
        } else {
            self.expr(e)
        }
    }

    /// A product chain. It starts from one factor that is built (an end,
    /// preferring the one that makes each step a matrix-vector product) and
    /// applies the others to it, so diagonal, Kronecker, commutation and
    /// identity factors act without being built.
    fn chain(&mut self, e: &Expr) -> String {
        let factors = e.factors();
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
        let c = &xs.cols;
        match &f.op {
            Op::Identity => x.to_string(),
            Op::DiagMat(v) => format!("({}.reshape(-1, 1) * {x})", self.expr(v)),
            Op::Scale(a, g) if a.as_num().is_some() && structured(g) => {
                let inner = self.apply(g, x, xs);
                format!("({} * {inner})", number(a.as_num().expect("number")))
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
            Op::Kron(a, b) => {
                let (p, q) = (&a.shape.rows, &a.shape.cols);
                let (r, s) = (&b.shape.rows, &b.shape.cols);
                let big = crate::cost::size;
                let (dp, dq, dr, ds, dc) = (self.dim(p), self.dim(q), self.dim(r), self.dim(s), self.dim(c));
                if big(p) * big(s) <= big(r) * big(q) {
                    self.guard(&p.mul(s), c, || "a Kronecker product's partial result".to_string());
                    let t = format!("{x}.reshape({dq}, {ds} * {dc})");
                    let t = self.apply(a, &t, &Shape::new(q.clone(), s.mul(c)));
                    let t = format!("{t}.reshape({dp}, {ds}, {dc}).transpose(1, 0, 2).reshape({ds}, {dp} * {dc})");
                    let t = self.apply(b, &t, &Shape::new(s.clone(), p.mul(c)));
                    format!("{t}.reshape({dr}, {dp}, {dc}).transpose(1, 0, 2).reshape({dp} * {dr}, {dc})")
                } else {
                    self.guard(&r.mul(q), c, || "a Kronecker product's partial result".to_string());
                    let t = format!("{x}.reshape({dq}, {ds}, {dc}).transpose(1, 0, 2).reshape({ds}, {dq} * {dc})");
                    let t = self.apply(b, &t, &Shape::new(s.clone(), q.mul(c)));
                    let t = format!("{t}.reshape({dr}, {dq}, {dc}).transpose(1, 0, 2).reshape({dq}, {dr} * {dc})");
                    let t = self.apply(a, &t, &Shape::new(q.clone(), r.mul(c)));
                    format!("{t}.reshape({dp} * {dr}, {dc})")
                }
            }
            _ => format!("({} @ {x})", self.expr(f)),
        }
    }

    /// `K_(r,k) X`: each column of `X`, read as vec of an r×k matrix, becomes
    /// vec of its transpose.
    fn commute(&mut self, r: &Dim, k: &Dim, o: VecOrder, x: &str, c: &Dim) -> String {
        let (dr, dk, dc) = (self.dim(r), self.dim(k), self.dim(c));
        let (a, b) = if o == VecOrder::Row { (&dr, &dk) } else { (&dk, &dr) };
        format!("{x}.reshape({a}, {b}, {dc}).transpose(1, 0, 2).reshape({dr} * {dk}, {dc})")
    }

    /// `x @ f` for computed `x` of shape `xs` and a factor `f`: `(fᵀ xᵀ)ᵀ`
    /// when `f` is structured.
    fn times_right(&mut self, x: &str, xs: &Shape, f: &Expr) -> String {
        match &f.op {
            Op::DiagMat(v) => format!("({x} * {}.reshape(1, -1))", self.expr(v)),
            Op::Identity => x.to_string(),
            _ if structured(f) => {
                let ft = crate::ir::transpose(f.clone());
                let inner = self.apply(&ft, &format!("{x}.T"), &xs.transposed());
                format!("{inner}.T")
            }
            _ => format!("({x} @ {})", self.expr(f)),
        }
    }
}

/// The parameters of the function computing `e`, in order (keyword-only
/// sizes last, after `*`).
pub fn parameters(env: &Env, e: &Expr) -> Vec<String> {
    let n = needs(env, e);
    let ids = Identifiers::with_sizes(env, n.syms.iter().cloned());
    signature(env, &ids, &n).0
}

/// The parameters, the array parameters with their shapes, and the lines
/// reading sizes from them.
fn signature(env: &Env, ids: &Identifiers, n: &Needs) -> (Vec<String>, Vec<(String, Shape)>, Vec<String>) {
    let shape_of = |name: &str| env.leaf(name).map(|l| l.shape.clone());
    let mut arrays: Vec<(String, Shape)> = Vec::new();
    for m in &n.mats {
        arrays.extend(shape_of(m).map(|s| (ids.name(m), s)));
    }
    for d in &n.diffs {
        arrays.extend(shape_of(d).map(|s| (ids.diff(d), s)));
    }
    let mut params: Vec<String> = n.mats.iter().map(|m| ids.name(m)).collect();
    params.extend(n.diffs.iter().map(|d| ids.diff(d)));
    for (f, orders) in &n.funcs {
        let top = orders.iter().max().copied().unwrap_or(0).max(1);
        params.extend((0..=top).map(|k| ids.func(f, k)));
    }
    let (lines, keyword) = resolve_sizes(&arrays, &n.syms, ids);
    if !keyword.is_empty() {
        params.push("*".to_string());
        params.extend(keyword);
    }
    (params, arrays, lines)
}

fn function(env: &Env, ids: &Identifiers, f: &Function) -> Result<String, Error> {
    let n = needs(env, &f.expr);
    let (params, arrays, size_lines) = signature(env, ids, &n);
    let mut g = Gen { ids, temps: HashMap::new(), ntemps: 0, lines: vec![], counts: HashMap::new(), too_big: None };
    let dtype = if arrays.is_empty() {
        "np.float64".to_string()
    } else {
        let args: Vec<&str> = arrays.iter().map(|(a, _)| a.as_str()).collect();
        format!("np.result_type({}, 1.0)", args.join(", "))
    };
    g.lines.push(format!("_dtype = {dtype}"));
    g.lines.extend(size_lines);
    for d in &n.defs {
        let body = env.definition(d).expect("definition").clone();
        count(&body, &mut g.counts);
    }
    count(&f.expr, &mut g.counts);
    for d in &n.defs {
        let body = env.definition(d).expect("definition").clone();
        let code = g.expr(&body);
        g.lines.push(format!("{} = {code}", ids.name(d)));
    }
    let result = g.expr(&f.expr);
    if let Some(what) = g.too_big {
        return Err(Error::Limit {
            message: format!(
                "the NumPy code for this query would build {what}, more than {MAX_ENTRIES} entries; \
                 ask for a gradient ∂L/∂X or a product with a vector instead of the whole matrix"
            ),
            span: f.span,
        });
    }
    let (r, c) = (g.dim(&f.expr.shape.rows), g.dim(&f.expr.shape.cols));
    let mut out = String::new();
    let _ = writeln!(out, "def {}({}):", f.name, params.join(", "));
    let _ = writeln!(out, "    \"\"\"{}\"\"\"", f.doc.replace('\\', "\\\\").replace('"', "\\\""));
    for l in &g.lines {
        let _ = writeln!(out, "    {l}");
    }
    if matches!(f.expr.op, Op::Num(_) | Op::Scale(..)) && f.expr.split_coef().1.as_num().is_some() {
        let _ = writeln!(out, "    return np.full(({r}, {c}), {result}[0, 0], dtype=_dtype)");
    } else {
        let _ = writeln!(out, "    return np.asarray({result}, dtype=_dtype)");
    }
    Ok(out)
}
