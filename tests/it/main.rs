//! The integration test binary: one binary, one module per area, shared helpers.

mod agent;
mod agent_browser;
mod api;
mod booking;
mod booking_api;
mod browser;
mod chrome;
mod demo;
mod fake_twilio;
mod helpers;
mod notify;
mod pages;
mod races;
mod smtp_server;
mod store;
mod storm;
mod tenants;
mod voice;
mod webhooks;
