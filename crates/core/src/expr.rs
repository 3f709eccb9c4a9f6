//! Conditions: `when` on a step and `repeat.until` on a loop, written in CEL
//! (the Common Expression Language, the `cel` crate). CEL always ends — it
//! has no loops or recursion of its own — and it is what Hatchet and
//! Inngest users already write.
//!
//! An expression sees `input` (the workflow's input) and `steps` (each step
//! by id: `output`, `status`, `iteration`); `until` also sees `output` (the
//! iteration's output) and `iteration`. Each evaluation's result is
//! recorded in the log (`condition.evaluated`), so a replay never evaluates
//! again and a later version of this crate cannot change history.
//!
//! # What an evaluation may cost
//!
//! `cel` has no evaluation budget, and an expression of at most
//! [`MAX_LEN`] characters runs over outputs of up to 16 MiB, inside the
//! workflow actor. Its cost is bounded in two steps:
//!
//! - **Its shape, when the definition is validated** ([`validate`], and again
//!   before each evaluation): a comprehension (`all`, `exists`,
//!   `exists_one`, `map`, `filter`) may not hold another in its body, which
//!   would make it O(n^k) over a list of n items (one may still run over
//!   another's result: `xs.filter(x, x.ok).map(x, x.id)`); at most
//!   [`MAX_COMPREHENSIONS`] comprehensions and [`MAX_ADDS`] `+` operators;
//!   `matches` takes a pattern written in the expression, never one read
//!   from an output.
//! - **Its cost over the values it is given, before [`evaluate`] runs it**:
//!   an upper bound of the work, in units of about one byte read or copied
//!   (a node evaluated counts [`NODE_COST`]), from the sizes of the values it reads (each
//!   `steps.ID.output.field` path is measured, not the whole of `steps`).
//!   Over [`MAX_COST`], the expression is not run and has no value (the
//!   error is recorded). Every operation `cel` 0.15 offers here is linear in
//!   its operands (`==`, `in`, `size`, `contains`, `startsWith`, `+`, list
//!   and map literals, which copy what they hold); what multiplies is a
//!   comprehension's body run once per item (`xs.exists(x, big.contains(x))`
//!   is n × |big|) and a chain of `+` that copies what it has built at each
//!   step (`s + s + s …` over a 16 MiB `s`), both of which the bound counts.
//!
//! The bound is coarse but safe: it counts each item of a list or map at
//! least once and every value at its whole size. Not counted: turning the
//! JSON values into CEL values (linear in their size, and paid whatever the
//! expression), and the regular expression engine's own worst case (the
//! `regex` crate searches in time linear in the text, times the size of the
//! compiled pattern, which a pattern of at most [`MAX_LEN`] characters keeps
//! small in practice and which `regex` caps at 10 MiB).

use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use serde_json::Value;

use crate::definition::StepId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("is not a valid expression: {0}")]
    Syntax(String),
    #[error("uses `{0}`, which is not defined here (it may use {1})")]
    UnknownVariable(String, String),
    #[error("is longer than {max} characters", max = MAX_LEN)]
    TooLong,
    #[error(
        "nests `{inner}` inside `{outer}`: comprehensions may not be nested \
         (their cost would multiply: n items each way)"
    )]
    NestedComprehension {
        outer: &'static str,
        inner: &'static str,
    },
    #[error("has more than {max} comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`)", max = MAX_COMPREHENSIONS)]
    TooManyComprehensions,
    #[error("has more than {max} `+` operators", max = MAX_ADDS)]
    TooManyAdds,
    #[error(
        "gives `matches` a pattern that is not a string literal: write the pattern in the expression"
    )]
    PatternNotLiteral,
}

pub const MAX_LEN: usize = 2048;

/// Comprehensions in one expression: each is linear in its list (they may
/// not nest), so the cap only keeps the sum of them small. Conditions
/// written so far use one; `a.all(..) && b.exists(..)` uses two.
pub const MAX_COMPREHENSIONS: usize = 8;

/// `+` operators in one expression (those written; not the ones `map` and
/// `filter` expand to). Arithmetic such as `score + 20` or
/// `input.a + input.b` needs a few; a chain of k over strings or lists of
/// size S copies S·k(k+3)/2 bytes as it grows (the cost bound below counts
/// it), so 16 is plenty and keeps that at most 152·S.
pub const MAX_ADDS: usize = 16;

/// The most work an evaluation may do, in the units of the bound above
/// (a byte read or copied; a node evaluated is [`NODE_COST`] of them):
/// 2^29: about half a second measured in a release build (0.7 to 2 ns a
/// unit on a loaded machine), converting the values read aside. It lets a
/// condition read a 16 MiB output whole several times over (`size`,
/// `contains`, `==`, a few `+`), or run a comprehension with a small body
/// over a list of a few hundred thousand items; it refuses a comprehension whose
/// body reads another large value, one over a list of millions of
/// items, or a long chain of `+` over large values.
pub const MAX_COST: u64 = 1 << 29;

/// Checks `source` compiles and uses only `allowed` variables; returns the
/// step ids it names (`steps.ID`).
pub fn validate(source: &str, allowed: &[&str]) -> Result<Vec<StepId>, ExprError> {
    if source.len() > MAX_LEN {
        return Err(ExprError::TooLong);
    }
    let program = compile(source)?;
    check_shape(program.expression())?;
    let mut free = Vec::new();
    free_variables(program.expression(), &mut Vec::new(), &mut free);
    if let Some(v) = free.into_iter().find(|v| !allowed.contains(v)) {
        let names: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
        return Err(ExprError::UnknownVariable(v.to_owned(), names.join(", ")));
    }
    Ok(step_ids(source))
}

fn compile(source: &str) -> Result<cel::Program, ExprError> {
    // The parser reports a panic of its own as an error; never trust input
    // to keep it from unwinding through here.
    std::panic::catch_unwind(|| cel::Program::compile(source))
        .map_err(|_| ExprError::Syntax("the expression could not be parsed".into()))?
        .map_err(|e| ExprError::Syntax(e.to_string().lines().next().unwrap_or("").to_owned()))
}

/// The step ids named as `steps.ID` (or `steps["ID"]`) in `source`.
fn step_ids(source: &str) -> Vec<StepId> {
    let mut ids = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("steps") {
        let before_ok = source.len() - rest.len() == 0 || {
            let prev = source.as_bytes()[source.len() - rest.len() + at - 1];
            !(prev.is_ascii_alphanumeric() || prev == b'_' || prev == b'.')
        };
        let after = &rest[at + 5..];
        rest = after;
        if !before_ok {
            continue;
        }
        let name = if let Some(a) = after.strip_prefix('.') {
            a.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")
        } else if let Some(a) = after
            .strip_prefix("[\"")
            .or_else(|| after.strip_prefix("['"))
        {
            a.split(['"', '\'']).next().unwrap_or("")
        } else {
            continue;
        };
        if let Ok(id) = StepId::parse(name)
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids
}

/// Evaluates `source` with `vars` (name, JSON value): `Ok(bool)`, or why it
/// has no boolean value.
pub fn evaluate(source: &str, vars: &[(&str, &Value)]) -> Result<bool, String> {
    let program = compile(source).map_err(|e| e.to_string())?;
    check_shape(program.expression()).map_err(|e| e.to_string())?;
    let cost = Estimator { vars, item: None }
        .estimate(program.expression())
        .cost
        .k;
    if cost > MAX_COST {
        return Err(format!(
            "was not evaluated: over these values it could cost about {cost} units of work, \
             more than the {MAX_COST} a condition may (a comprehension whose body reads another \
             large value, or `+` over large strings or lists?)"
        ));
    }
    // Only what the expression reads is made a CEL value: a condition
    // reading `steps.score.output.score` does not convert every output.
    let mut read = Vec::new();
    paths_read(program.expression(), &mut read);
    let mut ctx = cel::Context::default();
    for (name, value) in vars {
        let paths: Vec<&[&str]> = read
            .iter()
            .filter(|(root, _)| root == name)
            .map(|(_, p)| p.as_slice())
            .collect();
        ctx.add_variable_from_value(*name, to_cel(&pruned(value, &paths)));
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| program.execute(&ctx))) {
        Ok(Ok(cel::Value::Bool(b))) => Ok(b),
        Ok(Ok(other)) => Err(format!(
            "the expression's value is {:?}, not a boolean",
            other.type_of()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the expression could not be evaluated".into()),
    }
}

/// The `cel` name of the macro a comprehension was expanded from, from the
/// shape each standard macro gives it.
fn macro_name(c: &ComprehensionExpr) -> &'static str {
    match &c.accu_init.expr {
        Expr::Literal(LiteralValue::Boolean(b)) if *b.inner() => "all",
        Expr::Literal(LiteralValue::Boolean(_)) => "exists",
        Expr::Literal(LiteralValue::Int(_)) => "exists_one",
        Expr::List(_) => {
            // `filter` appends the item itself, under a condition.
            let appends_item = |e: &IdedExpr| match &e.expr {
                Expr::Call(add) if add.func_name == operators::ADD => {
                    matches!(add.args.get(1).map(|a| &a.expr), Some(Expr::List(l))
                        if matches!(l.elements.as_slice(), [IdedExpr { expr: Expr::Ident(v), .. }] if *v == c.iter_var))
                }
                _ => false,
            };
            match &c.loop_step.expr {
                Expr::Call(cond)
                    if cond.func_name == operators::CONDITIONAL
                        && cond.args.get(1).is_some_and(appends_item) =>
                {
                    "filter"
                }
                _ => "map",
            }
        }
        _ => "a comprehension",
    }
}

/// The direct subexpressions of `e`, the target of a call first.
fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        Expr::Call(call) => call
            .target
            .as_deref()
            .into_iter()
            .chain(&call.args)
            .collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => m.entries.iter().flat_map(|e| entry(&e.expr)).collect(),
        Expr::Struct(s) => s.entries.iter().flat_map(|e| entry(&e.expr)).collect(),
        Expr::Select(s) => vec![&s.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn entry(e: &EntryExpr) -> Vec<&IdedExpr> {
    match e {
        EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
        EntryExpr::StructField(f) => vec![&f.value],
    }
}

/// Whether `call` is the `@result + [..]` (or `@result + 1`) step a macro
/// expanded to, rather than a `+` written in the expression: `@result`
/// cannot be written in CEL.
fn is_accumulation(call: &cel::common::ast::CallExpr) -> bool {
    call.func_name == operators::ADD
        && matches!(call.args.first().map(|a| &a.expr), Some(Expr::Ident(v)) if v.starts_with('@'))
}

/// Refuses the shapes whose cost grows faster than the values they read:
/// see the module's documentation.
fn check_shape(root: &IdedExpr) -> Result<(), ExprError> {
    let (mut adds, mut comprehensions) = (0, 0);
    // (expression, the comprehension whose body it is in)
    let mut stack: Vec<(&IdedExpr, Option<&'static str>)> = vec![(root, None)];
    while let Some((e, inside)) = stack.pop() {
        match &e.expr {
            Expr::Comprehension(c) => {
                let name = macro_name(c);
                if let Some(outer) = inside {
                    return Err(ExprError::NestedComprehension { outer, inner: name });
                }
                comprehensions += 1;
                if comprehensions > MAX_COMPREHENSIONS {
                    return Err(ExprError::TooManyComprehensions);
                }
                stack.push((&c.iter_range, inside));
                for body in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    stack.push((body, Some(name)));
                }
                continue;
            }
            Expr::Call(call) if call.func_name == operators::ADD && !is_accumulation(call) => {
                adds += 1;
                if adds > MAX_ADDS {
                    return Err(ExprError::TooManyAdds);
                }
            }
            Expr::Call(call)
                if call.func_name == "matches"
                    && !matches!(
                        call.args.last().map(|a| &a.expr),
                        Some(Expr::Literal(LiteralValue::String(_)))
                    ) =>
            {
                return Err(ExprError::PatternNotLiteral);
            }
            _ => {}
        }
        stack.extend(children(e).into_iter().map(|c| (c, inside)));
    }
    Ok(())
}

/// `k + x·|item|`: a size or a cost, where `|item|` is the size of the item a
/// comprehension's body is run with (0 outside a body).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Lin {
    k: u64,
    x: u64,
}

impl Lin {
    const fn of(k: u64) -> Self {
        Lin { k, x: 0 }
    }
    const ITEM: Lin = Lin { k: 0, x: 1 };
    const UNBOUNDED: Lin = Lin {
        k: u64::MAX,
        x: u64::MAX,
    };
}

impl std::ops::Add for Lin {
    type Output = Lin;
    fn add(self, o: Lin) -> Lin {
        Lin {
            k: self.k.saturating_add(o.k),
            x: self.x.saturating_add(o.x),
        }
    }
}

/// An upper bound of the size of an expression's value and of the work of
/// evaluating it.
#[derive(Clone, Copy, Debug, Default)]
struct Est {
    size: Lin,
    cost: Lin,
    /// At most how many items it holds, if known better than by its size.
    items: Option<u64>,
}

/// Work per node evaluated (per item, in a comprehension's body), in units
/// of a byte copied: measured, an item of `xs.exists(x, x == 1)` (9 nodes)
/// takes about 450 ns in a release build, 16 MiB copied about 12 ms.
const NODE_COST: u64 = 64;

/// Work per regular expression compiled, per character of its pattern
/// (compiling expands classes and counted repetitions).
const REGEX_COST_PER_CHAR: u64 = 1024;

/// The size of a JSON value in the units of [`MAX_COST`]: a byte of a string
/// or key, 1 for any value (a CEL value holds at least that much).
fn weight(v: &Value) -> u64 {
    match v {
        Value::String(s) => 1 + s.len() as u64,
        Value::Array(a) => a.iter().fold(1, |n, v| n.saturating_add(weight(v))),
        Value::Object(m) => m.iter().fold(1, |n, (k, v)| {
            n.saturating_add(1 + k.len() as u64)
                .saturating_add(weight(v))
        }),
        _ => 1,
    }
}

/// A field or an index, in a path such as `steps.a.output["x"][0]`.
enum Key<'e> {
    Field(&'e str),
    Index(i64),
}

/// `e` as a variable and the path below it, if it is one.
fn path(e: &IdedExpr) -> Option<(&str, Vec<Key<'_>>)> {
    match &e.expr {
        Expr::Ident(name) => Some((name, Vec::new())),
        Expr::Select(s) if !s.test => {
            let (root, mut keys) = path(&s.operand)?;
            keys.push(Key::Field(&s.field));
            Some((root, keys))
        }
        Expr::Call(call) if call.func_name == operators::INDEX && call.target.is_none() => {
            let [of, key] = call.args.as_slice() else {
                return None;
            };
            let (root, mut keys) = path(of)?;
            keys.push(match &key.expr {
                Expr::Literal(LiteralValue::String(s)) => Key::Field(s.inner()),
                Expr::Literal(LiteralValue::Int(i)) => Key::Index(*i.inner()),
                _ => return None,
            });
            Some((root, keys))
        }
        _ => None,
    }
}

/// Bounds an expression's cost over the values of its variables.
struct Estimator<'a> {
    vars: &'a [(&'a str, &'a Value)],
    /// The item and accumulator variables of the comprehension whose body is
    /// being estimated.
    item: Option<[&'a str; 3]>,
}

impl<'a> Estimator<'a> {
    fn estimate(&mut self, e: &'a IdedExpr) -> Est {
        let node = Lin::of(NODE_COST);
        if let Some((root, keys)) = path(e) {
            let mut items = None;
            let size = if let Some(item) = self.item.filter(|i| i.contains(&root)) {
                // The accumulator of `all`/`exists`/`exists_one` is a bool
                // or an int; `map`/`filter` only append to theirs.
                if root == item[2] {
                    Lin::of(1)
                } else {
                    Lin::ITEM
                }
            } else if let Some((_, v)) = self.vars.iter().find(|(n, _)| *n == root) {
                let found = keys.iter().try_fold(*v, |v, key| match (key, v) {
                    (Key::Field(f), Value::Object(m)) => m.get(*f),
                    (Key::Index(i), Value::Array(a)) => {
                        usize::try_from(*i).ok().and_then(|i| a.get(i))
                    }
                    _ => None,
                });
                items = match found {
                    Some(Value::Array(a)) => Some(a.len() as u64),
                    Some(Value::Object(m)) => Some(m.len() as u64),
                    _ => None,
                };
                // A missing field is an error, which holds nothing large.
                Lin::of(found.map_or(1, weight))
            } else {
                Lin::of(1)
            };
            return Est {
                size,
                cost: Lin::of(NODE_COST * (1 + keys.len() as u64)),
                items,
            };
        }
        match &e.expr {
            Expr::Literal(l) => Est {
                size: Lin::of(match l {
                    LiteralValue::String(s) => 1 + s.inner().len() as u64,
                    LiteralValue::Bytes(b) => 1 + b.inner().len() as u64,
                    _ => 1,
                }),
                cost: node,
                ..Est::default()
            },
            Expr::Comprehension(c) => {
                if self.item.is_some() {
                    // Refused by `check_shape`; never run.
                    return Est {
                        size: Lin::UNBOUNDED,
                        cost: Lin::UNBOUNDED,
                        items: None,
                    };
                }
                let range = self.estimate(&c.iter_range);
                self.item = Some([
                    &c.iter_var,
                    c.iter_var2.as_deref().unwrap_or(&c.iter_var),
                    &c.accu_var,
                ]);
                let init = self.estimate(&c.accu_init);
                let body = [&c.loop_cond, &c.loop_step]
                    .map(|b| self.estimate(b))
                    .into_iter()
                    .fold(Est::default(), |a, b| Est {
                        size: a.size + b.size,
                        cost: a.cost + b.cost,
                        items: None,
                    });
                let result = self.estimate(&c.result);
                self.item = None;
                // n items (each of size at least 1), whose sizes add up to at
                // most the range's: a body of `k + x·|item|` costs at most
                // n·k + x·|range| over them all.
                let n = range.items.unwrap_or(range.size.k);
                let over_items = |l: Lin| {
                    l.k.saturating_mul(n)
                        .saturating_add(l.x.saturating_mul(range.size.k))
                };
                Est {
                    // What `map`/`filter` append; n booleans otherwise.
                    size: Lin::of(over_items(body.size).saturating_add(init.size.k)),
                    cost: Lin::of(
                        range
                            .cost
                            .k
                            // each item is copied to its variable
                            .saturating_add(range.size.k)
                            .saturating_add(n.saturating_mul(NODE_COST))
                            .saturating_add(init.cost.k)
                            .saturating_add(over_items(body.cost))
                            .saturating_add(result.cost.k),
                    ),
                    items: Some(n),
                }
            }
            Expr::Call(call) => {
                let parts: Vec<Est> = call
                    .target
                    .as_deref()
                    .into_iter()
                    .chain(&call.args)
                    .map(|a| self.estimate(a))
                    .collect();
                let cost = parts.iter().fold(node, |c, p| c + p.cost);
                let read = parts.iter().fold(Lin::default(), |c, p| c + p.size);
                match call.func_name.as_str() {
                    operators::LOGICAL_AND
                    | operators::LOGICAL_OR
                    | operators::LOGICAL_NOT
                    | operators::NOT_STRICTLY_FALSE => Est {
                        size: Lin::of(1),
                        cost,
                        ..Est::default()
                    },
                    operators::CONDITIONAL => Est {
                        size: parts.iter().skip(1).fold(Lin::default(), |c, p| c + p.size),
                        cost,
                        ..Est::default()
                    },
                    operators::INDEX | operators::OPT_INDEX | operators::OPT_SELECT => Est {
                        size: parts.first().map_or(Lin::of(1), |p| p.size),
                        cost: cost + parts.get(1).map_or(Lin::default(), |p| p.size),
                        ..Est::default()
                    },
                    // `@result + [item]`: appended in place, not copied.
                    operators::ADD if is_accumulation(call) => {
                        let appended = parts.get(1).map_or(Lin::of(1), |p| p.size);
                        Est {
                            size: appended,
                            cost: cost + appended,
                            ..Est::default()
                        }
                    }
                    operators::EQUALS
                    | operators::NOT_EQUALS
                    | operators::LESS
                    | operators::LESS_EQUALS
                    | operators::GREATER
                    | operators::GREATER_EQUALS
                    | operators::IN
                    | "size"
                    | "contains"
                    | "startsWith"
                    | "endsWith" => Est {
                        size: Lin::of(1),
                        cost: cost + read,
                        ..Est::default()
                    },
                    "matches" => Est {
                        size: Lin::of(1),
                        cost: cost
                            + read
                            + Lin::of(
                                parts
                                    .last()
                                    .map_or(0, |p| p.size.k)
                                    .saturating_mul(REGEX_COST_PER_CHAR),
                            ),
                        ..Est::default()
                    },
                    // `+` and any other function: reads its operands and
                    // builds a value no larger than them (a number turned
                    // into a string is a few bytes, which a number's 1 does
                    // not count: it is not what can grow).
                    _ => Est {
                        size: read + Lin::of(1),
                        cost: cost + read + read,
                        items: None,
                    },
                }
            }
            // A literal list or map copies what it holds.
            Expr::List(_) | Expr::Map(_) | Expr::Struct(_) | Expr::Select(_) => {
                let parts: Vec<Est> = children(e).into_iter().map(|c| self.estimate(c)).collect();
                let size = parts.iter().fold(node, |c, p| c + p.size);
                let cost = parts.iter().fold(node, |c, p| c + p.cost);
                match &e.expr {
                    // `has(x.f)`, or a field of a value built here.
                    Expr::Select(s) => Est {
                        size: if s.test { Lin::of(1) } else { size },
                        cost,
                        ..Est::default()
                    },
                    _ => Est {
                        size,
                        cost: cost + size,
                        ..Est::default()
                    },
                }
            }
            Expr::Ident(_) | Expr::Unspecified => Est {
                size: node,
                cost: node,
                ..Est::default()
            },
        }
    }
}

/// The variables `e` uses that none of its comprehensions binds, in order.
/// (`cel`'s own `references` counts a comprehension's variable as one.)
fn free_variables<'e>(e: &'e IdedExpr, bound: &mut Vec<&'e str>, out: &mut Vec<&'e str>) {
    match &e.expr {
        Expr::Ident(name) => {
            if !name.starts_with('@')
                && !bound.contains(&name.as_str())
                && !out.contains(&name.as_str())
            {
                out.push(name);
            }
        }
        Expr::Comprehension(c) => {
            free_variables(&c.iter_range, bound, out);
            free_variables(&c.accu_init, bound, out);
            let depth = bound.len();
            bound.extend([c.iter_var.as_str(), c.accu_var.as_str()]);
            bound.extend(c.iter_var2.as_deref());
            for body in [&c.loop_cond, &c.loop_step, &c.result] {
                free_variables(body, bound, out);
            }
            bound.truncate(depth);
        }
        _ => {
            for child in children(e) {
                free_variables(child, bound, out);
            }
        }
    }
}

/// The variables `e` reads, each with the fields it selects below it
/// (`steps.a.output.x` is `steps`, `[a, output, x]`); a variable read whole
/// (compared, iterated, indexed by a computed key) has no fields. A
/// comprehension's own variables are listed too, which only keeps more.
fn paths_read<'e>(e: &'e IdedExpr, out: &mut Vec<(&'e str, Vec<&'e str>)>) {
    if let Some((root, keys)) = path(e) {
        let fields = keys
            .iter()
            .map_while(|k| match k {
                Key::Field(f) => Some(*f),
                Key::Index(_) => None,
            })
            .collect();
        out.push((root, fields));
        return;
    }
    for child in children(e) {
        paths_read(child, out);
    }
}

/// `v` with only what `paths` select in it: the fields of an object that no
/// path selects are left out, and anything a path ends at is kept whole, so
/// the expression sees the same values (and misses the same fields) as in
/// `v`.
fn pruned(v: &Value, paths: &[&[&str]]) -> Value {
    if paths.is_empty() {
        // Not read at all.
        return Value::Null;
    }
    match v {
        Value::Object(m) if paths.iter().all(|p| !p.is_empty()) => {
            let mut kept = serde_json::Map::new();
            for (k, field) in m {
                let below: Vec<&[&str]> = paths
                    .iter()
                    .filter(|p| p[0] == k)
                    .map(|p| &p[1..])
                    .collect();
                if !below.is_empty() {
                    kept.insert(k.clone(), pruned(field, &below));
                }
            }
            Value::Object(kept)
        }
        _ => v.clone(),
    }
}

/// A JSON value as CEL sees it. Whole numbers are CEL `int`s (CEL does not
/// mix `int` and `uint` in arithmetic, and people write `score + 20`).
fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(s.clone().into()),
        Value::Array(a) => a.iter().map(to_cel).collect::<Vec<_>>().into(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), to_cel(v)))
            .collect::<std::collections::HashMap<_, _>>()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_over_outputs_and_input() {
        let steps = json!({"score": {"output": {"score": 82.5}, "status": "completed"}});
        let input = json!({"min": 70});
        let vars = [("steps", &steps), ("input", &input)];
        assert_eq!(evaluate("steps.score.output.score >= 70", &vars), Ok(true));
        assert_eq!(
            evaluate("steps.score.output.score >= input.min + 20", &vars),
            Ok(false)
        );
        assert!(evaluate("steps.score.output.missing > 1", &vars).is_err());
        assert!(
            evaluate("1 + 1", &vars)
                .unwrap_err()
                .contains("not a boolean")
        );
    }

    #[test]
    fn validation_names_steps_and_refuses_unknown_variables() {
        let ids = validate(
            "steps.a.output.x > 1 && steps['b_2'].output == 'y' || mysteps.c",
            &["steps", "input", "mysteps"],
        )
        .unwrap();
        assert_eq!(
            ids,
            vec![StepId::parse("a").unwrap(), StepId::parse("b_2").unwrap()]
        );
        assert_eq!(
            validate("secret == 1", &["steps", "input"]),
            Err(ExprError::UnknownVariable(
                "secret".into(),
                "`steps`, `input`".into()
            ))
        );
        assert!(matches!(
            validate("steps.a.output >", &["steps"]),
            Err(ExprError::Syntax(_))
        ));
    }

    const ALL: &[&str] = &["steps", "input", "output", "iteration"];

    #[test]
    fn typical_conditions_still_validate_and_evaluate() {
        let steps = json!({
            "score": {"output": {"score": 82}, "status": "completed", "iteration": 1},
            "a": {"output": {"items": [{"ok": false}, {"ok": true}], "list": [1, 2, 3],
                             "text": "hello world"}},
        });
        let input = json!({"min": 2});
        let output = json!({"quality": 9});
        let iteration = json!(2);
        let vars = [
            ("steps", &steps),
            ("input", &input),
            ("output", &output),
            ("iteration", &iteration),
        ];
        for (source, value) in [
            ("steps.score.output.score >= 70 && input.min < 3", true),
            ("output.quality >= 8", true),
            ("steps.a.output.items.exists(i, i.ok)", true),
            ("size(steps.a.output.list) > 2", true),
            ("steps.score.output.score + 20 > 100", true),
            ("steps.a.output.items.all(i, i.ok) || iteration >= 3", false),
            (
                "steps.a.output.list.filter(x, x > input.min).map(x, x * 2) == [6]",
                true,
            ),
            (
                "steps.a.output.list.exists_one(x, x == 2) && has(steps.a.output.text)",
                true,
            ),
            (
                "steps.a.output.text.matches('^h.*d$') && steps.a.output.text.contains('lo w')",
                true,
            ),
            (
                "steps['a'].output.list[0] + steps.a.output.list[1] == 3",
                true,
            ),
        ] {
            validate(source, ALL).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(evaluate(source, &vars), Ok(value), "{source}");
        }
    }

    #[test]
    fn nested_comprehensions_are_refused() {
        let nested = "steps.a.output.xs.map(x, steps.a.output.xs.map(y, \
                      steps.a.output.xs.exists(z, z == x + y)))";
        assert_eq!(
            validate(nested, ALL),
            Err(ExprError::NestedComprehension {
                outer: "map",
                inner: "map"
            })
        );
        for (source, outer, inner) in [
            (
                "input.xs.filter(x, input.ys.all(y, y != x)).size() > 0",
                "filter",
                "all",
            ),
            (
                "input.xs.exists(x, input.ys.filter(y, y == x) == [])",
                "exists",
                "filter",
            ),
            ("input.xs.all(x, x.exists_one(y, y))", "all", "exists_one"),
            (
                "input.xs.map(x, x > 1, [x].exists(y, y))[0]",
                "map",
                "exists",
            ),
        ] {
            assert_eq!(
                validate(source, ALL),
                Err(ExprError::NestedComprehension { outer, inner }),
                "{source}"
            );
        }
        let e = validate(nested, ALL).unwrap_err().to_string();
        assert!(e.contains("nests `map` inside `map`"), "{e}");
        // Chained (one over another's result) is not nested.
        validate(
            "input.xs.filter(x, x.ok).map(x, x.id).exists(i, i == 2)",
            ALL,
        )
        .unwrap();
        // Nor is evaluating a nested one possible.
        let v = json!({"xs": [1, 2]});
        assert!(
            evaluate("input.xs.all(x, input.xs.all(y, true))", &[("input", &v)])
                .unwrap_err()
                .contains("may not be nested")
        );
    }

    #[test]
    fn too_many_adds_or_comprehensions_are_refused() {
        let adds = |n: usize| vec!["input.s"; n + 1].join(" + ") + " == ''";
        validate(&adds(MAX_ADDS), ALL).unwrap();
        assert_eq!(
            validate(&adds(MAX_ADDS + 1), ALL),
            Err(ExprError::TooManyAdds)
        );
        let exists = |n: usize| vec!["input.xs.exists(x, x)"; n].join(" || ");
        validate(&exists(MAX_COMPREHENSIONS), ALL).unwrap();
        assert_eq!(
            validate(&exists(MAX_COMPREHENSIONS + 1), ALL),
            Err(ExprError::TooManyComprehensions)
        );
        // `map` and `filter` expand to `+`s of their own: not counted.
        validate(
            &["input.xs.map(x, x).filter(y, y) == []"; 4].join(" && "),
            ALL,
        )
        .unwrap();
    }

    #[test]
    fn a_pattern_read_from_an_output_is_refused() {
        assert_eq!(
            validate("input.s.matches(steps.a.output.pattern)", ALL),
            Err(ExprError::PatternNotLiteral)
        );
        assert_eq!(
            validate("matches(input.s, input.p)", ALL),
            Err(ExprError::PatternNotLiteral)
        );
        validate("input.s.matches('^[0-9]{3}$')", ALL).unwrap();
    }

    /// Outputs of strings of `bytes` bytes, and a list of `items` zeros.
    fn big(bytes: usize, items: usize) -> Value {
        json!({
            "a": {"output": {"s": "x".repeat(bytes), "xs": vec![0; items]}},
            "b": {"output": {"s": "y".repeat(bytes), "n": 3}},
        })
    }

    fn cost(source: &str, steps: &Value) -> u64 {
        validate(source, ALL).unwrap();
        let p = compile(source).unwrap();
        Estimator {
            vars: &[("steps", steps)],
            item: None,
        }
        .estimate(p.expression())
        .cost
        .k
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_cost_counts_what_multiplies_over_large_values() {
        let steps = big(1 << 20, 1 << 17);
        // Linear: the size of what it reads, a few times over.
        for linear in [
            "size(steps.a.output.s) > 2",
            "steps.a.output.s.contains('needle')",
            "steps.a.output.s + steps.b.output.s == ''",
            "steps.a.output.xs.exists(x, x == 1)",
            "steps.a.output.xs.map(x, x + 1).filter(y, y > steps.b.output.n) == []",
        ] {
            let c = cost(linear, &steps);
            assert!(c < 8 * MIB + 2048 * NODE_COST * (1 << 17), "{linear}: {c}");
        }
        // A body reading another large value: n × its size.
        let c = cost(
            "steps.a.output.xs.exists(x, steps.b.output.s.contains(string(x)))",
            &steps,
        );
        assert!(c > (1 << 17) * MIB, "{c}");
        // A chain of k `+` over S copies S·k(k+3)/2 (and reads as much).
        let c = cost(
            &(vec!["steps.a.output.s"; 17].join(" + ") + " == ''"),
            &steps,
        );
        assert!(c > 152 * MIB && c < 2 * 170 * MIB, "{c}");
    }

    #[test]
    fn costly_evaluations_are_refused_before_they_run() {
        let steps = big(16 << 20, 8 << 20);
        let vars = [("steps", &steps)];
        // Over 16 MiB outputs: an O(n × size) body, 16 `+` of 16 MiB, a list
        // literal copying 16 MiB 100 times, a comprehension over 8 Mi items.
        for costly in [
            "steps.a.output.xs.exists(x, steps.b.output.s.contains(string(x)))".to_owned(),
            "steps.a.output.xs.map(x, steps.b.output.s).size() > 0".to_owned(),
            vec!["steps.a.output.s"; MAX_ADDS + 1].join(" + ") + " == ''",
            format!("[{}] == []", vec!["steps.a.output.s"; 100].join(", ")),
            "steps.a.output.xs.exists(x, x == 1)".to_owned(),
        ] {
            validate(&costly, ALL).unwrap();
            let start = std::time::Instant::now();
            let e = evaluate(&costly, &vars).unwrap_err();
            assert!(e.contains("was not evaluated"), "{costly}: {e}");
            eprintln!("refused in {:?}: {costly:.60}", start.elapsed());
        }
    }

    /// The most an allowed expression does over 16 MiB outputs: the longest
    /// chain of `+` over 16 MiB strings, and comprehensions over the longest
    /// list, that the bound lets through. Not a timed assertion: the times
    /// are printed (`--nocapture`).
    #[test]
    fn the_worst_allowed_evaluations_run() {
        let steps = big(16 << 20, 1 << 18);
        let vars = [("steps", &steps)];
        let worst = (1..=MAX_ADDS)
            .map(|k| vec!["steps.a.output.s"; k + 1].join(" + ") + " == ''")
            .take_while(|e| cost(e, &steps) <= MAX_COST)
            .last()
            .unwrap();
        for source in [
            worst.as_str(),
            "steps.a.output.xs.exists(x, x == 1)",
            "steps.a.output.xs.filter(y, y > steps.b.output.n) == [1]",
        ] {
            let c = cost(source, &steps);
            assert!(c <= MAX_COST, "{source}: {c}");
            let start = std::time::Instant::now();
            assert_eq!(evaluate(source, &vars), Ok(false), "{source}");
            eprintln!(
                "{:?} for {c} units ({} `+`): {source:.60}",
                start.elapsed(),
                source.matches(" + ").count(),
            );
        }
    }
}
