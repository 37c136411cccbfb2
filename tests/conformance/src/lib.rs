//! End-to-end conformance suite for the relay adapter. The scenarios live in
//! `tests/suite.rs`; `docs/testing.md` maps them to the spec's checklist.
