//! YAML data files, read within a budget.
//!
//! The values are built by `yaml_serde` (the YAML organisation's maintained fork of `serde_yaml`,
//! same behaviour) on top of `libyaml-rs`. That stack has two costs no limit of its own bounds:
//! - libyaml's scanner checks every pending "simple key" of every open flow collection on each
//!   token, so `[[[[...` costs time quadratic in the nesting depth (140 KB: 15 s, 280 KB unclosed:
//!   80 s), all spent before the deserializer's own recursion limit (128) is looked at: it loads
//!   the whole document's events first;
//! - aliases are replayed in full for every use, so a few kilobytes of nested anchors ("billion
//!   laughs") expand to gigabytes of values.
//!
//! So before `yaml_serde` sees a file, [`check`] pulls libyaml's events one at a time (the very
//! parser `yaml_serde` runs, so both see the same structure) and refuses, at the first event past
//! a budget: nesting deeper than [`MAX_DEPTH`] (which also caps the scanner's per-token work at
//! [`MAX_DEPTH`] keys), and more nodes or scalar bytes, counting every alias as the whole node it
//! expands to, than the file's own size allows (see [`node_budget`], [`scalar_budget`]). A file
//! libyaml cannot parse is left to `yaml_serde`, which fails at the same event with its
//! better message, having done no more work than the check did.
//!
//! Aliases within the budget keep working (expansion up to about the file's own size again):
//! OPA accepts them, and data files that reuse a list through an anchor exist.

// The one module of the workspace that calls C: libyaml's event parser, each call with its
// SAFETY note.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::mem::MaybeUninit;

use libyaml_rs as sys;

/// Deepest nesting accepted: the depth `yaml_serde` itself refuses at, and regorus's limit.
pub(crate) const MAX_DEPTH: usize = 128;

/// Most nodes (scalars, sequences, mappings; each alias counted as the nodes it expands to) a
/// YAML file of `len` bytes may produce. Without aliases a node takes at least two bytes, so a
/// file can spend about half of this budget on alias expansion.
pub(crate) fn node_budget(len: usize) -> u64 {
    len as u64 + 4096
}

/// Most decoded scalar bytes (aliases expanded) a YAML file of `len` bytes may produce: scalars
/// never decode to more bytes than they are written with, so again about the file's size for
/// expansion.
pub(crate) fn scalar_budget(len: usize) -> u64 {
    2 * len as u64 + (64 << 10)
}

/// Parses a YAML data file (UTF-8 BOM already stripped) into serde_json's model, within the
/// budget. Errors are messages; a budget error starts with "over the parse budget".
pub(crate) fn to_json(bytes: &[u8]) -> Result<serde_json::Value, String> {
    check(bytes)?;
    yaml_serde::from_slice(bytes).map_err(|e| e.to_string())
}

/// The size of a node, aliases expanded.
#[derive(Clone, Copy, Default)]
struct Size {
    nodes: u64,
    bytes: u64,
}

impl Size {
    fn add(&mut self, other: Size) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// One event, reduced to what the budget needs.
enum Event {
    Open(Option<Vec<u8>>),
    Close,
    Scalar(Option<Vec<u8>>, u64),
    Alias(Vec<u8>),
    Other,
    End,
}

/// libyaml's event parser over a borrowed input, configured as `yaml_serde` configures it.
struct Events<'a> {
    parser: Box<MaybeUninit<sys::yaml_parser_t>>,
    _input: &'a [u8],
}

impl<'a> Events<'a> {
    fn new(input: &'a [u8]) -> Option<Events<'a>> {
        let mut parser = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
        // SAFETY: `parser` is heap-allocated and never moved while initialised; the input
        // outlives the parser (`'a`), which only reads it.
        unsafe {
            let p = parser.as_mut_ptr();
            if sys::yaml_parser_initialize(p).fail {
                return None;
            }
            sys::yaml_parser_set_encoding(p, sys::YAML_UTF8_ENCODING);
            sys::yaml_parser_set_input_string(p, input.as_ptr(), input.len() as u64);
        }
        Some(Events {
            parser,
            _input: input,
        })
    }

    /// The next event and its (line, column), or `None` on a parse error.
    fn next(&mut self) -> Option<(Event, u64, u64)> {
        let mut raw = MaybeUninit::<sys::yaml_event_t>::uninit();
        // SAFETY: the parser was initialised in `new`; a successful `yaml_parser_parse` fills
        // `raw`, whose union member is read according to its type and which is deleted once.
        unsafe {
            if sys::yaml_parser_parse(self.parser.as_mut_ptr(), raw.as_mut_ptr()).fail {
                return None;
            }
            let e = raw.assume_init_mut();
            let anchor = |a: *mut u8| {
                (!a.is_null()).then(|| std::ffi::CStr::from_ptr(a.cast()).to_bytes().to_vec())
            };
            let event = match e.type_ {
                sys::YAML_SEQUENCE_START_EVENT => Event::Open(anchor(e.data.sequence_start.anchor)),
                sys::YAML_MAPPING_START_EVENT => Event::Open(anchor(e.data.mapping_start.anchor)),
                sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => Event::Close,
                sys::YAML_SCALAR_EVENT => {
                    Event::Scalar(anchor(e.data.scalar.anchor), e.data.scalar.length)
                }
                sys::YAML_ALIAS_EVENT => {
                    Event::Alias(anchor(e.data.alias.anchor).unwrap_or_default())
                }
                sys::YAML_STREAM_END_EVENT | sys::YAML_NO_EVENT => Event::End,
                _ => Event::Other,
            };
            let (line, column) = (e.start_mark.line + 1, e.start_mark.column + 1);
            sys::yaml_event_delete(e);
            Some((event, line, column))
        }
    }
}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` (an `Events` only exists after a successful initialise).
        unsafe { sys::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}

/// Refuses YAML whose nesting or alias expansion is over the budget, looking at each event once.
pub(crate) fn check(bytes: &[u8]) -> Result<(), String> {
    let Some(mut events) = Events::new(bytes) else {
        return Err("cannot initialise the YAML parser".into());
    };
    let (max_nodes, max_bytes) = (node_budget(bytes.len()), scalar_budget(bytes.len()));
    let mut anchors: HashMap<Vec<u8>, Size> = HashMap::new();
    // Open collections: (anchor, size so far, aliases expanded).
    let mut stack: Vec<(Option<Vec<u8>>, Size)> = Vec::new();
    // Everything the stream expands to so far: what yaml_serde would build.
    let mut total = Size::default();
    while let Some((event, line, column)) = events.next() {
        let over = |what: String| {
            Err(format!(
                "over the parse budget: {what} (at line {line} column {column})"
            ))
        };
        // A finished node: (its anchor, its size); or a node's start.
        let (anchor, size) = match event {
            Event::End => break,
            Event::Other => continue,
            Event::Open(anchor) => {
                if stack.len() >= MAX_DEPTH {
                    return over(format!("nesting deeper than {MAX_DEPTH} levels"));
                }
                let one = Size { nodes: 1, bytes: 0 };
                total.add(one);
                stack.push((anchor, one));
                (None, None)
            }
            Event::Close => match stack.pop() {
                Some((anchor, size)) => (anchor, Some(size)),
                // Unbalanced: libyaml never does this; stop checking.
                None => break,
            },
            Event::Scalar(anchor, len) => {
                let size = Size {
                    nodes: 1,
                    bytes: len,
                };
                total.add(size);
                (anchor, Some(size))
            }
            // An unknown anchor is yaml_serde's error to report; count the alias itself.
            Event::Alias(name) => {
                let size = anchors
                    .get(&name)
                    .copied()
                    .unwrap_or(Size { nodes: 1, bytes: 0 });
                total.add(size);
                (None, Some(size))
            }
        };
        if let Some(size) = size {
            if let Some(name) = anchor {
                anchors.insert(name, size);
            }
            if let Some((_, parent)) = stack.last_mut() {
                parent.add(size);
            }
        }
        if total.nodes > max_nodes {
            return over(format!(
                "more than {max_nodes} values with aliases expanded (a {} byte file)",
                bytes.len()
            ));
        }
        if total.bytes > max_bytes {
            return over(format!(
                "more than {max_bytes} bytes of scalars with aliases expanded (a {} byte file)",
                bytes.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_yaml_and_small_aliases_pass() {
        for text in [
            "a: 1\nb: [x, y, {c: d}]\n",
            "base: &b [read, write]\nadmin: *b\nops: *b\n",
            "s: |\n  [[[[[[\n  text\n",
            "",
            "- - - x\n",
        ] {
            check(text.as_bytes()).unwrap();
            to_json(text.as_bytes()).unwrap();
        }
        let v = to_json(b"base: &b [read]\nadmin: *b\n").unwrap();
        assert_eq!(v["admin"], serde_json::json!(["read"]));
    }

    #[test]
    fn deep_and_expanding_yaml_is_refused_quickly() {
        let deep = "[".repeat(200_000);
        let t = std::time::Instant::now();
        let err = to_json(deep.as_bytes()).unwrap_err();
        assert!(err.contains("nesting deeper than 128"), "{err}");
        assert!(t.elapsed().as_millis() < 500, "{:?}", t.elapsed());
        let deep_block = "- ".repeat(1000) + "x\n";
        let err = to_json(deep_block.as_bytes()).unwrap_err();
        assert!(err.contains("nesting deeper than 128"), "{err}");

        let mut bomb =
            String::from("a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
        for i in 1..12 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let t = std::time::Instant::now();
        let err = to_json(bomb.as_bytes()).unwrap_err();
        assert!(
            err.contains("over the parse budget") && err.contains("aliases"),
            "{err}"
        );
        assert!(t.elapsed().as_millis() < 500, "{:?}", t.elapsed());

        // One long scalar aliased many times: few nodes, many bytes.
        let long = format!(
            "s: &s \"{}\"\nl: [{}]\n",
            "x".repeat(100_000),
            "*s,".repeat(100)
        );
        let err = to_json(long.as_bytes()).unwrap_err();
        assert!(err.contains("bytes of scalars"), "{err}");
    }

    #[test]
    fn syntax_errors_are_left_to_the_parser() {
        let err = to_json(b"a: [1, 2\n").unwrap_err();
        assert!(!err.contains("budget"), "{err}");
    }
}
