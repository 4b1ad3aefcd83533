//! mailbridge-devtools: what `mailbridge dev`, the test suite and the benchmark need
//! and production never does — today the throwaway PostgreSQL server. The `mailbridge`
//! binary links it only with its `dev` feature (on by default, off in the image).

pub mod scratch_postgres;
