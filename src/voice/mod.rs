//! The Twilio side of guichet: TwiML answers and webhook signatures. (The voice menu itself —
//! call flows, prompts, the interpreter — comes with the telephone issue; SMS webhooks already
//! use what is here.)

pub mod signature;
pub mod twiml;
