//! End-to-end tests: real PostgreSQL, real TLS, real SMTP clients, the Microsoft 365
//! simulator as the only stand-in. One module per feature.

mod harness;

mod staff_client;

mod api;
mod at_rest;
mod board_browser;
mod browser;
mod certificates;
mod chaos;
mod chaos_load;
mod cli;
mod consent_checks;
mod control_plane;
mod customer_walkthrough;
mod delivery;
mod dev_command;
mod edge;
mod group_commit;
mod holds;
mod hostile;
mod isolation;
mod legacy_tls;
mod migration_board;
mod operations;
mod resilience;
mod security;
mod staff_scope;
mod staff_security;
mod submission;
mod upstream;
mod web_hardening;
mod web_pages;
mod worker_processes;
