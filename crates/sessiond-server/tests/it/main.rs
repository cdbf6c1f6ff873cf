//! Integration tests of the HTTP side, in one binary (link time matters):
//! real HTTP on loopback, a manual clock, real files in temporary folders.
#![allow(clippy::too_many_lines, reason = "scenario tests read top to bottom")]

mod console;
mod http;
mod mobile;
