//! End-to-end tests: real PostgreSQL, real TLS, real SMTP clients, the Microsoft 365
//! simulator as the only stand-in. One module per feature.

mod harness;

mod staff_client;

mod alerts;
mod api;
mod at_rest;
mod board_browser;
mod bounces;
mod browser;
mod bulk_import;
mod certificates;
mod chaos;
mod chaos_load;
mod cli;
mod consent_checks;
mod control_plane;
mod customer_walkthrough;
mod delivery;
mod dev_command;
mod device_health;
mod edge;
mod exchange_limits;
mod graph_strictness;
mod group_commit;
mod holds;
mod hostile;
mod isolation;
mod least_privilege;
mod legacy_tls;
mod migration_board;
mod national_clouds;
mod operations;
mod resilience;
mod security;
mod size_limits;
mod staff_scope;
mod staff_security;
mod submission;
mod upstream;
mod usage;
mod walk_through;
mod web_hardening;
mod web_pages;
mod webhooks;
mod worker_processes;
