//! End-to-end tests of the relay: a real server on `127.0.0.1:0`, a real HTTP mock upstream, a
//! fresh SQLite database per test, and real HTTP clients. One binary, one module per concern.

mod access;
mod accounting;
mod admin;
mod answers;
mod anthropic;
mod bad_input;
mod clients;
mod console;
mod conversations;
mod failures;
mod faults;
mod gemini;
mod grounding;
mod hybrid;
mod keys;
mod knowledge;
mod metering;
mod metrics;
mod policy;
mod resume;
mod routes;
mod secrets;
mod shared;
mod streaming;
mod tools;
mod visitors;
mod webhooks;
mod widget;
