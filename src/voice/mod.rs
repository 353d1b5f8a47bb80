//! The telephone: TwiML answers, webhook signatures, call flows and prompts as data
//! ([`flow`]), and the interpreter that runs them one webhook at a time ([`call`]).

pub mod call;
pub mod caller;
pub mod flow;
pub mod signature;
pub mod twiml;
