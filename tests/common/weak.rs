//! Random scripts aimed at the weak spots of section 5 of the spec ("Shapes
//! that never lie"), each with its meaning: the generator writes the source
//! text and, alongside, a tree that a small reference evaluator here computes
//! with NumPy's rules (1×1 operands broadcast in `+ - ∘ ./`, a `1×n` row or
//! an `m×1` column repeats, a 1×1 factor scales a product, `I`, `0` and
//! `ones` take the size the generator meant). So a script the engine types
//! differently from what it says is caught, not only a derivative that
//! disagrees with the engine's own reading of the script.
//!
//! Choices are read from a tape of random numbers (0 when it runs out, which
//! picks the first option: a leaf), so that shrinking the tape shrinks the
//! script.

use matdiff::eval::{user_function, Mat, Values};
use std::collections::{BTreeSet, HashMap};

/// A size: the literals 1, 2, 3 and 6 (6 only for Kronecker products of a
/// 3×3 and a 2×2), and the symbolic `n` and `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum D {
    One,
    Two,
    Three,
    Six,
    N,
    M,
}

pub type Sh = (D, D);

const SCALAR: Sh = (D::One, D::One);

impl D {
    fn text(self) -> &'static str {
        match self {
            D::One => "1",
            D::Two => "2",
            D::Three => "3",
            D::Six => "6",
            D::N => "n",
            D::M => "m",
        }
    }

    fn value(self, v: &Values) -> usize {
        match self {
            D::One => 1,
            D::Two => 2,
            D::Three => 3,
            D::Six => 6,
            D::N => v.sizes.get("n").copied().unwrap_or(1),
            D::M => v.sizes.get("m").copied().unwrap_or(1),
        }
    }
}

/// Constructs whose typing the shape rules (SPEC section 5) make binding;
/// every script leans on some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Construct {
    /// A number against a matrix in `+ - ∘ ./` (`2 - A`, `A ∘ 0.5`).
    NumberBroadcast,
    /// A 1×1 expression that is not a number (`s`, `xᵀ y`, `tr(A)`, a 1×1
    /// definition) against a matrix in `∘` or `./`.
    ScalarHadamard,
    /// The same in `+` or `-` (`A - s`, `xᵀ y + A`).
    ScalarAddSub,
    /// `0` as an operand of a sum of matrices.
    Zero,
    /// `ones(r, c)`.
    Ones,
    /// A `1×c` row against an `r×c` matrix in `+ - ∘ ./` (`X W + b`).
    RowBroadcast,
    /// An `r×1` column against an `r×c` matrix in `+ - ∘ ./`.
    ColBroadcast,
    /// A bare `I` (size from context) in sums and products.
    BareI,
    /// A bare `I` on either side of `⊗` (`tr((I ⊗ P)(I ⊗ R) K)`).
    BareIKron,
    /// A declared size used as a value (`sum(x) / n`, `m A`).
    SizeValue,
    /// `I_n`, `I_2` and Kronecker products with an explicit identity.
    ExplicitI,
}

/// Every construct.
pub const ALL: &[Construct] = &[
    Construct::NumberBroadcast,
    Construct::ScalarHadamard,
    Construct::ScalarAddSub,
    Construct::Zero,
    Construct::Ones,
    Construct::RowBroadcast,
    Construct::ColBroadcast,
    Construct::BareI,
    Construct::BareIKron,
    Construct::SizeValue,
    Construct::ExplicitI,
];

/// Elementwise functions of the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F {
    Tanh,
    Sigmoid,
    Sin,
    Exp,
    Softplus,
    User,
}

/// What an expression means.
#[derive(Debug, Clone)]
pub enum T {
    /// A declared or defined name.
    Name(String),
    /// A number.
    Num(f64),
    /// A symbolic size used as a value.
    Size(D),
    /// An identity matrix of this shape.
    Eye(Sh),
    /// Zeros of this shape.
    Zero(Sh),
    /// Ones of this shape.
    Ones(Sh),
    Add(Box<T>, Box<T>),
    Sub(Box<T>, Box<T>),
    Had(Box<T>, Box<T>),
    HDiv(Box<T>, Box<T>),
    /// A product (a 1×1 factor scales).
    Mul(Box<T>, Box<T>),
    /// Division by a 1×1.
    Div(Box<T>, Box<T>),
    Tr(Box<T>),
    Sum(Box<T>),
    Transpose(Box<T>),
    Func(F, Box<T>),
    HPow(Box<T>, f64),
    MPow(Box<T>, i32),
    Kron(Box<T>, Box<T>),
}

fn b(t: T) -> Box<T> {
    Box::new(t)
}

/// Declarations of every script.
pub const DECLARATIONS: &str = "A, B: n x n\nS: n x n symmetric\nX: m x n\nC: n x m\nD: m x m\nP, R: 2 x 2\n\
Q: 3 x 3 symmetric\nW: 3 x 2\nG: n x 3\nK: 6 x 6\nx, y: n\nz: m\nu: 3\nv: 2\na: 1 x n\nb: 1 x 2\ns, t: scalar\n\
f: R -> R\n";

/// Declared names that queries may differentiate with respect to.
pub const VARIABLES: &[&str] =
    &["A", "B", "S", "X", "C", "D", "P", "R", "Q", "W", "G", "K", "x", "y", "z", "u", "v", "a", "b", "s", "t"];

/// Small variables that a Hessian may be taken with respect to.
pub const HESSIAN_VARIABLES: &[&str] = &["x", "y", "z", "u", "v", "a", "b", "s", "t", "P"];

/// Shapes that have a declared name (others are built as outer products).
const SHAPES: &[Sh] = &[
    (D::N, D::N),
    (D::M, D::M),
    (D::M, D::N),
    (D::N, D::M),
    (D::Two, D::Two),
    (D::Three, D::Three),
    (D::Three, D::Two),
    (D::Two, D::Three),
    (D::N, D::Three),
    (D::N, D::One),
    (D::One, D::N),
    (D::M, D::One),
    (D::Three, D::One),
    (D::Two, D::One),
    (D::One, D::Two),
    (D::One, D::Three),
    (D::One, D::One),
    (D::One, D::One),
];

pub struct Gen<'a> {
    tape: &'a [u32],
    pos: usize,
    /// Names the current expression mentions.
    pub names: BTreeSet<String>,
    /// Definitions available as leaves.
    pub defs: Vec<(String, Sh)>,
    /// Constructs the generator may write.
    allowed: &'a [Construct],
    /// Constructs the script uses.
    pub used: BTreeSet<Construct>,
}

impl<'a> Gen<'a> {
    pub fn new(tape: &'a [u32], allowed: &'a [Construct]) -> Gen<'a> {
        Gen { tape, pos: 0, names: BTreeSet::new(), defs: Vec::new(), allowed, used: BTreeSet::new() }
    }

    pub fn pick(&mut self, k: usize) -> usize {
        let v = self.tape.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v as usize % k
    }

    fn ok(&self, c: Construct) -> bool {
        self.allowed.contains(&c)
    }

    fn mark(&mut self, c: Construct) {
        self.used.insert(c);
    }

    pub fn shape(&mut self) -> Sh {
        SHAPES[self.pick(SHAPES.len())]
    }

    /// An explicit identity `I_k`.
    fn eye(&mut self, d: D) -> (String, T) {
        self.mark(Construct::ExplicitI);
        (format!("I_{}", d.text()), T::Eye((d, d)))
    }

    /// A leaf of shape `sh`.
    pub fn leaf(&mut self, sh: Sh) -> (String, T) {
        use D::*;
        let named: &[(&str, &str)] = match sh {
            (N, N) => &[("A", "A"), ("B", "B"), ("S", "S"), ("Aᵀ", "A")],
            (M, M) => &[("D", "D"), ("D'", "D")],
            (M, N) => &[("X", "X"), ("C^T", "C")],
            (N, M) => &[("C", "C"), ("Xᵀ", "X")],
            (Two, Two) => &[("P", "P"), ("R", "R"), ("P'", "P")],
            (Three, Three) => &[("Q", "Q")],
            (Three, Two) => &[("W", "W")],
            (Two, Three) => &[("W^T", "W")],
            (N, Three) => &[("G", "G")],
            (Three, N) => &[("Gᵀ", "G")],
            (Six, Six) => &[("K", "K")],
            (N, One) => &[("x", "x"), ("y", "y"), ("a^T", "a")],
            (One, N) => &[("a", "a"), ("xᵀ", "x"), ("y'", "y")],
            (M, One) => &[("z", "z")],
            (One, M) => &[("zᵀ", "z")],
            (Three, One) => &[("u", "u")],
            (One, Three) => &[("u^T", "u")],
            (Two, One) => &[("v", "v"), ("bᵀ", "b")],
            (One, Two) => &[("b", "b"), ("v'", "v")],
            (One, One) => &[("s", "s"), ("t", "t")],
            _ => &[],
        };
        let mut opts: Vec<(String, T, Option<&str>)> = Vec::new();
        for (text, name) in named {
            let t = if text == name { T::Name(name.to_string()) } else { T::Transpose(b(T::Name(name.to_string()))) };
            opts.push((text.to_string(), t, Some(name)));
        }
        if sh == SCALAR {
            for (text, x) in [("2", 2.0), ("0.5", 0.5), ("(1/3)", 1.0 / 3.0)] {
                opts.push((text.into(), T::Num(x), None));
            }
        }
        let defs: Vec<String> = self.defs.iter().filter(|(_, s)| *s == sh).map(|(n, _)| n.clone()).collect();
        for d in &defs {
            opts.push((d.clone(), T::Name(d.clone()), None));
        }
        if opts.is_empty() {
            // An outer product of two declared vectors.
            let (c, ct) = self.leaf((sh.0, One));
            let (r, rt) = self.leaf((One, sh.1));
            return (format!("({c} {r})"), T::Mul(b(ct), b(rt)));
        }
        let i = self.pick(opts.len());
        let (text, t, name) = opts.swap_remove(i);
        if let Some(n) = name {
            self.names.insert(n.to_string());
        }
        if let T::Name(n) = &t {
            self.names.insert(n.clone());
        }
        (text, t)
    }

    /// A 1×1 operand that is not a number.
    fn scalar_operand(&mut self, depth: u32) -> (String, T) {
        match self.pick(5) {
            0 => self.leaf(SCALAR),
            1 => {
                let (x, xt) = self.leaf((D::N, D::One));
                let (y, yt) = self.leaf((D::N, D::One));
                (format!("({x}ᵀ {y})"), T::Mul(b(T::Transpose(b(xt))), b(yt)))
            }
            2 => {
                let sh = self.shape();
                let (e, et) = self.expr(sh, depth.saturating_sub(1));
                (format!("sum({e})"), T::Sum(b(et)))
            }
            3 => {
                let (e, et) = self.expr((D::N, D::N), depth.saturating_sub(1));
                (format!("tr({e})"), T::Tr(b(et)))
            }
            _ => self.expr(SCALAR, depth),
        }
    }

    /// An expression of shape `sh` whose entries lie in [1, 3]: safe to divide by.
    fn denominator(&mut self, sh: Sh, depth: u32) -> (String, T) {
        let (e, et) = self.expr(sh, depth);
        match self.pick(3) {
            0 => (format!("(1 + {e} ∘ {e})"), T::Add(b(T::Num(1.0)), b(T::Had(b(et.clone()), b(et))))),
            1 => (format!("exp(tanh({e}))"), T::Func(F::Exp, b(T::Func(F::Tanh, b(et))))),
            _ => (format!("(2 + σ({e}))"), T::Add(b(T::Num(2.0)), b(T::Func(F::Sigmoid, b(et))))),
        }
    }

    /// `a op b` for `op` among `+ - ∘ ./`, the denominator made safe.
    fn elementwise(&mut self, a: (String, T), bsh: Sh, bfirst: bool, depth: u32) -> (String, T) {
        let k = self.pick(4);
        if k == 3 {
            let (x, xt) = a;
            return if bfirst {
                let (o, ot) = self.expr(bsh, depth);
                (
                    format!("({o} ./ (2 + σ({x})))"),
                    T::HDiv(b(ot), b(T::Add(b(T::Num(2.0)), b(T::Func(F::Sigmoid, b(xt)))))),
                )
            } else {
                let (d, dt) = self.denominator(bsh, depth);
                (format!("({x} ./ {d})"), T::HDiv(b(xt), b(dt)))
            };
        }
        let (o, ot) = self.expr(bsh, depth);
        let (x, xt) = a;
        let (l, lt, r, rt) = if bfirst { (o, ot, x, xt) } else { (x, xt, o, ot) };
        match k {
            0 => (format!("({l} + {r})"), T::Add(b(lt), b(rt))),
            1 => (format!("({l} - {r})"), T::Sub(b(lt), b(rt))),
            _ => (format!("({l} ∘ {r})"), T::Had(b(lt), b(rt))),
        }
    }

    /// A 6×6 expression: `K`, or Kronecker products of a 3×3 and a 2×2 with
    /// an identity on one side, their products and sums. A bare `I` inside
    /// `⊗` is written only where the context fixes its size (`sized`: a
    /// product or sum with an operand of known size); the flag returned says
    /// whether the expression's own size is known without context.
    fn six(&mut self, depth: u32, sized: bool) -> (String, T, bool) {
        use D::*;
        let d = depth.saturating_sub(1);
        let k = if depth == 0 { 0 } else { self.pick(6) };
        match k {
            1 | 2 if sized && self.ok(Construct::BareIKron) => {
                self.mark(Construct::BareIKron);
                if k == 1 {
                    let (e, et) = self.expr((Two, Two), d);
                    (format!("(I ⊗ {e})"), T::Kron(b(T::Eye((Three, Three))), b(et)), false)
                } else {
                    let (e, et) = self.expr((Three, Three), d);
                    (format!("({e} ⊗ I)"), T::Kron(b(et), b(T::Eye((Two, Two)))), false)
                }
            }
            1 | 2 if self.ok(Construct::ExplicitI) => {
                if k == 1 {
                    let (i, it) = self.eye(Three);
                    let (e, et) = self.expr((Two, Two), d);
                    (format!("({i} ⊗ {e})"), T::Kron(b(it), b(et)), true)
                } else {
                    let (e, et) = self.expr((Three, Three), d);
                    let (i, it) = self.eye(Two);
                    (format!("kron({e}, {i})"), T::Kron(b(et), b(it)), true)
                }
            }
            3 | 4 => {
                let (x, xt, sx) = self.six(d, sized);
                let (y, yt, sy) = self.six(d, sized || sx);
                let (x, xt, y, yt) = if self.pick(2) == 0 { (x, xt, y, yt) } else { (y, yt, x, xt) };
                if k == 3 {
                    (format!("({x} {y})"), T::Mul(b(xt), b(yt)), sx || sy)
                } else {
                    (format!("({x} + {y})"), T::Add(b(xt), b(yt)), sx || sy)
                }
            }
            5 => {
                let (e, et) = self.expr((Three, Three), d);
                let (g, gt) = self.expr((Two, Two), d);
                (format!("({e} ⊗ {g})"), T::Kron(b(et), b(gt)), true)
            }
            _ => {
                let (x, xt) = self.leaf((Six, Six));
                (x, xt, true)
            }
        }
    }

    /// An expression of shape `sh` with at most `depth` levels of operators.
    pub fn expr(&mut self, sh: Sh, depth: u32) -> (String, T) {
        use D::*;
        if depth == 0 {
            return self.leaf(sh);
        }
        let d = depth - 1;
        let (r, c) = sh;
        let square = r == c && r != One;
        let matrix = sh != SCALAR;
        let mut ops: Vec<&str> =
            vec!["leaf", "sum", "hadamard", "product", "scale", "transpose", "func", "hpow", "sdiv"];
        if matrix {
            ops.extend(["bcast_scalar", "bcast_scalar", "bcast_number"]);
            if r != One && c != One {
                ops.extend(["bcast_row", "bcast_col", "bcast_row"]);
            }
            if r != One {
                ops.push("bcast_col");
            }
            if c != One {
                ops.push("bcast_row");
            }
            ops.extend(["ones", "zero"]);
        }
        if square {
            ops.extend(["eye", "mpow", "inverse"]);
        }
        if sh == SCALAR {
            ops.extend(["trace", "sumall", "inner", "norm2", "six", "six", "kron_id", "size"]);
        }
        if r == N || r == M || c == N || c == M {
            ops.push("size_div");
        }
        match ops[self.pick(ops.len())] {
            "sum" => {
                let (x, xt) = self.expr(sh, d);
                let (y, yt) = self.expr(sh, d);
                if self.pick(2) == 0 || x == y {
                    (format!("({x} + {y})"), T::Add(b(xt), b(yt)))
                } else {
                    (format!("({x} - {y})"), T::Sub(b(xt), b(yt)))
                }
            }
            "hadamard" => {
                let (x, xt) = self.expr(sh, d);
                if self.pick(2) == 0 {
                    let (y, yt) = self.expr(sh, d);
                    (format!("({x} ∘ {y})"), T::Had(b(xt), b(yt)))
                } else {
                    let (y, yt) = self.denominator(sh, d);
                    (format!("({x} ./ {y})"), T::HDiv(b(xt), b(yt)))
                }
            }
            "product" => {
                let k = [N, M, One, Two, Three][self.pick(5)];
                let (x, xt) = self.expr((r, k), d);
                let (y, yt) = self.expr((k, c), d);
                (format!("({x} {y})"), T::Mul(b(xt), b(yt)))
            }
            "scale" => {
                let (k, kt) = self.scalar_operand(d);
                let (x, xt) = self.expr(sh, d);
                if self.pick(2) == 0 {
                    (format!("({k} {x})"), T::Mul(b(kt), b(xt)))
                } else {
                    (format!("({x} * {k})"), T::Mul(b(xt), b(kt)))
                }
            }
            "transpose" => {
                let (x, xt) = self.expr((c, r), d);
                (format!("({x})ᵀ"), T::Transpose(b(xt)))
            }
            "func" => {
                let (x, xt) = self.expr(sh, d);
                let bounded = (format!("tanh({x})"), T::Func(F::Tanh, b(xt.clone())));
                match self.pick(6) {
                    0 => bounded,
                    1 => (format!("σ({x})"), T::Func(F::Sigmoid, b(xt))),
                    2 => (format!("sin({})", bounded.0), T::Func(F::Sin, b(bounded.1))),
                    3 => (format!("exp({})", bounded.0), T::Func(F::Exp, b(bounded.1))),
                    4 => (format!("softplus({x})"), T::Func(F::Softplus, b(xt))),
                    _ => (format!("f({})", bounded.0), T::Func(F::User, b(bounded.1))),
                }
            }
            "hpow" => {
                let (x, xt) = self.expr(sh, d);
                match self.pick(3) {
                    0 => (format!("({x} .^ 2)"), T::HPow(b(xt), 2.0)),
                    1 => (format!("(σ({x}) .^ 3)"), T::HPow(b(T::Func(F::Sigmoid, b(xt))), 3.0)),
                    _ => (
                        format!("((1 + {x} ∘ {x}) .^ (1/2))"),
                        T::HPow(b(T::Add(b(T::Num(1.0)), b(T::Had(b(xt.clone()), b(xt))))), 0.5),
                    ),
                }
            }
            "sdiv" => {
                let (x, xt) = self.expr(sh, d);
                let (k, kt) = self.scalar_operand(d);
                (
                    format!("({x} / (2 + σ({k})))"),
                    T::Div(b(xt), b(T::Add(b(T::Num(2.0)), b(T::Func(F::Sigmoid, b(kt)))))),
                )
            }
            "bcast_scalar" => {
                let hadamard = self.pick(2) == 0;
                let c = if hadamard { Construct::ScalarHadamard } else { Construct::ScalarAddSub };
                if !self.ok(c) {
                    return self.leaf(sh);
                }
                self.mark(c);
                let k = self.scalar_operand(d);
                let first = self.pick(2) == 0;
                if hadamard {
                    let (o, ot) = self.expr(sh, d);
                    let (x, xt) = k;
                    if self.pick(2) == 0 {
                        let (l, lt, r, rt) = if first { (x, xt, o, ot) } else { (o, ot, x, xt) };
                        (format!("({l} ∘ {r})"), T::Had(b(lt), b(rt)))
                    } else if first {
                        let (den, dt) = self.denominator(sh, d);
                        (format!("({x} ./ {den})"), T::HDiv(b(xt), b(dt)))
                    } else {
                        (
                            format!("({o} ./ (2 + σ({x})))"),
                            T::HDiv(b(ot), b(T::Add(b(T::Num(2.0)), b(T::Func(F::Sigmoid, b(xt)))))),
                        )
                    }
                } else {
                    let (o, ot) = self.expr(sh, d);
                    let (x, xt) = k;
                    let (l, lt, r, rt) = if first { (x, xt, o, ot) } else { (o, ot, x, xt) };
                    if self.pick(2) == 0 {
                        (format!("({l} + {r})"), T::Add(b(lt), b(rt)))
                    } else {
                        (format!("({l} - {r})"), T::Sub(b(lt), b(rt)))
                    }
                }
            }
            "bcast_number" => {
                if !self.ok(Construct::NumberBroadcast) {
                    return self.leaf(sh);
                }
                self.mark(Construct::NumberBroadcast);
                let (k, x) = [("2", 2.0), ("0.5", 0.5), ("3", 3.0)][self.pick(3)];
                let (o, ot) = self.expr(sh, d);
                match self.pick(5) {
                    0 => (format!("({k} - {o})"), T::Sub(b(T::Num(x)), b(ot))),
                    1 => (format!("({o} - {k})"), T::Sub(b(ot), b(T::Num(x)))),
                    2 => (format!("({o} + {k})"), T::Add(b(ot), b(T::Num(x)))),
                    3 => (format!("({o} ∘ {k})"), T::Had(b(ot), b(T::Num(x)))),
                    _ => {
                        let (den, dt) = self.denominator(sh, d);
                        (format!("({k} ./ {den})"), T::HDiv(b(T::Num(x)), b(dt)))
                    }
                }
            }
            "bcast_row" | "bcast_col" => {
                let row = ops.contains(&"bcast_row") && (self.pick(2) == 0 || !ops.contains(&"bcast_col"));
                let (construct, osh) =
                    if row { (Construct::RowBroadcast, (One, c)) } else { (Construct::ColBroadcast, (r, One)) };
                if !self.ok(construct) || osh == sh {
                    return self.leaf(sh);
                }
                self.mark(construct);
                let first = self.pick(2) == 0;
                let small = self.expr(osh, d);
                // the result has shape sh: the other operand is the full one
                let k = self.pick(4);
                if k == 3 {
                    let (o, ot) = self.expr(sh, d);
                    let (x, xt) = small;
                    if first {
                        let (den, dt) = self.denominator(sh, d);
                        (format!("({x} ./ {den})"), T::HDiv(b(xt), b(dt)))
                    } else {
                        (
                            format!("({o} ./ (2 + σ({x})))"),
                            T::HDiv(b(ot), b(T::Add(b(T::Num(2.0)), b(T::Func(F::Sigmoid, b(xt)))))),
                        )
                    }
                } else {
                    let (o, ot) = self.expr(sh, d);
                    let (x, xt) = small;
                    let (l, lt, r, rt) = if first { (x, xt, o, ot) } else { (o, ot, x, xt) };
                    match k {
                        0 => (format!("({l} + {r})"), T::Add(b(lt), b(rt))),
                        1 => (format!("({l} - {r})"), T::Sub(b(lt), b(rt))),
                        _ => (format!("({l} ∘ {r})"), T::Had(b(lt), b(rt))),
                    }
                }
            }
            "ones" => {
                if !self.ok(Construct::Ones) {
                    return self.leaf(sh);
                }
                self.mark(Construct::Ones);
                let o = (format!("ones({}, {})", r.text(), c.text()), T::Ones(sh));
                // ones against a 1×1 or a same-shape operand
                if self.pick(2) == 0 && self.ok(Construct::ScalarHadamard) {
                    self.mark(Construct::ScalarHadamard);
                    let (k, kt) = self.scalar_operand(d);
                    if self.pick(2) == 0 {
                        (format!("({} ∘ {k})", o.0), T::Had(b(o.1), b(kt)))
                    } else {
                        (format!("({k} ∘ {})", o.0), T::Had(b(kt), b(o.1)))
                    }
                } else {
                    let first = self.pick(2) == 0;
                    self.elementwise(o, sh, first, d)
                }
            }
            "zero" => {
                if !self.ok(Construct::Zero) {
                    return self.leaf(sh);
                }
                self.mark(Construct::Zero);
                let (o, ot) = self.expr(sh, d);
                if self.pick(2) == 0 {
                    (format!("({o} + 0)"), T::Add(b(ot), b(T::Zero(sh))))
                } else {
                    (format!("(0 - {o})"), T::Sub(b(T::Zero(sh)), b(ot)))
                }
            }
            "eye" => {
                let bare = self.ok(Construct::BareI) && self.pick(2) == 0;
                let (i, it) = if bare {
                    self.mark(Construct::BareI);
                    ("I".to_string(), T::Eye(sh))
                } else if self.ok(Construct::ExplicitI) {
                    self.eye(r)
                } else {
                    return self.leaf(sh);
                };
                let (o, ot) = self.expr(sh, d);
                match self.pick(4) {
                    0 => (format!("({o} + {i})"), T::Add(b(ot), b(it))),
                    1 => (format!("({i} - {o})"), T::Sub(b(it), b(ot))),
                    2 => (format!("({i} {o})"), T::Mul(b(it), b(ot))),
                    _ => {
                        let (k, kt) = self.scalar_operand(d);
                        (format!("({o} - {k} {i})"), T::Sub(b(ot), b(T::Mul(b(kt), b(it)))))
                    }
                }
            }
            "mpow" => {
                let (x, xt) = self.expr(sh, d);
                let t = (format!("tanh({x})"), T::Func(F::Tanh, b(xt)));
                match self.pick(3) {
                    0 => (format!("({})^2", t.0), T::MPow(b(t.1), 2)),
                    1 => (format!("({})³", t.0), T::MPow(b(t.1), 3)),
                    _ => {
                        let (l, lt) = self.leaf(sh);
                        (format!("({l})²"), T::MPow(b(lt), 2))
                    }
                }
            }
            "inverse" => {
                // (tanh(E) + 6 I) / 6 is well conditioned (Gershgorin, sizes up to 5).
                let (x, xt) = self.expr(sh, d);
                let (i, it) = if self.ok(Construct::BareI) {
                    self.mark(Construct::BareI);
                    ("I".to_string(), T::Eye(sh))
                } else {
                    self.eye(r)
                };
                let inner =
                    T::Div(b(T::Add(b(T::Func(F::Tanh, b(xt))), b(T::Mul(b(T::Num(6.0)), b(it))))), b(T::Num(6.0)));
                (format!("((tanh({x}) + 6 {i}) / 6)^-1"), T::MPow(b(inner), -1))
            }
            "trace" => {
                let k = [N, M, Two, Three][self.pick(4)];
                let (x, xt) = self.expr((k, k), d);
                (format!("tr({x})"), T::Tr(b(xt)))
            }
            "sumall" => {
                let s = self.shape();
                let (x, xt) = self.expr(s, d);
                (format!("sum({x})"), T::Sum(b(xt)))
            }
            "inner" => {
                let k = [N, M, Two, Three][self.pick(4)];
                let (x, xt) = self.expr((k, One), d);
                let (y, yt) = self.expr((k, One), d);
                (format!("(({x})ᵀ {y})"), T::Mul(b(T::Transpose(b(xt))), b(yt)))
            }
            "norm2" => {
                let s = self.shape();
                let (x, xt) = self.expr(s, d);
                (format!("‖{x}‖²"), T::Sum(b(T::Had(b(xt.clone()), b(xt)))))
            }
            "six" => {
                let (x, xt, _) = self.six(d, false);
                if self.pick(2) == 0 {
                    (format!("tr({x})"), T::Tr(b(xt)))
                } else {
                    (
                        format!("(sum({x} ∘ {x}) / 36)"),
                        T::Div(b(T::Sum(b(T::Had(b(xt.clone()), b(xt))))), b(T::Num(36.0))),
                    )
                }
            }
            "kron_id" => {
                if !self.ok(Construct::ExplicitI) {
                    return self.leaf(sh);
                }
                let k = [N, M, Two][self.pick(3)];
                let (i, it) = self.eye(k);
                let (x, xt) = self.expr((N, N), d);
                if self.pick(2) == 0 {
                    (format!("tr({i} ⊗ {x})"), T::Tr(b(T::Kron(b(it), b(xt)))))
                } else {
                    (format!("sum({x} ⊗ {i})"), T::Sum(b(T::Kron(b(xt), b(it)))))
                }
            }
            "size" => {
                if !self.ok(Construct::SizeValue) {
                    return self.leaf(sh);
                }
                self.mark(Construct::SizeValue);
                let k = [N, M][self.pick(2)];
                let (x, xt) = self.expr((k, One), d);
                (format!("(sum({x}) / {})", k.text()), T::Div(b(T::Sum(b(xt))), b(T::Size(k))))
            }
            "size_div" => {
                if !self.ok(Construct::SizeValue) {
                    return self.leaf(sh);
                }
                self.mark(Construct::SizeValue);
                let k = if r == N || c == N { N } else { M };
                let (x, xt) = self.expr(sh, d);
                if self.pick(2) == 0 {
                    (format!("({x} / {})", k.text()), T::Div(b(xt), b(T::Size(k))))
                } else {
                    (format!("({} {x})", k.text()), T::Mul(b(T::Size(k)), b(xt)))
                }
            }
            _ => self.leaf(sh),
        }
    }
}

/// A generated script and what it means.
#[derive(Clone)]
pub struct Script {
    /// The source text, queries included.
    pub text: String,
    /// Definitions in order, with their meaning.
    pub defs: Vec<(String, T)>,
    /// Constructs it uses.
    pub used: BTreeSet<Construct>,
}

/// Whether a meaning is a bare name (a definition that is only an alias
/// makes degenerate points where differences give only rounding noise).
fn is_leaf(t: &T) -> bool {
    match t {
        T::Name(_) | T::Num(_) | T::Size(_) => true,
        T::Transpose(x) => is_leaf(x),
        _ => false,
    }
}

/// A script: 3 to 5 definitions using each other, a scalar `L` and a matrix
/// `J`, then `grad(L, V)`, `jacobian(J, V)` and `hessian(L, v)`, and the
/// backward program `∂L/∂(…)` of every variable `L` depends on.
pub fn script(tape: &[u32], allowed: &[Construct]) -> Script {
    let mut g = Gen::new(tape, allowed);
    let mut text = DECLARATIONS.to_string();
    let mut defs: Vec<(String, T)> = Vec::new();
    let mut reach: HashMap<String, BTreeSet<String>> = HashMap::new();
    let count = 3 + g.pick(3);
    let mut body = |g: &mut Gen, name: &str, sh: Sh, depth: u32, text: &mut String| {
        let (mut e, mut t) = g.expr(sh, depth);
        if is_leaf(&t) {
            e = format!("tanh({e})");
            t = T::Func(F::Tanh, b(t));
        }
        text.push_str(&format!("{name} = {e}\n"));
        let mut names = BTreeSet::new();
        for n in std::mem::take(&mut g.names) {
            if let Some(r) = reach.get(&n) {
                names.extend(r.iter().cloned());
            }
            names.insert(n);
        }
        reach.insert(name.to_string(), names);
        defs.push((name.to_string(), t));
        g.defs.push((name.to_string(), sh));
    };
    for i in 0..count {
        let sh = g.shape();
        body(&mut g, &format!("H{}", i + 1), sh, 2, &mut text);
    }
    body(&mut g, "L", SCALAR, 3, &mut text);
    let jsh = g.shape();
    body(&mut g, "J", jsh, 2, &mut text);
    let vars = |name: &str, among: &[&str]| -> Vec<String> {
        reach[name].iter().filter(|n| among.contains(&n.as_str())).cloned().collect()
    };
    let choose = |g: &mut Gen, v: Vec<String>, default: &str| {
        if v.is_empty() {
            default.to_string()
        } else {
            v[g.pick(v.len())].clone()
        }
    };
    let vl = vars("L", VARIABLES);
    let every = vl.clone();
    let v = choose(&mut g, vl, "A");
    let vj = vars("J", VARIABLES);
    let w = choose(&mut g, vj, "x");
    let vh = vars("L", HESSIAN_VARIABLES);
    let h = choose(&mut g, vh, "x");
    text.push_str(&format!("grad(L, {v})\njacobian(J, {w})\nhessian(L, {h})\n"));
    if every.len() >= 2 {
        text.push_str(&format!("∂L/∂({})\n", every.join(", ")));
    }
    Script { text, defs, used: g.used }
}

// ---- the reference evaluator ---------------------------------------------------------

/// Evaluates meanings with NumPy's rules.
pub struct Reference<'a> {
    pub values: &'a Values,
    pub defs: &'a [(String, T)],
    cache: HashMap<String, Mat>,
}

fn broadcast(a: &Mat, b: &Mat, f: impl Fn(f64, f64) -> f64) -> Result<Mat, String> {
    let r = if a.nrows() == b.nrows() || b.nrows() == 1 {
        a.nrows()
    } else if a.nrows() == 1 {
        b.nrows()
    } else {
        return Err(format!("cannot broadcast {:?} and {:?}", a.shape(), b.shape()));
    };
    let c = if a.ncols() == b.ncols() || b.ncols() == 1 {
        a.ncols()
    } else if a.ncols() == 1 {
        b.ncols()
    } else {
        return Err(format!("cannot broadcast {:?} and {:?}", a.shape(), b.shape()));
    };
    let at = |m: &Mat, i: usize, j: usize| m[(if m.nrows() == 1 { 0 } else { i }, if m.ncols() == 1 { 0 } else { j })];
    Ok(Mat::from_fn(r, c, |i, j| f(at(a, i, j), at(b, i, j))))
}

impl<'a> Reference<'a> {
    pub fn new(values: &'a Values, defs: &'a [(String, T)]) -> Reference<'a> {
        Reference { values, defs, cache: HashMap::new() }
    }

    fn dims(&self, sh: Sh) -> (usize, usize) {
        (sh.0.value(self.values), sh.1.value(self.values))
    }

    pub fn name(&mut self, n: &str) -> Result<Mat, String> {
        if let Some(m) = self.values.mats.get(n) {
            return Ok(m.clone());
        }
        if let Some(m) = self.cache.get(n) {
            return Ok(m.clone());
        }
        let defs = self.defs;
        let t = defs.iter().find(|(d, _)| d == n).map(|(_, t)| t).ok_or_else(|| format!("no value for `{n}`"))?;
        let v = self.eval(t)?;
        self.cache.insert(n.to_string(), v.clone());
        Ok(v)
    }

    pub fn eval(&mut self, t: &T) -> Result<Mat, String> {
        let one = |x: f64| Mat::from_element(1, 1, x);
        let v = match t {
            T::Name(n) => self.name(n)?,
            T::Num(x) => one(*x),
            T::Size(d) => one(d.value(self.values) as f64),
            T::Eye(sh) => {
                let (r, c) = self.dims(*sh);
                Mat::identity(r, c)
            }
            T::Zero(sh) => {
                let (r, c) = self.dims(*sh);
                Mat::zeros(r, c)
            }
            T::Ones(sh) => {
                let (r, c) = self.dims(*sh);
                Mat::from_element(r, c, 1.0)
            }
            T::Add(x, y) => broadcast(&self.eval(x)?, &self.eval(y)?, |a, b| a + b)?,
            T::Sub(x, y) => broadcast(&self.eval(x)?, &self.eval(y)?, |a, b| a - b)?,
            T::Had(x, y) => broadcast(&self.eval(x)?, &self.eval(y)?, |a, b| a * b)?,
            T::HDiv(x, y) => broadcast(&self.eval(x)?, &self.eval(y)?, |a, b| a / b)?,
            T::Mul(x, y) => {
                let (x, y) = (self.eval(x)?, self.eval(y)?);
                if x.ncols() == y.nrows() {
                    x * y
                } else if x.shape() == (1, 1) {
                    y * x[(0, 0)]
                } else if y.shape() == (1, 1) {
                    x * y[(0, 0)]
                } else {
                    return Err(format!("cannot multiply {:?} and {:?}", x.shape(), y.shape()));
                }
            }
            T::Div(x, y) => {
                let y = self.eval(y)?;
                if y.shape() != (1, 1) {
                    return Err("division by a matrix".into());
                }
                self.eval(x)? / y[(0, 0)]
            }
            T::Tr(x) => one(self.eval(x)?.trace()),
            T::Sum(x) => one(self.eval(x)?.sum()),
            T::Transpose(x) => self.eval(x)?.transpose(),
            T::Func(f, x) => {
                let x = self.eval(x)?;
                x.map(|v| match f {
                    F::Tanh => v.tanh(),
                    F::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                    F::Sin => v.sin(),
                    F::Exp => v.exp(),
                    F::Softplus => v.max(0.0) + (-v.abs()).exp().ln_1p(),
                    F::User => user_function("f", 0, v),
                })
            }
            T::HPow(x, k) => self.eval(x)?.map(|v| v.powf(*k)),
            T::MPow(x, k) => {
                let mut base = self.eval(x)?;
                if *k < 0 {
                    base = base.try_inverse().ok_or("singular")?;
                }
                let mut acc = Mat::identity(base.nrows(), base.ncols());
                for _ in 0..k.unsigned_abs() {
                    acc = &acc * &base;
                }
                acc
            }
            T::Kron(x, y) => self.eval(x)?.kronecker(&self.eval(y)?),
        };
        if v.iter().any(|x| !x.is_finite()) {
            return Err("not finite".into());
        }
        Ok(v)
    }
}
