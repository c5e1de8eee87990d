//! Client-side helpers for `collective`.
//!
//! - [`bearer`]: the `authorization: Bearer <token>` every authenticated call carries
//!   ([`Bearer`]).
//! - [`message`]: build an inter-site message element by element ([`MessageWriter`]) and read
//!   one back in the same order with the same types ([`MessageReader`]), as the vendor's
//!   Multi-Site Put/Get tools do: a wrong type or a note-name mismatch is an error, never a
//!   silent default.

pub mod bearer;
pub mod message;

pub use bearer::{BadToken, Bearer};
pub use message::{MessageReader, MessageWriter, ReadError};
