//! Helpers shared by the agent's integration tests (each test file uses some of them).
#![allow(dead_code)]

pub mod host;
pub mod openapi;
