//! Protobuf decoding with a schema read at run time.
//!
//! The message descriptor comes from a `.proto` file (compiled in-process by
//! protox, no `protoc` needed) or a binary `FileDescriptorSet`, through
//! prost-reflect. Records are then read straight off the wire into the
//! declared columns: field numbers map to columns, unknown fields are
//! skipped, and proto3 defaults apply to absent fields.

use std::collections::HashMap;
use std::path::Path;

use prost_reflect::{DescriptorPool, Kind as PKind, MessageDescriptor};
use weir_config::ProtoMessage;

use super::columns::{FieldDecl, Kind, Slot};

/// Loads a message descriptor from a `.proto` file or a descriptor set.
pub fn load_message(spec: &ProtoMessage) -> Result<MessageDescriptor, String> {
    let path = &spec.schema_file;
    let pool = if path.extension().is_some_and(|e| e == "proto") {
        let include = path.parent().unwrap_or(Path::new("."));
        let file = path
            .file_name()
            .ok_or_else(|| format!("{} is not a file", path.display()))?;
        let mut compiler = protox::Compiler::new([include])
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        compiler.include_imports(true);
        compiler
            .open_file(file)
            .map_err(|e| format!("cannot compile {}: {e}", path.display()))?;
        compiler.descriptor_pool()
    } else {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        DescriptorPool::decode(bytes.as_slice())
            .map_err(|e| format!("{} is not a FileDescriptorSet: {e}", path.display()))?
    };
    pool.get_message_by_name(&spec.message).ok_or_else(|| {
        let known: Vec<String> = pool
            .all_messages()
            .map(|m| m.full_name().to_string())
            .collect();
        format!(
            "message {:?} not found in {} (it has: {})",
            spec.message,
            path.display(),
            known.join(", ")
        )
    })
}

/// How a wire value is turned into a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Varint {
        signed: bool,
        zigzag: bool,
        bool_: bool,
    },
    Fixed32 {
        float: bool,
        signed: bool,
    },
    Fixed64 {
        float: bool,
        signed: bool,
    },
    Bytes,
}

/// Checks that a declared field can be read from a protobuf field kind.
fn wire_for(decl: &FieldDecl, kind: &PKind) -> Option<Wire> {
    use Kind as K;
    let w = match kind {
        PKind::Int32 | PKind::Int64 => Wire::Varint {
            signed: true,
            zigzag: false,
            bool_: false,
        },
        PKind::Sint32 | PKind::Sint64 => Wire::Varint {
            signed: true,
            zigzag: true,
            bool_: false,
        },
        PKind::Uint32 | PKind::Uint64 => Wire::Varint {
            signed: false,
            zigzag: false,
            bool_: false,
        },
        PKind::Bool => Wire::Varint {
            signed: false,
            zigzag: false,
            bool_: true,
        },
        PKind::Fixed32 => Wire::Fixed32 {
            float: false,
            signed: false,
        },
        PKind::Sfixed32 => Wire::Fixed32 {
            float: false,
            signed: true,
        },
        PKind::Float => Wire::Fixed32 {
            float: true,
            signed: false,
        },
        PKind::Fixed64 => Wire::Fixed64 {
            float: false,
            signed: false,
        },
        PKind::Sfixed64 => Wire::Fixed64 {
            float: false,
            signed: true,
        },
        PKind::Double => Wire::Fixed64 {
            float: true,
            signed: false,
        },
        PKind::String => Wire::Bytes,
        _ => return None,
    };
    // A table of accepted pairs reads better as a match than as matches!.
    #[allow(clippy::match_like_matches_macro)]
    let ok = match (decl.kind, w) {
        (K::Bool, Wire::Varint { bool_: true, .. }) => true,
        (
            K::I32 | K::I64,
            Wire::Varint {
                signed: true,
                bool_: false,
                ..
            },
        ) => true,
        (
            K::I64,
            Wire::Varint {
                signed: false,
                bool_: false,
                ..
            },
        ) => true,
        (
            K::U32 | K::U64,
            Wire::Varint {
                signed: false,
                bool_: false,
                ..
            },
        ) => true,
        (
            K::I32 | K::I64,
            Wire::Fixed32 {
                float: false,
                signed: true,
            },
        ) => true,
        (
            K::I64,
            Wire::Fixed64 {
                float: false,
                signed: true,
            },
        ) => true,
        (
            K::U32 | K::U64,
            Wire::Fixed32 {
                float: false,
                signed: false,
            },
        ) => true,
        (
            K::U64,
            Wire::Fixed64 {
                float: false,
                signed: false,
            },
        ) => true,
        (K::F32 | K::F64, Wire::Fixed32 { float: true, .. }) => true,
        (K::F64, Wire::Fixed64 { float: true, .. }) => true,
        (K::Str, Wire::Bytes) => true,
        _ => false,
    };
    ok.then_some(w)
}

/// Field numbers below this are looked up in a table indexed by the
/// number (messages number their fields from 1, mostly below 16): a hash
/// per field of every record cost about a sixth of decoding.
const DENSE_NUMBERS: usize = 128;

/// Reads protobuf records into slots.
pub struct ProtoParser {
    fields: Vec<FieldDecl>,
    /// Declared fields by number below [`DENSE_NUMBERS`]: their index and
    /// wire reading.
    dense: Vec<Option<(usize, Wire)>>,
    /// Declared fields with larger numbers.
    sparse: HashMap<u32, (usize, Wire)>,
    defaults: Vec<Slot>,
    /// String values of the current record.
    pub(crate) strings: Vec<u8>,
}

impl ProtoParser {
    /// Maps declared fields onto the message's fields by name.
    pub fn new(fields: Vec<FieldDecl>, message: &MessageDescriptor) -> Result<Self, String> {
        let mut dense = vec![None; DENSE_NUMBERS];
        let mut sparse = HashMap::new();
        let mut defaults = Vec::new();
        for (i, decl) in fields.iter().enumerate() {
            let f = message.get_field_by_name(&decl.name).ok_or_else(|| {
                let names: Vec<String> = message.fields().map(|f| f.name().to_string()).collect();
                format!(
                    "message {} has no field {:?} (fields: {})",
                    message.full_name(),
                    decl.name,
                    names.join(", ")
                )
            })?;
            if f.is_list() || f.is_map() {
                return Err(format!(
                    "field {:?} is repeated; only singular fields can be decoded into columns",
                    decl.name
                ));
            }
            let wire = wire_for(decl, &f.kind()).ok_or_else(|| {
                format!(
                    "field {:?} is {:?} in {}, which cannot be read as {}",
                    decl.name,
                    f.kind(),
                    message.full_name(),
                    decl.kind.name()
                )
            })?;
            match dense.get_mut(f.number() as usize) {
                Some(slot) => *slot = Some((i, wire)),
                None => {
                    sparse.insert(f.number(), (i, wire));
                }
            }
            // proto3: an absent scalar means its default; optional fields
            // declared optional in the pipeline become null instead.
            defaults.push(if decl.optional || f.supports_presence() {
                Slot::Empty
            } else {
                match decl.kind {
                    Kind::Bool => Slot::Bool(false),
                    Kind::I32 | Kind::I64 => Slot::Int(0),
                    Kind::U32 | Kind::U64 => Slot::UInt(0),
                    Kind::F32 | Kind::F64 => Slot::Float(0.0),
                    Kind::Str => Slot::Str(0, 0),
                }
            });
        }
        Ok(ProtoParser {
            fields,
            dense,
            sparse,
            defaults,
            strings: Vec::new(),
        })
    }

    /// Parses one message into `slots`.
    pub fn parse(&mut self, mut b: &[u8], slots: &mut [Slot]) -> Result<(), String> {
        slots.copy_from_slice(&self.defaults);
        self.strings.clear();
        while !b.is_empty() {
            let key = varint(&mut b).ok_or("malformed protobuf: bad field key")?;
            let number = (key >> 3) as u32;
            let wire_type = (key & 7) as u8;
            if number == 0 {
                return Err("malformed protobuf: field number 0".into());
            }
            let target = match self.dense.get(number as usize) {
                Some(t) => *t,
                None => self.sparse.get(&number).copied(),
            };
            match wire_type {
                0 => {
                    let v = varint(&mut b).ok_or("malformed protobuf: bad varint")?;
                    if let Some((i, w)) = target {
                        slots[i] = self.varint_slot(i, w, v)?;
                    }
                }
                1 => {
                    let bytes: [u8; 8] = take(&mut b, 8)?
                        .try_into()
                        .map_err(|_| "malformed protobuf: short fixed64")?;
                    let v = u64::from_le_bytes(bytes);
                    if let Some((i, w)) = target {
                        slots[i] = match w {
                            Wire::Fixed64 { float: true, .. } => {
                                self.float(i, f64::from_bits(v))?
                            }
                            Wire::Fixed64 { signed: true, .. } => Slot::Int(v as i64),
                            Wire::Fixed64 { .. } => Slot::UInt(v),
                            _ => return Err(self.wire_mismatch(i)),
                        };
                    }
                }
                2 => {
                    let len = varint(&mut b).ok_or("malformed protobuf: bad length")?;
                    let len =
                        usize::try_from(len).map_err(|_| "malformed protobuf: length too large")?;
                    let data = take(&mut b, len)?;
                    if let Some((i, w)) = target {
                        if w != Wire::Bytes {
                            return Err(self.wire_mismatch(i));
                        }
                        std::str::from_utf8(data).map_err(|e| {
                            format!(
                                "field `{}`: invalid UTF-8 at byte {}",
                                self.fields[i].name,
                                e.valid_up_to()
                            )
                        })?;
                        let start = self.strings.len() as u32;
                        self.strings.extend_from_slice(data);
                        slots[i] = Slot::Str(start, self.strings.len() as u32);
                    }
                }
                5 => {
                    let bytes: [u8; 4] = take(&mut b, 4)?
                        .try_into()
                        .map_err(|_| "malformed protobuf: short fixed32")?;
                    let v = u32::from_le_bytes(bytes);
                    if let Some((i, w)) = target {
                        slots[i] = match w {
                            Wire::Fixed32 { float: true, .. } => {
                                self.float(i, f32::from_bits(v) as f64)?
                            }
                            Wire::Fixed32 { signed: true, .. } => Slot::Int(v as i32 as i64),
                            Wire::Fixed32 { .. } => Slot::UInt(v as u64),
                            _ => return Err(self.wire_mismatch(i)),
                        };
                    }
                }
                other => return Err(format!("malformed protobuf: unsupported wire type {other}")),
            }
        }
        for (f, slot) in self.fields.iter().zip(slots.iter()) {
            if *slot == Slot::Empty && !f.optional {
                return Err(format!("missing field `{}`", f.name));
            }
        }
        Ok(())
    }

    fn wire_mismatch(&self, i: usize) -> String {
        format!(
            "field `{}`: wire type does not match the schema",
            self.fields[i].name
        )
    }

    fn float(&self, i: usize, v: f64) -> Result<Slot, String> {
        if v.is_finite() {
            Ok(Slot::Float(v))
        } else {
            Err(format!(
                "field `{}`: {v} is not a finite number",
                self.fields[i].name
            ))
        }
    }

    fn varint_slot(&self, i: usize, w: Wire, v: u64) -> Result<Slot, String> {
        let decl = &self.fields[i];
        let range = || {
            format!(
                "field `{}`: {v} is out of range for {}",
                decl.name,
                decl.kind.name()
            )
        };
        Ok(match w {
            Wire::Varint { bool_: true, .. } => Slot::Bool(v != 0),
            Wire::Varint { zigzag: true, .. } => {
                let x = ((v >> 1) as i64) ^ -((v & 1) as i64);
                if decl.kind == Kind::I32 && i32::try_from(x).is_err() {
                    return Err(range());
                }
                Slot::Int(x)
            }
            Wire::Varint { signed: true, .. } => {
                let x = v as i64;
                if decl.kind == Kind::I32 && i32::try_from(x).is_err() {
                    return Err(range());
                }
                Slot::Int(x)
            }
            Wire::Varint { .. } => match decl.kind {
                Kind::I64 => Slot::Int(i64::try_from(v).map_err(|_| range())?),
                Kind::U32 if v > u32::MAX as u64 => return Err(range()),
                _ => Slot::UInt(v),
            },
            _ => return Err(self.wire_mismatch(i)),
        })
    }
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if b.len() < n {
        return Err("malformed protobuf: field runs past the end of the record".into());
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Ok(head)
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let byte = *b.get(i)?;
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            *b = &b[i + 1..];
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a varint.
    fn varint_bytes(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    #[test]
    fn fields_are_found_by_small_and_large_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let proto = dir.path().join("m.proto");
        std::fs::write(
            &proto,
            "syntax = \"proto3\";\npackage t;\nmessage M {\n  uint64 a = 1;\n  int64 b = 127;\n  \
             uint64 c = 128;\n  string d = 5000;\n  uint64 e = 536870911;\n  uint64 skipped = 2;\n}\n",
        )
        .unwrap();
        let message = load_message(&ProtoMessage {
            schema_file: proto,
            message: "t.M".into(),
        })
        .unwrap();
        let decl = |name: &str, kind| FieldDecl {
            name: name.into(),
            kind,
            optional: false,
        };
        let mut parser = ProtoParser::new(
            vec![
                decl("e", Kind::U64),
                decl("d", Kind::Str),
                decl("c", Kind::U64),
                decl("b", Kind::I64),
                decl("a", Kind::U64),
            ],
            &message,
        )
        .unwrap();
        let mut record = Vec::new();
        for (number, value) in [
            (1u64, 11u64),
            (127, 7),
            (128, 12),
            (2, 99),
            (536_870_911, 13),
        ] {
            varint_bytes(number << 3, &mut record);
            varint_bytes(value, &mut record);
        }
        varint_bytes((5000 << 3) | 2, &mut record);
        varint_bytes(2, &mut record);
        record.extend_from_slice(b"hi");
        let mut slots = vec![Slot::Empty; 5];
        parser.parse(&record, &mut slots).unwrap();
        assert_eq!(
            slots,
            vec![
                Slot::UInt(13),
                Slot::Str(0, 2),
                Slot::UInt(12),
                Slot::Int(7),
                Slot::UInt(11)
            ]
        );
        assert_eq!(parser.strings, b"hi");
    }
}
