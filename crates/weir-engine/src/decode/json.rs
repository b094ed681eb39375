//! Schema-directed JSON decoding straight into columns.
//!
//! Each record must be one JSON object. Declared fields are parsed directly
//! as their declared type (no intermediate JSON tree); undeclared keys are
//! skipped. Any problem — malformed JSON, non-UTF-8 bytes, a missing or
//! mistyped field, an out-of-range number — rejects the record with a
//! reason, and nothing of it reaches the columns.

use super::columns::{FieldDecl, Kind, Slot};

mod shape;

/// Parses records into slots for a fixed list of declared fields.
pub struct JsonParser {
    fields: Vec<FieldDecl>,
    /// String values of the current record, unescaped.
    pub(crate) strings: Vec<u8>,
    key_scratch: Vec<u8>,
    /// The key layout of the last record parsed in full (`shape.rs`).
    shape: shape::Shape,
}

type Reason = String;

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    #[inline]
    fn expect(&mut self, c: u8, what: &str) -> Result<(), Reason> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }
    fn unexpected(&self, what: &str) -> Reason {
        match self.peek() {
            Some(c) if c.is_ascii_graphic() => format!(
                "malformed JSON: expected {what} at byte {}, found '{}'",
                self.i, c as char
            ),
            Some(c) => format!(
                "malformed JSON: expected {what} at byte {}, found byte 0x{c:02x}",
                self.i
            ),
            None => format!("malformed JSON: expected {what}, found end of record"),
        }
    }
}

impl JsonParser {
    /// A parser for these fields.
    pub fn new(fields: Vec<FieldDecl>) -> Self {
        JsonParser {
            fields,
            strings: Vec::new(),
            key_scratch: Vec::new(),
            shape: shape::Shape::default(),
        }
    }

    /// Parses one record into `slots` (one per field, reset here).
    pub fn parse(&mut self, record: &[u8], slots: &mut [Slot]) -> Result<(), Reason> {
        slots.iter_mut().for_each(|s| *s = Slot::Empty);
        self.strings.clear();
        if self.shape.ready() {
            if self.replay(record, slots) {
                self.shape.hit();
                return Ok(());
            }
            self.shape.missed();
            slots.iter_mut().for_each(|s| *s = Slot::Empty);
            self.strings.clear();
        }
        self.shape.begin();
        // Outside strings the grammar admits ASCII alone, and every string
        // body is checked as it is read (`string_end`), so a record that
        // parses is valid UTF-8. A record that does not is checked whole,
        // so that invalid UTF-8 is reported as such wherever it is.
        self.parse_object(record, slots)
            .map(|()| self.shape.learned())
            .map_err(|reason| match std::str::from_utf8(record) {
                Err(e) => format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                Ok(_) => reason,
            })
    }

    fn parse_object(&mut self, record: &[u8], slots: &mut [Slot]) -> Result<(), Reason> {
        let mut c = Cursor { b: record, i: 0 };
        c.ws();
        c.expect(b'{', "'{' (a JSON object)")?;
        c.ws();
        let mut next_field = 0usize;
        if c.peek() == Some(b'}') {
            c.i += 1;
        } else {
            loop {
                c.ws();
                let key_start = c.i;
                let field = self.key(&mut c, next_field)?;
                c.ws();
                c.expect(b':', "':'")?;
                self.shape.key(&record[key_start..c.i], field);
                c.ws();
                match field {
                    Some(f) => {
                        next_field = f + 1;
                        self.value(&mut c, f, &mut slots[f])?;
                    }
                    None => skip_value(&mut c)?,
                }
                c.ws();
                match c.peek() {
                    Some(b',') => c.i += 1,
                    Some(b'}') => {
                        c.i += 1;
                        break;
                    }
                    _ => return Err(c.unexpected("',' or '}'")),
                }
            }
        }
        c.ws();
        if c.i != record.len() {
            return Err(c.unexpected("end of record after the object"));
        }
        for (f, slot) in self.fields.iter().zip(slots.iter()) {
            if *slot == Slot::Empty && !f.optional {
                return Err(format!("missing field `{}`", f.name));
            }
        }
        Ok(())
    }

    /// Reads a key and finds its field, trying the field after the previous
    /// one first (producers usually keep field order).
    fn key(&mut self, c: &mut Cursor<'_>, hint: usize) -> Result<Option<usize>, Reason> {
        c.expect(b'"', "'\"' (an object key)")?;
        let start = c.i;
        let rest = &c.b[start..];
        let raw: &[u8] = match string_end(rest) {
            Ok(n) if rest[n] == b'"' => {
                c.i = start + n + 1;
                &rest[..n]
            }
            Err(bad) => return Err(bad.reason()),
            _ => {
                let mut key = std::mem::take(&mut self.key_scratch);
                key.clear();
                let r = parse_string_body(c, &mut key);
                self.key_scratch = key;
                r?;
                &self.key_scratch
            }
        };
        let n = self.fields.len();
        if hint < n && same(self.fields[hint].name.as_bytes(), raw) {
            return Ok(Some(hint));
        }
        Ok(self
            .fields
            .iter()
            .position(|f| same(f.name.as_bytes(), raw)))
    }

    /// Reads field `f`'s value into `out` (written in place: a slot passed
    /// back by value costs a store-forwarding stall per field).
    fn value(&mut self, c: &mut Cursor<'_>, f: usize, out: &mut Slot) -> Result<(), Reason> {
        let field = &self.fields[f];
        match c.peek() {
            Some(b'n') => {
                literal(c, b"null")?;
                if field.optional {
                    *out = Slot::Empty;
                    Ok(())
                } else {
                    Err(format!("field `{}` is null", field.name))
                }
            }
            Some(b't') if field.kind == Kind::Bool => {
                literal(c, b"true").map(|_| *out = Slot::Bool(true))
            }
            Some(b'f') if field.kind == Kind::Bool => {
                literal(c, b"false").map(|_| *out = Slot::Bool(false))
            }
            Some(b'"') if field.kind == Kind::Str => {
                c.i += 1;
                let start = self.strings.len() as u32;
                let mut buf = std::mem::take(&mut self.strings);
                let r = parse_string_body(c, &mut buf);
                self.strings = buf;
                r?;
                *out = Slot::Str(start, self.strings.len() as u32);
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') if field.kind != Kind::Str && field.kind != Kind::Bool => {
                number(c, field, out)
            }
            Some(_) if describe(c) == "an invalid value" => Err(c.unexpected("a JSON value")),
            Some(_) => {
                let found = describe(c);
                Err(format!(
                    "field `{}`: expected {}, found {found}",
                    field.name,
                    field.kind.name()
                ))
            }
            None => Err(c.unexpected("a value")),
        }
    }
}

fn describe(c: &Cursor<'_>) -> &'static str {
    match c.peek() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'-' | b'0'..=b'9') => "a number",
        _ => "an invalid value",
    }
}

fn literal(c: &mut Cursor<'_>, word: &[u8]) -> Result<(), Reason> {
    if c.b[c.i..].starts_with(word) {
        c.i += word.len();
        Ok(())
    } else {
        Err(c.unexpected("a JSON value"))
    }
}

fn number(c: &mut Cursor<'_>, field: &FieldDecl, out: &mut Slot) -> Result<(), Reason> {
    let start = c.i;
    let negative = c.peek() == Some(b'-');
    if negative {
        c.i += 1;
    }
    let digits_start = c.i;
    c.i += digit_run(&c.b[c.i..]);
    let (magnitude, overflow) = magnitude_in(c.b, digits_start, c.i);
    if c.i == digits_start {
        return Err(c.unexpected("a digit"));
    }
    if c.b[digits_start] == b'0' && c.i - digits_start > 1 {
        return Err(format!(
            "field `{}`: malformed number (leading zero)",
            field.name
        ));
    }
    let mut fractional = false;
    if c.peek() == Some(b'.') {
        fractional = true;
        c.i += 1;
        let s = c.i;
        while matches!(c.peek(), Some(b'0'..=b'9')) {
            c.i += 1;
        }
        if c.i == s {
            return Err(c.unexpected("a digit after '.'"));
        }
    }
    if matches!(c.peek(), Some(b'e' | b'E')) {
        fractional = true;
        c.i += 1;
        if matches!(c.peek(), Some(b'+' | b'-')) {
            c.i += 1;
        }
        let s = c.i;
        while matches!(c.peek(), Some(b'0'..=b'9')) {
            c.i += 1;
        }
        if c.i == s {
            return Err(c.unexpected("a digit in the exponent"));
        }
    }
    let text = &c.b[start..c.i];
    let out_of_range = || {
        format!(
            "field `{}`: {} is out of range for {}",
            field.name,
            String::from_utf8_lossy(text),
            field.kind.name()
        )
    };
    match field.kind {
        Kind::F32 | Kind::F64 => {
            // The bytes were checked to be ASCII number characters above.
            let s = std::str::from_utf8(text).map_err(|_| out_of_range())?;
            let v: f64 = s.parse().map_err(|_| out_of_range())?;
            if !v.is_finite() || (field.kind == Kind::F32 && v.abs() > f32::MAX as f64) {
                return Err(out_of_range());
            }
            *out = Slot::Float(v);
            Ok(())
        }
        _ if fractional => Err(format!(
            "field `{}`: expected {}, found non-integer number {}",
            field.name,
            field.kind.name(),
            String::from_utf8_lossy(text)
        )),
        _ if overflow => Err(out_of_range()),
        Kind::I64 | Kind::I32 => {
            let v = if negative {
                if magnitude > i64::MAX as u64 + 1 {
                    return Err(out_of_range());
                }
                (magnitude as i64).wrapping_neg()
            } else {
                i64::try_from(magnitude).map_err(|_| out_of_range())?
            };
            if field.kind == Kind::I32 && i32::try_from(v).is_err() {
                return Err(out_of_range());
            }
            *out = Slot::Int(v);
            Ok(())
        }
        Kind::U64 | Kind::U32 => {
            if negative && magnitude != 0 {
                return Err(out_of_range());
            }
            if field.kind == Kind::U32 && magnitude > u32::MAX as u64 {
                return Err(out_of_range());
            }
            *out = Slot::UInt(magnitude);
            Ok(())
        }
        Kind::Bool | Kind::Str => Err(out_of_range()),
    }
}

/// How many ASCII digits `b` starts with, eight bytes at a time.
#[inline]
fn digit_run(b: &[u8]) -> usize {
    let mut n = 0;
    while let Some(chunk) = b.get(n..n + 8) {
        // Each byte less '0': a digit is then below 10. Adding 0x76 to
        // the low seven bits sets a byte's top bit when they are 10 or
        // more (no carry leaves the byte); a byte whose own top bit is
        // set is no digit either.
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])) ^ 0x3030_3030_3030_3030;
        let non_digits =
            (((x & 0x7f7f_7f7f_7f7f_7f7f) + 0x7676_7676_7676_7676) | x) & 0x8080_8080_8080_8080;
        if non_digits != 0 {
            return n + non_digits.trailing_zeros() as usize / 8;
        }
        n += 8;
    }
    n + b[n..].iter().take_while(|d| d.is_ascii_digit()).count()
}

/// Powers of ten below 10^8.
const POW10: [u64; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

/// The value of the ASCII digits `b[start..end]`, and whether it
/// overflowed `u64`: as [`magnitude`], with the digits after the last
/// whole eight read as one word too (the eight bytes that end with them,
/// the bytes before them masked to zeros), where the record has eight
/// bytes to read there.
#[inline]
fn magnitude_in(b: &[u8], start: usize, end: usize) -> (u64, bool) {
    let n = end - start;
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    if n > 19 || end < 8 {
        return magnitude(&b[start..end]);
    }
    // At most 19 digits: no overflow.
    let mut m = 0u64;
    let mut at = start;
    while at + 8 <= end {
        m = m * 100_000_000 + eight_digits(word(at));
        at += 8;
    }
    let rest = end - at;
    if rest > 0 {
        let tail = word(end - 8) & (u64::MAX << (8 * (8 - rest)));
        m = m * POW10[rest] + eight_digits(tail);
    }
    (m, false)
}

/// The value of a run of ASCII digits, and whether it overflowed `u64`.
#[inline]
fn magnitude(digits: &[u8]) -> (u64, bool) {
    // 19 digits always fit; eight at a time, then one at a time.
    if digits.len() <= 19 {
        let mut chunks = digits.chunks_exact(8);
        let mut m = 0u64;
        for chunk in &mut chunks {
            // chunks_exact: always 8 bytes.
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            m = m * 100_000_000 + eight_digits(word);
        }
        for &d in chunks.remainder() {
            m = m * 10 + u64::from(d - b'0');
        }
        return (m, false);
    }
    let mut m = 0u64;
    let mut overflow = false;
    for &d in digits {
        match m
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(d - b'0')))
        {
            Some(v) => m = v,
            None => overflow = true,
        }
    }
    (m, overflow)
}

/// Eight ASCII digits, loaded little-endian (the first digit in the
/// lowest byte), as a number: pairs, then fours, then the eight, a few
/// multiplications instead of eight dependent ones.
#[inline]
fn eight_digits(word: u64) -> u64 {
    // Each step multiplies by (10^k << s) + 1: a lane plus 10^k times its
    // neighbour lands in the upper lane; the shift brings it down.
    let w = (word & 0x0f0f_0f0f_0f0f_0f0f).wrapping_mul((10 << 8) + 1) >> 8;
    let w = (w & 0x00ff_00ff_00ff_00ff).wrapping_mul((100 << 16) + 1) >> 16;
    (w & 0x0000_ffff_0000_ffff).wrapping_mul((10_000 << 32) + 1) >> 32
}

/// Parses a string body after the opening quote, unescaping into `out`.
fn parse_string_body(c: &mut Cursor<'_>, out: &mut Vec<u8>) -> Result<(), Reason> {
    loop {
        let rest = &c.b[c.i..];
        let n = string_end(rest).map_err(|bad| bad.reason())?;
        out.extend_from_slice(&rest[..n]);
        c.i += n + 1;
        if rest[n] == b'"' {
            return Ok(());
        }
        let Some(e) = c.peek() else {
            return Err("malformed JSON: unterminated escape".into());
        };
        c.i += 1;
        match e {
            b'"' => out.push(b'"'),
            b'\\' => out.push(b'\\'),
            b'/' => out.push(b'/'),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'u' => {
                let hi = hex4(c)?;
                let cp = if (0xD800..0xDC00).contains(&hi) {
                    if c.b[c.i..].starts_with(b"\\u") {
                        c.i += 2;
                        let lo = hex4(c)?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return Err("malformed JSON: unpaired surrogate in \\u escape".into());
                        }
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else {
                        return Err("malformed JSON: unpaired surrogate in \\u escape".into());
                    }
                } else if (0xDC00..0xE000).contains(&hi) {
                    return Err("malformed JSON: unpaired surrogate in \\u escape".into());
                } else {
                    hi
                };
                let ch = char::from_u32(cp).ok_or("malformed JSON: invalid \\u escape")?;
                let mut tmp = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
            }
            other => {
                return Err(format!(
                    "malformed JSON: invalid escape '\\{}'",
                    other as char
                ))
            }
        }
    }
}

/// What ended a string body's scan too early.
enum BadString {
    Unterminated,
    /// A control byte (its value).
    Control(u8),
    /// Invalid UTF-8 (`JsonParser::parse` reports where, from the whole
    /// record).
    Utf8,
}

impl BadString {
    /// The reason.
    fn reason(&self) -> Reason {
        match *self {
            BadString::Unterminated => "malformed JSON: unterminated string".into(),
            BadString::Control(b) => {
                format!("malformed JSON: control byte 0x{b:02x} inside a string")
            }
            BadString::Utf8 => "invalid UTF-8".into(),
        }
    }
}

/// How many bytes of a string body [`string_end`] looks at itself.
const SHORT_STRING: usize = 16;

/// The offset of the first `"` or `\\` in `rest` (a string body from its
/// current position), checking the bytes before it: no control bytes,
/// valid UTF-8.
#[inline]
fn string_end(rest: &[u8]) -> Result<usize, BadString> {
    // Keys and most values are short: look at the first bytes in line
    // before calling the vectorised search.
    let head = &rest[..rest.len().min(SHORT_STRING)];
    let n = match head.iter().position(|&b| b == b'"' || b == b'\\') {
        Some(n) => n,
        None => {
            memchr::memchr2(b'"', b'\\', &rest[head.len()..]).ok_or(BadString::Unterminated)?
                + head.len()
        }
    };
    let chunk = &rest[..n];
    // One branch-free pass (it vectorises): is any byte outside printable
    // ASCII? Only then look closer.
    let unusual = chunk
        .iter()
        .fold(false, |acc, &b| acc | (b.wrapping_sub(0x20) >= 0x60));
    if unusual {
        if let Some(&b) = chunk.iter().find(|&&b| b < 0x20) {
            return Err(BadString::Control(b));
        }
        std::str::from_utf8(chunk).map_err(|_| BadString::Utf8)?;
    }
    Ok(n)
}

/// Whether two short byte strings are equal: inline, where a call to
/// `memcmp` costs more than the comparison for a field name.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(true, |acc, (x, y)| acc & (x == y))
}

fn hex4(c: &mut Cursor<'_>) -> Result<u32, Reason> {
    let s =
        c.b.get(c.i..c.i + 4)
            .ok_or("malformed JSON: short \\u escape")?;
    let mut v = 0u32;
    for &h in s {
        let d = (h as char)
            .to_digit(16)
            .ok_or("malformed JSON: bad hex digit in \\u escape")?;
        v = v * 16 + d;
    }
    c.i += 4;
    Ok(v)
}

/// Skips one JSON value of any kind (for undeclared keys), validating it
/// as strictly as declared values, iteratively so deep nesting cannot
/// overflow the stack.
fn skip_value(c: &mut Cursor<'_>) -> Result<(), Reason> {
    // One entry per open container: true for an object, false for an array.
    let mut open: Vec<bool> = Vec::new();
    let mut scratch = Vec::new();
    'value: loop {
        c.ws();
        match c.peek() {
            Some(b'{') => {
                c.i += 1;
                c.ws();
                if c.peek() == Some(b'}') {
                    c.i += 1;
                } else {
                    open.push(true);
                    object_key(c, &mut scratch)?;
                    continue 'value;
                }
            }
            Some(b'[') => {
                c.i += 1;
                c.ws();
                if c.peek() == Some(b']') {
                    c.i += 1;
                } else {
                    open.push(false);
                    continue 'value;
                }
            }
            Some(b'"') => {
                c.i += 1;
                scratch.clear();
                parse_string_body(c, &mut scratch)?;
            }
            Some(b't') => literal(c, b"true")?,
            Some(b'f') => literal(c, b"false")?,
            Some(b'n') => literal(c, b"null")?,
            Some(b'-' | b'0'..=b'9') => scan_number(c)?,
            _ => return Err(c.unexpected("a JSON value")),
        }
        // After a complete value: continue the container or close it.
        loop {
            let Some(&object) = open.last() else {
                return Ok(());
            };
            c.ws();
            match c.peek() {
                Some(b',') => {
                    c.i += 1;
                    if object {
                        c.ws();
                        object_key(c, &mut scratch)?;
                    }
                    continue 'value;
                }
                Some(b'}') if object => {
                    c.i += 1;
                    open.pop();
                }
                Some(b']') if !object => {
                    c.i += 1;
                    open.pop();
                }
                _ => return Err(c.unexpected(if object { "',' or '}'" } else { "',' or ']'" })),
            }
        }
    }
}

/// Reads `"key" :` inside an object being skipped.
fn object_key(c: &mut Cursor<'_>, scratch: &mut Vec<u8>) -> Result<(), Reason> {
    c.expect(b'"', "'\"' (an object key)")?;
    scratch.clear();
    parse_string_body(c, scratch)?;
    c.ws();
    c.expect(b':', "':'")
}

/// Scans a number with JSON's grammar: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn scan_number(c: &mut Cursor<'_>) -> Result<(), Reason> {
    if c.peek() == Some(b'-') {
        c.i += 1;
    }
    let digits = |c: &mut Cursor<'_>| {
        let s = c.i;
        while matches!(c.peek(), Some(b'0'..=b'9')) {
            c.i += 1;
        }
        c.i - s
    };
    let start = c.i;
    match digits(c) {
        0 => return Err(c.unexpected("a digit")),
        n if n > 1 && c.b[start] == b'0' => {
            return Err("malformed JSON: number with a leading zero".into())
        }
        _ => {}
    }
    if c.peek() == Some(b'.') {
        c.i += 1;
        if digits(c) == 0 {
            return Err(c.unexpected("a digit after '.'"));
        }
    }
    if matches!(c.peek(), Some(b'e' | b'E')) {
        c.i += 1;
        if matches!(c.peek(), Some(b'+' | b'-')) {
            c.i += 1;
        }
        if digits(c) == 0 {
            return Err(c.unexpected("a digit in the exponent"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
