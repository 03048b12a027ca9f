//! A zero-copy JSON reader that keeps every value's byte span, for the containers that are JSON
//! documents or carry one (Cloud Hypervisor's `state.json`, the vmdesc at the end of a QEMU
//! migration stream), so that writing back can replace exactly the bytes of the values it
//! changes and leave the rest of the document as the tool wrote it.
//!
//! RFC 8259 values; nesting is limited to [`MAX_DEPTH`] so hostile input cannot exhaust the
//! stack. Numbers are kept as text ([`Value::as_u64`] reads unsigned integers). This is not
//! serde_json (whose values carry no position); it needs no cargo feature.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;

/// Why a document is not JSON: the byte offset and what was expected there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset in the document.
    pub offset: usize,
    /// What the reader expected.
    pub what: &'static str,
}

/// One value and where it lies in the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value<'a> {
    /// Its bytes in the document (a string's span includes the quotes).
    pub span: Range<usize>,
    /// What it is.
    pub kind: Kind<'a>,
}

/// The kinds of value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Number(&'a str),
    /// A string: the text between the quotes, escapes not yet resolved.
    String(&'a str),
    /// An array.
    Array(Vec<Value<'a>>),
    /// An object: members in document order (duplicate keys kept).
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The member `key` of an object (the first, if repeated).
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match &self.kind {
            Kind::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[Value<'a>]> {
        match &self.kind {
            Kind::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The members of an object.
    pub fn as_object(&self) -> Option<&[(Cow<'a, str>, Value<'a>)]> {
        match &self.kind {
            Kind::Object(m) => Some(m),
            _ => None,
        }
    }

    /// An unsigned integer written without sign, fraction or exponent.
    pub fn as_u64(&self) -> Option<u64> {
        match self.kind {
            Kind::Number(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => t.parse().ok(),
            _ => None,
        }
    }

    /// A string's text with its escapes resolved.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        match self.kind {
            Kind::String(raw) => unescape(raw),
            _ => None,
        }
    }

    /// Whether the value is `null`.
    pub fn is_null(&self) -> bool {
        self.kind == Kind::Null
    }
}

/// Parses a whole document: one value, surrounded by whitespace only.
pub fn parse(text: &str) -> Result<Value<'_>, JsonError> {
    let mut p = Parser { s: text.as_bytes(), text, pos: 0 };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("the end of the document"));
    }
    Ok(v)
}

/// Parses the one value that starts at `start` (after optional whitespace); returns it and
/// the offset after it. Spans are offsets in `text`.
pub fn parse_at(text: &str, start: usize) -> Result<(Value<'_>, usize), JsonError> {
    let mut p = Parser { s: text.as_bytes(), text, pos: start };
    p.ws();
    let v = p.value(0)?;
    Ok((v, p.pos))
}

/// The JSON string literal (with quotes) of `s`, escaped as serde_json and QEMU's JSON writer
/// escape: `"` and `\` with a backslash, the control characters as `\n`, `\t`, ... or `\u00XX`,
/// everything else as is.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Resolves the escapes of a string's raw text; `None` for an invalid escape or a lone
/// surrogate.
pub fn unescape(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('\\') {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = it.next()?;
        out.push(match e {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let hi = hex4(&mut it)?;
                if (0xD800..0xDC00).contains(&hi) {
                    if it.next()? != '\\' || it.next()? != 'u' {
                        return None;
                    }
                    let lo = hex4(&mut it)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                } else {
                    char::from_u32(hi)?
                }
            }
            _ => return None,
        });
    }
    Some(Cow::Owned(out))
}

fn hex4(it: &mut core::str::Chars<'_>) -> Option<u32> {
    let mut v = 0;
    for _ in 0..4 {
        v = v << 4 | it.next()?.to_digit(16)?;
    }
    Some(v)
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError { offset: self.pos, what }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        let start = self.pos;
        let kind = match self.s.get(self.pos) {
            None => return Err(self.err("a value")),
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return Err(self.err("less nesting"));
                }
                self.pos += 1;
                let mut members = Vec::new();
                self.ws();
                if !self.eat(b'}') {
                    loop {
                        self.ws();
                        if self.s.get(self.pos) != Some(&b'"') {
                            return Err(self.err("a member name"));
                        }
                        let raw = self.string()?;
                        let key = unescape(raw).ok_or_else(|| self.err("a valid escape"))?;
                        self.ws();
                        if !self.eat(b':') {
                            return Err(self.err("':'"));
                        }
                        self.ws();
                        let v = self.value(depth + 1)?;
                        members.push((key, v));
                        self.ws();
                        if self.eat(b'}') {
                            break;
                        }
                        if !self.eat(b',') {
                            return Err(self.err("',' or '}'"));
                        }
                    }
                }
                Kind::Object(members)
            }
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(self.err("less nesting"));
                }
                self.pos += 1;
                let mut items = Vec::new();
                self.ws();
                if !self.eat(b']') {
                    loop {
                        self.ws();
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        if self.eat(b']') {
                            break;
                        }
                        if !self.eat(b',') {
                            return Err(self.err("',' or ']'"));
                        }
                    }
                }
                Kind::Array(items)
            }
            Some(b'"') => Kind::String(self.string()?),
            Some(b't') => self.literal("true", Kind::Bool(true))?,
            Some(b'f') => self.literal("false", Kind::Bool(false))?,
            Some(b'n') => self.literal("null", Kind::Null)?,
            Some(b'-' | b'0'..=b'9') => Kind::Number(self.number()?),
            Some(_) => return Err(self.err("a value")),
        };
        Ok(Value { span: start..self.pos, kind })
    }

    fn literal(&mut self, word: &'static str, kind: Kind<'a>) -> Result<Kind<'a>, JsonError> {
        if self.s[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(kind)
        } else {
            Err(self.err(word))
        }
    }

    /// A string at `pos` (on its opening quote); returns the raw text between the quotes.
    fn string(&mut self) -> Result<&'a str, JsonError> {
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.s.get(self.pos) {
                None => return Err(self.err("the closing '\"'")),
                Some(b'"') => break,
                Some(b'\\') => match self.s.get(self.pos + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 2,
                    Some(b'u') => {
                        let ok =
                            self.s.get(self.pos + 2..self.pos + 6).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
                        if !ok {
                            return Err(self.err("four hex digits after \\u"));
                        }
                        self.pos += 6;
                    }
                    _ => return Err(self.err("a valid escape")),
                },
                Some(&b) if b < 0x20 => return Err(self.err("no control character in a string")),
                Some(_) => self.pos += 1,
            }
        }
        let raw = &self.text[start..self.pos];
        self.pos += 1;
        Ok(raw)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<&'a str, JsonError> {
        let start = self.pos;
        self.eat(b'-');
        if self.eat(b'0') {
            if self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
                return Err(self.err("no leading zero"));
            }
        } else if self.digits() == 0 {
            return Err(self.err("a digit"));
        }
        if self.eat(b'.') && self.digits() == 0 {
            return Err(self.err("a digit after '.'"));
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            if self.digits() == 0 {
                return Err(self.err("an exponent"));
            }
        }
        Ok(&self.text[start..self.pos])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_values() {
        let doc = r#" {"a": [1, 22, 333], "s": "x\"y\u00e9", "n": null, "t": true} "#;
        let v = parse(doc).unwrap();
        let a = v.get("a").unwrap().as_array().unwrap();
        assert_eq!(a[1].as_u64(), Some(22));
        assert_eq!(&doc[a[2].span.clone()], "333");
        let s = v.get("s").unwrap();
        assert_eq!(s.as_str().unwrap(), "x\"y\u{e9}");
        assert_eq!(&doc[s.span.clone()], r#""x\"y\u00e9""#);
        assert!(v.get("n").unwrap().is_null());
        assert_eq!(v.get("t").unwrap().kind, Kind::Bool(true));
        assert_eq!(&doc[v.span.clone()], doc.trim());
    }

    #[test]
    fn escape_inverts_unescape() {
        for s in ["plain", "q\"b\\s", "nl\n tab\t cr\r \u{1} \u{1f}", "é ✓ 𝄞"] {
            let lit = escape(s);
            let v = parse(&lit).unwrap();
            assert_eq!(v.as_str().unwrap(), s);
        }
    }

    #[test]
    fn refuses_bad_documents() {
        for (doc, at) in [("", 0), ("[1,]", 3), ("{\"a\" 1}", 5), ("01", 1), ("\"\\x\"", 1), ("[1] x", 4), ("-", 1)] {
            assert_eq!(parse(doc).map(|_| ()).unwrap_err().offset, at, "{doc:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep).unwrap_err().what, "less nesting");
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
    }
}
