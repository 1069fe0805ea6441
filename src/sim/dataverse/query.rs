//! OData query options as the simulated Dataverse understands them: `$filter` (comparisons,
//! `and`/`or`/`not`, parentheses, `contains`/`startswith`/`endswith`,
//! `Microsoft.Dynamics.CRM.In`), `$orderby`, `$select` and `$expand` (with nested `$select` and
//! `$expand`), and how a row is projected for the answer.
//!
//! Comparison follows `research/dataverse.md` §2.3: strings compare case-insensitively, datetime
//! literals are unquoted ISO 8601 (`modifiedon ge 2024-01-01T00:00:00Z`), GUIDs unquoted, `'` in
//! a string is doubled. Whatever does not parse is an [`Error`] the server answers with 400;
//! a documented feature the simulator lacks is [`Error::Unsupported`] (501).

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde_json::{Map, Value};

use super::paging::is_guid;

/// Why a query option cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    /// The syntax is wrong (400).
    #[error("{0}")]
    Syntax(String),
    /// Valid OData the simulator does not implement (501).
    #[error("the Dataverse simulator does not implement {0}")]
    Unsupported(String),
}

fn syntax(msg: impl Into<String>) -> Error {
    Error::Syntax(msg.into())
}

/// A `$filter` comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A parsed `$filter`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Cmp { path: String, op: Op, value: Value },
    In { path: String, values: Vec<Value> },
    Text { func: TextFn, path: String, text: String },
}

/// `contains`, `startswith`, `endswith`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextFn {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Comma,
    Equals,
    BracketOpen,
    BracketClose,
    Ident(String),
    Lit(Value),
}

fn is_datetime_like(s: &str) -> bool {
    s.len() >= 10 && s.as_bytes().get(4) == Some(&b'-') && s.as_bytes().get(7) == Some(&b'-')
}

/// Classifies an unquoted literal: datetime, date, GUID or number.
fn bare_literal(word: &str) -> Result<Value, Error> {
    if is_guid(word) {
        return Ok(Value::String(word.to_ascii_lowercase()));
    }
    if is_datetime_like(word) {
        if DateTime::parse_from_rfc3339(word).is_ok()
            || NaiveDate::parse_from_str(word, "%Y-%m-%d").is_ok()
        {
            return Ok(Value::String(word.to_owned()));
        }
        return Err(syntax(format!(
            "invalid datetime literal '{word}' (an explicit offset needs its '+' encoded as %2B)"
        )));
    }
    if let Ok(i) = word.parse::<i64>() {
        return Ok(Value::from(i));
    }
    word.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| syntax(format!("syntax error at '{word}'")))
}

fn tokenize(s: &str) -> Result<Vec<Tok>, Error> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => (out.push(Tok::Open), i += 1).1,
            ')' => (out.push(Tok::Close), i += 1).1,
            ',' => (out.push(Tok::Comma), i += 1).1,
            '=' => (out.push(Tok::Equals), i += 1).1,
            '[' => (out.push(Tok::BracketOpen), i += 1).1,
            ']' => (out.push(Tok::BracketClose), i += 1).1,
            '\'' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(syntax("unterminated string literal")),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            text.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            text.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Lit(Value::String(text)));
            }
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$' | '@') => {
                let start = i;
                while chars.get(i).is_some_and(|&ch| {
                    ch.is_ascii_alphanumeric()
                        || matches!(ch, '_' | '-' | '.' | '/' | ':' | '+' | '$' | '@')
                }) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let first = word.chars().next().unwrap_or('_');
                if first.is_ascii_digit() || first == '-' || is_guid(&word) {
                    out.push(Tok::Lit(bare_literal(&word)?));
                } else {
                    match word.as_str() {
                        "true" => out.push(Tok::Lit(Value::Bool(true))),
                        "false" => out.push(Tok::Lit(Value::Bool(false))),
                        "null" => out.push(Tok::Lit(Value::Null)),
                        _ => out.push(Tok::Ident(word)),
                    }
                }
            }
            other => return Err(syntax(format!("syntax error at '{other}'"))),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, t: &Tok) -> Result<(), Error> {
        match self.next() {
            Some(ref got) if got == t => Ok(()),
            got => Err(syntax(format!("expected {t:?}, found {got:?}"))),
        }
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w == k)
    }

    fn or(&mut self) -> Result<Filter, Error> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, Error> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, Error> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let inner = self.or()?;
            self.expect(&Tok::Close)?;
            return Ok(inner);
        }
        self.primary()
    }

    fn string_arg(&mut self) -> Result<String, Error> {
        match self.next() {
            Some(Tok::Lit(Value::String(s))) => Ok(s),
            got => Err(syntax(format!("expected a string literal, found {got:?}"))),
        }
    }

    fn primary(&mut self) -> Result<Filter, Error> {
        let left = self.next().ok_or_else(|| syntax("unexpected end of $filter"))?;
        if let Tok::Ident(name) = &left {
            if self.peek() == Some(&Tok::Open) {
                return self.function(name);
            }
        }
        let op = match self.next() {
            Some(Tok::Ident(w)) => match w.as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                "lt" => Op::Lt,
                "le" => Op::Le,
                other => return Err(syntax(format!("unknown operator '{other}'"))),
            },
            got => return Err(syntax(format!("expected an operator, found {got:?}"))),
        };
        let right = self.next().ok_or_else(|| syntax("unexpected end of $filter"))?;
        match (left, right) {
            (Tok::Ident(path), Tok::Lit(value)) => Ok(Filter::Cmp { path, op, value }),
            (Tok::Lit(value), Tok::Ident(path)) => {
                let flipped = match op {
                    Op::Gt => Op::Lt,
                    Op::Ge => Op::Le,
                    Op::Lt => Op::Gt,
                    Op::Le => Op::Ge,
                    o => o,
                };
                Ok(Filter::Cmp { path, op: flipped, value })
            }
            (l, r) => Err(syntax(format!("cannot compare {l:?} with {r:?}"))),
        }
    }

    fn function(&mut self, name: &str) -> Result<Filter, Error> {
        self.expect(&Tok::Open)?;
        let text = match name {
            "contains" => Some(TextFn::Contains),
            "startswith" => Some(TextFn::StartsWith),
            "endswith" => Some(TextFn::EndsWith),
            _ => None,
        };
        if let Some(func) = text {
            let Some(Tok::Ident(path)) = self.next() else {
                return Err(syntax(format!("{name} needs a column name first")));
            };
            self.expect(&Tok::Comma)?;
            let text = self.string_arg()?;
            self.expect(&Tok::Close)?;
            return Ok(Filter::Text { func, path, text });
        }
        if name == "Microsoft.Dynamics.CRM.In" {
            let mut path = None;
            let mut values = None;
            loop {
                let Some(Tok::Ident(param)) = self.next() else {
                    return Err(syntax("Microsoft.Dynamics.CRM.In expects named parameters"));
                };
                self.expect(&Tok::Equals)?;
                match param.as_str() {
                    "PropertyName" => path = Some(self.string_arg()?),
                    "PropertyValues" => {
                        self.expect(&Tok::BracketOpen)?;
                        let mut vs = Vec::new();
                        loop {
                            match self.next() {
                                Some(Tok::Lit(v)) => vs.push(v),
                                Some(Tok::BracketClose) if vs.is_empty() => break,
                                got => {
                                    return Err(syntax(format!("bad PropertyValues at {got:?}")));
                                }
                            }
                            match self.next() {
                                Some(Tok::Comma) => {}
                                Some(Tok::BracketClose) => break,
                                got => {
                                    return Err(syntax(format!("bad PropertyValues at {got:?}")));
                                }
                            }
                        }
                        values = Some(vs);
                    }
                    other => return Err(syntax(format!("unknown parameter '{other}'"))),
                }
                match self.next() {
                    Some(Tok::Comma) => {}
                    Some(Tok::Close) => break,
                    got => return Err(syntax(format!("expected ',' or ')', found {got:?}"))),
                }
            }
            return match (path, values) {
                (Some(path), Some(values)) => Ok(Filter::In { path, values }),
                _ => Err(syntax("Microsoft.Dynamics.CRM.In needs PropertyName and PropertyValues")),
            };
        }
        if name.starts_with("Microsoft.Dynamics.CRM.") {
            return Err(Error::Unsupported(format!("the query function {name}")));
        }
        Err(syntax(format!("unknown function '{name}'")))
    }
}

/// Parses a `$filter` value (already URL-decoded).
pub(crate) fn parse_filter(s: &str) -> Result<Filter, Error> {
    let mut p = Parser { toks: tokenize(s)?, pos: 0 };
    let f = p.or()?;
    if p.pos < p.toks.len() {
        return Err(syntax(format!("unexpected {:?} in $filter", p.toks[p.pos])));
    }
    Ok(f)
}

/// The value at `a/b/c` in a row (lookup path filters); null when absent.
fn get_path<'a>(row: &'a Map<String, Value>, path: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    let mut parts = path.split('/');
    let mut cur = parts.next().and_then(|p| row.get(p)).unwrap_or(&NULL);
    for p in parts {
        cur = cur.get(p).unwrap_or(&NULL);
    }
    cur
}

fn as_datetime(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok().or_else(|| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().fixed_offset())
    })
}

/// Compares two non-null values of a kind; `None` when they cannot be compared.
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::String(x), Value::String(y)) => {
            if is_datetime_like(x) && is_datetime_like(y) {
                if let (Some(dx), Some(dy)) = (as_datetime(x), as_datetime(y)) {
                    return Some(dx.cmp(&dy));
                }
            }
            Some(x.to_lowercase().cmp(&y.to_lowercase()))
        }
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    }
}

/// Total order for sorting: nulls first (as SQL Server), then by [`compare`], then by kind.
pub(crate) fn sort_cmp(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    compare(a, b).unwrap_or_else(|| rank(a).cmp(&rank(b)))
}

impl Filter {
    /// Whether `row` passes the filter.
    pub(crate) fn matches(&self, row: &Map<String, Value>) -> bool {
        match self {
            Self::And(a, b) => a.matches(row) && b.matches(row),
            Self::Or(a, b) => a.matches(row) || b.matches(row),
            Self::Not(a) => !a.matches(row),
            Self::Cmp { path, op, value } => {
                let v = get_path(row, path);
                if value.is_null() || v.is_null() {
                    let both = value.is_null() && v.is_null();
                    return match op {
                        Op::Eq => both,
                        Op::Ne => !both,
                        _ => false,
                    };
                }
                match (op, compare(v, value)) {
                    (Op::Ne, ord) => ord != Some(Ordering::Equal),
                    (_, None) => false,
                    (Op::Eq, Some(o)) => o == Ordering::Equal,
                    (Op::Gt, Some(o)) => o == Ordering::Greater,
                    (Op::Ge, Some(o)) => o != Ordering::Less,
                    (Op::Lt, Some(o)) => o == Ordering::Less,
                    (Op::Le, Some(o)) => o != Ordering::Greater,
                }
            }
            Self::In { path, values } => {
                let v = get_path(row, path);
                values.iter().any(|x| compare(v, x) == Some(Ordering::Equal))
            }
            Self::Text { func, path, text } => {
                let Value::String(s) = get_path(row, path) else { return false };
                let (s, t) = (s.to_lowercase(), text.to_lowercase());
                match func {
                    TextFn::Contains => s.contains(&t),
                    TextFn::StartsWith => s.starts_with(&t),
                    TextFn::EndsWith => s.ends_with(&t),
                }
            }
        }
    }
}

/// Parses `$orderby=a asc,b desc` into (column, descending).
pub(crate) fn parse_orderby(s: &str) -> Result<Vec<(String, bool)>, Error> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let mut words = item.split_whitespace();
        let col = words.next().ok_or_else(|| syntax("empty $orderby item"))?;
        if !col.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(syntax(format!("invalid $orderby column '{col}'")));
        }
        let desc = match words.next() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => return Err(syntax(format!("invalid $orderby direction '{other}'"))),
        };
        if words.next().is_some() {
            return Err(syntax(format!("invalid $orderby item '{item}'")));
        }
        out.push((col.to_owned(), desc));
    }
    Ok(out)
}

/// Splits on `sep` outside parentheses.
fn split_top(s: &str, sep: char) -> Result<Vec<&str>, Error> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(syntax("unbalanced parentheses"));
                }
            }
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(syntax("unbalanced parentheses"));
    }
    out.push(&s[start..]);
    Ok(out)
}

/// Parses `$select=a,b`.
pub(crate) fn parse_select(s: &str) -> Result<Vec<String>, Error> {
    s.split(',')
        .map(|c| {
            let c = c.trim();
            if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                Err(syntax(format!("invalid $select column '{c}'")))
            } else {
                Ok(c.to_owned())
            }
        })
        .collect()
}

/// One `$expand` item: `nav($select=…;$expand=…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expand {
    /// The navigation property.
    pub nav: String,
    /// Its `$select`, all columns when `None`.
    pub select: Option<Vec<String>>,
    /// Nested expansions.
    pub expand: Vec<Expand>,
}

/// Parses `$expand=a($select=x,y;$expand=b($select=z)),c`.
pub(crate) fn parse_expand(s: &str) -> Result<Vec<Expand>, Error> {
    let mut out = Vec::new();
    for item in split_top(s, ',')? {
        let item = item.trim();
        let (nav, opts) = match item.find('(') {
            Some(i) => {
                let inner = item[i + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| syntax(format!("invalid $expand item '{item}'")))?;
                (&item[..i], Some(inner))
            }
            None => (item, None),
        };
        if nav.is_empty() || !nav.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(syntax(format!("invalid $expand navigation property '{nav}'")));
        }
        let mut e = Expand { nav: nav.to_owned(), select: None, expand: Vec::new() };
        for opt in opts.map(|o| split_top(o, ';')).transpose()?.unwrap_or_default() {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| syntax(format!("invalid $expand option '{opt}'")))?;
            match k.trim() {
                "$select" => e.select = Some(parse_select(v)?),
                "$expand" => e.expand = parse_expand(v)?,
                other => {
                    return Err(Error::Unsupported(format!("{other} inside $expand")));
                }
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// Whether a stored value is a navigation (a nested record or a collection), not a column.
pub(crate) fn is_navigation(v: &Value) -> bool {
    matches!(v, Value::Object(_) | Value::Array(_))
}

/// Projects a row for an answer: the selected columns (all plain columns when `select` is
/// `None`), the primary key always, nested objects only when expanded.
pub(crate) fn project(
    row: &Map<String, Value>,
    pk: Option<&str>,
    select: Option<&[String]>,
    expand: &[Expand],
) -> Map<String, Value> {
    let mut out = Map::new();
    match select {
        Some(cols) => {
            for c in cols {
                let v = row.get(c).cloned().unwrap_or(Value::Null);
                if !is_navigation(&v) {
                    out.insert(c.clone(), v);
                }
            }
        }
        None => {
            for (k, v) in row {
                if !is_navigation(v) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if let Some(pk) = pk {
        out.insert(pk.to_owned(), row.get(pk).cloned().unwrap_or(Value::Null));
    }
    for e in expand {
        let nested = |v: &Value| match v {
            Value::Object(m) => Value::Object(project(m, None, e.select.as_deref(), &e.expand)),
            other => other.clone(),
        };
        let v = match row.get(&e.nav) {
            Some(Value::Array(items)) => Value::Array(items.iter().map(nested).collect()),
            Some(v) => nested(v),
            None => Value::Null,
        };
        out.insert(e.nav.clone(), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn filters_the_documented_watermark_query() {
        let f = parse_filter(
            "modifiedon ge 2026-05-01T00:00:00Z and x_completed eq true and x_generatehl7 eq true",
        )
        .expect("parses");
        let mut r = row(
            json!({"modifiedon": "2026-05-01T00:00:00Z", "x_completed": true, "x_generatehl7": true}),
        );
        assert!(f.matches(&r));
        r.insert("modifiedon".into(), "2026-04-30T23:59:59Z".into());
        assert!(!f.matches(&r));
        r.insert("modifiedon".into(), "2026-05-01T00:00:01Z".into());
        r.insert("x_completed".into(), false.into());
        assert!(!f.matches(&r));
        // Offsets compare as instants.
        let g = parse_filter("modifiedon gt 2026-05-01T01:00:00+02:00").expect("parses");
        assert!(g.matches(&row(json!({"modifiedon": "2026-04-30T23:00:01Z"}))));
        assert!(!g.matches(&row(json!({"modifiedon": "2026-04-30T23:00:00Z"}))));
        let l = parse_filter("modifiedon le 2026-05-01T00:00:00Z").expect("parses");
        assert!(l.matches(&row(json!({"modifiedon": "2026-05-01T00:00:00Z"}))));
        assert!(!l.matches(&row(json!({}))), "null is not le anything");
    }

    #[test]
    fn filters_strings_numbers_nulls_and_functions() {
        let r = row(
            json!({"lastname": "O'Bryan", "n": 3, "flag": false, "_owner_value": "d5026a4d-d01c-ed11-b83e-000d3a572421", "opt": null, "primarycontactid": {"fullname": "Ann"}}),
        );
        let yes = [
            "lastname eq 'o''bryan'",
            "lastname ne 'x'",
            "n eq 3 and n gt 2.5 and n lt 4 and n le 3 and n ge 3",
            "3 eq n",
            "2 lt n",
            "flag eq false",
            "opt eq null",
            "lastname ne null",
            "not (n eq 4)",
            "n eq 4 or (flag eq false and startswith(lastname,'o'''))",
            "contains(lastname,'BRY') and endswith(lastname,'an')",
            "_owner_value eq D5026A4D-D01C-ED11-B83E-000D3A572421",
            "Microsoft.Dynamics.CRM.In(PropertyName='lastname',PropertyValues=['x','O''BRYAN'])",
            "Microsoft.Dynamics.CRM.In(PropertyName='n',PropertyValues=[1,3])",
            "primarycontactid/fullname eq 'ann'",
        ];
        for f in yes {
            assert!(parse_filter(f).expect(f).matches(&r), "{f}");
        }
        let no = [
            "lastname eq 'Bryan'",
            "n ne 3",
            "opt ne null",
            "missing eq 1",
            "missing gt 0",
            "Microsoft.Dynamics.CRM.In(PropertyName='n',PropertyValues=[1,2])",
            "primarycontactid/fullname eq 'bob'",
        ];
        for f in no {
            assert!(!parse_filter(f).expect(f).matches(&r), "{f}");
        }
    }

    #[test]
    fn bad_filters_are_errors_not_panics() {
        for f in [
            "",
            "a eq",
            "a eq 'x",
            "a foo 1",
            "(a eq 1",
            "a eq 1)",
            "a eq 1 and",
            "modifiedon ge 2026-05-01T00:00:00 01:00",
            "a eq b",
            "contains(a)",
            "Microsoft.Dynamics.CRM.In(PropertyName='a')",
            "Microsoft.Dynamics.CRM.In(PropertyName='a',PropertyValues=[1,)",
            "é eq 1",
            "a eq 1 1",
            "unknownfn(a,'x')",
        ] {
            assert!(matches!(parse_filter(f), Err(Error::Syntax(_))), "{f}");
        }
        assert!(matches!(
            parse_filter(
                "Microsoft.Dynamics.CRM.LastXHours(PropertyName='modifiedon',PropertyValue=2)"
            ),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn orderby_select_and_expand_parse() {
        assert_eq!(
            parse_orderby("modifiedon asc,x_id desc").expect("parses"),
            vec![("modifiedon".into(), false), ("x_id".into(), true)]
        );
        assert!(parse_orderby("a sideways").is_err());
        assert!(parse_orderby("a,").is_err());
        assert_eq!(parse_select("a, b").expect("parses"), vec!["a".to_owned(), "b".to_owned()]);
        assert!(parse_select("a,,b").is_err());
        let e = parse_expand(
            "primarycontactid($select=fullname,_createdby_value;$expand=createdby($select=fullname)),owner",
        )
        .expect("parses");
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].select.as_deref(),
            Some(&["fullname".to_owned(), "_createdby_value".to_owned()][..])
        );
        assert_eq!(e[0].expand[0].nav, "createdby");
        assert_eq!(e[1], Expand { nav: "owner".into(), select: None, expand: vec![] });
        assert!(parse_expand("a($select=b").is_err());
        assert!(parse_expand("a($top=1)").is_err());
    }

    #[test]
    fn projection_keeps_the_key_and_strips_unexpanded_navigation() {
        let r = row(
            json!({"id": "1", "a": 1, "b": 2, "nav": {"x": 1, "y": 2, "deep": {"z": 3}}, "many": [{"x": 1}]}),
        );
        let p = project(&r, Some("id"), Some(&["a".to_owned()]), &[]);
        assert_eq!(Value::Object(p), json!({"id": "1", "a": 1}));
        let p = project(&r, Some("id"), None, &[]);
        assert_eq!(Value::Object(p), json!({"id": "1", "a": 1, "b": 2}));
        let e = parse_expand("nav($select=x),many").expect("parses");
        let p = project(&r, Some("id"), Some(&["b".to_owned(), "missing".to_owned()]), &e);
        assert_eq!(
            Value::Object(p),
            json!({"id": "1", "b": 2, "missing": null, "nav": {"x": 1}, "many": [{"x": 1}]})
        );
    }

    #[test]
    fn sorting_puts_nulls_first_and_compares_case_insensitively() {
        let mut v = vec![json!("b"), json!(null), json!("A"), json!("c")];
        v.sort_by(sort_cmp);
        assert_eq!(v, vec![json!(null), json!("A"), json!("b"), json!("c")]);
    }
}
