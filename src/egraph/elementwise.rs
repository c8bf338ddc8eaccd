//! Elementwise algebra: a region of `+`, `∘`, `./`, `.^ k` and 1×1 scales
//! read as a polynomial (with negative exponents) in its operands, expanded,
//! cancelled, collected and written back, factored by what every term shares.
//!
//! The operands of a region (its *atoms*) are the subexpressions that are not
//! elementwise algebra: names, products, function applications. Entries of
//! matrices of one shape under `+` and `∘` form a commutative ring, and a 1×1
//! atom multiplies every entry, so this is exact. The written form is added
//! to the e-graph as an equal form of the region ([`super::simplify_in`]);
//! the extractor takes it only when it is cheaper.
//!
//! A factor and its reciprocal cancel (`a ∘ (1 ./ a) = 1`) only when `a` is
//! known to be nonzero everywhere ([`Known::sign`]): a positive number, the
//! ones matrix, a size, `exp`, `σ`, `softplus` and `softmax` of anything,
//! `sqrt` of something positive, `1 - σ(z)`, and sums, products (`∘`, scales,
//! matrix products, `./`), powers, transposes and `sum` of positive things;
//! a name counts as its definition. Otherwise the region is left alone.
//!
//! Termination: the algebra is one structural pass over the region (no
//! rewriting to a fixpoint); an expansion that would exceed [`MAX_TERMS`]
//! terms, or an exponent over [`MAX_EXPONENT`], gives up on the region.

use crate::functions::{EXP, SIGMOID, SOFTMAX, SOFTPLUS, SQRT};
use crate::ir::{self, BigRational, Expr, Func, Name, Op};
use crate::shape::Shape;
use num_traits::{One, Signed, ToPrimitive, Zero};
use std::collections::{BTreeMap, HashMap};

/// The most terms an expanded region may have.
pub const MAX_TERMS: usize = 48;
/// The largest exponent of one atom in a term.
pub const MAX_EXPONENT: i64 = 8;
/// The most nodes of a region read (shared subexpressions count each time
/// they are met, so a deeply shared region is given up, not unfolded).
pub const MAX_NODES: usize = 2_000;

/// What the session knows of its names: their definitions (for folding a
/// subexpression into the name that holds it, and for signs).
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Each definition, in the order defined.
    pub definitions: Vec<(Name, Expr)>,
    /// The names whose values are derivatives (`g = ∂f/∂x`): a whole answer
    /// equal to one is written out, not folded into the name.
    pub derived: std::collections::HashSet<Name>,
    by_name: HashMap<Name, usize>,
    /// Signs found so far.
    signs: std::cell::RefCell<HashMap<Expr, Sign>>,
    /// Definitions written by elementwise algebra, once each.
    written: std::cell::RefCell<HashMap<Name, Option<Expr>>>,
    /// The names each definition's body uses, and the definitions by the
    /// first name their body uses; made when first needed.
    uses: std::cell::OnceCell<Uses>,
}

/// The names each definition uses, and the definitions by their first name.
type Uses = (Vec<Vec<Name>>, HashMap<Name, Vec<usize>>);

/// What is known of the sign of every entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Every entry is positive.
    Positive,
    /// Every entry lies strictly between 0 and 1.
    Unit,
    /// Nothing is known.
    Unknown,
}

impl Known {
    /// Knowledge of the given definitions.
    pub fn new(definitions: Vec<(Name, Expr)>) -> Known {
        let by_name = definitions.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect();
        Known {
            definitions,
            derived: Default::default(),
            by_name,
            signs: Default::default(),
            written: Default::default(),
            uses: Default::default(),
        }
    }

    /// The same knowledge, with the names whose values are derivatives.
    pub fn with_derived(mut self, derived: std::collections::HashSet<Name>) -> Known {
        self.derived = derived;
        self
    }

    /// The definitions (by index, in the order defined) whose bodies use
    /// names only from `present` and are not a bare name: those whose body
    /// can occur in an expression over those names.
    pub fn candidates(&self, present: &std::collections::HashSet<&str>) -> Vec<usize> {
        let (uses, by_first) = self.uses.get_or_init(|| {
            let uses: Vec<Vec<Name>> = self
                .definitions
                .iter()
                .map(|(_, b)| {
                    let mut u = Vec::new();
                    if !matches!(b.op, Op::Var { .. }) {
                        b.var_names(&mut u);
                    }
                    u
                })
                .collect();
            let mut by_first: HashMap<Name, Vec<usize>> = HashMap::new();
            for (i, u) in uses.iter().enumerate() {
                if let Some(first) = u.first() {
                    by_first.entry(first.clone()).or_default().push(i);
                }
            }
            (uses, by_first)
        });
        let mut out: Vec<usize> = present
            .iter()
            .filter_map(|p| by_first.get(*p))
            .flatten()
            .copied()
            .filter(|&i| uses[i].iter().all(|n| present.contains(&**n)))
            .collect();
        out.sort_unstable();
        out
    }

    /// A definition's body written by elementwise algebra ([`normalise`]),
    /// when that differs from the body.
    pub fn written(&self, name: &str) -> Option<Expr> {
        if let Some(w) = self.written.borrow().get(name) {
            return w.clone();
        }
        let w = self.definition(name).and_then(|b| normalise(b, self));
        self.written.borrow_mut().insert(name.into(), w.clone());
        w
    }

    /// The definition of a name.
    pub fn definition(&self, name: &str) -> Option<&Expr> {
        self.by_name.get(name).map(|&i| &self.definitions[i].1)
    }

    /// What is known of the sign of `e`'s entries (see the module docs).
    pub fn sign(&self, e: &Expr) -> Sign {
        self.sign_at(e, 0)
    }

    fn sign_at(&self, e: &Expr, depth: usize) -> Sign {
        use Sign::*;
        if depth > 64 {
            return Unknown;
        }
        if let Some(s) = self.signs.borrow().get(e) {
            return *s;
        }
        let s = |x: &Expr| self.sign_at(x, depth + 1);
        let known = |x: Sign| x != Unknown;
        let sign = match &e.op {
            Op::Num(r) if r.is_positive() && *r < BigRational::one() => Unit,
            Op::Num(r) if r.is_positive() => Positive,
            Op::Ones | Op::Size(_) => Positive,
            Op::Var { name, .. } => self.definition(name).map_or(Unknown, &s),
            Op::Apply(f, x) => match f {
                Func::Builtin(b) if std::ptr::eq(*b, &SIGMOID) => Unit,
                Func::Builtin(b) if std::ptr::eq(*b, &EXP) || std::ptr::eq(*b, &SOFTPLUS) => Positive,
                Func::Builtin(b) if std::ptr::eq(*b, &SOFTMAX) => Positive,
                Func::Builtin(b) if std::ptr::eq(*b, &SQRT) && known(s(x)) => Positive,
                _ => Unknown,
            },
            Op::Add(ts) => {
                let one = |t: &Expr| t.is_identity() || matches!(t.op, Op::Ones);
                match &ts[..] {
                    // 1 - u with u strictly between 0 and 1.
                    [a, b] if one(a) && b.split_coef().0 == -BigRational::one() && s(&b.split_coef().1) == Unit => Unit,
                    _ if ts.iter().all(|t| known(s(t))) => Positive,
                    _ => Unknown,
                }
            }
            Op::Hadamard(a, b) | Op::Scale(a, b) | Op::MatMul(a, b) | Op::HadamardDiv(a, b) | Op::Div(a, b) => {
                match (s(a), s(b)) {
                    (Unit, Unit) if matches!(e.op, Op::Hadamard(..) | Op::Scale(..)) => Unit,
                    (x, y) if known(x) && known(y) => Positive,
                    _ => Unknown,
                }
            }
            Op::Power(x, _) if !x.shape.is_scalar() => Unknown,
            Op::HadamardPow(x, _) | Op::Transpose(x) | Op::Sum(x) | Op::Power(x, _) if known(s(x)) => Positive,
            _ => Unknown,
        };
        self.signs.borrow_mut().insert(e.clone(), sign);
        sign
    }
}

/// A term: each atom's exponent (never 0).
type Mono = BTreeMap<usize, i64>;
/// A sum of terms with their coefficients (never 0).
type Poly = BTreeMap<Mono, BigRational>;

fn constant(c: BigRational) -> Poly {
    let mut p = Poly::new();
    if !c.is_zero() {
        p.insert(Mono::new(), c);
    }
    p
}

/// The algebra of one region: its atoms, numbered in the order met.
struct Region<'k> {
    known: &'k Known,
    /// The shape of the region's value.
    shape: Shape,
    atoms: Vec<Expr>,
    index: HashMap<Expr, usize>,
    /// Atoms that stand for sums, with the sum they stand for.
    sums: HashMap<usize, Poly>,
    /// Nodes read so far (see [`MAX_NODES`]).
    read: usize,
}

/// Gives up on a region.
struct GiveUp;

type R<T> = Result<T, GiveUp>;

impl Region<'_> {
    fn atom(&mut self, e: &Expr) -> usize {
        if let Some(&i) = self.index.get(e) {
            return i;
        }
        self.atoms.push(e.clone());
        self.index.insert(e.clone(), self.atoms.len() - 1);
        self.atoms.len() - 1
    }

    fn nonzero(&self, atom: usize) -> bool {
        if let Some(p) = self.sums.get(&atom) {
            return self.poly_nonzero(p);
        }
        self.known.sign(&self.atoms[atom]) != Sign::Unknown
    }

    /// Whether a sum is nonzero everywhere: all its terms positive (or all
    /// negative), or `c (1 - u)` with `u` strictly between 0 and 1.
    fn poly_nonzero(&self, p: &Poly) -> bool {
        let positive_mono = |m: &Mono| m.keys().all(|&a| self.atoms_sign(a) != Sign::Unknown);
        let all = |neg: bool| p.iter().all(|(m, c)| c.is_negative() == neg && positive_mono(m));
        if all(false) || all(true) {
            return true;
        }
        if p.len() == 2 {
            let mut it = p.iter();
            let (m0, c0) = it.next().expect("two terms");
            let (m1, c1) = it.next().expect("two terms");
            if m0.is_empty() && *c1 == -c0 && m1.len() == 1 {
                let (&a, &k) = m1.iter().next().expect("one atom");
                return k == 1 && self.atoms_sign(a) == Sign::Unit;
            }
        }
        false
    }

    fn atoms_sign(&self, a: usize) -> Sign {
        if self.sums.contains_key(&a) {
            return Sign::Unknown;
        }
        self.known.sign(&self.atoms[a])
    }

    fn mul_mono(&self, a: &Mono, b: &Mono) -> R<Mono> {
        let mut m = a.clone();
        for (&atom, &k) in b {
            let e = m.entry(atom).or_insert(0);
            let before = *e;
            *e += k;
            if e.abs() > MAX_EXPONENT {
                return Err(GiveUp);
            }
            if *e == 0 {
                // A factor met its reciprocal.
                if before != 0 && !self.nonzero(atom) {
                    return Err(GiveUp);
                }
                m.remove(&atom);
            }
        }
        Ok(m)
    }

    fn mul(&self, a: &Poly, b: &Poly) -> R<Poly> {
        let mut out = Poly::new();
        for (ma, ca) in a {
            for (mb, cb) in b {
                let m = self.mul_mono(ma, mb)?;
                let c = out.entry(m).or_insert_with(BigRational::zero);
                *c += ca * cb;
            }
        }
        out.retain(|_, c| !c.is_zero());
        if out.len() > MAX_TERMS {
            return Err(GiveUp);
        }
        Ok(out)
    }

    fn add(a: &mut Poly, b: Poly, sign: &BigRational) {
        for (m, c) in b {
            let e = a.entry(m).or_insert_with(BigRational::zero);
            *e += c * sign;
        }
        a.retain(|_, c| !c.is_zero());
    }

    /// An atom standing for a sum, scaled so its first coefficient is 1:
    /// the coefficient and the atom.
    fn sum_atom(&mut self, p: Poly) -> (BigRational, usize) {
        let lead = p.values().next().cloned().unwrap_or_else(BigRational::one);
        let p: Poly = p.into_iter().map(|(m, c)| (m, c / &lead)).collect();
        let e = self.write(&p);
        let a = self.atom(&e);
        self.sums.insert(a, p);
        (lead, a)
    }

    /// Whether `e` is part of the region (rather than an atom of it).
    fn inside(&self, e: &Expr) -> bool {
        if e.shape != self.shape && !e.shape.is_scalar() {
            return false;
        }
        match &e.op {
            Op::Num(_) | Op::Ones | Op::Zero | Op::Add(_) | Op::Hadamard(..) | Op::HadamardDiv(..) | Op::Div(..) => {
                true
            }
            Op::Scale(..) => true,
            Op::HadamardPow(_, k) => k.is_integer() && k.abs() <= BigRational::from_integer(MAX_EXPONENT.into()),
            Op::MatMul(a, b) => a.shape.is_scalar() && b.shape.is_scalar(),
            Op::Power(a, k) => a.shape.is_scalar() && k.abs() <= MAX_EXPONENT,
            _ => false,
        }
    }

    /// Counts a node read; gives up past [`MAX_NODES`].
    fn read(&mut self) -> R<()> {
        self.read += 1;
        if self.read > MAX_NODES {
            return Err(GiveUp);
        }
        Ok(())
    }

    /// The factors of a product, with their exponents.
    fn factors(&mut self, e: &Expr, k: i64, out: &mut Vec<(Expr, i64)>) -> R<()> {
        self.read()?;
        if !self.inside(e) || k.abs() > MAX_EXPONENT {
            out.push((e.clone(), k));
            return Ok(());
        }
        match &e.op {
            Op::Hadamard(a, b) | Op::Scale(a, b) | Op::MatMul(a, b) => {
                self.factors(a, k, out)?;
                self.factors(b, k, out)
            }
            Op::HadamardDiv(a, b) | Op::Div(a, b) => {
                self.factors(a, k, out)?;
                self.factors(b, -k, out)
            }
            Op::HadamardPow(a, p) => {
                let p = p.to_integer().to_i64().unwrap_or(1);
                self.factors(a, k * p, out)
            }
            Op::Power(a, p) => self.factors(a, k * p, out),
            _ => {
                out.push((e.clone(), k));
                Ok(())
            }
        }
    }

    /// `e` as a polynomial in the region's atoms.
    fn poly(&mut self, e: &Expr) -> R<Poly> {
        self.read()?;
        if !self.inside(e) {
            return Ok(BTreeMap::from([(BTreeMap::from([(self.atom(e), 1)]), BigRational::one())]));
        }
        match &e.op {
            Op::Num(r) => Ok(constant(r.clone())),
            Op::Ones => Ok(constant(BigRational::one())),
            Op::Zero => Ok(Poly::new()),
            Op::Add(ts) => {
                let mut p = Poly::new();
                for t in ts {
                    let q = self.poly(t)?;
                    Self::add(&mut p, q, &BigRational::one());
                }
                if p.len() > MAX_TERMS {
                    return Err(GiveUp);
                }
                Ok(p)
            }
            _ => {
                let mut fs = Vec::new();
                self.factors(e, 1, &mut fs)?;
                self.product(fs)
            }
        }
    }

    /// A product of factors: fractions are expanded first, so that a
    /// polynomial factor can cancel a denominator; polynomial factors are
    /// multiplied as atoms and expanded once every cancellation is made.
    fn product(&mut self, fs: Vec<(Expr, i64)>) -> R<Poly> {
        let mut acc = constant(BigRational::one());
        let mut later: Vec<(Poly, i64)> = Vec::new();
        for (f, k) in fs {
            let p = self.poly(&f)?;
            if p.is_empty() {
                if k < 0 {
                    return Err(GiveUp);
                }
                return Ok(Poly::new());
            }
            if p.len() == 1 {
                let (m, c) = p.into_iter().next().expect("one term");
                let m: Mono = m.into_iter().map(|(a, e)| (a, e * k)).collect();
                if m.values().any(|e| e.abs() > MAX_EXPONENT) {
                    return Err(GiveUp);
                }
                let c = num_traits::pow::Pow::pow(&c, k as i32);
                acc = self.mul(&acc, &BTreeMap::from([(m, c)]))?;
            } else if k > 0 && p.keys().any(|m| m.values().any(|&e| e < 0)) {
                for _ in 0..k {
                    acc = self.mul(&acc, &p)?;
                }
            } else {
                later.push((p, k));
            }
        }
        for (p, k) in later {
            let (c, a) = self.sum_atom(p);
            let c = num_traits::pow::Pow::pow(&c, k as i32);
            acc = self.mul(&acc, &BTreeMap::from([(BTreeMap::from([(a, k)]), c)]))?;
        }
        Ok(acc)
    }

    /// The region's polynomial with its sums multiplied out where that does
    /// not make more terms (something cancelled or combined across the
    /// region): all of them at once, or else each one that does not on its
    /// own. A sum not multiplied out stays a factor, as a textbook leaves
    /// it. Sums are expanded latest first, so one met inside another is
    /// expanded after it.
    fn settle(&self, p: Poly) -> Poly {
        let mut sums: Vec<usize> = self.sums.keys().copied().collect();
        sums.sort_unstable_by(|a, b| b.cmp(a));
        let all = sums.iter().try_fold(p.clone(), |q, &a| self.expand(&q, a));
        if let Ok(out) = all {
            if out.len() <= p.len() {
                return out;
            }
        }
        let mut p = p;
        for a in sums {
            if let Ok(out) = self.expand(&p, a) {
                if out.len() <= p.len() {
                    p = out;
                }
            }
        }
        p
    }

    /// `p` with the sum that atom `a` stands for multiplied out wherever
    /// `a` has a positive power.
    fn expand(&self, p: &Poly, a: usize) -> R<Poly> {
        let sum = &self.sums[&a];
        let mut out = Poly::new();
        for (m, c) in p {
            let mut m = m.clone();
            let k = match m.get(&a) {
                Some(&k) if k > 0 => {
                    m.remove(&a);
                    k
                }
                _ => 0,
            };
            let mut term = BTreeMap::from([(m, c.clone())]);
            for _ in 0..k {
                term = self.mul(&term, sum)?;
            }
            Self::add(&mut out, term, &BigRational::one());
        }
        if out.len() > MAX_TERMS {
            return Err(GiveUp);
        }
        Ok(out)
    }

    // ---- writing back ----------------------------------------------------------

    /// A term: the number in front, or in the numerator of a 1×1 fraction.
    fn write_term(&self, m: &Mono, c: &BigRational, shape: &Shape) -> Expr {
        let mut num: Option<Expr> = None;
        let mut den: Option<Expr> = None;
        let mut snum: Option<Expr> = None;
        let mut sden: Option<Expr> = None;
        for (&a, &k) in m {
            let x = &self.atoms[a];
            let scalar = x.shape.is_scalar();
            let p = if scalar { ir::power(x.clone(), k.abs()) } else { ir::hadamard_pow(x.clone(), ir::rat(k.abs())) };
            let slot = match (scalar, k > 0) {
                (false, true) => &mut num,
                (false, false) => &mut den,
                (true, true) => &mut snum,
                (true, false) => &mut sden,
            };
            *slot = Some(match slot.take() {
                None => p,
                Some(q) if scalar => ir::matmul(q, p),
                Some(q) => ir::hadamard(q, p),
            });
        }
        let base = match (num, den) {
            (Some(n), None) => Some(n),
            (Some(n), Some(d)) => Some(ir::hadamard_div(n, d)),
            (None, Some(d)) => Some(ir::hadamard_div(ir::ones(shape.clone()), d)),
            (None, None) => None,
        };
        // The 1×1 factor: `(2 / (xᵀ x))`, `r / q`, `λ`.
        let (s, c) = match (snum, sden) {
            (n, Some(d)) if !c.is_negative() => (
                Some(ir::div(ir::scalar_mul(ir::num(c.clone()), n.unwrap_or_else(|| ir::int(1))), d)),
                BigRational::one(),
            ),
            (n, Some(d)) => (
                Some(ir::div(ir::scalar_mul(ir::num(-c.clone()), n.unwrap_or_else(|| ir::int(1))), d)),
                -BigRational::one(),
            ),
            (n, None) => (n, c.clone()),
        };
        let out = match (s, base) {
            (Some(s), Some(b)) => ir::scalar_mul(s, b),
            (Some(s), None) if shape.is_scalar() => s,
            (Some(s), None) => ir::scalar_mul(s, ir::ones(shape.clone())),
            (None, Some(b)) => b,
            (None, None) => ir::ones(shape.clone()),
        };
        ir::scale(c, out)
    }

    /// The expression of a polynomial: what every term shares (a common
    /// factor, a common number) written once in front, positive terms first.
    fn write(&self, p: &Poly) -> Expr {
        let scalar = p.keys().all(|m| m.keys().all(|&a| self.atoms[a].shape.is_scalar()));
        let shape = if scalar { Shape::scalar() } else { self.shape.clone() };
        self.write_shaped(p, &shape)
    }

    fn write_shaped(&self, p: &Poly, shape: &Shape) -> Expr {
        if p.is_empty() {
            return ir::zero(shape.clone());
        }
        if p.len() == 1 {
            let (m, c) = p.iter().next().expect("one term");
            return self.write_term(m, c, shape);
        }
        // The common factor: each atom to its least power over the terms,
        // when it occurs in all of them with one sign.
        let mut common = p.keys().next().expect("a term").clone();
        for m in p.keys() {
            common.retain(|a, k| match m.get(a) {
                Some(j) if j.signum() == k.signum() => {
                    *k = if k.abs() < j.abs() { *k } else { *j };
                    true
                }
                _ => false,
            });
        }
        // A common number: all coefficients of one size.
        let first = p.values().next().expect("a term").abs();
        let number = if p.values().all(|c| c.abs() == first) { first } else { BigRational::one() };
        let mut terms: Vec<(&Mono, BigRational)> = p.iter().map(|(m, c)| (m, c / &number)).collect();
        // Positive terms first, otherwise in the order met.
        terms.sort_by_key(|(_, c)| c.is_negative());
        let inner = ir::sum_of(
            terms
                .iter()
                .map(|(m, c)| {
                    let rest: Mono = m
                        .iter()
                        .filter_map(|(a, k)| {
                            let j = k - common.get(a).copied().unwrap_or(0);
                            (j != 0).then_some((*a, j))
                        })
                        .collect();
                    self.write_term(&rest, c, shape)
                })
                .collect(),
        );
        if common.is_empty() {
            return ir::scale(number, inner);
        }
        let shared = self.write_term(&common, &number, &Shape::scalar());
        if common.keys().all(|&a| self.atoms[a].shape.is_scalar()) {
            ir::scalar_mul(shared, inner)
        } else {
            ir::scale(number, ir::hadamard(self.write_term(&common, &BigRational::one(), shape), inner))
        }
    }
}

/// Whether `e` is a region worth reading as a polynomial: elementwise
/// algebra with a product, quotient or power in it.
fn nonlinear(e: &Expr) -> bool {
    // Each node once: regions may share subexpressions deeply.
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![e.clone()];
    while let Some(x) = stack.pop() {
        if !seen.insert(x.clone()) || seen.len() > MAX_NODES {
            continue;
        }
        match &x.op {
            Op::Hadamard(..) | Op::HadamardDiv(..) | Op::HadamardPow(..) | Op::Div(..) => return true,
            Op::Power(y, _) if y.shape.is_scalar() => return true,
            Op::Add(ts) => stack.extend(ts.iter().cloned()),
            Op::Scale(a, b) => stack.extend([a.clone(), b.clone()]),
            _ => {}
        }
    }
    false
}

/// `e` written by elementwise algebra (see the module docs), or `None` when
/// that gives nothing new or the region is out of bounds.
pub fn normalise(e: &Expr, known: &Known) -> Option<Expr> {
    if !nonlinear(e) {
        return None;
    }
    let mut region = Region {
        known,
        shape: e.shape.clone(),
        atoms: Vec::new(),
        index: HashMap::new(),
        sums: HashMap::new(),
        read: 0,
    };
    if !region.inside(e) {
        return None;
    }
    let p = region.poly(e).ok()?;
    let p = region.settle(p);
    let out = region.write_shaped(&p, &e.shape);
    (out != *e && out.shape == e.shape).then_some(out)
}

/// Every maximal region of `e` with its written form, each once.
pub fn regions(e: &Expr, known: &Known) -> Vec<(Expr, Expr)> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(e.clone(), false)];
    while let Some((x, in_region)) = stack.pop() {
        if !seen.insert((x.clone(), in_region)) {
            continue;
        }
        let algebra = matches!(
            x.op,
            Op::Add(_) | Op::Hadamard(..) | Op::HadamardDiv(..) | Op::HadamardPow(..) | Op::Scale(..) | Op::Div(..)
        );
        if algebra && !in_region {
            if let Some(y) = normalise(&x, known) {
                out.push((x.clone(), y));
            }
        }
        for c in x.op.children() {
            stack.push((c.clone(), algebra && c.shape == x.shape));
        }
    }
    out
}
