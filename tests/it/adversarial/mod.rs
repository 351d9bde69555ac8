//! Hostile input through the real router: forged and damaged tokens, malformed headers
//! and cookies, hostile bodies, identifiers and paths. Every case asserts the exact
//! status and code of the documented envelope (never a 500, a panic or a hang).

mod bodies;
mod headers;
mod inputs;
mod tokens;
