//! The end-to-end tests as one binary, a module a file: cargo links a binary per
//! test target, and one pool runs them all, so a test that waits overlaps the others.

mod docs;
mod flags;
mod lock;
mod pipeline;
mod readme;
mod tidy;
