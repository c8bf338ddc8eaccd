//! The typed IR: every node carries its [`Shape`].
//!
//! Nodes are built only through the constructors in this module, which compute
//! the shape and apply the local identities that keep expressions tidy
//! (`I X = X`, `0 + X = X`, `(Xᵀ)ᵀ = X`, `(A B)ᵀ = Bᵀ Aᵀ`, like terms
//! collected). They assume their arguments already fit: `typeck` checks shapes
//! on user input and reports errors with spans before anything is built.

use crate::shape::{Dim, Shape};
use num_bigint::BigInt;
pub use num_rational::BigRational;
use num_traits::{One, Signed, Zero};
use std::rc::Rc;

/// A name of a declared matrix or defined intermediate.
pub type Name = Rc<str>;

/// The order in which `vec` stacks entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum VecOrder {
    /// Rows one after another (the default).
    #[default]
    Row,
    /// Columns one after another (Magnus & Neudecker).
    Col,
}

/// A function applied to a matrix: a built-in, one row of the table in
/// [`crate::functions`], or a declared scalar function differentiated `k`
/// times (`f''` is `User("f", 2)`).
#[derive(Clone)]
pub enum Func {
    /// A built-in function.
    Builtin(&'static Builtin),
    /// A declared function and how often it is differentiated.
    User(Name, u32),
}

/// Everything matdiff knows of a built-in function, in one place: the
/// table [`crate::functions::BUILTINS`] has one of these per function, and
/// every stage (typing, differentials, printing, evaluation, code, cost)
/// reads it from there.
pub struct Builtin {
    /// The name as printed in text (`σ`).
    pub name: &'static str,
    /// The name in ASCII, also accepted as input (`sigmoid`).
    pub ascii: &'static str,
    /// The name in LaTeX (`\sigma`).
    pub latex: &'static str,
    /// What it does to its argument.
    pub kind: Kind,
    /// NumPy code, with `{x}` for the argument (a 2-D array); `_dtype` is
    /// the dtype of the generated function's inputs.
    pub numpy: &'static str,
    /// A helper the NumPy code calls, as (name, Python source), if any.
    pub numpy_helper: Option<(&'static str, &'static str)>,
    /// JAX code (`jax.numpy` as `jnp`), with `{x}` for the argument; `_dtype`
    /// as in NumPy.
    pub jax: &'static str,
    /// A helper the JAX code calls, as (name, Python source), if any.
    pub jax_helper: Option<(&'static str, &'static str)>,
    /// PyTorch code, with `{x}` for the argument (a 2-D tensor); `_dtype` and
    /// `_device` are the dtype and device of the generated function's inputs.
    pub torch: &'static str,
    /// A helper the PyTorch code calls, as (name, Python source), if any.
    pub torch_helper: Option<(&'static str, &'static str)>,
    /// Floating-point operations per entry of the argument, for cost models.
    pub cost: f64,
}

/// How a built-in function acts.
#[derive(Clone, Copy)]
pub enum Kind {
    /// Entry by entry: the result has the argument's shape.
    Elementwise {
        /// Its value at one entry.
        eval: fn(f64) -> f64,
        /// Its derivative `f'(x)`, as an expression in the argument `x`.
        derivative: fn(&Expr) -> Expr,
        /// `f(0)`, when it is 0 or 1 (so that `f` of a zero matrix folds).
        at_zero: Option<i64>,
    },
    /// A matrix to a matrix of another shape.
    Matrix {
        /// The result's shape from the argument's.
        shape: fn(&Shape) -> Shape,
        /// Its value.
        eval: fn(&nalgebra::DMatrix<f64>) -> nalgebra::DMatrix<f64>,
        /// `d f(x)` given `x` and `dx`, linear in `dx`, written with the
        /// operations of [`Op`] so that identification needs no new rule.
        differential: fn(&Expr, Expr) -> Expr,
    },
}

impl Func {
    /// The table row of a built-in.
    pub fn builtin(&self) -> Option<&'static Builtin> {
        match self {
            Func::Builtin(b) => Some(b),
            Func::User(..) => None,
        }
    }

    /// Whether it acts entry by entry (declared functions always do).
    pub fn is_elementwise(&self) -> bool {
        !matches!(self, Func::Builtin(Builtin { kind: Kind::Matrix { .. }, .. }))
    }

    /// The shape of `f(x)` for an `x` of the given shape.
    pub fn shape(&self, x: &Shape) -> Shape {
        match self {
            Func::Builtin(Builtin { kind: Kind::Matrix { shape, .. }, .. }) => shape(x),
            _ => x.clone(),
        }
    }

    /// Floating-point operations per entry of the argument (a declared
    /// function counts as a transcendental one).
    pub fn cost(&self) -> f64 {
        self.builtin().map_or(4.0, |b| b.cost)
    }

    /// The name as printed.
    pub fn name(&self, ascii: bool) -> String {
        match self {
            Func::User(n, k) => format!("{n}{}", "'".repeat(*k as usize)),
            Func::Builtin(b) => (if ascii { b.ascii } else { b.name }).to_string(),
        }
    }

    /// What identifies it: the built-in's name, or the declared name and order.
    fn key(&self) -> (&str, u32) {
        match self {
            Func::Builtin(b) => (b.ascii, 0),
            Func::User(n, k) => (n, *k + 1),
        }
    }
}

impl PartialEq for Func {
    fn eq(&self, other: &Func) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Func {}
impl std::hash::Hash for Func {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}
impl PartialOrd for Func {
    fn partial_cmp(&self, other: &Func) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Func {
    fn cmp(&self, other: &Func) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}
impl std::fmt::Debug for Func {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name(true))
    }
}

/// An expression node.
#[derive(Debug, Clone)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Its shape.
    pub shape: Shape,
    /// A structural hash, computed once, so that maps keyed by expressions
    /// and comparisons of unequal expressions cost O(1).
    hash: u64,
    /// Whether a differential occurs below.
    has_diff: bool,
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        self.hash == other.hash && self.shape == other.shape && self.op == other.op
    }
}
impl Eq for Node {}
impl std::hash::Hash for Node {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}
impl PartialOrd for Node {
    fn partial_cmp(&self, other: &Node) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Node {
    fn cmp(&self, other: &Node) -> std::cmp::Ordering {
        (self.hash, &self.shape, &self.op).cmp(&(other.hash, &other.shape, &other.op))
    }
}

/// A shared, immutable expression.
#[derive(Clone, Eq, PartialOrd, Ord)]
pub struct Expr(pub Rc<Node>);

impl std::hash::Hash for Expr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Expr) -> bool {
        Rc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl std::ops::Deref for Expr {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.0
    }
}

/// Operations. Scalars are 1×1 matrices; a number is `Num`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// A declared matrix or a defined name.
    Var {
        /// The name.
        name: Name,
        /// Declared symmetric.
        symmetric: bool,
    },
    /// The differential `dX` of a name.
    Diff(Name),
    /// An exact number (1×1).
    Num(BigRational),
    /// The identity (square).
    Identity,
    /// The zero matrix.
    Zero,
    /// The all-ones matrix.
    Ones,
    /// A size used as a value (1×1): `n` in `sum(x) / n`. Never a plain number.
    Size(Dim),
    /// The commutation matrix `K` with `K vec(A) = vec(Aᵀ)` for `A` of the given shape.
    Commutation(Dim, Dim, VecOrder),
    /// A sum of two or more terms.
    Add(Vec<Expr>),
    /// A 1×1 factor times a matrix.
    Scale(Expr, Expr),
    /// The matrix product.
    MatMul(Expr, Expr),
    /// Division by a 1×1 expression.
    Div(Expr, Expr),
    /// `Xᵀ`
    Transpose(Expr),
    /// `X⁻¹`
    Inverse(Expr),
    /// `Xᵏ`, `k ≥ 2` or `k ≤ -2`
    Power(Expr, i64),
    /// `A ∘ B`
    Hadamard(Expr, Expr),
    /// `A ./ B`
    HadamardDiv(Expr, Expr),
    /// `A .^ k`
    HadamardPow(Expr, BigRational),
    /// `A ⊗ B`
    Kron(Expr, Expr),
    /// `vec(X)`
    Vec(Expr, VecOrder),
    /// `vec⁻¹(v)` to the node's shape.
    Unvec(Expr, VecOrder),
    /// `diag(v)`: a vector to a diagonal matrix.
    DiagMat(Expr),
    /// `diag(X)`: the diagonal of a square matrix as a column.
    DiagVec(Expr),
    /// `tr(X)`
    Trace(Expr),
    /// `det(X)`
    Det(Expr),
    /// `logdet(X)`, `log det X`
    Logdet(Expr),
    /// `sum(X)`, the sum of all entries
    Sum(Expr),
    /// `‖X‖`, Euclidean or Frobenius
    Norm(Expr),
    /// An elementwise function.
    Apply(Func, Expr),
}

impl Op {
    /// The direct operands, in order.
    pub fn children(&self) -> Vec<&Expr> {
        use Op::*;
        match self {
            Var { .. } | Diff(_) | Num(_) | Identity | Zero | Ones | Size(_) | Commutation(..) => vec![],
            Add(ts) => ts.iter().collect(),
            Scale(a, b) | MatMul(a, b) | Div(a, b) | Hadamard(a, b) | HadamardDiv(a, b) | Kron(a, b) => vec![a, b],
            Transpose(a)
            | Inverse(a)
            | Power(a, _)
            | HadamardPow(a, _)
            | Vec(a, _)
            | Unvec(a, _)
            | DiagMat(a)
            | DiagVec(a)
            | Trace(a)
            | Det(a)
            | Logdet(a)
            | Sum(a)
            | Norm(a)
            | Apply(_, a) => vec![a],
        }
    }
}

fn node(op: Op, shape: Shape) -> Expr {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::mem::discriminant(&op).hash(&mut h);
    shape.hash(&mut h);
    let kids = op.children();
    let has_diff = matches!(op, Op::Diff(_)) || kids.iter().any(|c| c.0.has_diff);
    match &op {
        Op::Var { name, symmetric } => (name, symmetric).hash(&mut h),
        Op::Diff(n) => n.hash(&mut h),
        // Rationals are kept normalized, so hashing the parts is enough (and much
        // cheaper than `Ratio`'s own hash, which divides).
        Op::Num(r) => (r.numer(), r.denom()).hash(&mut h),
        Op::Commutation(a, b, o) => (a, b, o).hash(&mut h),
        Op::Size(d) => d.hash(&mut h),
        Op::Power(_, k) => k.hash(&mut h),
        Op::HadamardPow(_, k) => (k.numer(), k.denom()).hash(&mut h),
        Op::Vec(_, o) | Op::Unvec(_, o) => o.hash(&mut h),
        Op::Apply(f, _) => f.hash(&mut h),
        _ => {}
    }
    for k in &kids {
        h.write_u64(k.0.hash);
    }
    let hash = h.finish();
    Expr(Rc::new(Node { op, shape, hash, has_diff }))
}

/// A rational from an integer.
pub fn rat(n: i64) -> BigRational {
    BigRational::from_integer(BigInt::from(n))
}

// ---- leaves -------------------------------------------------------------------

/// A named matrix.
pub fn var(name: &str, shape: Shape, symmetric: bool) -> Expr {
    node(Op::Var { name: name.into(), symmetric }, shape)
}
/// The differential of a named matrix.
pub fn diff(name: &str, shape: Shape) -> Expr {
    node(Op::Diff(name.into()), shape)
}
/// A number.
pub fn num(r: BigRational) -> Expr {
    node(Op::Num(r), Shape::scalar())
}
/// An integer.
pub fn int(n: i64) -> Expr {
    num(rat(n))
}
/// The n×n identity (1×1 is the number 1).
pub fn identity(n: Dim) -> Expr {
    if n.is_one() {
        return int(1);
    }
    node(Op::Identity, Shape::new(n.clone(), n))
}
/// The zero matrix.
pub fn zero(shape: Shape) -> Expr {
    if shape.is_scalar() {
        return int(0);
    }
    node(Op::Zero, shape)
}
/// The all-ones matrix.
pub fn ones(shape: Shape) -> Expr {
    if shape.is_scalar() {
        return int(1);
    }
    node(Op::Ones, shape)
}
/// A size as a value (1×1); a known size is a number.
pub fn size(d: Dim) -> Expr {
    match d.as_num() {
        Some(n) => num(BigRational::from_integer(BigInt::from(n))),
        None => node(Op::Size(d), Shape::scalar()),
    }
}
/// The commutation matrix for `r×c` matrices.
pub fn commutation(r: Dim, c: Dim, order: VecOrder) -> Expr {
    if r.is_one() || c.is_one() {
        return identity(r.mul(&c));
    }
    let n = r.mul(&c);
    node(Op::Commutation(r, c, order), Shape::new(n.clone(), n))
}

impl Expr {
    /// The number, if this is one.
    pub fn as_num(&self) -> Option<&BigRational> {
        match &self.op {
            Op::Num(r) => Some(r),
            _ => None,
        }
    }
    /// Whether this is a zero (number or matrix).
    pub fn is_zero(&self) -> bool {
        matches!(&self.op, Op::Zero) || self.as_num().is_some_and(Zero::is_zero)
    }
    /// Whether this is the identity (or the number 1).
    pub fn is_identity(&self) -> bool {
        matches!(&self.op, Op::Identity) || self.as_num().is_some_and(One::is_one)
    }
    /// Splits off a numeric coefficient: `3 X` gives `(3, X)`, and a sum of
    /// negative terms `-A - B` gives `(-1, A + B)`.
    pub fn split_coef(&self) -> (BigRational, Expr) {
        match &self.op {
            Op::Add(ts) if ts.iter().all(Expr::is_negated) => {
                (rat(-1), sum_of(ts.iter().map(|t| neg(t.clone())).collect()))
            }
            Op::Num(r) => (r.clone(), int(1)),
            Op::Scale(s, x) => match s.as_num() {
                Some(c) => {
                    let (c2, x2) = x.split_coef();
                    (c * c2, x2)
                }
                None => (rat(1), self.clone()),
            },
            _ => (rat(1), self.clone()),
        }
    }
    /// The factors of a product chain, left to right (`A B C` gives `[A, B, C]`).
    pub fn factors(&self) -> Vec<Expr> {
        let mut out = Vec::new();
        let mut stack = vec![self.clone()];
        while let Some(e) = stack.pop() {
            match &e.op {
                Op::MatMul(a, b) => {
                    stack.push(b.clone());
                    stack.push(a.clone());
                }
                _ => out.push(e),
            }
        }
        out
    }

    /// Whether this is written with a leading minus: a negative number or a
    /// negative multiple (looks one level down, no further).
    pub fn is_negated(&self) -> bool {
        match &self.op {
            Op::Num(r) => r.is_negative(),
            Op::Scale(s, _) => s.as_num().is_some_and(|c| c.is_negative()),
            _ => false,
        }
    }

    /// Whether the expression contains a differential.
    pub fn has_diff(&self) -> bool {
        self.0.has_diff
    }
    /// Whether the expression mentions the name (as a variable or differential).
    pub fn mentions(&self, name: &str) -> bool {
        match &self.op {
            Op::Var { name: n, .. } | Op::Diff(n) => &**n == name,
            op => op.children().iter().any(|c| c.mentions(name)),
        }
    }
    /// The names of matrices and definitions that occur, each once, in the
    /// order met (shared subexpressions are visited once).
    pub fn var_names(&self, out: &mut Vec<Name>) {
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![self.clone()];
        while let Some(e) = stack.pop() {
            if !seen.insert(e.clone()) {
                continue;
            }
            match &e.op {
                Op::Var { name, .. } if !out.contains(name) => out.push(name.clone()),
                op => stack.extend(op.children().into_iter().cloned()),
            }
        }
    }
    /// Number of nodes in the tree (shared nodes counted each time).
    pub fn size(&self) -> usize {
        1 + self.op.children().iter().map(|c| c.size()).sum::<usize>()
    }
}

// ---- constructors -----------------------------------------------------------------

/// `a + b`.
pub fn add(a: Expr, b: Expr) -> Expr {
    sum_of(vec![a, b])
}
/// `a - b`.
pub fn sub(a: Expr, b: Expr) -> Expr {
    add(a, neg(b))
}
/// `-a`.
pub fn neg(a: Expr) -> Expr {
    scale(rat(-1), a)
}

/// The sum of terms (all of one shape): nested sums are flattened, zeros
/// dropped, numbers folded and like terms (`2X + X`) collected, in the order
/// of first appearance.
pub fn sum_of(terms: Vec<Expr>) -> Expr {
    let shape = terms.first().expect("a sum needs terms").shape.clone();
    debug_assert!(
        terms.iter().all(|t| t.shape == shape || t.shape.has_vars() || shape.has_vars()),
        "a sum of unequal shapes: {terms:?}"
    );
    // Like terms are collected before nested sums are opened, so that
    // `(n2 - y) + (n2 - y)` stays `2(n2 - y)`.
    let mut flat = Vec::new();
    for (c, x) in collect(terms) {
        match &x.op {
            Op::Add(ts) if c.is_one() => flat.extend(ts.iter().cloned()),
            _ => flat.push(scale(c, x)),
        }
    }
    let mut out: Vec<Expr> = collect(flat).into_iter().map(|(c, x)| scale(c, x)).collect();
    match out.len() {
        0 => zero(shape),
        1 => out.pop().expect("one term"),
        _ => node(Op::Add(out), shape),
    }
}

/// Sums longer than this collect like terms through a hash index.
const LONG_SUM: usize = 16;

/// Groups terms by their non-numeric part, summing coefficients; numbers are
/// folded into one constant at the end.
fn collect(terms: Vec<Expr>) -> Vec<(BigRational, Expr)> {
    let mut collected: Vec<(BigRational, Expr)> = Vec::new();
    // Where each term is, for long sums only: most sums have two or three
    // terms, and this runs on every sum built, so those are scanned.
    let mut at: Option<std::collections::HashMap<Expr, usize>> =
        (terms.len() > LONG_SUM).then(std::collections::HashMap::new);
    let mut constant = rat(0);
    for t in terms {
        if t.is_zero() {
            continue;
        }
        if let Some(r) = t.as_num() {
            constant += r;
            continue;
        }
        let (c, x) = t.split_coef();
        let found = match &at {
            Some(at) => at.get(&x).copied(),
            None => collected.iter().position(|(_, y)| *y == x),
        };
        match found {
            Some(i) => collected[i].0 += c,
            None => {
                if let Some(at) = &mut at {
                    at.insert(x.clone(), collected.len());
                }
                collected.push((c, x));
            }
        }
    }
    collected.retain(|(c, _)| !c.is_zero());
    if !constant.is_zero() {
        collected.push((constant, int(1)));
    }
    collected
}

/// A number times a matrix.
pub fn scale(c: BigRational, x: Expr) -> Expr {
    scalar_mul(num(c), x)
}

/// A 1×1 expression `s` times a matrix `x`. Numbers are folded and kept in front.
pub fn scalar_mul(s: Expr, x: Expr) -> Expr {
    if s.is_zero() || x.is_zero() {
        return zero(x.shape.clone());
    }
    if s.is_identity() {
        return x;
    }
    if let (Op::Scale(c, t), None) = (&s.op, s.as_num()) {
        if c.as_num().is_some() {
            // (c t) x = c (t x): numbers stay in front.
            return scalar_mul(c.clone(), scalar_mul(t.clone(), x));
        }
    }
    if x.shape.is_scalar() && x.as_num().is_some() && s.as_num().is_none() {
        return scalar_mul(x, s);
    }
    if let Some(c) = s.as_num() {
        if let Some(d) = x.as_num() {
            return num(c * d);
        }
        // c (a / t) = (c a) / t for a number a: one fraction, `2 / (xᵀ x)`,
        // its sign in front (`-2 / t`, never `(-2) / t`).
        if let Op::Div(a, t) = &x.op {
            if let Some(a) = a.as_num() {
                let p = c * a;
                if p.is_positive() {
                    return div(num(p), t.clone());
                }
                if !(-c.clone()).is_one() {
                    let shape = x.shape.clone();
                    return node(Op::Scale(int(-1), div(num(-p), t.clone())), shape);
                }
            }
        }
        if let Op::Scale(t, y) = &x.op {
            if let Some(d) = t.as_num() {
                return scalar_mul(num(c * d), y.clone());
            }
        }
        if let Op::Add(ts) = &x.op {
            if c.is_negative() && ts.iter().all(|t| t.split_coef().0.is_negative()) {
                return scale(-c, sum_of(ts.iter().map(|t| neg(t.clone())).collect()));
            }
        }
    } else if let Op::Scale(t, y) = &x.op {
        if t.as_num().is_some() {
            // Keep numbers in front: s (c y) = c (s y).
            return scalar_mul(t.clone(), scalar_mul(s, y.clone()));
        }
        // One scalar factor: s (t y) = (s t) y.
        return scalar_mul(matmul(s, t.clone()), y.clone());
    }
    let shape = x.shape.clone();
    node(Op::Scale(s, x), shape)
}

/// The matrix product; a 1×1 factor that does not fit as a matrix scales the other.
pub fn matmul(a: Expr, b: Expr) -> Expr {
    if a.shape.cols != b.shape.rows {
        if a.shape.is_scalar() || b.shape.is_scalar() {
            return if a.shape.is_scalar() { scalar_mul(a, b) } else { scalar_mul(b, a) };
        }
        // Only while the type checker's first pass is still inferring sizes:
        // the product as written, never a guess (its second pass builds the
        // real one, with every size known).
        return node_matmul(a, b);
    }
    let shape = Shape::new(a.shape.rows.clone(), b.shape.cols.clone());
    if a.is_zero() || b.is_zero() {
        return zero(shape);
    }
    if a.is_identity() {
        return b;
    }
    if b.is_identity() {
        return a;
    }
    if a.as_num().is_some() || (a.shape.is_scalar() && !b.shape.is_scalar()) {
        return scalar_mul(a, b);
    }
    if b.shape.is_scalar() && !a.shape.is_scalar() {
        return scalar_mul(b, a);
    }
    if b.as_num().is_some() {
        return scalar_mul(b, a);
    }
    // ones(m, k) ones(k, n) = k ones(m, n): what broadcasts leave behind.
    if let (Op::Ones, Op::Ones) = (&a.op, &b.op) {
        return scalar_mul(size(a.shape.cols.clone()), ones(shape));
    }
    if let (Op::DiagMat(x), Op::DiagMat(y)) = (&a.op, &b.op) {
        return diag_mat(hadamard(x.clone(), oriented_like(y, x)));
    }
    if let Some(m) = merge_powers(&a, &b) {
        return m;
    }
    if let (Op::MatMul(p, q), Op::DiagMat(y)) = (&a.op, &b.op) {
        if let Op::DiagMat(x) = &q.op {
            return matmul(p.clone(), diag_mat(hadamard(x.clone(), oriented_like(y, x))));
        }
    }
    // (P ⊗ Q) vec(X) = vec(P X Qᵀ) with `vec` by rows, vec(Q X Pᵀ) by
    // columns: the Kronecker product is never built (`2 vec(O - Y)`, not
    // `2((O - Y) ⊗ I) vec(I)`).
    if let (Op::Kron(p, q), Op::Vec(x, o)) = (&a.op, &b.op) {
        let (left, right) = match o {
            VecOrder::Row => (p, q),
            VecOrder::Col => (q, p),
        };
        if left.shape.cols == x.shape.rows && right.shape.cols == x.shape.cols {
            return vec(matmul(matmul(left.clone(), x.clone()), transpose(right.clone())), *o);
        }
    }
    // (A ⊗ B)(C ⊗ D) = AC ⊗ BD when the inner sizes agree.
    if let (Op::Kron(p, q), Op::Kron(r, t)) = (&a.op, &b.op) {
        if p.shape.cols == r.shape.rows && q.shape.cols == t.shape.rows {
            return kron(matmul(p.clone(), r.clone()), matmul(q.clone(), t.clone()));
        }
    }
    if let (Op::Kron(m, n), Op::MatMul(p, rest)) = (&a.op, &b.op) {
        if let Op::Kron(r, t) = &p.op {
            if m.shape.cols == r.shape.rows && n.shape.cols == t.shape.rows {
                return matmul(kron(matmul(m.clone(), r.clone()), matmul(n.clone(), t.clone())), rest.clone());
            }
        }
    }
    if let (Op::MatMul(p, q), Op::Kron(r, t)) = (&a.op, &b.op) {
        if let Op::Kron(m, n) = &q.op {
            if m.shape.cols == r.shape.rows && n.shape.cols == t.shape.rows {
                return matmul(p.clone(), kron(matmul(m.clone(), r.clone()), matmul(n.clone(), t.clone())));
            }
        }
    }
    if let Op::MatMul(p, q) = &a.op {
        if let Some(m) = merge_powers(q, &b) {
            return matmul(p.clone(), m);
        }
    }
    // A 1×1 factor other than a number moves to the front: (s A) B = s (A B).
    for (scaled, left) in [(&a, true), (&b, false)] {
        if let Op::Scale(s, inner) = &scaled.op {
            if s.as_num().is_none() {
                let rest = if left { matmul(inner.clone(), b.clone()) } else { matmul(a.clone(), inner.clone()) };
                return scalar_mul(s.clone(), rest);
            }
        }
    }
    // (c s I) B = c s B, and A (c s I) = c s A.
    for (scaled, other) in [(&a, &b), (&b, &a)] {
        let (c, base) = scaled.split_coef();
        match &base.op {
            Op::Identity => return scale(c, other.clone()),
            Op::Scale(s, i) if matches!(i.op, Op::Identity) => {
                return scale(c, scalar_mul(s.clone(), other.clone()));
            }
            _ => {}
        }
    }
    node(Op::MatMul(a, b), shape)
}

/// The vector `v` as a row or column like `like` (both vectors of one length).
fn oriented_like(v: &Expr, like: &Expr) -> Expr {
    if v.shape == like.shape {
        v.clone()
    } else {
        transpose(v.clone())
    }
}

/// A square factor as `baseᵏ`: `X⁻¹` is `(X, -1)`, `(X²)ᵀ` is `(Xᵀ, 2)`.
fn as_power(e: &Expr) -> (Expr, i64) {
    match &e.op {
        Op::Inverse(b) => (b.clone(), -1),
        Op::Power(b, k) => match &b.op {
            Op::Inverse(c) => (c.clone(), -k),
            _ => (b.clone(), *k),
        },
        Op::Transpose(t) => match &t.op {
            Op::Inverse(b) => (transpose(b.clone()), -1),
            Op::Power(b, k) => (transpose(b.clone()), *k),
            _ => (e.clone(), 1),
        },
        _ => (e.clone(), 1),
    }
}

/// `Xᵃ Xᵇ = Xᵃ⁺ᵇ` for square `X`.
fn merge_powers(a: &Expr, b: &Expr) -> Option<Expr> {
    if !a.shape.is_square() || a.shape.is_scalar() || a.shape != b.shape {
        return None;
    }
    let ((x, i), (y, j)) = (as_power(a), as_power(b));
    (x == y && (i + j).abs() <= MAX_POWER).then(|| power(x, i + j))
}

/// A matrix product node as it is, with no simplification (for code
/// generation, which places factors on purpose).
pub fn node_matmul(a: Expr, b: Expr) -> Expr {
    let shape = Shape::new(a.shape.rows.clone(), b.shape.cols.clone());
    node(Op::MatMul(a, b), shape)
}

/// A transpose node as it is, not pushed into a sum or product (for code
/// generation, where `(A - B)ᵀ` is one view of one computed array).
pub fn node_transpose(x: Expr) -> Expr {
    let shape = x.shape.transposed();
    node(Op::Transpose(x), shape)
}

/// A product of factors, left to right.
pub fn product(factors: impl IntoIterator<Item = Expr>) -> Expr {
    let mut it = factors.into_iter();
    let first = it.next().expect("a product needs factors");
    it.fold(first, matmul)
}

/// `a / s` for a 1×1 `s`.
pub fn div(a: Expr, s: Expr) -> Expr {
    if let Some(c) = s.as_num() {
        if !c.is_zero() {
            return scale(c.recip(), a);
        }
    }
    if a.is_zero() {
        return a;
    }
    let shape = a.shape.clone();
    node(Op::Div(a, s), shape)
}

/// `xᵀ`, pushed toward the leaves: through products, Kronecker products and
/// scalars; dropped on 1×1, symmetric and diagonal matrices.
pub fn transpose(x: Expr) -> Expr {
    let shape = x.shape.transposed();
    if x.shape.is_scalar() {
        return x;
    }
    match &x.op {
        Op::Transpose(y) => y.clone(),
        Op::Var { symmetric: true, .. } | Op::Identity | Op::DiagMat(_) => x.clone(),
        Op::Zero => zero(shape),
        Op::Ones => ones(shape),
        Op::Scale(s, y) => scalar_mul(s.clone(), transpose(y.clone())),
        Op::MatMul(a, b) => matmul(transpose(b.clone()), transpose(a.clone())),
        Op::Kron(a, b) => kron(transpose(a.clone()), transpose(b.clone())),
        Op::Div(a, s) => div(transpose(a.clone()), s.clone()),
        Op::Inverse(y) if matches!(y.op, Op::Var { symmetric: true, .. } | Op::DiagMat(_)) => x.clone(),
        Op::Inverse(y) => inverse(transpose(y.clone())),
        Op::Power(y, k) => power(transpose(y.clone()), *k),
        Op::Add(ts)
            if ts.iter().any(|t| {
                matches!(t.split_coef().1.op, Op::Transpose(_) | Op::Identity | Op::Var { symmetric: true, .. })
            }) =>
        {
            sum_of(ts.iter().map(|t| transpose(t.clone())).collect())
        }
        _ => node(Op::Transpose(x), shape),
    }
}

/// `x⁻¹`.
pub fn inverse(x: Expr) -> Expr {
    match &x.op {
        Op::Inverse(y) => y.clone(),
        Op::DiagMat(v) => diag_mat(hadamard_div(ones(v.shape.clone()), v.clone())),
        Op::Power(y, k) => power(y.clone(), -k),
        Op::Identity => x.clone(),
        Op::Num(r) if !r.is_zero() => num(r.recip()),
        _ => {
            let shape = x.shape.clone();
            node(Op::Inverse(x), shape)
        }
    }
}

/// Largest exponent that merging powers may produce, as large as the parser
/// reads (`(X¹⁰⁰⁰)¹⁰⁰⁰` stays nested).
const MAX_POWER: i64 = 1000;

/// `xᵏ` for a square `x`.
pub fn power(x: Expr, k: i64) -> Expr {
    match k {
        0 => identity(x.shape.rows.clone()),
        1 => x,
        -1 => inverse(x),
        _ if matches!(x.op, Op::Inverse(_)) => power(x.op.children()[0].clone(), -k),
        _ if matches!(&x.op, Op::Power(_, j) if j.checked_mul(k).is_some_and(|p| p.abs() <= MAX_POWER)) => {
            let Op::Power(y, j) = &x.op else { unreachable!() };
            power(y.clone(), j * k)
        }
        _ => {
            if let Some(r) = x.as_num() {
                // Fold small powers of numbers only: 2^1000000 stays a power.
                if (!r.is_zero() || k > 0) && k.abs() <= 64 {
                    return num(num_traits::pow::Pow::pow(r, k as i32));
                }
            }
            if x.is_identity() {
                return x;
            }
            let shape = x.shape.clone();
            node(Op::Power(x, k), shape)
        }
    }
}

/// `a ∘ b`, of equal shapes or with a 1×1 side (which scales the other).
pub fn hadamard(a: Expr, b: Expr) -> Expr {
    if a.shape.is_scalar() {
        return scalar_mul(a, b);
    }
    if b.shape.is_scalar() {
        return scalar_mul(b, a);
    }
    debug_assert!(a.shape == b.shape || a.shape.has_vars() || b.shape.has_vars(), "hadamard of unequal shapes");
    if a.is_zero() || b.is_zero() {
        return zero(a.shape.clone());
    }
    if matches!(a.op, Op::Ones) {
        return b;
    }
    if matches!(b.op, Op::Ones) {
        return a;
    }
    let shape = a.shape.clone();
    node(Op::Hadamard(a, b), shape)
}

/// `a ./ b`, of equal shapes or with a 1×1 side (which broadcasts).
pub fn hadamard_div(a: Expr, b: Expr) -> Expr {
    if b.shape.is_scalar() {
        return div(a, b);
    }
    if a.shape.is_scalar() {
        // s ./ B = s (1 ./ B): the numerator takes B's shape.
        return scalar_mul(a, hadamard_div(ones(b.shape.clone()), b));
    }
    debug_assert!(a.shape == b.shape || a.shape.has_vars() || b.shape.has_vars(), "./ of unequal shapes");
    if a.is_zero() {
        return a;
    }
    let shape = a.shape.clone();
    node(Op::HadamardDiv(a, b), shape)
}

/// `a .^ k`.
pub fn hadamard_pow(a: Expr, k: BigRational) -> Expr {
    if k.is_one() {
        return a;
    }
    if k.is_zero() {
        return ones(a.shape.clone());
    }
    if let (Some(r), true) = (a.as_num(), k.is_integer()) {
        if let Ok(e) = i32::try_from(k.to_integer()) {
            if (!r.is_zero() || e > 0) && e.abs() <= 64 {
                return num(num_traits::pow::Pow::pow(r, e));
            }
        }
    }
    let shape = a.shape.clone();
    node(Op::HadamardPow(a, k), shape)
}

/// `a ⊗ b`.
pub fn kron(a: Expr, b: Expr) -> Expr {
    let shape = Shape::new(a.shape.rows.mul(&b.shape.rows), a.shape.cols.mul(&b.shape.cols));
    if a.is_zero() || b.is_zero() {
        return zero(shape);
    }
    if a.shape.is_scalar() {
        return scalar_mul(a, b);
    }
    if b.shape.is_scalar() {
        return scalar_mul(b, a);
    }
    if matches!((&a.op, &b.op), (Op::Identity, Op::Identity)) {
        return identity(shape.rows);
    }
    let ((ca, a2), (cb, b2)) = (a.split_coef(), b.split_coef());
    if !(ca.is_one() && cb.is_one()) {
        return scale(ca * cb, kron(a2, b2));
    }
    node(Op::Kron(a, b), shape)
}

/// `vec(x)`: an (mn)×1 column.
pub fn vec(x: Expr, order: VecOrder) -> Expr {
    let shape = Shape::new(x.shape.len(), Dim::one());
    match &x.op {
        _ if x.shape.cols.is_one() => x,
        _ if x.shape.rows.is_one() => transpose(x),
        Op::Unvec(v, o) if *o == order => v.clone(),
        Op::Zero => zero(shape),
        _ => node(Op::Vec(x, order), shape),
    }
}

/// `vec⁻¹(v)` to the given shape.
pub fn unvec(v: Expr, shape: Shape, order: VecOrder) -> Expr {
    if v.shape == shape {
        return v;
    }
    if shape.rows.is_one() && v.shape.cols.is_one() {
        return transpose(v);
    }
    match &v.op {
        Op::Vec(x, o) if *o == order && x.shape == shape => x.clone(),
        Op::Zero => zero(shape),
        _ => node(Op::Unvec(v, order), shape),
    }
}

/// `diag(v)`: a vector to a diagonal matrix.
pub fn diag_mat(v: Expr) -> Expr {
    let n = v.shape.len();
    if n.is_one() {
        return v;
    }
    match &v.op {
        Op::Transpose(y) if y.shape.is_vector() => diag_mat(y.clone()),
        Op::Ones => identity(n),
        Op::Zero => zero(Shape::new(n.clone(), n)),
        _ => node(Op::DiagMat(v), Shape::new(n.clone(), n)),
    }
}

/// `diag(X)`: the diagonal of a square matrix as a column.
pub fn diag_vec(x: Expr) -> Expr {
    let n = x.shape.rows.clone();
    if n.is_one() {
        return x;
    }
    match &x.op {
        Op::DiagMat(v) => vec(v.clone(), VecOrder::Row),
        Op::Identity => ones(Shape::new(n, Dim::one())),
        _ => node(Op::DiagVec(x), Shape::new(n, Dim::one())),
    }
}

/// `tr(X)`.
pub fn trace(x: Expr) -> Expr {
    if x.shape.is_scalar() {
        return x;
    }
    match &x.op {
        Op::Zero => int(0),
        Op::Identity => size(x.shape.rows.clone()),
        // tr(A ⊗ B) = tr(A) tr(B) when both are square.
        Op::Kron(a, b) if a.shape.is_square() && b.shape.is_square() => matmul(trace(a.clone()), trace(b.clone())),
        Op::Scale(s, y) => scalar_mul(s.clone(), trace(y.clone())),
        Op::Transpose(y) => trace(y.clone()),
        Op::Add(ts) => sum_of(ts.iter().cloned().map(trace).collect()),
        _ => node(Op::Trace(x), Shape::scalar()),
    }
}

/// `det(X)`.
pub fn det(x: Expr) -> Expr {
    if x.shape.is_scalar() {
        return x;
    }
    match &x.op {
        Op::Identity => int(1),
        Op::Transpose(y) => det(y.clone()),
        _ => node(Op::Det(x), Shape::scalar()),
    }
}

/// `log det X`.
pub fn logdet(x: Expr) -> Expr {
    match &x.op {
        Op::Identity => int(0),
        Op::Transpose(y) => logdet(y.clone()),
        _ => node(Op::Logdet(x), Shape::scalar()),
    }
}

/// `sum(X)`: the sum of all entries.
pub fn sum(x: Expr) -> Expr {
    if x.shape.is_scalar() {
        return x;
    }
    match &x.op {
        Op::Zero => int(0),
        Op::Ones => size(x.shape.len()),
        // sum(A ⊗ B) = sum(A) sum(B).
        Op::Kron(a, b) => matmul(sum(a.clone()), sum(b.clone())),
        Op::Scale(s, y) => scalar_mul(s.clone(), sum(y.clone())),
        Op::Transpose(y) => sum(y.clone()),
        _ => node(Op::Sum(x), Shape::scalar()),
    }
}

/// `‖X‖`.
pub fn norm(x: Expr) -> Expr {
    match &x.op {
        Op::Zero => int(0),
        Op::Num(r) => num(r.abs()),
        Op::Transpose(y) => norm(y.clone()),
        _ => node(Op::Norm(x), Shape::scalar()),
    }
}

/// `f(x)` elementwise.
pub fn apply(f: Func, x: Expr) -> Expr {
    let shape = f.shape(&x.shape);
    if let (Op::Zero, Func::Builtin(Builtin { kind: Kind::Elementwise { at_zero: Some(v), .. }, .. })) = (&x.op, &f) {
        return match v {
            0 => x,
            _ => scale(rat(*v), ones(shape)),
        };
    }
    node(Op::Apply(f, x), shape)
}

/// Rebuilds `e` with new children through the constructors (used after
/// substituting leaves, so that the local identities apply again).
pub fn rebuild(e: &Expr, kids: Vec<Expr>) -> Expr {
    let mut k = kids.into_iter();
    let mut next = || k.next().expect("child");
    match &e.op {
        Op::Var { .. }
        | Op::Diff(_)
        | Op::Num(_)
        | Op::Identity
        | Op::Zero
        | Op::Ones
        | Op::Size(_)
        | Op::Commutation(..) => e.clone(),
        Op::Add(ts) => sum_of((0..ts.len()).map(|_| next()).collect()),
        Op::Scale(..) => scalar_mul(next(), next()),
        Op::MatMul(..) => matmul(next(), next()),
        Op::Div(..) => div(next(), next()),
        Op::Transpose(_) => transpose(next()),
        Op::Inverse(_) => inverse(next()),
        Op::Power(_, k) => power(next(), *k),
        Op::Hadamard(..) => hadamard(next(), next()),
        Op::HadamardDiv(..) => hadamard_div(next(), next()),
        Op::HadamardPow(_, k) => hadamard_pow(next(), k.clone()),
        Op::Kron(..) => kron(next(), next()),
        Op::Vec(_, o) => vec(next(), *o),
        Op::Unvec(_, o) => unvec(next(), e.shape.clone(), *o),
        Op::DiagMat(_) => diag_mat(next()),
        Op::DiagVec(_) => diag_vec(next()),
        Op::Trace(_) => trace(next()),
        Op::Det(_) => det(next()),
        Op::Logdet(_) => logdet(next()),
        Op::Sum(_) => sum(next()),
        Op::Norm(_) => norm(next()),
        Op::Apply(f, _) => apply(f.clone(), next()),
    }
}

/// Rewrites bottom-up: `f` sees each node after its children were rewritten.
pub fn map_bottom_up(e: &Expr, f: &mut dyn FnMut(Expr) -> Expr) -> Expr {
    let kids: Vec<Expr> = e.op.children().into_iter().map(|c| map_bottom_up(c, f)).collect();
    let same = kids.iter().zip(e.op.children()).all(|(a, b)| Rc::ptr_eq(&a.0, &b.0));
    let rebuilt = if same { e.clone() } else { rebuild(e, kids) };
    f(rebuilt)
}

/// [`map_bottom_up`] that rewrites a subexpression shared by several
/// parents (one `Rc`) once, so that on a graph such as a gradient with its
/// adjoints written inline the work is linear in its distinct nodes, not in
/// the size of the tree it spells. `f` must give equal results for one
/// input, as a rewrite does.
pub fn map_bottom_up_shared(e: &Expr, f: &mut dyn FnMut(Expr) -> Expr) -> Expr {
    // Keys are addresses of nodes of `e`, which `e` keeps alive throughout.
    fn go(e: &Expr, f: &mut dyn FnMut(Expr) -> Expr, done: &mut std::collections::HashMap<*const Node, Expr>) -> Expr {
        let key = Rc::as_ptr(&e.0);
        if let Some(r) = done.get(&key) {
            return r.clone();
        }
        let kids: Vec<Expr> = e.op.children().into_iter().map(|c| go(c, f, done)).collect();
        let same = kids.iter().zip(e.op.children()).all(|(a, b)| Rc::ptr_eq(&a.0, &b.0));
        let rebuilt = if same { e.clone() } else { rebuild(e, kids) };
        let out = f(rebuilt);
        done.insert(key, out.clone());
        out
    }
    go(e, f, &mut std::collections::HashMap::new())
}

/// The most terms the differential of a matrix power may be written with:
/// `d(Xᵏ)` is a sum of `|k|` products (`X` and `dX` do not commute), and
/// nested powers multiply.
pub const MAX_POWER_TERMS: u64 = 256;

/// The largest number of terms the differential of a matrix power in `e`
/// expands into (1 when there is none), saturating.
pub fn power_terms(e: &Expr) -> u64 {
    let inner = e.op.children().into_iter().map(power_terms).max().unwrap_or(1);
    match &e.op {
        Op::Power(x, k) if !x.shape.is_scalar() && !matches!(x.op, Op::Norm(_)) => {
            inner.saturating_mul(k.unsigned_abs())
        }
        _ => inner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::{Dim, Shape};

    #[test]
    fn a_shared_subexpression_is_rewritten_once() {
        // x ∘ x, squared again 60 times, sharing each factor: a tree of
        // 2⁶¹ leaves that is a graph of 61 nodes.
        let x = var("x", Shape::new(Dim::num(3), Dim::one()), false);
        let mut e = x.clone();
        for _ in 0..60 {
            e = node(Op::Hadamard(e.clone(), e.clone()), e.shape.clone());
        }
        let mut calls = 0;
        let y = var("y", x.shape.clone(), false);
        let out = map_bottom_up_shared(&e, &mut |n| {
            calls += 1;
            if n == x {
                y.clone()
            } else {
                n
            }
        });
        assert_eq!(calls, 61);
        // The rewrite reached every leaf, and the result shares as the input did.
        let mut names = vec![];
        out.var_names(&mut names);
        assert_eq!(names, [Name::from("y")]);
        let Op::Hadamard(a, b) = &out.op else { panic!("{out:?}") };
        assert!(Rc::ptr_eq(&a.0, &b.0));
    }
}
