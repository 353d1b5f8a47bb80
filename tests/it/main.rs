//! The integration test binary: one binary, one module per area, shared helpers.

mod api;
mod booking;
mod demo;
mod helpers;
mod races;
mod store;
mod storm;
