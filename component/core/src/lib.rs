//! Sans-IO core of the Hermes relay adapter.
//!
//! Everything here is pure: no I/O, no clock, no randomness of its own, and
//! no panic on any input. Time and entropy come in as parameters; the one
//! exception is the hash keys of maps, drawn as std's maps draw theirs
//! ([`keyed`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod bounded;
pub mod descriptor;
pub mod driver;
pub mod event;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod interaction;
pub mod keyed;
pub mod lenient;
pub mod line;
pub mod machine;
pub mod manifest;
pub mod media;
pub mod outcome;
pub mod routing;
pub mod url;
