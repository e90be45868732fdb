//! The wire-format walker: turns one message's bytes into JSON, driven by the generated
//! [`super::schema`] table.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::ProtobufError;
use super::schema::MESSAGES;

/// Deeper than any Kubernetes object nests; bounds the recursion on hostile input.
const MAX_DEPTH: usize = 100;

/// What a field holds, as its JSON form needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    /// Base64 in JSON, as Go encodes `[]byte`.
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    /// A message, by its OpenAPI definition name.
    Msg(&'static str),
    /// `meta.v1.Time`: RFC 3339 with seconds.
    Time,
    /// `meta.v1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `meta.v1.Duration`: a Go duration string (no served type has one yet).
    #[cfg_attr(not(test), allow(dead_code))]
    Duration,
    /// `runtime.RawExtension`, `meta.v1.FieldsV1`: embedded JSON bytes.
    RawJson,
    /// `resource.Quantity`: its canonical string.
    Quantity,
    IntOrString,
    /// A named `[]string` (`ExtraValue`) encoded as `repeated string items = 1`.
    StringList,
}

/// How a field occurs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    One,
    /// A repeated field: a JSON array.
    Many,
    /// `map<string, V>`: repeated entries (key = 1, value = 2), a JSON object.
    Map,
    /// A Go struct embedded with `json:",inline"`: its fields land in the parent object.
    Inline,
}

#[derive(Debug)]
pub struct Field {
    pub tag: u32,
    pub json: &'static str,
    pub kind: Kind,
    pub shape: Shape,
    /// An empty string, zero or false is "unset" (a Go non-pointer `omitempty` field, which
    /// Go's encoder writes anyway): left out of the JSON, as Go's JSON encoder would.
    pub omit_empty: bool,
}

pub const fn f(tag: u32, json: &'static str, kind: Kind, shape: Shape) -> Field {
    Field {
        tag,
        json,
        kind,
        shape,
        omit_empty: false,
    }
}

impl Field {
    pub const fn omit(self) -> Field {
        Field {
            omit_empty: true,
            ..self
        }
    }
}

#[derive(Debug)]
pub struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
}

pub fn message(name: &str) -> Option<&'static Message> {
    MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .map(|i| &MESSAGES[i])
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A cursor over one message's bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self.buf.get(self.pos)?;
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    pub fn len_delimited(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.bytes(len)
    }

    fn fixed64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }

    /// The next field's `(tag, wire type)`.
    pub fn key(&mut self) -> Option<(u32, u8)> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).ok().filter(|t| *t > 0)?;
        Some((tag, (key & 7) as u8))
    }

    /// Skips a field this decoder does not know (newer clients send fields we lack).
    fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.bytes(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.bytes(4).map(drop),
            _ => None,
        }
    }
}

/// Decodes a message's bytes into its JSON object.
pub fn decode_message(name: &str, buf: &[u8]) -> Result<Map<String, Value>, ProtobufError> {
    let message = message(name).ok_or_else(|| ProtobufError::UnknownMessage(name.to_string()))?;
    decode_fields(message, buf, 0)
}

fn decode_fields(
    message: &'static Message,
    buf: &[u8],
    depth: usize,
) -> Result<Map<String, Value>, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep(message.name));
    }
    let mut out = Map::new();
    let mut reader = Reader::new(buf);
    while !reader.done() {
        let (tag, wire) = reader
            .key()
            .ok_or_else(|| ProtobufError::truncated(message.name, "field key"))?;
        let Some(field) = message.fields.iter().find(|f| f.tag == tag) else {
            reader.skip(wire).ok_or_else(|| {
                ProtobufError::truncated(message.name, &format!("unknown field {tag}"))
            })?;
            continue;
        };
        let ctx = Ctx {
            message: message.name,
            field: field.json,
            depth,
        };
        match field.shape {
            Shape::One => {
                if let Some(value) = ctx.value(field.kind, wire, &mut reader)? {
                    if field.omit_empty && is_empty(&value) {
                        out.remove(field.json);
                    } else {
                        out.insert(field.json.to_string(), value);
                    }
                }
            }
            Shape::Many => {
                let items = out
                    .entry(field.json)
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = items else {
                    unreachable!("repeated fields hold arrays")
                };
                if wire == LEN && is_packable(field.kind) {
                    // Packed repeated scalars, which proto2 readers must also accept.
                    let packed = reader.len_delimited().ok_or_else(|| ctx.truncated())?;
                    let mut inner = Reader::new(packed);
                    while !inner.done() {
                        let scalar_wire = if field.kind == Kind::Double {
                            FIXED64
                        } else {
                            VARINT
                        };
                        items.extend(ctx.value(field.kind, scalar_wire, &mut inner)?);
                    }
                } else {
                    items.extend(ctx.value(field.kind, wire, &mut reader)?);
                }
            }
            Shape::Map => {
                ctx.expect_wire(wire, LEN)?;
                let entry = reader.len_delimited().ok_or_else(|| ctx.truncated())?;
                let (key, value) = ctx.map_entry(field.kind, entry)?;
                let map = out
                    .entry(field.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
            }
            Shape::Inline => {
                if let Some(Value::Object(inner)) = ctx.value(field.kind, wire, &mut reader)? {
                    out.extend(inner);
                }
            }
        }
    }
    Ok(out)
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn is_packable(kind: Kind) -> bool {
    matches!(kind, Kind::Bool | Kind::Int32 | Kind::Int64 | Kind::Double)
}

/// Where a value is being read, for error messages.
struct Ctx {
    message: &'static str,
    field: &'static str,
    depth: usize,
}

impl Ctx {
    fn truncated(&self) -> ProtobufError {
        ProtobufError::truncated(self.message, self.field)
    }

    fn expect_wire(&self, wire: u8, want: u8) -> Result<(), ProtobufError> {
        if wire == want {
            Ok(())
        } else {
            Err(ProtobufError::WireType {
                message: self.message.to_string(),
                field: self.field.to_string(),
                wire,
            })
        }
    }

    fn string(&self, bytes: &[u8]) -> Result<String, ProtobufError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| ProtobufError::InvalidUtf8 {
            message: self.message.to_string(),
            field: self.field.to_string(),
        })
    }

    /// One value of `kind`; `None` for a value whose JSON form is absent (a zero time).
    fn value(
        &self,
        kind: Kind,
        wire: u8,
        reader: &mut Reader<'_>,
    ) -> Result<Option<Value>, ProtobufError> {
        let value = match kind {
            Kind::Bool | Kind::Int32 | Kind::Int64 => {
                self.expect_wire(wire, VARINT)?;
                let raw = reader.varint().ok_or_else(|| self.truncated())?;
                match kind {
                    Kind::Bool => Value::Bool(raw != 0),
                    // Negative int32s are sign-extended to ten bytes on the wire.
                    Kind::Int32 => Value::from(raw as i64 as i32),
                    _ => Value::from(raw as i64),
                }
            }
            Kind::Double => {
                self.expect_wire(wire, FIXED64)?;
                let bits = reader.fixed64().ok_or_else(|| self.truncated())?;
                Number::from_f64(f64::from_bits(bits)).map_or(Value::Null, Value::Number)
            }
            _ => {
                self.expect_wire(wire, LEN)?;
                let bytes = reader.len_delimited().ok_or_else(|| self.truncated())?;
                return self.len_value(kind, bytes);
            }
        };
        Ok(Some(value))
    }

    fn len_value(&self, kind: Kind, bytes: &[u8]) -> Result<Option<Value>, ProtobufError> {
        Ok(Some(match kind {
            Kind::Str => Value::String(self.string(bytes)?),
            Kind::Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            Kind::Msg(name) => {
                let message =
                    message(name).ok_or_else(|| ProtobufError::UnknownMessage(name.to_string()))?;
                Value::Object(decode_fields(message, bytes, self.depth + 1)?)
            }
            Kind::Time | Kind::MicroTime => return self.time(kind, bytes),
            Kind::Duration => {
                let nanos = self.scalar_fields(bytes)?.first().copied().unwrap_or(0);
                Value::String(go_duration(nanos as i64))
            }
            Kind::RawJson => {
                let raw = self.bytes_field(bytes, 1)?.unwrap_or_default();
                if raw.is_empty() {
                    return Ok(None);
                }
                serde_json::from_slice(raw).map_err(|source| ProtobufError::EmbeddedJson {
                    message: self.message,
                    field: self.field,
                    source,
                })?
            }
            Kind::Quantity => {
                let raw = self.bytes_field(bytes, 1)?.unwrap_or(b"0");
                Value::String(self.string(raw)?)
            }
            Kind::IntOrString => self.int_or_string(bytes)?,
            Kind::StringList => {
                let mut items = Vec::new();
                let mut reader = Reader::new(bytes);
                while !reader.done() {
                    let (tag, wire) = reader.key().ok_or_else(|| self.truncated())?;
                    if tag == 1 && wire == LEN {
                        let item = reader.len_delimited().ok_or_else(|| self.truncated())?;
                        items.push(Value::String(self.string(item)?));
                    } else {
                        reader.skip(wire).ok_or_else(|| self.truncated())?;
                    }
                }
                Value::Array(items)
            }
            Kind::Bool | Kind::Int32 | Kind::Int64 | Kind::Double => {
                return Err(ProtobufError::WireType {
                    message: self.message.to_string(),
                    field: self.field.to_string(),
                    wire: LEN,
                });
            }
        }))
    }

    /// Varint fields 1..=3 of a small message (missing ones are zero).
    fn scalar_fields(&self, bytes: &[u8]) -> Result<[u64; 3], ProtobufError> {
        let mut out = [0u64; 3];
        let mut reader = Reader::new(bytes);
        while !reader.done() {
            let (tag, wire) = reader.key().ok_or_else(|| self.truncated())?;
            match (tag, wire) {
                (1..=3, VARINT) => {
                    out[tag as usize - 1] = reader.varint().ok_or_else(|| self.truncated())?
                }
                _ => reader.skip(wire).ok_or_else(|| self.truncated())?,
            }
        }
        Ok(out)
    }

    /// The last occurrence of length-delimited field `tag` of a small message.
    fn bytes_field<'b>(
        &self,
        bytes: &'b [u8],
        tag: u32,
    ) -> Result<Option<&'b [u8]>, ProtobufError> {
        let mut found = None;
        let mut reader = Reader::new(bytes);
        while !reader.done() {
            let (t, wire) = reader.key().ok_or_else(|| self.truncated())?;
            if t == tag && wire == LEN {
                found = Some(reader.len_delimited().ok_or_else(|| self.truncated())?);
            } else {
                reader.skip(wire).ok_or_else(|| self.truncated())?;
            }
        }
        Ok(found)
    }

    fn time(&self, kind: Kind, bytes: &[u8]) -> Result<Option<Value>, ProtobufError> {
        // Go writes a zero time as an empty message; its JSON is null, which we leave out.
        if bytes.is_empty() {
            return Ok(None);
        }
        let [seconds, nanos, _] = self.scalar_fields(bytes)?;
        let time = chrono::DateTime::from_timestamp(seconds as i64, nanos as i64 as i32 as u32)
            .ok_or(ProtobufError::InvalidTime {
                message: self.message,
                field: self.field,
            })?;
        let format = if kind == Kind::MicroTime {
            "%Y-%m-%dT%H:%M:%S%.6fZ"
        } else {
            "%Y-%m-%dT%H:%M:%SZ"
        };
        Ok(Some(Value::String(time.format(format).to_string())))
    }

    fn int_or_string(&self, bytes: &[u8]) -> Result<Value, ProtobufError> {
        let [kind, int_val, _] = self.scalar_fields(bytes)?;
        if kind == 1 {
            let text = self.bytes_field(bytes, 3)?.unwrap_or_default();
            Ok(Value::String(self.string(text)?))
        } else {
            Ok(Value::from(int_val as i64 as i32))
        }
    }

    fn map_entry(&self, kind: Kind, entry: &[u8]) -> Result<(String, Value), ProtobufError> {
        let mut key = String::new();
        let mut value = None;
        let mut reader = Reader::new(entry);
        while !reader.done() {
            let (tag, wire) = reader.key().ok_or_else(|| self.truncated())?;
            match tag {
                1 => {
                    self.expect_wire(wire, LEN)?;
                    let bytes = reader.len_delimited().ok_or_else(|| self.truncated())?;
                    key = self.string(bytes)?;
                }
                2 => value = self.value(kind, wire, &mut reader)?,
                _ => reader.skip(wire).ok_or_else(|| self.truncated())?,
            }
        }
        // A missing value is the zero value of its kind.
        let value = match value {
            Some(value) => value,
            None => self.len_value(kind, &[])?.unwrap_or(Value::Null),
        };
        Ok((key, value))
    }
}

/// Formats nanoseconds as Go's `time.Duration.String` does (`1h0m0s`, `1.5s`, `300ms`).
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u < 1_000_000_000 {
        let (digits, unit) = match u {
            0..1_000 => (0, "ns"),
            1_000..1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        return format!("{sign}{}{unit}", with_fraction(u, digits));
    }
    let seconds = with_fraction(u % 60_000_000_000, 9);
    let minutes = u / 60_000_000_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

/// `value / 10^digits` with its fraction, trailing zeros dropped (`1500, 3` → `1.5`).
fn with_fraction(value: u64, digits: u32) -> String {
    let scale = 10u64.pow(digits);
    let (whole, frac) = (value / scale, value % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_match_go() {
        for (nanos, want) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (300_000_000, "300ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (-5_000_000_000, "-5s"),
            (86_400_000_000_001, "24h0m0.000000001s"),
        ] {
            assert_eq!(go_duration(nanos), want, "{nanos}ns");
        }
    }

    #[test]
    fn special_messages() {
        let ctx = Ctx {
            message: "test",
            field: "value",
            depth: 0,
        };
        // meta.v1.Duration {duration = 1: 90s}.
        let mut duration = vec![0x08];
        let mut n = 90_000_000_000u64;
        while n >= 0x80 {
            duration.push((n as u8) | 0x80);
            n >>= 7;
        }
        duration.push(n as u8);
        assert_eq!(
            ctx.len_value(Kind::Duration, &duration).unwrap(),
            Some(Value::from("1m30s"))
        );
        assert_eq!(
            ctx.len_value(Kind::Duration, &[]).unwrap(),
            Some(Value::from("0s"))
        );
        assert_eq!(ctx.len_value(Kind::Time, &[]).unwrap(), None);
        assert_eq!(
            ctx.len_value(Kind::Quantity, &[]).unwrap(),
            Some(Value::from("0"))
        );
        assert_eq!(
            ctx.len_value(Kind::IntOrString, &[]).unwrap(),
            Some(Value::from(0))
        );
        assert_eq!(ctx.len_value(Kind::RawJson, &[]).unwrap(), None);
        assert_eq!(
            ctx.len_value(Kind::StringList, &[]).unwrap(),
            Some(Value::Array(vec![]))
        );
    }

    #[test]
    fn schema_is_sorted_and_resolves() {
        for pair in MESSAGES.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        for m in MESSAGES {
            for field in m.fields {
                if let Kind::Msg(name) = field.kind {
                    assert!(
                        message(name).is_some(),
                        "{}.{} refers to missing {name}",
                        m.name,
                        field.json
                    );
                }
            }
        }
    }

    #[test]
    fn varints_reject_overlong_input() {
        assert_eq!(Reader::new(&[0x96, 0x01]).varint(), Some(150));
        assert_eq!(Reader::new(&[0xff; 11]).varint(), None);
        assert_eq!(Reader::new(&[0x80]).varint(), None);
    }
}
