//! The question's name as the key the mapped names are looked up by: its wire form (each
//! label after its length byte, then the root) with ASCII letters lowercased, as DNS names
//! compare (RFC 4343). Read straight from the query's bytes, a key costs no parsed name, no
//! lowercase copy and no walk over labels to hash them; and its length is the name's length
//! in a message.

use hickory_server::proto::rr::Name;

use crate::wire::HEADER_LENGTH;

/// The longest name in a message (RFC 1035 §2.3.4), root included.
const MAX_NAME: usize = 255;
/// The longest label.
const MAX_LABEL: usize = 63;

/// A lowercased wire-form name, on the stack.
pub struct NameKey {
    bytes: [u8; MAX_NAME],
    length: usize,
}

impl NameKey {
    /// The key of `name`, which hickory has already checked (labels and length within the
    /// limits); `None` if it is too long all the same.
    pub fn of_name(name: &Name) -> Option<NameKey> {
        let mut key = NameKey { bytes: [0; MAX_NAME], length: 0 };
        for label in name.iter() {
            key.push_label(label)?;
        }
        key.push_root()?;
        Some(key)
    }

    /// The bytes, for a lookup; also the name's length in a message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.length]
    }

    fn push_label(&mut self, label: &[u8]) -> Option<()> {
        let end = self.length + 1 + label.len();
        if label.is_empty() || label.len() > MAX_LABEL || end > MAX_NAME - 1 {
            return None;
        }
        self.bytes[self.length] = label.len() as u8;
        for (to, from) in self.bytes[self.length + 1..end].iter_mut().zip(label) {
            *to = from.to_ascii_lowercase();
        }
        self.length = end;
        Some(())
    }

    fn push_root(&mut self) -> Option<()> {
        *self.bytes.get_mut(self.length)? = 0;
        self.length += 1;
        Some(())
    }
}

/// The one question of a query, as read from its bytes.
pub struct WireQuestion {
    pub name: NameKey,
    pub query_type: u16,
    pub query_class: u16,
    /// Where the question ends in the message.
    pub end: usize,
}

/// Reads the question at the start of `packet`'s question section, if its name is written
/// out in plain labels (no compression pointer: a query has nothing earlier to point at)
/// and within the limits. `None` for anything else, which the caller reads the general way.
pub fn read_question(packet: &[u8]) -> Option<WireQuestion> {
    let mut name = NameKey { bytes: [0; MAX_NAME], length: 0 };
    // The question starts right after the header.
    let mut at = HEADER_LENGTH;
    loop {
        let length = usize::from(*packet.get(at)?);
        if length == 0 {
            name.push_root()?;
            at += 1;
            break;
        }
        // A length byte above 63 is a pointer or a reserved label type.
        let label = packet.get(at + 1..at + 1 + length)?;
        name.push_label(label)?;
        at += 1 + length;
    }
    let fixed = packet.get(at..at + 4)?;
    Some(WireQuestion {
        name,
        query_type: u16::from_be_bytes([fixed[0], fixed[1]]),
        query_class: u16::from_be_bytes([fixed[2], fixed[3]]),
        end: at + 4,
    })
}

#[cfg(test)]
mod tests {
    use hickory_server::proto::op::{Message, Query};
    use hickory_server::proto::rr::{DNSClass, RecordType};
    use hickory_server::proto::serialize::binary::BinEncodable;

    use super::*;

    fn packet(name: &str, record_type: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
        message.to_bytes().unwrap()
    }

    #[test]
    fn a_names_key_is_its_wire_form_lowercased() {
        for name in [".", "a.", "worker.example.com.", "x.y.z.w.", "MiXeD.CaSe.", "no-dot"] {
            let name = Name::from_ascii(name).unwrap();
            let wire = BinEncodable::to_bytes(&name.to_lowercase()).unwrap();
            assert_eq!(NameKey::of_name(&name).unwrap().as_bytes(), wire, "{name}");
        }
    }

    #[test]
    fn a_question_read_from_bytes_keys_as_the_name_does_in_any_case() {
        let bytes = packet("Worker.EXAMPLE.com.", RecordType::AAAA);
        let question = read_question(&bytes).expect("plain labels");
        assert_eq!(question.name.as_bytes(), b"\x06worker\x07example\x03com\x00");
        assert_eq!(question.query_type, u16::from(RecordType::AAAA));
        assert_eq!(question.query_class, u16::from(DNSClass::IN));
        assert_eq!(question.end, bytes.len());
        let configured = NameKey::of_name(&Name::from_ascii("worker.example.com").unwrap());
        assert_eq!(configured.unwrap().as_bytes(), question.name.as_bytes());
        let root = read_question(&packet(".", RecordType::A)).unwrap();
        assert_eq!(root.name.as_bytes(), [0]);
    }

    /// A query header and one question, type A class IN, whose name has labels of these
    /// lengths (each all `a`), written as given whatever the limits.
    fn with_labels(lengths: &[usize]) -> Vec<u8> {
        let mut bytes = packet("a.example.", RecordType::A)[..12].to_vec();
        for &length in lengths {
            bytes.push(length as u8);
            bytes.extend(std::iter::repeat_n(b'a', length));
        }
        bytes.extend_from_slice(&[0, 0, 1, 0, 1]);
        bytes
    }

    #[test]
    fn anything_but_plain_labels_within_the_limits_is_left_to_the_general_reader() {
        let good = packet("a.example.", RecordType::A);
        // Cut inside the name, inside the type and class.
        for cut in [13, 15, good.len() - 3] {
            assert!(read_question(&good[..cut]).is_none(), "cut at {cut}");
        }
        // A compression pointer instead of the name.
        let mut pointer = good[..12].to_vec();
        pointer.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert!(read_question(&pointer).is_none());
        // A label of 64 bytes (length byte 0x40, a reserved label type).
        assert!(read_question(&with_labels(&[64])).is_none());
        // 255 bytes of name with the root is the most there can be: 4 labels of 63 take 256.
        assert!(read_question(&with_labels(&[63; 4])).is_none());
        let longest = with_labels(&[63, 63, 63, 61]);
        assert_eq!(read_question(&longest).expect("255 bytes").name.as_bytes().len(), 255);
    }
}
