//! Sizes and shapes, with symbolic sizes.
//!
//! A size is a monomial: a positive integer times symbols (`n`, `2n`, `n·m`),
//! because the only operations on sizes are products (`⊗`, `vec`). Distinct
//! symbols are distinct sizes. Inference variables (`?0`) stand for sizes not
//! yet known, such as the size of a bare `I`; [`Unifier`] solves for them.

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// The largest size a declaration, `I_n` or `ones(m, n)` may give.
pub const MAX_SIZE: u64 = 1_000_000;

/// The largest known size an expression may have along one side (a
/// Kronecker product or `vec` multiplies sizes); past it a script is refused.
pub const MAX_DERIVED_SIZE: u64 = 1 << 40;

/// A factor of a size: a user's symbol or an inference variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Atom {
    /// A symbolic size from a declaration, such as `n`.
    Sym(Rc<str>),
    /// An unknown size to be inferred.
    Var(u32),
}

/// A size: `coef · atoms` (atoms sorted, with repetition).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    coef: u64,
    atoms: Vec<Atom>,
}

impl Dim {
    /// The size 1.
    pub fn one() -> Dim {
        Dim::num(1)
    }
    /// A known size.
    pub fn num(n: u64) -> Dim {
        Dim { coef: n, atoms: vec![] }
    }
    /// A symbolic size.
    pub fn sym(s: &str) -> Dim {
        Dim { coef: 1, atoms: vec![Atom::Sym(s.into())] }
    }
    pub(crate) fn var(v: u32) -> Dim {
        Dim { coef: 1, atoms: vec![Atom::Var(v)] }
    }
    /// The product of two sizes.
    pub fn mul(&self, other: &Dim) -> Dim {
        let mut atoms: Vec<Atom> = self.atoms.iter().chain(&other.atoms).cloned().collect();
        atoms.sort();
        Dim { coef: self.coef.saturating_mul(other.coef), atoms }
    }
    /// Whether this is the size 1.
    pub fn is_one(&self) -> bool {
        self.coef == 1 && self.atoms.is_empty()
    }
    /// The size as a number, if it has no symbols.
    pub fn as_num(&self) -> Option<u64> {
        self.atoms.is_empty().then_some(self.coef)
    }
    /// An estimate of the size for cost models: symbols count as `big`.
    pub fn estimate(&self, big: f64) -> f64 {
        self.coef as f64 * big.powi(self.atoms.len() as i32)
    }
    /// The numeric coefficient.
    pub fn coef(&self) -> u64 {
        self.coef
    }
    /// The size as the language writes a product of sizes: `2 n`, `n m`.
    pub fn as_product_text(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if self.coef != 1 || self.atoms.is_empty() {
            parts.push(self.coef.to_string());
        }
        parts.extend(self.symbols().map(str::to_string));
        parts.join(" ")
    }
    /// Whether an inference variable remains.
    pub fn has_vars(&self) -> bool {
        self.atoms.iter().any(|a| matches!(a, Atom::Var(_)))
    }
    /// The symbols of this size.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.atoms.iter().filter_map(|a| match a {
            Atom::Sym(s) => Some(&**s),
            Atom::Var(_) => None,
        })
    }
    /// The numeric value, given values for the symbols.
    pub fn eval(&self, sizes: &HashMap<String, usize>) -> Option<usize> {
        let mut v = self.coef as usize;
        for a in &self.atoms {
            match a {
                Atom::Sym(s) => v = v.checked_mul(*sizes.get(&**s)?)?,
                Atom::Var(_) => return None,
            }
        }
        Some(v)
    }
    fn substitute(&self, subst: &HashMap<u32, Dim>) -> Dim {
        let mut out = Dim::num(self.coef);
        for a in &self.atoms {
            match a {
                Atom::Var(v) if subst.contains_key(v) => out = out.mul(&subst[v].substitute(subst)),
                other => out = out.mul(&Dim { coef: 1, atoms: vec![other.clone()] }),
            }
        }
        out
    }
    /// The `k`-th root, when this is a `k`-th power.
    fn root(&self, k: u32) -> Option<Dim> {
        if k == 1 {
            return Some(self.clone());
        }
        let coef = (1..=self.coef).find(|r| r.checked_pow(k) == Some(self.coef))?;
        let mut atoms = Vec::new();
        for chunk in self.atoms.chunk_by(|x, y| x == y) {
            if chunk.len() % k as usize != 0 {
                return None;
            }
            atoms.extend(chunk.iter().take(chunk.len() / k as usize).cloned());
        }
        Some(Dim { coef, atoms })
    }
    /// `self / other` when it divides exactly.
    fn div(&self, other: &Dim) -> Option<Dim> {
        if other.coef == 0 || !self.coef.is_multiple_of(other.coef) {
            return None;
        }
        let mut atoms = self.atoms.clone();
        for a in &other.atoms {
            let i = atoms.iter().position(|b| b == a)?;
            atoms.remove(i);
        }
        Some(Dim { coef: self.coef / other.coef, atoms })
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.coef != 1 || self.atoms.is_empty() {
            write!(f, "{}", self.coef)?;
        }
        for (i, a) in self.atoms.iter().enumerate() {
            if i > 0 {
                write!(f, "·")?;
            }
            match a {
                Atom::Sym(s) => write!(f, "{s}")?,
                Atom::Var(_) => write!(f, "?")?,
            }
        }
        Ok(())
    }
}

/// Rows by columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape {
    /// Number of rows.
    pub rows: Dim,
    /// Number of columns.
    pub cols: Dim,
}

impl Shape {
    /// A shape from its sizes.
    pub fn new(rows: Dim, cols: Dim) -> Shape {
        Shape { rows, cols }
    }
    /// 1×1.
    pub fn scalar() -> Shape {
        Shape::new(Dim::one(), Dim::one())
    }
    /// Whether it is 1×1.
    pub fn is_scalar(&self) -> bool {
        self.rows.is_one() && self.cols.is_one()
    }
    /// Whether it is a row or column vector (1×1 included).
    pub fn is_vector(&self) -> bool {
        self.rows.is_one() || self.cols.is_one()
    }
    /// Whether rows and columns agree.
    pub fn is_square(&self) -> bool {
        self.rows == self.cols
    }
    /// Columns by rows.
    pub fn transposed(&self) -> Shape {
        Shape::new(self.cols.clone(), self.rows.clone())
    }
    /// The number of entries.
    pub fn len(&self) -> Dim {
        self.rows.mul(&self.cols)
    }
    /// Text form with a chosen separator (`×` or `x`).
    pub fn display(&self, ascii: bool) -> String {
        let rows = self.rows.to_string();
        let cols = self.cols.to_string();
        let sep = if ascii { " x " } else { "×" };
        let wrap = |s: String| {
            if s.contains('·') {
                format!("({s})")
            } else {
                s
            }
        };
        format!("{}{sep}{}", wrap(rows), wrap(cols))
    }
    pub(crate) fn substitute(&self, subst: &HashMap<u32, Dim>) -> Shape {
        Shape::new(self.rows.substitute(subst), self.cols.substitute(subst))
    }
    pub(crate) fn has_vars(&self) -> bool {
        self.rows.has_vars() || self.cols.has_vars()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display(false))
    }
}

/// Solves for inference variables by unification of sizes.
#[derive(Debug, Default)]
pub struct Unifier {
    next: u32,
    subst: HashMap<u32, Dim>,
    pending: Vec<(Dim, Dim)>,
}

impl Unifier {
    /// A fresh unknown size.
    pub fn fresh(&mut self) -> Dim {
        self.next += 1;
        Dim::var(self.next)
    }
    /// The size with every solved variable replaced.
    pub fn resolve(&self, d: &Dim) -> Dim {
        d.substitute(&self.subst)
    }
    /// The shape with every solved variable replaced.
    pub fn resolve_shape(&self, s: &Shape) -> Shape {
        s.substitute(&self.subst)
    }
    /// Whether any variable has been introduced.
    pub fn is_empty(&self) -> bool {
        self.next == 0
    }
    /// Makes two sizes equal, solving a variable if one side is `c·?v`.
    /// Returns `false` when they cannot be equal.
    pub fn unify(&mut self, a: &Dim, b: &Dim) -> bool {
        let (a, b) = (self.resolve(a), self.resolve(b));
        if a == b {
            return true;
        }
        if self.solve(&a, &b) || self.solve(&b, &a) {
            return true;
        }
        if a.has_vars() || b.has_vars() {
            self.pending.push((a, b));
            return true;
        }
        false
    }
    /// Retries the equations that could not be solved when they were met.
    /// Returns `false` if one of them turns out to be false.
    pub fn finish(&mut self) -> bool {
        loop {
            let pending = std::mem::take(&mut self.pending);
            let before = pending.len();
            for (a, b) in pending {
                if !self.unify(&a, &b) {
                    return false;
                }
            }
            if self.pending.is_empty() || self.pending.len() == before {
                return true;
            }
        }
    }
    /// Solves `a = b` when `a` has one variable, `k` times (`?ᵏ · rest`),
    /// and `b / rest` is a `k`-th power (the size of a bare `I` from
    /// `vec(I)`, which has `?²` entries, is a square root).
    fn solve(&mut self, a: &Dim, b: &Dim) -> bool {
        let vars: Vec<u32> = a
            .atoms
            .iter()
            .filter_map(|x| match x {
                Atom::Var(v) => Some(*v),
                _ => None,
            })
            .collect();
        if vars.is_empty() || vars.iter().any(|v| *v != vars[0]) || b.has_vars() {
            return false;
        }
        let rest = Dim { coef: a.coef, atoms: a.atoms.iter().filter(|x| **x != Atom::Var(vars[0])).cloned().collect() };
        match b.div(&rest).and_then(|q| q.root(vars.len() as u32)) {
            Some(r) => {
                self.subst.insert(vars[0], r);
                true
            }
            None => false,
        }
    }
}
