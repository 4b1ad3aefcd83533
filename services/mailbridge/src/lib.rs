//! The `mailbridge` binary's library half: starting whole stacks of parts in one
//! process. `mailbridge dev` uses it for a first look, and the end-to-end tests use
//! it to spawn a real stack (edge, worker, web and the Microsoft 365 simulator)
//! against a database of their own.

#[cfg(feature = "dev")]
pub mod stack;
