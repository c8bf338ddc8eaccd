//! Backward programs: reverse mode through the definitions, with the
//! adjoint of each definition named once (`δd2 = 2(n2 - y) ∘ f2'(d2)`).
//!
//! A definition used twice (a residual connection, a layer norm's centred
//! input) would otherwise copy its users' adjoints into both uses, and the
//! written gradient would double with every such layer. Named, every adjoint
//! is written once, so a program's size is linear in the number of
//! definitions. A query then keeps the adjoints it uses more than once and
//! writes the others inline, so a plain chain still reads as one formula
//! (`2 n0ᵀ (((n2 - y) ∘ f2'(d2)) W2ᵀ ∘ f1'(d1))`).

use crate::ir::{self, Expr, Name, Op};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The most expression nodes an answer written without adjoint names may
/// have. Writing every adjoint inline repeats an adjoint once per use, so
/// through residual connections the size doubles with every layer.
pub const MAX_INLINE_NODES: u64 = 1 << 20;

/// Named adjoints in the order computed: `(δu, value)`.
pub type Adjoints = Vec<(Name, Expr)>;

/// The result of one reverse sweep.
#[derive(Debug, Clone, Default)]
pub struct Program {
    /// `δu = …` for the definitions passed, in the order computed: each
    /// mentions only adjoints before it.
    pub adjoints: Vec<(Name, Expr)>,
    /// The gradient by every name reached: for a definition, its adjoint's
    /// name (or the adjoint itself when it is a bare name or number).
    pub grads: BTreeMap<Name, Expr>,
    /// The definitions passed, whose gradients are their adjoints.
    pub passed: HashSet<Name>,
    /// The definition each adjoint is the adjoint of (`δd2` of `d2`).
    pub of: std::rc::Rc<HashMap<Name, Name>>,
    /// Whether each adjoint is used more than once in the whole program,
    /// and so keeps its name.
    shared: Vec<bool>,
    /// Each adjoint with the adjoints used once written inline: the one
    /// value a shared adjoint has in every answer that names it.
    settled: Vec<Expr>,
    /// `settled`, each simplified on its own (see [`Program::simplify_settled`]).
    simple: Option<Vec<Expr>>,
}

/// The most nodes an answer is simplified as a whole: a larger one (a deep
/// chain written inline) is put together from adjoints simplified one by one.
pub const WHOLE_SIMPLIFY_NODES: usize = 400;

/// Whether `e`, as a tree, has more than `limit` nodes.
pub fn larger_than(e: &Expr, limit: usize) -> bool {
    let mut n = 0usize;
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        n += 1;
        if n > limit {
            return true;
        }
        stack.extend(x.op.children());
    }
    false
}

/// The adjoint names that occur in `e`, once per occurrence.
fn uses(e: &Expr, index: &HashMap<Name, usize>, out: &mut Vec<usize>) {
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match &x.op {
            Op::Var { name, .. } => out.extend(index.get(name).copied()),
            op => stack.extend(op.children()),
        }
    }
}

/// A part of a program written for some of its results (`roots`).
#[derive(Debug, Clone, Default)]
pub struct Slice {
    /// The adjoints kept by name, in the order computed.
    pub adjoints: Vec<(Name, Expr)>,
    /// The roots, in those names.
    pub roots: Vec<Expr>,
}

impl Program {
    fn index(&self) -> HashMap<Name, usize> {
        self.adjoints.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect()
    }

    /// `e` with the adjoints for which `inline` holds written out, their
    /// values taken from `body`. Only what is finally written is tidied
    /// ([`tidied`]): tidying every partial result would visit a chain of
    /// inlined adjoints once per link.
    fn substitute(
        &self,
        e: &Expr,
        index: &HashMap<Name, usize>,
        inline: &dyn Fn(usize) -> bool,
        body: &[Expr],
    ) -> Expr {
        ir::map_bottom_up_shared(e, &mut |n| match &n.op {
            Op::Var { name, .. } => match index.get(name) {
                Some(&j) if inline(j) => body[j].clone(),
                _ => n,
            },
            _ => n,
        })
    }

    /// Decides which adjoints keep their names (those used more than once
    /// in the whole program) and writes each with the others inline.
    pub fn settle(&mut self) {
        let index = self.index();
        let mut count = vec![0usize; self.adjoints.len()];
        let mut found = Vec::new();
        let leaves = self.grads.iter().filter(|(n, _)| !self.passed.contains(*n)).map(|(_, g)| g);
        for e in self.adjoints.iter().map(|(_, b)| b).chain(leaves) {
            uses(e, &index, &mut found);
        }
        for j in found {
            count[j] += 1;
        }
        self.shared = count.iter().map(|&c| c > 1).collect();
        let mut settled: Vec<Expr> = Vec::with_capacity(self.adjoints.len());
        for (_, b) in &self.adjoints {
            let v = self.substitute(b, &index, &|j| !self.shared[j], &settled);
            settled.push(v);
        }
        for (i, v) in settled.iter_mut().enumerate() {
            if self.shared[i] {
                *v = tidied(v);
            }
        }
        self.settled = settled;
    }

    /// The adjoints `roots` need, by name, and `roots` in their names: the
    /// shared adjoints of the program (see [`Program::settle`]), except that
    /// one used once, by a root, is written into it. So a plain chain reads
    /// as one formula and every named adjoint has the same value in every
    /// answer of the program.
    /// With `simplified`, from the adjoints simplified one by one (after
    /// [`Program::simplify_settled`]).
    pub fn written(&self, roots: &[Expr], simplified: bool) -> Slice {
        let index = self.index();
        let settled = if simplified { self.simple.as_ref().unwrap_or(&self.settled) } else { &self.settled };
        let mut roots: Vec<Expr> =
            roots.iter().map(|r| self.substitute(r, &index, &|j| !self.shared[j], settled)).collect();
        let n = self.adjoints.len();
        // How often each shared adjoint is used in the roots' closure, and by the roots themselves.
        let mut count = vec![0usize; n];
        let mut in_root = vec![0usize; n];
        let mut needed = vec![false; n];
        let mut found = Vec::new();
        for r in &roots {
            uses(r, &index, &mut found);
        }
        for &j in &found {
            count[j] += 1;
            in_root[j] += 1;
            needed[j] = true;
        }
        for i in (0..n).rev() {
            if !needed[i] {
                continue;
            }
            let mut found = Vec::new();
            uses(&settled[i], &index, &mut found);
            for j in found {
                count[j] += 1;
                needed[j] = true;
            }
        }
        // From the last computed, write into root each adjoint only root uses, once.
        let mut inline = vec![false; n];
        for i in (0..n).rev() {
            if needed[i] && count[i] == 1 && in_root[i] == 1 {
                inline[i] = true;
                let mut found = Vec::new();
                uses(&settled[i], &index, &mut found);
                for j in found {
                    in_root[j] += 1;
                }
            }
        }
        if inline.iter().any(|&b| b) {
            // Substituting in order, each inline adjoint already holds the ones it uses.
            let mut body = settled.clone();
            for i in 0..n {
                if inline[i] {
                    body[i] = self.substitute(&settled[i], &index, &|j| inline[j], &body);
                }
            }
            roots = roots.iter().map(|r| self.substitute(r, &index, &|j| inline[j], &body)).collect();
        }
        let adjoints = (0..n)
            .filter(|&i| needed[i] && !inline[i])
            .map(|i| (self.adjoints[i].0.clone(), settled[i].clone()))
            .collect();
        let roots = roots.iter().map(tidied).collect();
        Slice { adjoints, roots }
    }

    /// Simplifies every settled adjoint on its own with `f`, once; answers
    /// written after it are put together from those forms.
    pub fn simplify_settled(&mut self, f: &mut dyn FnMut(&Expr) -> Expr) {
        if self.simple.is_none() {
            self.simple = Some(self.settled.iter().map(f).collect());
        }
    }

    /// `roots` with every adjoint written out. `Err` carries the number of
    /// nodes that would take, when it passes [`MAX_INLINE_NODES`].
    pub fn inline_all(&self, roots: &[Expr]) -> Result<Vec<Expr>, u64> {
        let index = self.index();
        let mut size = vec![0u64; self.adjoints.len()];
        let node_count = |e: &Expr, size: &[u64]| -> u64 {
            let mut n = 0u64;
            let mut stack = vec![e];
            while let Some(x) = stack.pop() {
                match &x.op {
                    Op::Var { name, .. } if index.contains_key(name) => n = n.saturating_add(size[index[name]]),
                    op => {
                        n = n.saturating_add(1);
                        stack.extend(op.children());
                    }
                }
            }
            n
        };
        let mut body: Vec<Expr> = Vec::with_capacity(self.adjoints.len());
        for (i, (_, b)) in self.adjoints.iter().enumerate() {
            size[i] = node_count(b, &size);
            if size[i] > MAX_INLINE_NODES {
                return Err(size[i]);
            }
            let v = self.substitute(b, &index, &|_| true, &body);
            body.push(v);
        }
        let total = roots.iter().fold(0u64, |t, r| t.saturating_add(node_count(r, &size)));
        if total > MAX_INLINE_NODES {
            return Err(total);
        }
        Ok(roots.iter().map(|r| tidied(&self.substitute(r, &index, &|_| true, &body))).collect())
    }
}

fn tidied(e: &Expr) -> Expr {
    crate::simplify::tidy(e)
}

/// Which of a list of adjoints (in the order computed, each using only
/// earlier ones) an expression uses, directly or through other adjoints.
pub struct Closure<'a> {
    adjoints: &'a [(Name, Expr)],
    index: HashMap<Name, usize>,
    /// The adjoints each adjoint's value uses directly.
    deps: Vec<Vec<usize>>,
}

impl<'a> Closure<'a> {
    /// Reads each adjoint's value once.
    pub fn new(adjoints: &'a [(Name, Expr)]) -> Closure<'a> {
        let index: HashMap<Name, usize> = adjoints.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect();
        let deps = adjoints
            .iter()
            .map(|(_, b)| {
                let mut found = Vec::new();
                uses(b, &index, &mut found);
                found
            })
            .collect();
        Closure { adjoints, index, deps }
    }

    /// The adjoints `root` uses, in the order computed.
    pub fn of(&self, root: &Expr) -> Adjoints {
        let mut needed = vec![false; self.adjoints.len()];
        let mut stack = Vec::new();
        uses(root, &self.index, &mut stack);
        while let Some(i) = stack.pop() {
            if !needed[i] {
                needed[i] = true;
                stack.extend(&self.deps[i]);
            }
        }
        self.adjoints.iter().zip(needed).filter(|(_, n)| *n).map(|(a, _)| a.clone()).collect()
    }
}

/// A name for the adjoint of `u` that no name in `taken` has: `δu`, else
/// `δu_2`, `δu_3`, ….
pub fn adjoint_name(u: &str, taken: &dyn Fn(&str) -> bool) -> String {
    fresh(format!("δ{u}"), taken)
}

/// `base`, else the first of `base_2`, `base_3`, … that `taken` refuses.
pub fn fresh(base: String, taken: &dyn Fn(&str) -> bool) -> String {
    let mut name = base.clone();
    let mut k = 2;
    while taken(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    name
}

/// Whether an adjoint is as short as its name, so is never named.
pub fn is_atomic(e: &Expr) -> bool {
    match &e.op {
        Op::Var { .. } | Op::Num(_) | Op::Zero | Op::Ones | Op::Identity | Op::Size(_) => true,
        Op::Transpose(x) => is_atomic(x),
        _ => false,
    }
}

/// The names in `adjoints`, for a renaming or a check.
pub fn names(adjoints: &[(Name, Expr)]) -> HashSet<Name> {
    adjoints.iter().map(|(n, _)| n.clone()).collect()
}
