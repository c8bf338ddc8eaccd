//! NumPy code generation: one Python function per query.
//!
//! Each function takes the declared matrices its answer depends on (in
//! alphabetical order, 2-D arrays of their declared shapes; scalars 1×1), then
//! `f`, `f_prime`, `f_prime2` for each declared function it uses. It computes
//! the intermediates it needs once, shares repeated subexpressions, and
//! returns a 2-D array of the answer's shape. Products with a diagonal matrix
//! are computed by broadcasting, so no `diag` matrix is built unless the
//! answer is one.

use crate::ir::{Expr, Func, Op, VecOrder};
use crate::shape::Dim;
use crate::typeck::{Binding, Env};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

/// A function to generate: its Python name, the expression, and the names
/// whose differentials are inputs (for `d(F)` queries).
#[derive(Debug, Clone)]
pub struct Function {
    /// The Python function name.
    pub name: String,
    /// What it returns.
    pub expr: Expr,
    /// A one-line docstring.
    pub doc: String,
}

const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
    "not", "or", "pass", "raise", "return", "try", "while", "with", "yield", "np",
];

/// A Python identifier for a user's name.
pub fn py_name(n: &str) -> String {
    if KEYWORDS.contains(&n) || n.starts_with('_') {
        format!("{n}_")
    } else {
        n.to_string()
    }
}

fn diff_name(n: &str) -> String {
    format!("d_{}", py_name(n))
}

fn user_fn(name: &str, k: u32) -> String {
    match k {
        0 => py_name(name),
        1 => format!("{}_prime", py_name(name)),
        k => format!("{}_prime{k}", py_name(name)),
    }
}

/// The module: `import numpy as np`, helpers, then one function per entry.
pub fn module(env: &Env, functions: &[Function]) -> String {
    let mut out = String::from("import numpy as np\n\n\n");
    let bodies: Vec<String> = functions.iter().map(|f| function(env, f)).collect();
    let all = bodies.join("\n\n");
    let table = crate::functions::BUILTINS.iter().filter_map(|b| b.numpy_helper);
    for (helper, code) in HELPERS.iter().copied().chain(table) {
        if all.contains(&format!("{}(", helper.trim_end_matches('('))) {
            out.push_str(code);
            out.push_str("\n\n");
        }
    }
    out.push_str(&all);
    out
}

const HELPERS: &[(&str, &str)] = &[
    (
        "_commutation",
        "def _commutation(r, c, order):\n    \"\"\"K with K @ vec(A) = vec(A.T) for an r x c matrix A.\"\"\"\n    \
         k = np.zeros((r * c, r * c))\n    for i in range(r):\n        for j in range(c):\n            \
         src = i * c + j if order == 'C' else j * r + i\n            dst = j * r + i if order == 'C' else i * c + j\n            \
         k[dst, src] = 1.0\n    return k\n",
    ),
];

struct Gen {
    /// Temporaries for repeated subexpressions.
    temps: HashMap<Expr, String>,
    lines: Vec<String>,
    counts: HashMap<Expr, usize>,
    sizes: BTreeMap<String, String>,
}

/// Every defined name `e` needs, in definition order, and the declared
/// matrices, functions and differentials it reads.
struct Needs {
    defs: Vec<String>,
    mats: BTreeSet<String>,
    funcs: BTreeMap<String, BTreeSet<u32>>,
    diffs: BTreeSet<String>,
    syms: BTreeSet<String>,
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
    let mut stack = vec![e.clone()];
    while let Some(x) = stack.pop() {
        for d in [&x.shape.rows, &x.shape.cols] {
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
            Op::Size(d) => {
                n.syms.extend(d.symbols().map(String::from));
            }
            Op::Commutation(r, c, _) => {
                n.syms.extend(r.symbols().chain(c.symbols()).map(String::from));
            }
            _ => {}
        }
        stack.extend(x.op.children().into_iter().cloned());
    }
    n.defs = env.defs.iter().filter(|d| defs.contains(*d)).cloned().collect();
    // A size the arguments do not show (the answer `I` of ∂tr(E)/∂E) is read
    // off a declared matrix that has it, which becomes a parameter.
    for sym in n.syms.clone() {
        if size_source(env, &n, &sym).is_none() {
            let holder = env.names.iter().find_map(|(name, (b, _))| match b {
                Binding::Matrix { shape, .. } if shape.rows.to_string() == sym || shape.cols.to_string() == sym => {
                    Some(name.clone())
                }
                _ => None,
            });
            n.mats.extend(holder);
        }
    }
    n
}

/// The Python expression giving a symbolic size from an argument's shape.
fn size_source(env: &Env, n: &Needs, sym: &str) -> Option<String> {
    env.names.iter().find_map(|(name, (b, _))| match b {
        Binding::Matrix { shape, .. } if n.mats.contains(name) || n.diffs.contains(name) => {
            let arg = if n.mats.contains(name) { py_name(name) } else { diff_name(name) };
            if shape.rows.to_string() == sym {
                Some(format!("{arg}.shape[0]"))
            } else if shape.cols.to_string() == sym {
                Some(format!("{arg}.shape[1]"))
            } else {
                None
            }
        }
        _ => None,
    })
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

impl Gen {
    fn dim(&self, d: &Dim) -> String {
        if let Some(n) = d.as_num() {
            return n.to_string();
        }
        let s = d.to_string();
        s.split('·')
            .map(|part| {
                let (coef, sym): (String, String) = part.chars().partition(|c| c.is_ascii_digit());
                let v = self.sizes.get(&sym).cloned().unwrap_or(sym);
                if coef.is_empty() {
                    v
                } else {
                    format!("{coef} * {v}")
                }
            })
            .collect::<Vec<_>>()
            .join(" * ")
    }

    /// Python text of `e`, introducing temporaries for repeated subexpressions.
    fn expr(&mut self, e: &Expr) -> String {
        if let Some(t) = self.temps.get(e) {
            return t.clone();
        }
        let code = self.code(e);
        let leaf = e.op.children().is_empty();
        if !leaf && self.counts.get(e).copied().unwrap_or(0) > 1 {
            let t = format!("_t{}", self.temps.len() + 1);
            self.lines.push(format!("{t} = {code}"));
            self.temps.insert(e.clone(), t.clone());
            return t;
        }
        code
    }

    fn code(&mut self, e: &Expr) -> String {
        let s = &e.shape;
        let scalar = |x: String| format!("np.array([[{x}]])");
        match &e.op {
            Op::Var { name, .. } => py_name(name),
            Op::Diff(name) => diff_name(name),
            Op::Num(r) => scalar(number(r)),
            Op::Identity => format!("np.eye({})", self.dim(&s.rows)),
            Op::Zero => format!("np.zeros(({}, {}))", self.dim(&s.rows), self.dim(&s.cols)),
            Op::Ones => format!("np.ones(({}, {}))", self.dim(&s.rows), self.dim(&s.cols)),
            Op::Size(d) => scalar(self.dim(d)),
            Op::Commutation(r, c, o) => {
                format!(
                    "_commutation({}, {}, '{}')",
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
                let area = |f: &Expr| f.shape.rows.estimate(1e3) * f.shape.cols.estimate(1e3);
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
                    Func::User(n, k) => format!("{}({a})", user_fn(n, *k)),
                }
            }
        }
    }
}

impl Gen {
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

    /// A product chain. A chain ending in a column (or starting with a row)
    /// is evaluated from that end, so each step multiplies a matrix by a
    /// vector; diagonal and Kronecker factors then act without being built.
    fn chain(&mut self, e: &Expr) -> String {
        let mut factors = e.factors();
        if e.shape.cols.is_one() && !e.shape.rows.is_one() {
            let last = factors.pop().expect("factor");
            let mut acc = (self.expr(&last), last.shape.clone());
            while let Some(f) = factors.pop() {
                let code = self.left_times(&f, &acc.0, &acc.1);
                acc = (code, crate::shape::Shape::new(f.shape.rows.clone(), acc.1.cols.clone()));
            }
            acc.0
        } else {
            let first = factors.remove(0);
            let mut acc = (self.expr(&first), first.shape.clone());
            for f in factors {
                let code = self.times_right(&acc.0, &acc.1, &f);
                acc = (code, crate::shape::Shape::new(acc.1.rows.clone(), f.shape.cols.clone()));
            }
            acc.0
        }
    }

    /// `f @ x` for a factor `f` and computed `x`.
    fn left_times(&mut self, f: &Expr, x: &str, xs: &crate::shape::Shape) -> String {
        match &f.op {
            Op::DiagMat(v) => format!("({}.reshape(-1, 1) * {x})", self.expr(v)),
            // (A ⊗ B) x = vec(A X Bᵀ): no Kronecker product is built.
            Op::Kron(ka, kb) if xs.cols.is_one() => {
                let x = format!("{x}.reshape({}, {})", self.dim(&ka.shape.cols), self.dim(&kb.shape.cols));
                let left = if ka.is_identity() { x } else { format!("{} @ {x}", self.expr(ka)) };
                let full = if kb.is_identity() { left } else { format!("{left} @ {}.T", self.expr(kb)) };
                format!("({full}).reshape(-1, 1)")
            }
            _ => format!("({} @ {x})", self.expr(f)),
        }
    }

    /// `x @ f` for computed `x` and a factor `f`.
    fn times_right(&mut self, x: &str, xs: &crate::shape::Shape, f: &Expr) -> String {
        match &f.op {
            Op::DiagMat(v) => format!("({x} * {}.reshape(1, -1))", self.expr(v)),
            // x (A ⊗ B) = vec(Aᵀ X B)ᵀ.
            Op::Kron(ka, kb) if xs.rows.is_one() => {
                let x = format!("{x}.reshape({}, {})", self.dim(&ka.shape.rows), self.dim(&kb.shape.rows));
                let left = if ka.is_identity() { x } else { format!("{}.T @ {x}", self.expr(ka)) };
                let full = if kb.is_identity() { left } else { format!("{left} @ {}", self.expr(kb)) };
                format!("({full}).reshape(1, -1)")
            }
            _ => format!("({x} @ {})", self.expr(f)),
        }
    }
}

/// The parameters of the function computing `e`, in order.
pub fn parameters(env: &Env, e: &Expr) -> Vec<String> {
    let n = needs(env, e);
    let mut params: Vec<String> = n.mats.iter().map(|m| py_name(m)).collect();
    params.extend(n.diffs.iter().map(|d| diff_name(d)));
    for (f, orders) in &n.funcs {
        let top = orders.iter().max().copied().unwrap_or(0).max(1);
        params.extend((0..=top).map(|k| user_fn(f, k)));
    }
    params
}

fn function(env: &Env, f: &Function) -> String {
    let n = needs(env, &f.expr);
    let params = parameters(env, &f.expr);
    let mut g = Gen { temps: HashMap::new(), lines: vec![], counts: HashMap::new(), sizes: BTreeMap::new() };
    // Symbolic sizes are read off the arguments' shapes.
    for sym in &n.syms {
        let found = size_source(env, &n, sym);
        if let Some(v) = found {
            let var = format!("_{sym}");
            g.lines.push(format!("{var} = {v}"));
            g.sizes.insert(sym.clone(), var);
        }
    }
    for d in &n.defs {
        let body = env.definition(d).expect("definition").clone();
        count(&body, &mut g.counts);
    }
    count(&f.expr, &mut g.counts);
    for d in &n.defs {
        let body = env.definition(d).expect("definition").clone();
        let code = g.expr(&body);
        g.lines.push(format!("{} = {code}", py_name(d)));
    }
    let result = g.expr(&f.expr);
    let (r, c) = (g.dim(&f.expr.shape.rows), g.dim(&f.expr.shape.cols));
    let mut out = String::new();
    let _ = writeln!(out, "def {}({}):", f.name, params.join(", "));
    let _ = writeln!(out, "    \"\"\"{}\"\"\"", f.doc.replace('\\', "\\\\").replace('"', "\\\""));
    for l in &g.lines {
        let _ = writeln!(out, "    {l}");
    }
    if matches!(f.expr.op, Op::Num(_) | Op::Scale(..)) && f.expr.split_coef().1.as_num().is_some() {
        let _ = writeln!(out, "    return np.full(({r}, {c}), {result}[0, 0])");
    } else {
        let _ = writeln!(out, "    return np.asarray({result}, dtype=float)");
    }
    out
}
