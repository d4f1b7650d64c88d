//! A strict parser for the Python literals `repr()` produces for JSON-like data (dict,
//! list, tuple, str, int, float, True/False/None), turned into JSON values. Anything else
//! (a call, a name, trailing text) is an error, never a guess.

use serde_json::{Map, Number, Value};

/// Nesting deeper than this is refused: real event contexts are a few levels deep, and
/// the limit keeps a hostile body from exhausting the stack.
const MAX_DEPTH: usize = 64;

pub fn parse(input: &str) -> Result<Value, String> {
    let mut p = Parser {
        s: input.as_bytes(),
        src: input,
        i: 0,
    };
    let value = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected text at offset {}", p.i));
    }
    Ok(value)
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at offset {}", c as char, self.i))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".to_owned());
        }
        self.ws();
        match self.peek() {
            Some(b'{') => self.dict(depth),
            Some(b'[') => self.sequence(b'[', b']', depth),
            Some(b'(') => self.sequence(b'(', b')', depth),
            Some(b'\'' | b'"') => self.string().map(Value::String),
            Some(c) if c == b'-' || c == b'+' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_ascii_alphabetic() => self.keyword(),
            Some(c) => Err(format!("unexpected '{}' at offset {}", c as char, self.i)),
            None => Err("unexpected end".to_owned()),
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Value, String> {
        self.i += 1;
        let mut map = Map::new();
        loop {
            self.ws();
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(Value::Object(map));
            }
            let key = match self.value(depth + 1)? {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => if b { "True" } else { "False" }.to_owned(),
                Value::Null => "None".to_owned(),
                _ => return Err(format!("unsupported dict key at offset {}", self.i)),
            };
            self.expect(b':')?;
            let value = self.value(depth + 1)?;
            map.insert(key, value);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected ',' or '}}' at offset {}", self.i)),
            }
        }
    }

    fn sequence(&mut self, open: u8, close: u8, depth: usize) -> Result<Value, String> {
        debug_assert_eq!(self.peek(), Some(open));
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.ws();
            if self.peek() == Some(close) {
                self.i += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {}
                _ => {
                    return Err(format!(
                        "expected ',' or '{}' at offset {}",
                        close as char, self.i
                    ));
                }
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self.s[self.i];
        let start = self.i;
        self.i += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(format!("unterminated string starting at offset {start}"));
            };
            if c == quote {
                self.i += 1;
                return Ok(out);
            }
            if c == b'\\' {
                self.i += 1;
                let esc = self
                    .peek()
                    .ok_or_else(|| "unterminated escape".to_owned())?;
                self.i += 1;
                match esc {
                    b'\\' => out.push('\\'),
                    b'\'' => out.push('\''),
                    b'"' => out.push('"'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'0' => out.push('\0'),
                    b'x' => out.push(self.hex_char(2)?),
                    b'u' => out.push(self.hex_char(4)?),
                    b'U' => out.push(self.hex_char(8)?),
                    other => {
                        return Err(format!(
                            "unsupported escape '\\{}' at offset {}",
                            other as char,
                            self.i - 1
                        ));
                    }
                }
                continue;
            }
            // Copy one whole UTF-8 character from the source.
            let ch = self.src[self.i..]
                .chars()
                .next()
                .ok_or_else(|| "invalid text".to_owned())?;
            out.push(ch);
            self.i += ch.len_utf8();
        }
    }

    fn hex_char(&mut self, digits: usize) -> Result<char, String> {
        let hex = self
            .src
            .get(self.i..self.i + digits)
            .ok_or_else(|| "truncated escape".to_owned())?;
        let code = u32::from_str_radix(hex, 16).map_err(|_| format!("bad escape {hex:?}"))?;
        self.i += digits;
        char::from_u32(code).ok_or_else(|| format!("bad code point {code:#x}"))
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'_') {
                self.i += 1;
            } else {
                break;
            }
        }
        let text: String = self.src[start..self.i]
            .chars()
            .filter(|c| *c != '_')
            .collect();
        if let Ok(n) = text.parse::<i64>() {
            return Ok(Value::Number(n.into()));
        }
        text.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("bad number {text:?} at offset {start}"))
    }

    fn keyword(&mut self) -> Result<Value, String> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.i += 1;
        }
        match &self.src[start..self.i] {
            "True" => Ok(Value::Bool(true)),
            "False" => Ok(Value::Bool(false)),
            "None" => Ok(Value::Null),
            other => Err(format!("unsupported name {other:?} at offset {start}")),
        }
    }
}
