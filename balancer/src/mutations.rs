//! Mutations of wire messages for the property tests of both parsers (the client side's
//! framing tap and the backend client): a byte replaced, a byte removed, or a piece of text
//! that often matters to framing inserted, anywhere.

use proptest::prelude::*;

/// One change to a message.
#[derive(Debug, Clone)]
pub enum Mutation {
    Replace(usize, u8),
    Remove(usize),
    Insert(usize, &'static str),
}

/// Any mutation; an insertion takes one of `texts`.
pub fn mutation(texts: &'static [&'static str]) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), prop::sample::select(texts))
            .prop_map(|(at, text)| Mutation::Insert(at, text)),
    ]
}

/// Applies the mutations in turn; positions wrap around the message's length.
pub fn mutate(message: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        if message.is_empty() {
            return;
        }
        match *m {
            Mutation::Replace(at, byte) => {
                let at = at % message.len();
                message[at] = byte;
            }
            Mutation::Remove(at) => {
                message.remove(at % message.len());
            }
            Mutation::Insert(at, text) => {
                let at = at % (message.len() + 1);
                message.splice(at..at, text.bytes());
            }
        }
    }
}
