//! A validator for the part of HCL that a secrets file needs: blank lines,
//! `#`, `//` and `/* */` comments, and `name = value` where the value is a
//! quoted string, a number, a bool, or a list or map (possibly over several
//! lines). Anything else is an error naming its line, because Terraform's
//! own message would come later, far from the edit that caused it, and with
//! the secret file's content decrypted on someone's screen.

use std::{collections::HashMap, fmt};

use crate::support::secret::SecretValue;

/// One `name = value` line, with the value as Terraform reads it from a
/// `TF_VAR_name` environment variable.
#[derive(Debug)]
pub struct Assignment {
    pub name: String,
    pub kind: ValueKind,
    /// Strings unescaped; numbers, bools, lists and maps as HCL text.
    pub value: SecretValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    String,
    Number,
    Bool,
    List,
    Map,
}

impl ValueKind {
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::String => "string",
            ValueKind::Number => "number",
            ValueKind::Bool => "bool",
            ValueKind::List => "list",
            ValueKind::Map => "map",
        }
    }
}

/// A syntax error and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TfvarsError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for TfvarsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for TfvarsError {}

/// Parses a tfvars file. Error messages never quote a value.
pub fn parse(content: &[u8]) -> Result<Vec<Assignment>, TfvarsError> {
    let text = std::str::from_utf8(content).map_err(|err| TfvarsError {
        line: content[..err.valid_up_to()].iter().filter(|&&byte| byte == b'\n').count() + 1,
        message: "not valid UTF-8".to_owned(),
    })?;
    let mut parser = Parser { text, pos: 0, line: 1 };
    if parser.peek() == Some('\u{feff}') {
        parser.bump();
    }
    let mut assignments = Vec::new();
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    loop {
        parser.skip_blank_lines_and_comments()?;
        if parser.peek().is_none() {
            return Ok(assignments);
        }
        let line = parser.line;
        let name = parser.identifier()?;
        if let Some(first) = first_line_of.get(&name) {
            return Err(parser.error(format!("{name} is already set on line {first}")));
        }
        parser.skip_spaces();
        if parser.peek() != Some('=') {
            return Err(parser.error(format!("expected `=` after {name}")));
        }
        parser.bump();
        parser.skip_spaces();
        let (kind, value) = parser.value(&name)?;
        parser.end_of_line(&name)?;
        first_line_of.insert(name.clone(), line);
        assignments.push(Assignment { name, kind, value: SecretValue::new(value) });
    }
}

/// The `TF_VAR_<name>` environment of a parsed file.
pub fn terraform_env_pairs(assignments: &[Assignment]) -> Vec<(String, String)> {
    assignments
        .iter()
        .map(|assignment| (format!("TF_VAR_{}", assignment.name), assignment.value.expose().to_owned()))
        .collect()
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.text[self.pos..].chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn error(&self, message: String) -> TfvarsError {
        TfvarsError { line: self.line, message }
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) || (self.peek() == Some('\r') && self.peek_second() == Some('\n'))
        {
            self.bump();
        }
    }

    /// Skips a comment if one starts here; false if none does.
    fn skip_comment(&mut self) -> Result<bool, TfvarsError> {
        match (self.peek(), self.peek_second()) {
            (Some('#'), _) | (Some('/'), Some('/')) => {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.bump();
                }
                Ok(true)
            }
            (Some('/'), Some('*')) => {
                let start = self.line;
                self.bump();
                self.bump();
                loop {
                    match self.bump() {
                        Some('*') if self.peek() == Some('/') => {
                            self.bump();
                            return Ok(true);
                        }
                        Some(_) => {}
                        None => {
                            return Err(TfvarsError {
                                line: start,
                                message: "`/*` comment is never closed".to_owned(),
                            });
                        }
                    }
                }
            }
            _ => Ok(false),
        }
    }

    fn skip_blank_lines_and_comments(&mut self) -> Result<(), TfvarsError> {
        loop {
            self.skip_spaces();
            if self.peek() == Some('\n') {
                self.bump();
            } else if !self.skip_comment()? {
                return Ok(());
            }
        }
    }

    fn identifier(&mut self) -> Result<String, TfvarsError> {
        let start = self.pos;
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
            Some(c) => {
                return Err(self.error(format!("expected a variable name, found `{}`", c.escape_debug())));
            }
            None => return Err(self.error("expected a variable name".to_owned())),
        }
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            self.bump();
        }
        Ok(self.text[start..self.pos].to_owned())
    }

    fn value(&mut self, name: &str) -> Result<(ValueKind, String), TfvarsError> {
        match self.peek() {
            Some('"') => Ok((ValueKind::String, self.string()?)),
            Some(c) if c == '-' || c.is_ascii_digit() => Ok((ValueKind::Number, self.number(name)?)),
            Some('[') => Ok((ValueKind::List, self.collection(name)?)),
            Some('{') => Ok((ValueKind::Map, self.collection(name)?)),
            Some('<') if self.peek_second() == Some('<') => {
                Err(self.error(format!("{name}: heredoc strings are not supported here; use a quoted string with \\n")))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.bump();
                }
                match &self.text[start..self.pos] {
                    word @ ("true" | "false") => Ok((ValueKind::Bool, word.to_owned())),
                    _ => Err(TfvarsError {
                        line: self.line,
                        message: format!(
                            "the value of {name} must be a \"quoted string\", a number, true, false, [list] or {{map}}"
                        ),
                    }),
                }
            }
            None | Some('\n' | '\r' | '#') => Err(self.error(format!("{name} has no value"))),
            Some(_) => Err(self.error(format!(
                "the value of {name} must be a \"quoted string\", a number, true, false, [list] or {{map}}"
            ))),
        }
    }

    /// A double-quoted string on one line, unescaped as HCL does.
    fn string(&mut self) -> Result<String, TfvarsError> {
        let start_line = self.line;
        self.bump();
        let mut value = String::new();
        loop {
            let unterminated = || TfvarsError {
                line: start_line,
                message: "unterminated string: a quoted string ends on the line it starts".to_owned(),
            };
            match self.bump() {
                None | Some('\n') => return Err(unterminated()),
                Some('"') => return Ok(value),
                Some('\\') => match self.bump() {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some('"') => value.push('"'),
                    Some('\\') => value.push('\\'),
                    Some(kind @ ('u' | 'U')) => {
                        let digits = if kind == 'u' { 4 } else { 8 };
                        let hex: String = (0..digits).filter_map(|_| self.bump()).collect();
                        let c =
                            u32::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == digits).and_then(char::from_u32);
                        match c {
                            Some(c) => value.push(c),
                            None => {
                                return Err(
                                    self.error(format!("`\\{kind}` needs {digits} hex digits of a valid character"))
                                );
                            }
                        }
                    }
                    None | Some('\n') => return Err(unterminated()),
                    Some(other) => {
                        return Err(self.error(format!("unknown escape `\\{}` in a string", other.escape_debug())));
                    }
                },
                // `${` and `%{` start templates; `$${` and `%%{` are their literal forms.
                Some(sigil @ ('$' | '%')) => match (self.peek(), self.peek_second()) {
                    (Some('{'), _) => {
                        return Err(self.error(format!(
                            "template `{sigil}{{` in a string is not supported; write `{sigil}{sigil}{{` for a literal `{sigil}{{`"
                        )));
                    }
                    (Some(next), Some('{')) if next == sigil => {
                        self.bump();
                        self.bump();
                        value.push(sigil);
                        value.push('{');
                    }
                    _ => value.push(sigil),
                },
                Some(c) => value.push(c),
            }
        }
    }

    fn number(&mut self, name: &str) -> Result<String, TfvarsError> {
        let start = self.pos;
        let digits = |parser: &mut Parser<'_>| {
            let from = parser.pos;
            while parser.peek().is_some_and(|c| c.is_ascii_digit()) {
                parser.bump();
            }
            parser.pos > from
        };
        if self.peek() == Some('-') {
            self.bump();
        }
        let mut valid = digits(self);
        if self.peek() == Some('.') {
            self.bump();
            valid &= digits(self);
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            valid &= digits(self);
        }
        if !valid || self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
            return Err(self.error(format!("the value of {name} is not a number (quote it if it is a string)")));
        }
        Ok(self.text[start..self.pos].to_owned())
    }

    /// A list or map: brackets balanced, strings closed, only literal
    /// tokens inside. The text is returned as written.
    fn collection(&mut self, name: &str) -> Result<String, TfvarsError> {
        let start = self.pos;
        let mut open: Vec<(char, usize)> = Vec::new();
        loop {
            if self.skip_comment()? {
                continue;
            }
            match self.peek() {
                None => {
                    let (bracket, line) = open.last().copied().unwrap_or(('[', self.line));
                    return Err(TfvarsError { line, message: format!("`{bracket}` opened here is never closed") });
                }
                Some('"') => {
                    self.string()?;
                }
                Some(c @ ('[' | '{' | '(')) => {
                    open.push((c, self.line));
                    self.bump();
                }
                Some(c @ (']' | '}' | ')')) => {
                    let expected = match open.pop() {
                        Some(('[', _)) => ']',
                        Some(('{', _)) => '}',
                        Some(_) => ')',
                        None => unreachable!("the collection starts with a bracket"),
                    };
                    if c != expected {
                        return Err(self.error(format!("`{c}` where `{expected}` was expected in the value of {name}")));
                    }
                    self.bump();
                    if open.is_empty() {
                        return Ok(self.text[start..self.pos].to_owned());
                    }
                }
                Some(c) if c.is_whitespace() || c.is_ascii_alphanumeric() || "_-.+,=:".contains(c) => {
                    self.bump();
                }
                Some(c) => {
                    return Err(self.error(format!("unexpected `{}` in the value of {name}", c.escape_debug())));
                }
            }
        }
    }

    fn end_of_line(&mut self, name: &str) -> Result<(), TfvarsError> {
        self.skip_spaces();
        if self.skip_comment()? {
            self.skip_spaces();
        }
        match self.peek() {
            None => Ok(()),
            Some('\n') => {
                self.bump();
                Ok(())
            }
            Some(c) => Err(self.error(format!(
                "unexpected `{}` after the value of {name}: one assignment per line",
                c.escape_debug()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(String, ValueKind, String)> {
        parse(text.as_bytes())
            .unwrap_or_else(|err| panic!("{err}\n{text}"))
            .into_iter()
            .map(|assignment| (assignment.name, assignment.kind, assignment.value.expose().to_owned()))
            .collect()
    }

    fn error(text: &str) -> TfvarsError {
        match parse(text.as_bytes()) {
            Ok(assignments) => panic!("accepted {text:?}: {assignments:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn accepts_the_subset_secrets_use() {
        let text = "\u{feff}# comment\n// another\n/* block\n comment */\n\ndb_password = \"p\\\"a\\\\s\\ts\\u00e9$${x}%%{y}$5\" # trailing\r\n\
                    port = 5432\nratio = -1.5e3\nenabled = true\noff=false // done\n\
                    cidrs = [\n  \"10.0.0.0/16\", # first\n  \"10.1.0.0/16\",\n]\n\
                    tags = { team = \"core\", \"cost-center\" = 42, nested = { a = [1, 2] } }\nlast = \"x\"";
        assert_eq!(
            values(text),
            vec![
                ("db_password".to_owned(), ValueKind::String, "p\"a\\s\tsé${x}%{y}$5".to_owned()),
                ("port".to_owned(), ValueKind::Number, "5432".to_owned()),
                ("ratio".to_owned(), ValueKind::Number, "-1.5e3".to_owned()),
                ("enabled".to_owned(), ValueKind::Bool, "true".to_owned()),
                ("off".to_owned(), ValueKind::Bool, "false".to_owned()),
                (
                    "cidrs".to_owned(),
                    ValueKind::List,
                    "[\n  \"10.0.0.0/16\", # first\n  \"10.1.0.0/16\",\n]".to_owned()
                ),
                (
                    "tags".to_owned(),
                    ValueKind::Map,
                    "{ team = \"core\", \"cost-center\" = 42, nested = { a = [1, 2] } }".to_owned()
                ),
                ("last".to_owned(), ValueKind::String, "x".to_owned()),
            ]
        );
        assert!(values("").is_empty());
        assert!(values("\n\n# only comments\n").is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("a = \"x\"\nb \"y\"\n", 2, "expected `=` after b"),
            ("a = \"x\nb = 1\n", 1, "unterminated string"),
            ("a = 1\nb = [\n  \"x\",\n", 2, "`[` opened here is never closed"),
            ("a = { b = [1, 2 }\n", 1, "`}` where `]` was expected"),
            ("a = 1\n\na = 2\n", 3, "a is already set on line 1"),
            ("a = \"x\" \"y\"\n", 1, "one assignment per line"),
            ("a = \"${var.x}\"\n", 1, "template `${`"),
            ("a = <<EOF\nx\nEOF\n", 1, "heredoc"),
            ("1a = 2\n", 1, "expected a variable name"),
            ("a = secret\n", 1, "must be a \"quoted string\""),
            ("a =\nb = 1\n", 1, "a has no value"),
            ("a = 12abc\n", 1, "not a number"),
            ("a = \"\\q\"\n", 1, "unknown escape"),
            ("a = 1\n/* open\n", 2, "never closed"),
            ("a = [ 1 ]\nb = [ \"x\" ; ]\n", 2, "unexpected `;`"),
        ];
        for (text, line, message) in cases {
            let err = error(text);
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.message.contains(message), "{text:?}: {err}");
        }
        let err = parse(b"a = 1\nb = \"\xff\"\n").unwrap_err();
        assert_eq!((err.line, err.message.as_str()), (2, "not valid UTF-8"));
    }

    #[test]
    fn errors_never_quote_a_value() {
        for text in ["a = \"hunter2", "a = hunter2", "a = \"hunter2\" hunter2", "a = [ \"hunter2\" ; ]"] {
            let err = error(text);
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn terraform_env_has_one_variable_per_assignment() {
        let assignments = parse(b"db_password = \"s3cr\\\"et\"\nport = 5432\nids = [1, 2]\n").unwrap();
        assert_eq!(
            terraform_env_pairs(&assignments),
            vec![
                ("TF_VAR_db_password".to_owned(), "s3cr\"et".to_owned()),
                ("TF_VAR_port".to_owned(), "5432".to_owned()),
                ("TF_VAR_ids".to_owned(), "[1, 2]".to_owned()),
            ]
        );
        assert!(!format!("{assignments:?}").contains("s3cr"));
    }
}
