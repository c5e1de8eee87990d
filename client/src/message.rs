//! The typed message writer and reader.

use collective_proto::v1 as pb;
use pb::element::Value;

/// Why reading the next element failed. Each case is distinct, as the vendor's tools take
/// distinct exits for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Every element has been read.
    #[error("element {index}: the message has only {index} elements")]
    End {
        /// The index asked for.
        index: usize,
    },
    /// The next element has another type.
    #[error("element {index} is {found}, not {expected}")]
    WrongType {
        /// Its index.
        index: usize,
        /// The type asked for.
        expected: &'static str,
        /// The type it has.
        found: &'static str,
    },
    /// The next element is a note with another name.
    #[error("element {index} is note {found:?}, not {expected:?}")]
    NoteNameMismatch {
        /// Its index.
        index: usize,
        /// The name asked for.
        expected: String,
        /// The note's name.
        found: String,
    },
}

fn type_of(element: &pb::Element) -> &'static str {
    match element.value {
        Some(Value::Integer(_)) => "Integer",
        Some(Value::String(_)) => "String",
        Some(Value::Note(_)) => "Note",
        None => "empty",
    }
}

/// Reads a message's elements in order.
#[derive(Debug, Clone)]
pub struct MessageReader<'a> {
    elements: &'a [pb::Element],
    next: usize,
}

impl<'a> MessageReader<'a> {
    /// A reader at the first element.
    pub fn new(elements: &'a [pb::Element]) -> MessageReader<'a> {
        MessageReader { elements, next: 0 }
    }

    /// Elements not read yet.
    pub fn remaining(&self) -> usize {
        self.elements.len() - self.next
    }

    fn take<T>(
        &mut self,
        expected: &'static str,
        pick: impl FnOnce(&'a pb::Element) -> Option<T>,
    ) -> Result<T, ReadError> {
        let index = self.next;
        let element = self.elements.get(index).ok_or(ReadError::End { index })?;
        let value = pick(element).ok_or(ReadError::WrongType { index, expected, found: type_of(element) })?;
        self.next += 1;
        Ok(value)
    }

    /// The next element, which must be an Integer.
    pub fn integer(&mut self) -> Result<i64, ReadError> {
        self.take("Integer", |e| match e.value {
            Some(Value::Integer(value)) => Some(value),
            _ => None,
        })
    }

    /// The next element, which must be a String.
    pub fn string(&mut self) -> Result<&'a str, ReadError> {
        self.take("String", |e| match &e.value {
            Some(Value::String(value)) => Some(value.as_str()),
            _ => None,
        })
    }

    /// The next element, which must be a note named `name` (case-insensitively). On a name
    /// mismatch the reader stays at the element.
    pub fn note(&mut self, name: &str) -> Result<&'a pb::Note, ReadError> {
        let index = self.next;
        let note = match self.elements.get(index) {
            None => return Err(ReadError::End { index }),
            Some(pb::Element { value: Some(Value::Note(note)) }) => note,
            Some(other) => return Err(ReadError::WrongType { index, expected: "Note", found: type_of(other) }),
        };
        if !note.name.eq_ignore_ascii_case(name) {
            return Err(ReadError::NoteNameMismatch { index, expected: name.to_string(), found: note.name.clone() });
        }
        self.next += 1;
        Ok(note)
    }
}

/// Builds a message's elements in order.
#[derive(Debug, Clone, Default)]
pub struct MessageWriter {
    elements: Vec<pb::Element>,
}

impl MessageWriter {
    /// An empty message.
    pub fn new() -> MessageWriter {
        MessageWriter::default()
    }

    /// Appends an Integer.
    pub fn integer(mut self, value: i64) -> MessageWriter {
        self.elements.push(pb::Element { value: Some(Value::Integer(value)) });
        self
    }

    /// Appends a String.
    pub fn string(mut self, value: impl Into<String>) -> MessageWriter {
        self.elements.push(pb::Element { value: Some(Value::String(value.into())) });
        self
    }

    /// Appends a note (its name and attributes, as stored now).
    pub fn note(mut self, note: pb::Note) -> MessageWriter {
        self.elements.push(pb::Element { value: Some(Value::Note(note)) });
        self
    }

    /// The elements.
    pub fn finish(self) -> Vec<pb::Element> {
        self.elements
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_in_order_with_types() {
        let note = pb::Note { name: "Order".into(), ..pb::Note::default() };
        let elements = MessageWriter::new().string("hello").integer(42).note(note).finish();
        let mut reader = MessageReader::new(&elements);
        assert_eq!(reader.string(), Ok("hello"));
        assert_eq!(reader.integer(), Ok(42));
        assert_eq!(reader.note("order").map(|n| n.name.as_str()), Ok("Order"));
        assert_eq!(reader.integer(), Err(ReadError::End { index: 3 }));
    }

    #[test]
    fn a_wrong_type_and_a_note_name_mismatch_are_distinct_errors() {
        let note = pb::Note { name: "Order".into(), ..pb::Note::default() };
        let elements = MessageWriter::new().integer(7).note(note).finish();
        let mut reader = MessageReader::new(&elements);
        assert_eq!(reader.string(), Err(ReadError::WrongType { index: 0, expected: "String", found: "Integer" }));
        assert_eq!(reader.integer(), Ok(7), "a failed read does not advance");
        assert_eq!(
            reader.note("Invoice"),
            Err(ReadError::NoteNameMismatch { index: 1, expected: "Invoice".into(), found: "Order".into() })
        );
        assert_eq!(reader.integer(), Err(ReadError::WrongType { index: 1, expected: "Integer", found: "Note" }));
        assert_eq!(reader.remaining(), 1);
    }
}
