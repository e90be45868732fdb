//! Label selectors: the `labelSelector` query parameter and `metav1.LabelSelector`.
//!
//! The grammar, matching rules and validation follow upstream `labels.Parse`
//! (apimachinery `pkg/labels/selector.go`):
//!
//! ```text
//! selector    := requirement ("," requirement)*
//! requirement := ["!"] KEY [ ("in" | "notin") "(" VALUES ")" | ("=" | "==" | "!=" | ">" | "<") VALUE ]
//! ```
//!
//! `!=` and `notin` match objects that lack the label; keys must be qualified names with an
//! optional DNS subdomain prefix, values must be label values.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::Value;

/// Why a label selector was rejected. Messages follow upstream's wording so clients see
/// what they would see from a real API server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A token where the grammar wants another one, between requirements.
    #[error("found '{found}', expected: {expected}")]
    Syntax { found: String, expected: String },
    /// One requirement is malformed or names an invalid key or value.
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A structured selector (`matchLabels`/`matchExpressions`) holds an invalid key or value.
    #[error("{0}")]
    Invalid(String),
    /// A `matchExpressions` operator outside In, NotIn, Exists and DoesNotExist.
    #[error("\"{0}\" is not a valid label selector operator")]
    InvalidOperator(String),
}

/// Upstream's `selection.Operator` values a label requirement can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// Anything labels can be looked up in.
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for serde_json::Map<String, Value> {
    fn label(&self, key: &str) -> Option<&str> {
        // Validation keeps label values strings; anything else cannot equal a selector value,
        // but it still makes the key exist.
        self.get(key).map(|v| v.as_str().unwrap_or("\u{0}"))
    }
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> Labels for HashMap<String, String, S> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// One `key op values` term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// A validated requirement, as upstream's `NewRequirement`: the key must be a qualified
    /// name, the values label values, and their count must suit the operator.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        let mut errors = Vec::new();
        let key_errors = is_qualified_name(key);
        if !key_errors.is_empty() {
            errors.push(format!(
                "invalid label key \"{key}\": {}",
                key_errors.join("; ")
            ));
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                errors.push("for 'in', 'notin' operators, values set can't be empty".into());
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errors.push("exact-match compatibility requires one single value".into());
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errors.push("values set must be empty for exists and does not exist".into());
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errors.push("for 'Gt', 'Lt' operators, exactly one value is required".into());
                }
                for v in &values {
                    if v.parse::<i64>().is_err() {
                        errors.push(format!(
                            "invalid value \"{v}\": for 'Gt', 'Lt' operators, the value must be an integer"
                        ));
                    }
                }
            }
            _ => {}
        }
        for v in &values {
            let value_errors = is_valid_label_value(v);
            if !value_errors.is_empty() {
                errors.push(format!(
                    "invalid label value \"{v}\" for key \"{key}\": {}",
                    value_errors.join("; ")
                ));
            }
        }
        if errors.is_empty() {
            Ok(Self {
                key: key.to_string(),
                operator,
                values,
            })
        } else {
            Err(errors.join(", "))
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether `labels` satisfy this requirement. Negative operators (`!=`, `notin`,
    /// `!key`) match when the label is absent; `>`/`<` need an integer label value.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        let value = labels.label(&self.key);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotIn | Operator::NotEquals => {
                value.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(Ok(have)), [want]) = (value.map(str::parse::<i64>), &self.values[..])
                else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        // Values print sorted so equal selectors print equal.
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        if set {
            write!(f, "({})", values.join(","))
        } else {
            f.write_str(&values.join(","))
        }
    }
}

/// A parsed label selector: the AND of its requirements, kept sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// Upstream's `labels.Nothing()`: what a null `metav1.LabelSelector` selects.
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// The selector that matches no object (a null structured selector).
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parse the `labelSelector` query parameter form.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut requirements = Parser::new(selector).parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Convert a structured selector, as upstream's `LabelSelectorAsSelector`: an empty one
    /// selects everything.
    pub fn from_label_selector(selector: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            let r = Requirement::new(key, Operator::Equals, vec![value.clone()])
                .map_err(SelectorError::Invalid)?;
            requirements.push(r);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(SelectorError::InvalidOperator(other.to_string())),
            };
            let values = expr.values.clone().unwrap_or_default();
            let r =
                Requirement::new(&expr.key, operator, values).map_err(SelectorError::Invalid)?;
            requirements.push(r);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// As [`Self::from_label_selector`], with a missing selector selecting nothing.
    pub fn from_optional(selector: Option<&metav1::LabelSelector>) -> Result<Self, SelectorError> {
        match selector {
            Some(s) => Self::from_label_selector(s),
            None => Ok(Self::nothing()),
        }
    }

    /// True when the selector does not restrict anything.
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether `labels` (e.g. the `metadata.labels` object) satisfy every requirement.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Match an object's `metadata.labels` (a missing label map is an empty one).
    pub fn matches_object(&self, object: &Value) -> bool {
        static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> =
            std::sync::OnceLock::new();
        let labels = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(serde_json::Map::new));
        self.matches(labels)
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// ---- lexer ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    End,
    ClosePar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn symbol(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosePar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

/// Split the input into tokens with their literal text.
fn lex(input: &str) -> Vec<(Tok, &str)> {
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        if pos == bytes.len() {
            out.push((Tok::End, ""));
            return out;
        }
        let start = pos;
        if is_special(bytes[pos]) {
            // Longest run of special characters that still forms an operator.
            let mut last = None;
            let mut end = pos;
            while end < bytes.len() && is_special(bytes[end]) {
                match symbol(&input[start..=end]) {
                    Some(t) => last = Some((t, end + 1)),
                    None if last.is_some() => break,
                    None => {}
                }
                end += 1;
            }
            // Every single special character is a token, so `last` is always set.
            let (tok, stop) = last.unwrap_or((Tok::Identifier, end));
            pos = stop;
            out.push((tok, &input[start..pos]));
        } else {
            while pos < bytes.len() && !is_special(bytes[pos]) && !is_whitespace(bytes[pos]) {
                pos += 1;
            }
            let word = &input[start..pos];
            let tok = match word {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Identifier,
            };
            out.push((tok, word));
        }
    }
}

// ---- parser ----

/// Where the parser is: `in`/`notin` are operators after a key but plain words as values.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser<'a> {
    items: Vec<(Tok, &'a str)>,
    position: usize,
}

fn syntax(found: &str, expected: &str) -> String {
    format!("found '{found}', expected: {expected}")
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self {
            items: lex(input),
            position: 0,
        }
    }

    fn adjust(tok: Tok, context: Context) -> Tok {
        match (tok, context) {
            (Tok::In | Tok::NotIn, Context::Values) => Tok::Identifier,
            _ => tok,
        }
    }

    fn lookahead(&self, context: Context) -> (Tok, &'a str) {
        let (tok, lit) = self.items[self.position];
        (Self::adjust(tok, context), lit)
    }

    fn consume(&mut self, context: Context) -> (Tok, &'a str) {
        let (tok, lit) = self.items[self.position];
        // The last item is always End; never step past it.
        if self.position + 1 < self.items.len() {
            self.position += 1;
        }
        (Self::adjust(tok, context), lit)
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(SelectorError::Requirement)?;
                    requirements.push(r);
                    let (tok, lit) = self.consume(Context::Values);
                    match tok {
                        Tok::End => return Ok(requirements),
                        Tok::Comma => {
                            let (next, lit) = self.lookahead(Context::Values);
                            if next != Tok::Identifier && next != Tok::DoesNotExist {
                                return Err(SelectorError::Syntax {
                                    found: lit.into(),
                                    expected: "identifier after ','".into(),
                                });
                            }
                        }
                        _ => {
                            return Err(SelectorError::Syntax {
                                found: lit.into(),
                                expected: "',' or 'end of string'".into(),
                            });
                        }
                    }
                }
                Tok::End => return Ok(requirements),
                _ => {
                    return Err(SelectorError::Syntax {
                        found: lit.into(),
                        expected: "!, identifier, or 'end of string'".into(),
                    });
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(op) = inferred {
            return Requirement::new(key, op, Vec::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(key, operator, values.into_iter().collect())
    }

    /// The key, and `Exists`/`DoesNotExist` when no binary operator follows.
    fn parse_key_and_infer_operator(&mut self) -> Result<(&'a str, Option<Operator>), String> {
        let (mut tok, mut lit) = self.consume(Context::Values);
        let negated = tok == Tok::DoesNotExist;
        if negated {
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Tok::Identifier {
            return Err(syntax(lit, "identifier"));
        }
        let key_errors = is_qualified_name(lit);
        if !key_errors.is_empty() {
            return Err(format!(
                "invalid label key \"{lit}\": {}",
                key_errors.join("; ")
            ));
        }
        let (next, _) = self.lookahead(Context::Values);
        let op = if negated {
            // `!key` takes no operator; anything after it is caught by the caller.
            Some(Operator::DoesNotExist)
        } else if next == Tok::End || next == Tok::Comma {
            Some(Operator::Exists)
        } else {
            None
        };
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Tok::In => Operator::In,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::GreaterThan => Operator::GreaterThan,
            Tok::LessThan => Operator::LessThan,
            Tok::NotIn => Operator::NotIn,
            Tok::NotEquals => Operator::NotEquals,
            _ => return Err(syntax(lit, "in, notin, =, ==, !=, gt, lt")),
        })
    }

    /// `(a,b,c)`: a set; empty entries (`(a,,b)`, `()`) are the empty value.
    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Tok::Identifier | Tok::Comma => {
                let set = self.parse_identifiers_list()?;
                let (tok, lit) = self.consume(Context::Values);
                if tok != Tok::ClosePar {
                    return Err(syntax(lit, "')'"));
                }
                Ok(set)
            }
            Tok::ClosePar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(syntax(lit, "',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Tok::Identifier => {
                    set.insert(lit.to_string());
                    let (next, lit) = self.lookahead(Context::Values);
                    match next {
                        Tok::Comma => continue,
                        Tok::ClosePar => return Ok(set),
                        _ => return Err(syntax(lit, "',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Tok::ClosePar {
                        set.insert(String::new());
                        return Ok(set);
                    }
                    if next == Tok::Comma {
                        self.consume(Context::Values);
                        set.insert(String::new());
                    }
                }
                _ => return Err(syntax(lit, "',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, _) = self.lookahead(Context::Values);
        if tok == Tok::End || tok == Tok::Comma {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Tok::Identifier {
            Ok(BTreeSet::from([lit.to_string()]))
        } else {
            Err(syntax(lit, "identifier"))
        }
    }
}

// ---- key and value rules (upstream `validation.IsQualifiedName` and friends) ----

const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
const LABEL_VALUE_MAX_LENGTH: usize = 63;
const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

fn regex_error(msg: &str, re: &str, examples: &[&str]) -> String {
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{re}')",
        examples.join(" or ")
    )
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Upstream `IsDNS1123Subdomain`: the reasons `value` is not a DNS subdomain (empty if it is).
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !value.split('.').all(is_dns1123_label) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Upstream `IsQualifiedName` (label keys, annotation keys): the reasons `value` is not a
/// qualified name with an optional DNS subdomain prefix (empty if it is).
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LENGTH)
        ));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Upstream `IsValidLabelValue`: the reasons `value` is not a label value (empty if it is).
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            &format!("({QUALIFIED_NAME_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parses_and_prints_canonical_form() {
        // (input, canonical Display)
        let cases = [
            ("", ""),
            ("a=b", "a=b"),
            ("a==b", "a==b"),
            ("a!=b", "a!=b"),
            ("  a  =  b  ", "a=b"),
            ("a in (y,x)", "a in (x,y)"),
            ("a in (x,x,y)", "a in (x,y)"),
            ("a notin (x)", "a notin (x)"),
            ("a", "a"),
            ("!a", "!a"),
            ("  !  a  ", "!a"),
            ("b=1,a=2", "a=2,b=1"),
            (
                "x in (foo,,baz),y,z notin ()",
                "x in (,baz,foo),y,z notin ()",
            ),
            ("a=", "a="),
            ("a=,b", "a=,b"),
            ("a in (,)", "a in ()"),
            ("a in (x,)", "a in (,x)"),
            ("a>1", "a>1"),
            ("a<5", "a<5"),
            ("in in (in,notin)", "in in (in,notin)"),
            ("example.com/app=web", "example.com/app=web"),
            ("a\tin\n(b)", "a in (b)"),
            ("a!=b,a=c", "a!=b,a=c"),
        ];
        for (input, want) in cases {
            let s = LabelSelector::parse(input)
                .unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
            assert_eq!(s.to_string(), want, "input {input:?}");
            // The printed form parses back to the same selector.
            assert_eq!(LabelSelector::parse(&s.to_string()).unwrap(), s);
        }
    }

    #[test]
    fn rejects_malformed_selectors_with_upstream_messages() {
        let cases = [
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("a=b,", "found '', expected: identifier after ','"),
            ("a,,b", "found ',', expected: identifier after ','"),
            (
                ",a",
                "found ',', expected: !, identifier, or 'end of string'",
            ),
            (
                "=a",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            (
                "a in b",
                "unable to parse requirement: found 'b' expected: '('",
            ),
            (
                "a in (b",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "a in (b c)",
                "unable to parse requirement: found 'c', expected: ',' or ')'",
            ),
            (
                "a in (=)",
                "unable to parse requirement: found '=', expected: ',', ')' or identifier",
            ),
            (
                "a=(",
                "unable to parse requirement: found '(', expected: identifier",
            ),
            (
                "!",
                "unable to parse requirement: found '', expected: identifier",
            ),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            (
                "a>x",
                "unable to parse requirement: invalid value \"x\": for 'Gt', 'Lt' operators, the value must be an integer",
            ),
        ];
        for (input, want) in cases {
            let err = LabelSelector::parse(input).expect_err(input);
            assert_eq!(err.to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn validates_keys_and_values() {
        // (input, a fragment the message must contain)
        let cases = [
            (
                "Foo/bar=x",
                "invalid label key \"Foo/bar\": prefix part a lowercase RFC 1123 subdomain",
            ),
            ("/bar=x", "prefix part must be non-empty"),
            (
                "a/b/c=x",
                "a qualified name must consist of alphanumeric characters",
            ),
            (
                "-a=x",
                "invalid label key \"-a\": name part must consist of alphanumeric",
            ),
            ("a/=x", "name part must be non-empty"),
            (
                &format!("{}=x", "k".repeat(64)),
                "name part must be no more than 63 characters",
            ),
            (
                "a=-x",
                "invalid label value \"-x\" for key \"a\": a valid label must be an empty string",
            ),
            ("a in (ok,bad!)", "found '!', expected: ',' or ')'"),
            // Gt/Lt values are label values too, so negative numbers are rejected.
            ("a<-5", "invalid label value \"-5\" for key \"a\""),
            ("a in (ok,b@d)", "invalid label value \"b@d\""),
            (
                &format!("a={}", "v".repeat(64)),
                "must be no more than 63 characters",
            ),
        ];
        for (input, fragment) in cases {
            let err = LabelSelector::parse(input).expect_err(input).to_string();
            assert!(
                err.contains(fragment),
                "input {input:?}: {err:?} lacks {fragment:?}"
            );
        }
        assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
        assert!(is_qualified_name("A_b.c-D").is_empty());
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_label_value("v1.2_3-x").is_empty());
        assert_eq!(
            is_valid_label_value("-x"),
            vec![
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
            ]
        );
        assert!(is_dns1123_subdomain("a.b-c.d").is_empty());
        assert!(!is_dns1123_subdomain("a..b").is_empty());
        assert!(!is_dns1123_subdomain("A.b").is_empty());
    }

    #[test]
    fn matches_like_upstream() {
        let obj = labels(json!({"app": "web", "tier": "front", "n": "7", "empty": ""}));
        // (selector, matches obj)
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (db,web)", true),
            ("app in (db)", false),
            ("missing in (x)", false),
            ("app notin (db)", true),
            ("app notin (web)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("empty=", true),
            ("empty in ()", true),
            ("missing=", false),
            ("n>6", true),
            ("n>7", false),
            ("n<8", true),
            ("app>1", false),
            ("missing<100", false),
        ];
        for (input, want) in cases {
            let s = LabelSelector::parse(input).unwrap();
            assert_eq!(s.matches(&obj), want, "selector {input:?}");
            let map: BTreeMap<String, String> = obj
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            assert_eq!(s.matches(&map), want, "selector {input:?} on BTreeMap");
        }
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}}});
        assert!(
            LabelSelector::parse("app=web")
                .unwrap()
                .matches_object(&pod)
        );
        assert!(
            !LabelSelector::parse("app")
                .unwrap()
                .matches_object(&json!({"metadata": {}}))
        );
        assert!(
            LabelSelector::parse("!app")
                .unwrap()
                .matches_object(&json!({}))
        );
    }

    #[test]
    fn emptiness() {
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(LabelSelector::parse("   ").unwrap().is_empty());
        assert!(!LabelSelector::parse("a").unwrap().is_empty());
        assert!(!LabelSelector::nothing().is_empty());
        assert!(!LabelSelector::nothing().matches(&labels(json!({}))));
        assert!(LabelSelector::everything().matches(&labels(json!({}))));
    }

    fn structured(v: Value) -> metav1::LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn converts_structured_selectors() {
        // (metav1.LabelSelector, canonical form)
        let cases = [
            (json!({}), ""),
            (json!({"matchLabels": {"b": "2", "a": "1"}}), "a=1,b=2"),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["front", "back"]},
                    {"key": "env", "operator": "NotIn", "values": ["prod"]},
                    {"key": "canary", "operator": "Exists"},
                    {"key": "legacy", "operator": "DoesNotExist"}
                ]}),
                "app=web,canary,env notin (prod),!legacy,tier in (back,front)",
            ),
        ];
        for (input, want) in cases {
            let s = LabelSelector::from_label_selector(&structured(input.clone())).unwrap();
            assert_eq!(s.to_string(), want, "{input}");
        }
        let s = LabelSelector::from_label_selector(&structured(json!({
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
        })))
        .unwrap();
        assert!(s.matches(&labels(json!({}))));
        assert!(!s.matches(&labels(json!({"tier": "db"}))));
        assert!(LabelSelector::from_optional(None).unwrap() == LabelSelector::nothing());
    }

    #[test]
    fn rejects_invalid_structured_selectors() {
        let cases = [
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
                "\"Gt\" is not a valid label selector operator",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
                "for 'in', 'notin' operators, values set can't be empty",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                "values set must be empty for exists and does not exist",
            ),
            (
                json!({"matchLabels": {"a": "b c"}}),
                "invalid label value \"b c\" for key \"a\"",
            ),
            (
                json!({"matchLabels": {"bad key": "x"}}),
                "invalid label key \"bad key\"",
            ),
        ];
        for (input, fragment) in cases {
            let err = LabelSelector::from_label_selector(&structured(input.clone()))
                .expect_err(&input.to_string())
                .to_string();
            assert!(
                err.contains(fragment),
                "{input}: {err:?} lacks {fragment:?}"
            );
        }
    }
}
