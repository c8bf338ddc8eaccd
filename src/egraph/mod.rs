//! Simplification by equality saturation (egg), with a cost model of
//! floating-point work.
//!
//! The language mirrors the typed IR; a shape analysis keeps every e-class's
//! shape (so that rules such as `(A ⊗ B)(C ⊗ D) = AC ⊗ BD` fire only when the
//! inner sizes agree) and folds rational constants. Extraction minimises
//! [`Flops`]: operations plus memory, from the shapes, with symbolic sizes
//! counted as large, so `a ∘ b` beats `diag(a) b` and cheap matrix-chain
//! orders win. The runner is bounded in nodes, iterations and time; when a
//! bound is hit, the cheapest expression found so far is returned.

pub mod elementwise;
pub mod rules;

pub use elementwise::Known;

use crate::ir::{self, Expr, Func, Op, VecOrder};
use crate::shape::{Dim, Shape};
use egg::{Analysis, CostFunction, DidMerge, EGraph, Extractor, Id, Language, RecExpr, Runner, Symbol};
use num_rational::BigRational;
use num_traits::{One, ToPrimitive, Zero};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// An exact rational constant in the e-graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rat(pub BigRational);

impl std::hash::Hash for Rat {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Normalized, so the parts identify the value.
        (self.0.numer(), self.0.denom()).hash(state);
    }
}

impl FromStr for Rat {
    type Err = ();
    fn from_str(s: &str) -> Result<Rat, ()> {
        let (n, d) = s.split_once('/').unwrap_or((s, "1"));
        let n: num_bigint::BigInt = n.parse().map_err(|_| ())?;
        let d: num_bigint::BigInt = d.parse().map_err(|_| ())?;
        if d.is_zero() {
            return Err(());
        }
        Ok(Rat(BigRational::new(n, d)))
    }
}

impl fmt::Display for Rat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

pub use lang::Math;

/// The language, apart so that its generated variants need no docs of their
/// own: each is named for the IR operation it mirrors (see [`crate::ir::Op`]).
#[allow(missing_docs)]
mod lang {
    use super::Rat;
    use egg::{define_language, Id, Symbol};

    define_language! {
        /// The e-graph language: one operator per IR operation.
        pub enum Math {
            "+" = Add([Id; 2]),
            "*" = Mul([Id; 2]),
            "scale" = Scale([Id; 2]),
            "/" = Div([Id; 2]),
            "T" = Trans(Id),
            "inv" = Inv(Id),
            "pow" = Pow([Id; 2]),
            "o" = Had([Id; 2]),
            "./" = HadDiv([Id; 2]),
            ".^" = HadPow([Id; 2]),
            "kron" = Kron([Id; 2]),
            "vec" = Vec(Id),
            "diag" = Diag(Id),
            "diagv" = DiagV(Id),
            "tr" = Trace(Id),
            "det" = Det(Id),
            "logdet" = Logdet(Id),
            "sum" = Sum(Id),
            "norm" = Norm(Id),
            "app" = App([Id; 2]),
            Num(Rat),
            Leaf(Symbol),
        }
    }
}

/// What an e-class is known to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Data {
    /// Its shape.
    pub shape: Shape,
    /// Its value, when it is a number.
    pub num: Option<BigRational>,
    /// Whether it is an identity matrix (or the number 1).
    pub identity: bool,
    /// Whether it is a zero matrix (or the number 0).
    pub zero: bool,
}

/// The shape analysis: leaves come from a table built when the IR is
/// translated; everything else is computed from the children.
#[derive(Debug, Default, Clone)]
pub struct Shapes {
    /// Leaves: names and opaque subexpressions.
    pub leaves: HashMap<Symbol, Expr>,
    /// Functions applied elementwise, by their leaf symbol.
    pub funcs: HashMap<Symbol, Func>,
    /// The `vec` order of the session.
    pub order: VecOrder,
    /// The leaf symbol of each opaque subexpression, so that one
    /// subexpression added twice is one leaf.
    symbols: HashMap<Expr, Symbol>,
}

/// The e-graph type used here.
pub type Graph = EGraph<Math, Shapes>;

fn shape_of(egraph: &Graph, enode: &Math) -> Shape {
    let s = |i: &Id| egraph[*i].data.shape.clone();
    match enode {
        Math::Add([a, _]) | Math::Div([a, _]) | Math::Had([a, _]) | Math::HadDiv([a, _]) | Math::HadPow([a, _]) => s(a),
        Math::Scale([_, x]) => s(x),
        Math::App([f, x]) => match &egraph[*f].nodes[0] {
            Math::Leaf(sym) => egraph.analysis.funcs.get(sym).map_or_else(|| s(x), |f| f.shape(&s(x))),
            _ => s(x),
        },
        Math::Mul([a, b]) => Shape::new(s(a).rows, s(b).cols),
        Math::Trans(a) => s(a).transposed(),
        Math::Inv(a) | Math::Pow([a, _]) => s(a),
        Math::Kron([a, b]) => {
            let (a, b) = (s(a), s(b));
            Shape::new(a.rows.mul(&b.rows), a.cols.mul(&b.cols))
        }
        Math::Vec(a) => Shape::new(s(a).len(), Dim::one()),
        Math::Diag(a) => {
            let n = s(a).len();
            Shape::new(n.clone(), n)
        }
        Math::DiagV(a) => Shape::new(s(a).rows, Dim::one()),
        Math::Trace(_) | Math::Det(_) | Math::Logdet(_) | Math::Sum(_) | Math::Norm(_) | Math::Num(_) => {
            Shape::scalar()
        }
        Math::Leaf(sym) => egraph.analysis.leaves.get(sym).map_or_else(Shape::scalar, |e| e.shape.clone()),
    }
}

impl Analysis<Math> for Shapes {
    type Data = Data;

    fn make(egraph: &mut Graph, enode: &Math, _id: Id) -> Data {
        let shape = shape_of(egraph, enode);
        let n = |i: &Id| egraph[*i].data.num.clone();
        let num = match enode {
            Math::Num(r) => Some(r.0.clone()),
            Math::Add([a, b]) => n(a).zip(n(b)).map(|(x, y)| x + y),
            Math::Mul([a, b]) | Math::Scale([a, b]) => n(a).zip(n(b)).map(|(x, y)| x * y),
            Math::Div([a, b]) => n(a).zip(n(b)).filter(|(_, y)| !y.is_zero()).map(|(x, y)| x / y),
            _ => None,
        };
        let leaf = match enode {
            Math::Leaf(sym) => egraph.analysis.leaves.get(sym).map(|e| e.op.clone()),
            _ => None,
        };
        Data {
            identity: num.as_ref().is_some_and(One::is_one) || matches!(leaf, Some(Op::Identity)),
            zero: num.as_ref().is_some_and(Zero::is_zero) || matches!(leaf, Some(Op::Zero)),
            num,
            shape,
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut changed = false;
        if a.num.is_none() && b.num.is_some() {
            a.num = b.num;
            changed = true;
        }
        if !a.identity && b.identity {
            a.identity = true;
            changed = true;
        }
        if !a.zero && b.zero {
            a.zero = true;
            changed = true;
        }
        DidMerge(changed, true)
    }

    fn modify(egraph: &mut Graph, id: Id) {
        if let Some(r) = egraph[id].data.num.clone() {
            let c = egraph.add(Math::Num(Rat(r)));
            egraph.union(id, c);
        }
    }
}

/// Floating-point work and memory, estimated from shapes.
pub struct Flops<'a> {
    egraph: &'a Graph,
}

pub use crate::cost::SYMBOLIC_SIZE;

impl<'a> Flops<'a> {
    /// A cost function over this e-graph.
    pub fn new(egraph: &'a Graph) -> Flops<'a> {
        Flops { egraph }
    }

    /// The function an `app` node applies.
    fn func(&self, f: &Id) -> Option<&Func> {
        match &self.egraph[*f].nodes[0] {
            Math::Leaf(sym) => self.egraph.analysis.funcs.get(sym),
            _ => None,
        }
    }

    fn own(&self, enode: &Math) -> f64 {
        use crate::cost::{operation, Operation as O};
        let s = |i: &Id| &self.egraph[*i].data.shape;
        match enode {
            Math::Leaf(_) | Math::Num(_) => operation(O::Leaf, &[]),
            Math::Trans(_) | Math::Vec(_) => operation(O::View, &[]),
            Math::Mul([a, b]) => operation(O::Product, &[s(a), s(b)]),
            Math::Add([a, _]) | Math::Had([a, _]) | Math::HadDiv([a, _]) | Math::HadPow([a, _]) => {
                operation(O::Elementwise, &[s(a)])
            }
            Math::Scale([_, x]) | Math::Div([x, _]) | Math::Sum(x) | Math::Norm(x) => operation(O::Reduce, &[s(x)]),
            Math::App([f, x]) => match self.func(f) {
                Some(f) => operation(O::Apply(f), &[s(x)]),
                None => operation(O::Apply(&Func::User("".into(), 0)), &[s(x)]),
            },
            Math::Inv(a) | Math::Det(a) | Math::Logdet(a) => operation(O::Factor, &[s(a)]),
            Math::Pow([a, _]) => operation(O::Power, &[s(a)]),
            Math::Kron([a, b]) => operation(O::Kron, &[s(a), s(b)]),
            Math::Diag(a) => operation(O::DiagMat, &[s(a)]),
            Math::DiagV(a) | Math::Trace(a) => operation(O::Diagonal, &[s(a)]),
        }
    }
}

impl CostFunction<Math> for Flops<'_> {
    type Cost = f64;
    fn cost<C>(&mut self, enode: &Math, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let own = self.own(enode);
        enode.fold(own, |acc, id| acc + costs(id))
    }
}

/// The cost [`Flops`] gives `e` as it stands (counted on the IR, as the
/// e-graph would count the same term: the same [`crate::cost::operation`]
/// per node, with the leaves the e-graph adds for exponents and functions).
pub fn cost(e: &Expr, order: VecOrder) -> f64 {
    use crate::cost::{operation, Operation as O};
    let kids = |e: &Expr| e.op.children().iter().map(|c| cost(c, order)).sum::<f64>();
    let leaf = operation(O::Leaf, &[]);
    let own = match &e.op {
        Op::Add(ts) => operation(O::Elementwise, &[&e.shape]) * (ts.len() as f64 - 1.0),
        Op::MatMul(a, b) => operation(O::Product, &[&a.shape, &b.shape]),
        Op::Scale(_, x) | Op::Div(x, _) | Op::Sum(x) | Op::Norm(x) => operation(O::Reduce, &[&x.shape]),
        Op::Hadamard(a, _) | Op::HadamardDiv(a, _) => operation(O::Elementwise, &[&a.shape]),
        Op::HadamardPow(a, _) => leaf + operation(O::Elementwise, &[&a.shape]),
        Op::Apply(f, x) => leaf + operation(O::Apply(f), &[&x.shape]),
        Op::Inverse(a) | Op::Det(a) | Op::Logdet(a) => operation(O::Factor, &[&a.shape]),
        Op::Power(a, _) => leaf + operation(O::Power, &[&a.shape]),
        Op::Kron(a, b) => operation(O::Kron, &[&a.shape, &b.shape]),
        Op::DiagMat(a) => operation(O::DiagMat, &[&a.shape]),
        Op::DiagVec(a) | Op::Trace(a) => operation(O::Diagonal, &[&a.shape]),
        Op::Transpose(_) => operation(O::View, &[]),
        Op::Vec(_, o) if *o == order => operation(O::View, &[]),
        // Leaves, and what the e-graph keeps opaque.
        _ => return leaf,
    };
    kids(e) + own
}

/// Limits on one saturation run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most e-nodes.
    pub nodes: usize,
    /// Most iterations.
    pub iterations: usize,
    /// Most time.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { nodes: 20_000, iterations: 12, time: Duration::from_millis(150) }
    }
}

/// The outcome of a simplification.
#[derive(Debug, Clone)]
pub struct Simplified {
    /// The cheapest equal expression found.
    pub expr: Expr,
    /// Its estimated cost, and the input's.
    pub cost: (f64, f64),
    /// Why saturation stopped (`Saturated`, or the limit that was hit).
    pub stop: String,
}

struct ToEgg<'a> {
    rec: RecExpr<Math>,
    memo: HashMap<Expr, Id>,
    analysis: &'a mut Shapes,
}

impl ToEgg<'_> {
    fn leaf(&mut self, e: &Expr) -> Id {
        let sym = match &e.op {
            Op::Var { name, .. } => Symbol::from(&**name),
            _ => match self.analysis.symbols.get(e) {
                Some(s) => *s,
                None => {
                    let s = Symbol::from(format!("#{}", self.analysis.leaves.len()));
                    self.analysis.symbols.insert(e.clone(), s);
                    s
                }
            },
        };
        self.analysis.leaves.insert(sym, e.clone());
        self.rec.add(Math::Leaf(sym))
    }

    fn go(&mut self, e: &Expr) -> Id {
        if let Some(id) = self.memo.get(e) {
            return *id;
        }
        let order = self.analysis.order;
        let mut k = |x: &Expr| self.go(x);
        let node = match &e.op {
            Op::Num(r) => Some(Math::Num(Rat(r.clone()))),
            Op::Add(ts) => {
                let mut acc = k(&ts[0]);
                for t in &ts[1..] {
                    let b = self.go(t);
                    acc = self.rec.add(Math::Add([acc, b]));
                }
                self.memo.insert(e.clone(), acc);
                return acc;
            }
            Op::Scale(s, x) => Some(Math::Scale([k(s), k(x)])),
            Op::MatMul(a, b) => Some(Math::Mul([k(a), k(b)])),
            Op::Div(a, s) => Some(Math::Div([k(a), k(s)])),
            Op::Transpose(x) => Some(Math::Trans(k(x))),
            Op::Inverse(x) => Some(Math::Inv(k(x))),
            Op::Power(x, p) => {
                let x = k(x);
                let p = self.rec.add(Math::Num(Rat(ir::rat(*p))));
                Some(Math::Pow([x, p]))
            }
            Op::Hadamard(a, b) => Some(Math::Had([k(a), k(b)])),
            Op::HadamardDiv(a, b) => Some(Math::HadDiv([k(a), k(b)])),
            Op::HadamardPow(x, p) => {
                let x = k(x);
                let p = self.rec.add(Math::Num(Rat(p.clone())));
                Some(Math::HadPow([x, p]))
            }
            Op::Kron(a, b) => Some(Math::Kron([k(a), k(b)])),
            Op::Vec(x, o) if *o == order => Some(Math::Vec(k(x))),
            Op::DiagMat(x) => Some(Math::Diag(k(x))),
            Op::DiagVec(x) => Some(Math::DiagV(k(x))),
            Op::Trace(x) => Some(Math::Trace(k(x))),
            Op::Det(x) => Some(Math::Det(k(x))),
            Op::Logdet(x) => Some(Math::Logdet(k(x))),
            Op::Sum(x) => Some(Math::Sum(k(x))),
            Op::Norm(x) => Some(Math::Norm(k(x))),
            Op::Apply(f, x) => {
                let x = k(x);
                let sym = Symbol::from(format!("@{}", f.name(true)));
                self.analysis.funcs.insert(sym, f.clone());
                let fid = self.rec.add(Math::Leaf(sym));
                Some(Math::App([fid, x]))
            }
            _ => None,
        };
        let id = match node {
            Some(n) => self.rec.add(n),
            None => self.leaf(e),
        };
        self.memo.insert(e.clone(), id);
        id
    }
}

fn from_egg(rec: &RecExpr<Math>, analysis: &Shapes) -> Option<Expr> {
    from_egg_all(rec, analysis)?.pop()
}

/// The expression of every node of `rec`, in order.
fn from_egg_all(rec: &RecExpr<Math>, analysis: &Shapes) -> Option<Vec<Expr>> {
    let mut built: Vec<Expr> = Vec::with_capacity(rec.len());
    for node in rec.as_ref() {
        let c = |i: &Id| built[usize::from(*i)].clone();
        let int = |i: &Id| c(i).as_num().and_then(|r| r.to_integer().to_i64());
        let e = match node {
            Math::Add([a, b]) => ir::add(c(a), c(b)),
            Math::Mul([a, b]) => ir::matmul(c(a), c(b)),
            Math::Scale([s, x]) => ir::scalar_mul(c(s), c(x)),
            Math::Div([a, s]) => ir::div(c(a), c(s)),
            Math::Trans(a) => ir::transpose(c(a)),
            Math::Inv(a) => ir::inverse(c(a)),
            Math::Pow([a, p]) => ir::power(c(a), int(p)?),
            Math::Had([a, b]) => ir::hadamard(c(a), c(b)),
            Math::HadDiv([a, b]) => ir::hadamard_div(c(a), c(b)),
            Math::HadPow([a, p]) => ir::hadamard_pow(c(a), c(p).as_num()?.clone()),
            Math::Kron([a, b]) => ir::kron(c(a), c(b)),
            Math::Vec(a) => ir::vec(c(a), analysis.order),
            Math::Diag(a) => ir::diag_mat(c(a)),
            Math::DiagV(a) => ir::diag_vec(c(a)),
            Math::Trace(a) => ir::trace(c(a)),
            Math::Det(a) => ir::det(c(a)),
            Math::Logdet(a) => ir::logdet(c(a)),
            Math::Sum(a) => ir::sum(c(a)),
            Math::Norm(a) => ir::norm(c(a)),
            Math::App([f, x]) => {
                let Math::Leaf(sym) = &rec[*f] else { return None };
                ir::apply(analysis.funcs.get(sym)?.clone(), c(x))
            }
            Math::Num(r) => ir::num(r.0.clone()),
            // A function symbol stands alone only as the first child of `app`.
            Math::Leaf(sym) => analysis.leaves.get(sym).cloned().unwrap_or_else(|| ir::int(0)),
        };
        built.push(e);
    }
    Some(built)
}

thread_local! {
    static RULES: std::rc::Rc<Vec<egg::Rewrite<Math, Shapes>>> = std::rc::Rc::new(rules::all());
}

/// Simplifies `e` by equality saturation within `limits` and extracts the
/// cheapest equal expression (never costlier than `e` itself).
///
/// ```
/// use matdiff::{egraph, ir, shape::{Dim, Shape}};
/// let n = Dim::sym("n");
/// let a = ir::var("a", Shape::new(n.clone(), Dim::one()), false);
/// let b = ir::var("b", Shape::new(n, Dim::one()), false);
/// let e = ir::matmul(ir::diag_mat(a), b);
/// let s = egraph::simplify(&e, ir::VecOrder::Row, egraph::Limits::default());
/// assert_eq!(matdiff::print::text(&s.expr), "a ∘ b");
/// ```
pub fn simplify(e: &Expr, order: VecOrder, limits: Limits) -> Simplified {
    simplify_in(e, order, limits, &Known::default())
}

fn to_rec(e: &Expr, analysis: &mut Shapes) -> RecExpr<Math> {
    let mut t = ToEgg { rec: RecExpr::default(), memo: HashMap::new(), analysis };
    t.go(e);
    t.rec
}

/// [`simplify`] with what the session knows of its names: each region of
/// elementwise algebra is added with its form from [`elementwise`], and a
/// subexpression equal to a definition's body is made equal to the name,
/// which costs nothing, so the answer reads in the user's names.
pub fn simplify_in(e: &Expr, order: VecOrder, limits: Limits, known: &Known) -> Simplified {
    let mut egraph = Graph::new(Shapes { order, ..Shapes::default() });
    let rec = to_rec(e, &mut egraph.analysis);
    let root = egraph.add_expr(&rec);
    add_regions(&mut egraph, e, known);
    let before = cost(e, order);
    let mut runner = Runner::<Math, Shapes>::new(Shapes::default())
        .with_node_limit(limits.nodes)
        .with_iter_limit(limits.iterations)
        .with_time_limit(limits.time)
        .with_egraph(egraph);
    runner.roots.push(root);
    let runner = runner.run(RULES.with(|r| r.clone()).iter());
    let stop = format!("{:?}", runner.stop_reason.as_ref().map_or("none".into(), |r| format!("{r:?}")));
    let mut egraph = runner.egraph;
    fold_definitions(&mut egraph, e, root, known);
    let mut best = extract(&egraph, root);
    // The cheapest form may have put together regions of elementwise
    // algebra that the input did not have: their written forms are added
    // too, and the extraction made once more (the rules are not run again,
    // so the limits hold).
    if let Some((_, rec)) = &best {
        if add_extracted_regions(&mut egraph, rec, known) {
            best = extract(&egraph, root);
        }
    }
    match best.and_then(|(after, rec)| Some((after, from_egg(&rec, &egraph.analysis)?))) {
        Some((after, x)) if after < before && x.shape == e.shape => Simplified { expr: x, cost: (after, before), stop },
        _ => Simplified { expr: e.clone(), cost: (before, before), stop },
    }
}

/// The cheapest term of the root's e-class, with its cost.
fn extract(egraph: &Graph, root: Id) -> Option<(f64, RecExpr<Math>)> {
    let root = egraph.find(root);
    Some(Extractor::new(egraph, Flops::new(egraph)).find_best(root))
}

/// [`add_regions`] for an extracted term: the regions of its expression,
/// each made equal to the e-class it was extracted from (the expression's
/// constructors may have rearranged it).
fn add_extracted_regions(egraph: &mut Graph, rec: &RecExpr<Math>, known: &Known) -> bool {
    let Some(built) = from_egg_all(rec, &egraph.analysis) else { return false };
    let mut class: HashMap<Expr, Id> = HashMap::new();
    let mut ids: Vec<Id> = Vec::with_capacity(rec.len());
    for (i, node) in rec.as_ref().iter().enumerate() {
        let Some(id) = egraph.lookup(node.clone().map_children(|c| ids[usize::from(c)])) else { return false };
        ids.push(id);
        class.entry(built[i].clone()).or_insert(id);
    }
    let Some(top) = built.last() else { return false };
    let mut new = false;
    let order = egraph.analysis.order;
    for (region, written) in elementwise::regions(top, known) {
        let Some(&a) = class.get(&region) else { continue };
        if cost(&written, order) >= cost(&region, order) {
            continue;
        }
        let b = to_rec(&written, &mut egraph.analysis);
        let b = egraph.add_expr(&b);
        new |= egraph.union(a, b);
    }
    egraph.rebuild();
    new
}

/// Adds each region of elementwise algebra in `e` with its written form,
/// as equal; whether any was new.
fn add_regions(egraph: &mut Graph, e: &Expr, known: &Known) -> bool {
    let mut new = false;
    for (region, written) in elementwise::regions(e, known) {
        let a = to_rec(&region, &mut egraph.analysis);
        let b = to_rec(&written, &mut egraph.analysis);
        let (a, b) = (egraph.add_expr(&a), egraph.add_expr(&b));
        new |= egraph.union(a, b);
    }
    egraph.rebuild();
    new
}

/// Makes each definition whose body (or its elementwise form) is in the
/// e-graph equal to its name; a derivative defined as a value is not made
/// equal to the whole answer (`∂f/∂x = 2 x`, not `∂f/∂x = g`). Only
/// definitions whose names all occur in `e` can be there.
fn fold_definitions(egraph: &mut Graph, e: &Expr, root: Id, known: &Known) {
    if known.definitions.is_empty() {
        return;
    }
    let mut names = Vec::new();
    e.var_names(&mut names);
    let present: std::collections::HashSet<&str> = names.iter().map(|n| &**n).collect();
    let mut changed = false;
    for i in known.candidates(&present) {
        let (name, body) = &known.definitions[i];
        let forms = std::iter::once(body.clone()).chain(known.written(name));
        for form in forms {
            let rec = to_rec(&form, &mut egraph.analysis);
            if let Some(id) = egraph.lookup_expr(&rec) {
                if known.derived.contains(name) && egraph.find(id) == egraph.find(root) {
                    continue;
                }
                let leaf = ir::var(name, body.shape.clone(), false);
                let sym = Symbol::from(&**name);
                egraph.analysis.leaves.insert(sym, leaf);
                let n = egraph.add(Math::Leaf(sym));
                egraph.union(id, n);
                changed = true;
            }
        }
    }
    if changed {
        egraph.rebuild();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Session;

    /// [`cost`] on the IR agrees with [`Flops`] on the same term in an e-graph.
    #[test]
    fn cost_of_the_input_matches_the_extractor() {
        let mut s = Session::default();
        let answers = s
            .answers(
                "A, B: n x n; x: n; W: n x m; f: R -> R
                 simplify(A B x + diag(x) x)
                 simplify(tr(A ⊗ B) + det(A^3) + logdet(A) + sum(f(W) .^ 2) + ‖x‖)
                 simplify(vec(A)ᵀ vec(B) / 2 + xᵀ inv(A) x)",
            )
            .unwrap();
        for a in answers {
            let e = a.function;
            let mut analysis = Shapes { order: VecOrder::Row, ..Shapes::default() };
            let rec = {
                let mut t = ToEgg { rec: RecExpr::default(), memo: HashMap::new(), analysis: &mut analysis };
                t.go(&e);
                t.rec
            };
            let mut g = Graph::new(analysis);
            let root = g.add_expr(&rec);
            g.rebuild();
            let tree = Extractor::new(&g, Flops::new(&g)).find_best_cost(root);
            assert!(
                (tree - cost(&e, VecOrder::Row)).abs() <= 1e-9 * tree,
                "{}: {tree} vs {}",
                crate::print::text(&e),
                cost(&e, VecOrder::Row)
            );
        }
    }
}
