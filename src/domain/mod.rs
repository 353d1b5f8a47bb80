//! Pure rules of the appointment domain: value types parsed once ("parse, don't validate"), the
//! model, French public holidays, free-slot computation and seat choice. Nothing here touches the
//! network, the database or the wall clock: time comes in through [`Clock`], so every rule can be
//! tested at a daylight-saving change or on a public holiday.

pub mod charts;
pub mod clock;
pub mod gsm7;
pub mod holidays;
pub mod idempotency;
pub mod model;
pub mod otp;
pub mod pricing;
pub mod reminders;
pub mod slots;
pub mod spoken;
pub mod stats;
pub mod values;
pub mod wording;

pub use clock::{Clock, ManualClock, SystemClock};
pub use model::*;
pub use values::*;
