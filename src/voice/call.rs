//! The call interpreter: runs a commune's flow ([`super::flow`]) one webhook at a time.
//!
//! Guarantees:
//! - every step is stored against the CallSid (`calls`), so any instance answers the next
//!   webhook;
//! - a webhook names the step it answers (`?s=N`); only the one matching the call's step moves
//!   it on (compare-and-set in the database), so a replayed or late webhook gets the answer
//!   already given and changes nothing twice;
//! - everywhere, `*` repeats and `0` reaches the switchboard during its hours (otherwise its
//!   hours are said); silence or a wrong key is answered twice, then the call ends politely
//!   (or is transferred when the switchboard is open);
//! - bookings, cancellations and moves go through the engine like every other channel; a hold
//!   left by a caller who hangs up is released by the status callback.

use super::flow::{Flow, Node, Step, VoiceData};
use super::twiml::{Expect, Speaker, VoiceAnswer, voice_response};
use crate::booking::{BookingError, Cancellation, Engine};
use crate::domain::otp::OtpCode;
use crate::domain::slots::{FreeSlot, SlotFilter};
use crate::domain::{
    Appointment, AppointmentId, Citizen, CitizenName, Commune, MinuteOfDay, PhoneE164, spoken,
};
use crate::store::{Store, StoreError, VoiceSettings};
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Where the voice provider posts each step.
pub const STEP_PATH: &str = "/twilio/voice/step";

/// Silence or a wrong key is answered this many times before the call ends.
const MISSES_ALLOWED: u8 = 2;
/// Wrong codes allowed on the telephone (the code itself allows five).
const CODE_TRIES: u8 = 3;
/// Slots read at a time.
const SLOTS_AT_ONCE: usize = 2;

/// What the interpreter remembers of a call between webhooks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct CallState {
    pub flow: String,
    pub node: String,
    pub caller: String,
    pub misses: u8,
    /// A sub-step inside the node (typing a number after a menu, a code already sent).
    pub sub: u8,
    pub service: Option<i64>,
    pub service_page: usize,
    pub persons: Option<u32>,
    pub location: Option<i64>,
    /// Slots from this local date, only the morning (1) or afternoon (2), after this instant.
    pub from: Option<NaiveDate>,
    pub part: Option<u8>,
    pub after: Option<i64>,
    /// The slots read out, by key (start as Unix seconds, location).
    pub offered: Vec<(i64, i64)>,
    /// Whether more slots follow those read ("plus tard" is offered).
    pub more: bool,
    /// The appointment being booked (held) by this call.
    pub appointment: Option<AppointmentId>,
    /// The appointment found to cancel or move, and the slot chosen for the move.
    pub target: Option<AppointmentId>,
    pub chosen: Option<(i64, i64)>,
    /// The mobile for the code, or typed to look appointments up.
    pub mobile: Option<String>,
    pub name: Option<String>,
    pub code_tries: u8,
    /// The caller proved, with a code, that the target appointment is theirs.
    pub verified: bool,
    /// The node that reads slots, to go back to when a chosen slot slipped away.
    pub slots_node: String,
    pub outcome: Option<String>,
}

/// What a step decided.
enum Next {
    /// Go to a node, saying these sentences first.
    Go(String, Vec<String>),
    /// Say the current node again, after these sentences.
    Again(Vec<String>),
    /// Not understood: counts as a miss.
    Miss(String),
    /// A finished answer (a transfer, the end).
    Answer(VoiceAnswer),
}

/// What the caller did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Digits(String),
    Speech(String),
    Silence,
    /// The transfer leg ended, with the provider's `DialCallStatus`.
    DialEnded(String),
}

#[derive(Clone)]
pub struct Ivr {
    engine: Engine,
    data: Arc<VoiceData>,
    /// Slots read out to calls lately: (start, location) → (call, when). When many people call
    /// at once, each hears slots nobody else is hearing, rather than all racing for the same
    /// two (per instance and approximate: the booking transaction still decides).
    offered: Arc<std::sync::Mutex<Listeners>>,
}

/// For each slot read out lately (start, location): which calls heard it, and when.
type Listeners = HashMap<(i64, i64), Vec<(String, std::time::Instant)>>;

/// How long a slot read out to one caller is kept from the others.
const OFFER_KEPT: std::time::Duration = std::time::Duration::from_secs(45);

/// One webhook being answered.
struct Turn<'a> {
    ivr: &'a Ivr,
    sid: &'a str,
    commune: &'a Commune,
    flow: &'a Flow,
    prompts: &'a std::collections::HashMap<String, String>,
    state: CallState,
    now: DateTime<Utc>,
    /// The step number the answer's URLs carry.
    seq: i64,
    /// Nodes entered while answering: a flow whose steps send each other round in circles
    /// ends the call with an error instead of exhausting the stack.
    depth: u8,
}

type Result<T> = std::result::Result<T, BookingError>;

impl Ivr {
    pub fn new(engine: Engine, data: Arc<VoiceData>) -> Self {
        Self {
            engine,
            data,
            offered: Arc::default(),
        }
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.engine.store()
    }

    /// The call flows a commune may choose from, sorted.
    pub fn flow_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.data.flows.keys().cloned().collect();
        names.sort();
        names
    }

    /// The languages with spoken texts, sorted.
    pub fn languages(&self) -> Vec<String> {
        let mut names: Vec<String> = self.data.prompts.keys().cloned().collect();
        names.sort();
        names
    }

    /// The voice a commune's calls use (its own settings, or the default).
    pub async fn settings(
        &self,
        commune: &Commune,
    ) -> std::result::Result<VoiceSettings, StoreError> {
        let stored = self.store().voice_settings(commune.id).await?;
        Ok(stored
            .filter(|s| self.data.flows.contains_key(&s.flow))
            .unwrap_or_else(|| VoiceSettings {
                voice: "Polly.Lea".into(),
                language: "fr-FR".into(),
                flow: "default".into(),
            }))
    }

    fn speaker(settings: &VoiceSettings) -> Speaker {
        Speaker {
            voice: settings.voice.clone(),
            language: settings.language.clone(),
        }
    }

    fn prompts_for(&self, settings: &VoiceSettings) -> &std::collections::HashMap<String, String> {
        let language = settings
            .language
            .split('-')
            .next()
            .unwrap_or("fr")
            .to_ascii_lowercase();
        self.data
            .prompts
            .get(&language)
            .or_else(|| self.data.prompts.get("fr"))
            .expect("French prompts are checked at start-up")
    }

    /// A new call: the commune is the one whose number was called.
    pub async fn incoming(
        &self,
        call_sid: &str,
        from: &str,
        to: &str,
    ) -> std::result::Result<String, StoreError> {
        if let Some(call) = self.store().call(call_sid).await? {
            // The provider asked again: the same answer.
            return Ok(call.last_twiml);
        }
        let french = Speaker {
            voice: "Polly.Lea".into(),
            language: "fr-FR".into(),
        };
        let Some(commune) = self.store().commune_by_phone_number(to).await? else {
            let prompts = self
                .data
                .prompts
                .get("fr")
                .expect("French prompts are checked at start-up");
            let answer = VoiceAnswer {
                say: vec![text(prompts, "unknown_number", &[])],
                hangup: true,
                ..VoiceAnswer::default()
            };
            return Ok(voice_response(&answer, &french));
        };
        let settings = self.settings(&commune).await?;
        let flow = &self.data.flows[&settings.flow];
        let now = self.engine.now();
        let mut turn = Turn {
            ivr: self,
            sid: call_sid,
            commune: &commune,
            flow,
            prompts: self.prompts_for(&settings),
            state: CallState {
                flow: settings.flow.clone(),
                node: flow.start.clone(),
                caller: from.to_owned(),
                ..CallState::default()
            },
            now,
            seq: 0,
            depth: 0,
        };
        let start = flow.start.clone();
        let answer = turn.enter_or_fail(&start, Vec::new()).await;
        let twiml = voice_response(&answer, &Self::speaker(&settings));
        let state = serde_json::to_string(&turn.state).unwrap_or_default();
        if self
            .store()
            .start_call(call_sid, commune.id, from, &state, &twiml, now)
            .await?
        {
            tracing::info!(commune = %commune.slug, "call started");
            Ok(twiml)
        } else {
            // Another instance started it meanwhile: its answer stands.
            Ok(self
                .store()
                .call(call_sid)
                .await?
                .map(|c| c.last_twiml)
                .unwrap_or(twiml))
        }
    }

    /// The answer to step `seq` of a call.
    pub async fn step(
        &self,
        call_sid: &str,
        seq: i64,
        input: Input,
    ) -> std::result::Result<Option<String>, StoreError> {
        let Some(call) = self.store().call(call_sid).await? else {
            return Ok(None);
        };
        let now = self.engine.now();
        if call.seq != seq
            || call.answered != seq
            || call.ended_at.is_some()
            || !self.store().claim_call_step(call_sid, seq, now).await?
        {
            // A replay, a duplicate racing the first request, or a step answered already:
            // nothing happens twice; the answer given (or about to be) is the answer.
            return self.answer_given(call_sid).await.map(Some);
        }
        let Some(commune) = self.store().commune(call.commune_id).await? else {
            return Ok(None);
        };
        let settings = self.settings(&commune).await?;
        let state: CallState = serde_json::from_str(&call.state).unwrap_or_else(|e| {
            tracing::error!(error = %e, "call state unreadable: the call starts over");
            CallState::default()
        });
        let flow = self
            .data
            .flows
            .get(&state.flow)
            .unwrap_or(&self.data.flows["default"]);
        let mut turn = Turn {
            ivr: self,
            sid: call_sid,
            commune: &commune,
            flow,
            prompts: self.prompts_for(&settings),
            state,
            now,
            seq: seq + 1,
            depth: 0,
        };
        let answer = match turn.answer(input).await {
            Ok(answer) => answer,
            Err(e) => turn.failure(e),
        };
        let twiml = voice_response(&answer, &Self::speaker(&settings));
        let state = serde_json::to_string(&turn.state).unwrap_or_default();
        self.store()
            .advance_call(
                call_sid,
                seq,
                &state,
                &twiml,
                turn.state.outcome.as_deref(),
                turn.state.name.as_deref(),
                turn.now,
            )
            .await?;
        // The caller may have hung up while this step held a slot: let it go now.
        if let Some(id) = turn.state.appointment
            && self
                .store()
                .call(call_sid)
                .await?
                .is_some_and(|c| c.ended_at.is_some())
            && let Err(e) = self.engine.release_hold(id).await
        {
            tracing::warn!(error = %e, "could not release the hold of an ended call");
        }
        Ok(Some(twiml))
    }

    /// The answer of the call's current step, waiting a moment if another request is still
    /// writing it.
    async fn answer_given(&self, call_sid: &str) -> std::result::Result<String, StoreError> {
        for _ in 0..100 {
            match self.store().call(call_sid).await? {
                Some(call) if call.answered < call.seq && call.ended_at.is_none() => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Some(call) => return Ok(call.last_twiml),
                None => break,
            }
        }
        Ok(self
            .store()
            .call(call_sid)
            .await?
            .map(|c| c.last_twiml)
            .unwrap_or_default())
    }

    /// The call ended (status callback): its outcome is recorded and a hold it left behind is
    /// released at once rather than when it lapses.
    pub async fn ended(
        &self,
        call_sid: &str,
        call_status: &str,
    ) -> std::result::Result<(), StoreError> {
        let outcome = match call_status {
            "busy" | "failed" | "no-answer" | "canceled" => "failed",
            _ => "abandoned",
        };
        let Some(call) = self
            .store()
            .end_call(call_sid, outcome, self.engine.now())
            .await?
        else {
            return Ok(());
        };
        let state: CallState = serde_json::from_str(&call.state).unwrap_or_default();
        if let Some(id) = state.appointment
            && let Err(e) = self.engine.release_hold(id).await
        {
            tracing::warn!(error = %e, "could not release the hold of an ended call");
        }
        tracing::info!(
            outcome = call.outcome.as_deref().unwrap_or(outcome),
            "call ended"
        );
        Ok(())
    }
}

/// A prompt with its placeholders filled.
fn text(
    prompts: &std::collections::HashMap<String, String>,
    key: &str,
    values: &[(&str, &str)],
) -> String {
    let mut out = prompts.get(key).cloned().unwrap_or_default();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

impl<'a> Turn<'a> {
    fn t(&self, key: &str, values: &[(&str, &str)]) -> String {
        text(self.prompts, key, values)
    }

    fn action(&self) -> String {
        format!("{STEP_PATH}?s={}", self.seq)
    }

    fn node(&self, name: &str) -> Option<&Node> {
        self.flow.node(name)
    }

    fn spoken_at(&self, at: DateTime<Utc>) -> String {
        spoken::date_time(at.with_timezone(&self.commune.timezone).naive_local())
    }

    /// A question: sentences inside a `<Gather>`, silence handled by the next step.
    fn ask(&self, before: Vec<String>, question: Vec<String>, expect: Expect) -> VoiceAnswer {
        VoiceAnswer {
            say: before,
            gather: Some((question, expect, self.action())),
            on_silence: Some(format!("{}&silence=1", self.action())),
            ..VoiceAnswer::default()
        }
    }

    fn goodbye(&mut self, mut say: Vec<String>) -> VoiceAnswer {
        say.push(self.t("au_revoir", &[]));
        VoiceAnswer {
            say,
            hangup: true,
            ..VoiceAnswer::default()
        }
    }

    fn failure(&mut self, e: BookingError) -> VoiceAnswer {
        tracing::error!(error = %e, "voice step failed");
        self.state.outcome.get_or_insert_with(|| "failed".into());
        VoiceAnswer {
            say: vec![self.t("error", &[])],
            hangup: true,
            ..VoiceAnswer::default()
        }
    }

    async fn enter_or_fail(&mut self, node: &str, before: Vec<String>) -> VoiceAnswer {
        match self.enter(node, before).await {
            Ok(answer) => answer,
            Err(e) => self.failure(e),
        }
    }

    // --- Entering a node: what it says and asks --------------------------------------------

    /// Boxed: some steps enter another node themselves (no slot left → another day).
    fn enter<'t>(
        &'t mut self,
        name: &str,
        before: Vec<String>,
    ) -> futures::future::BoxFuture<'t, Result<VoiceAnswer>>
    where
        'a: 't,
    {
        let name = name.to_owned();
        Box::pin(self.enter_inner(name, before))
    }

    async fn enter_inner(
        &mut self,
        mut name: String,
        mut before: Vec<String>,
    ) -> Result<VoiceAnswer> {
        self.depth += 1;
        if self.depth > 24 {
            return Err(BookingError::Store(StoreError::Corrupt(format!(
                "flow {} goes round in circles at {name}",
                self.state.flow
            ))));
        }
        // Steps with nothing to ask skip to their next node; a flow cannot loop forever on
        // them (each skip is a different step), but guard anyway.
        for _ in 0..16 {
            let Some(node) = self.node(&name).cloned() else {
                return Err(BookingError::Store(StoreError::Corrupt(format!(
                    "no node {name}"
                ))));
            };
            if self.state.node != name {
                self.state.node = name.clone();
                self.state.sub = 0;
            }
            match self.say_node(&node, &mut before).await? {
                Some(answer) => return Ok(answer),
                None => name = node.exit("next").to_owned(),
            }
        }
        Err(BookingError::Store(StoreError::Corrupt(
            "flow skips in a loop".into(),
        )))
    }

    /// The answer for entering `node`, or `None` when the step has nothing to ask (it goes on
    /// to `next`, with `before` still to say).
    async fn say_node(
        &mut self,
        node: &Node,
        before: &mut Vec<String>,
    ) -> Result<Option<VoiceAnswer>> {
        let b = std::mem::take(before);
        let answer = match node.step {
            Step::Menu => {
                let commune = crate::domain::wording::de(&self.commune.name);
                let mut question = vec![self.t(
                    node.prompt.as_deref().unwrap_or(""),
                    &[("commune", &commune)],
                )];
                if self.state.node == self.flow.start {
                    question.push(self.t("repeat_hint", &[]));
                }
                self.ask(b, question, Expect::Digits(1))
            }
            Step::Goodbye => {
                let mut say = b;
                let commune = crate::domain::wording::de(&self.commune.name);
                say.push(self.t(
                    node.prompt.as_deref().unwrap_or("au_revoir"),
                    &[("commune", &commune)],
                ));
                VoiceAnswer {
                    say,
                    hangup: true,
                    ..VoiceAnswer::default()
                }
            }
            Step::ChooseService => {
                let services = self.phone_services().await?;
                match services.len() {
                    0 => {
                        let mut say = b;
                        say.push(self.t("slots_none_at_all", &[]));
                        return Ok(Some(self.goodbye(say)));
                    }
                    1 => {
                        self.choose_service(services[0].0);
                        *before = b;
                        before.push(self.t("service_only", &[("service", &services[0].1)]));
                        return Ok(None);
                    }
                    _ => {
                        let mut question = vec![self.t("service_intro", &[])];
                        for (key, (_, name)) in self.service_page(&services) {
                            question.push(self.t(
                                "service_choice",
                                &[("service", &name), ("key", &key.to_string())],
                            ));
                        }
                        if services.len() > 4 {
                            question.push(self.t("service_more", &[]));
                        }
                        self.ask(b, question, Expect::Digits(1))
                    }
                }
            }
            Step::Persons => {
                let max = self.service().await?.max_persons;
                if max <= 1 {
                    self.state.persons = Some(1);
                    *before = b;
                    return Ok(None);
                }
                let question = vec![self.t("persons", &[("max", &max.to_string())])];
                self.ask(b, question, Expect::Digits(1))
            }
            Step::ChooseLocation => {
                let locations = self.locations().await?;
                if locations.len() <= 1 {
                    self.state.location = None;
                    *before = b;
                    return Ok(None);
                }
                let mut question = vec![self.t("location_intro", &[]), self.t("location_any", &[])];
                for (i, (_, name)) in locations.iter().take(3).enumerate() {
                    question.push(self.t(
                        "location_choice",
                        &[("place", name), ("key", &(i + 2).to_string())],
                    ));
                }
                self.ask(b, question, Expect::Digits(1))
            }
            Step::HearSlots => {
                self.state.slots_node = self.state.node.clone();
                return self.hear_slots_at(node, b).await;
            }
            Step::OtherDay => {
                let question = if self.state.sub == 0 {
                    vec![self.t("other_day", &[])]
                } else {
                    vec![self.t("enter_date", &[])]
                };
                let expect = if self.state.sub == 0 {
                    Expect::Digits(1)
                } else {
                    Expect::Digits(4)
                };
                self.ask(b, question, expect)
            }
            Step::ConfirmMobile => {
                let caller = PhoneE164::parse(&self.state.caller)
                    .ok()
                    .filter(|p| p.is_french_mobile());
                match (self.state.sub, caller) {
                    (0, Some(phone)) => {
                        // Its last two digits: the caller knows the rest, and the menu is shorter.
                        let end = phone.as_str().get(phone.as_str().len() - 2..).unwrap_or("");
                        let end = end.parse::<u32>().map_or(String::new(), |n| {
                            if n < 10 {
                                format!("zéro {}", spoken::number(n))
                            } else {
                                spoken::number(n)
                            }
                        });
                        let question = vec![self.t(
                            "mobile_confirm",
                            &[("phone", &spoken::phone(phone.as_str())), ("end", &end)],
                        )];
                        self.ask(b, question, Expect::Digits(1))
                    }
                    _ => {
                        self.state.sub = 1;
                        self.ask(b, vec![self.t("mobile_enter", &[])], Expect::Digits(10))
                    }
                }
            }
            Step::SayName => self.ask(b, vec![self.t("say_name", &[])], Expect::SpeechOrKeys),
            Step::EnterCode => {
                let phone = spoken::phone(self.state.mobile.as_deref().unwrap_or(""));
                let key = if self.state.sub == 0 {
                    "code_sent"
                } else {
                    "code_enter"
                };
                self.state.sub = 1;
                self.ask(
                    b,
                    vec![self.t(key, &[("phone", &phone)])],
                    Expect::Digits(6),
                )
            }
            Step::FindAppointment => return self.find_appointment(node, b).await,
            Step::Cancel | Step::Move => return self.ask_confirmation(node, b).await,
            Step::Transfer => {
                let (answer, next) = self.transfer(b, node.exit("next"));
                match answer {
                    Some(answer) => answer,
                    None => {
                        *before = next;
                        return Ok(None);
                    }
                }
            }
        };
        Ok(Some(answer))
    }

    // --- Answering ------------------------------------------------------------------------

    async fn answer(&mut self, input: Input) -> Result<VoiceAnswer> {
        let current = self.state.node.clone();
        let Some(node) = self.node(&current).cloned() else {
            let start = self.flow.start.clone();
            return self.enter(&start, Vec::new()).await;
        };
        if let Input::DialEnded(status) = &input {
            if status == "completed" || status == "answered" {
                return Ok(self.goodbye(Vec::new()));
            }
            // Nobody answered: the caller is not left in silence.
            self.state.outcome = None;
            let mut say = vec![self.t("switchboard_unanswered", &[])];
            say.push(self.t(
                "switchboard_closed",
                &[("hours", &spoken_hours(self.commune))],
            ));
            let back = if node.step == Step::Transfer {
                node.exit("next").to_owned()
            } else {
                current.clone()
            };
            return self.enter(&back, say).await;
        }
        // Everywhere: * repeats, 0 reaches a person (not while typing a number or a code).
        let typing = matches!(
            (node.step, self.state.sub),
            (Step::EnterCode, _)
                | (Step::ConfirmMobile | Step::OtherDay, 1)
                | (Step::FindAppointment, 1 | 2)
        );
        if let Input::Digits(d) = &input {
            if d == "*" {
                return self.enter(&current, Vec::new()).await;
            }
            if d == "0" && !typing {
                let (answer, before) = self.transfer(Vec::new(), &current);
                return match answer {
                    Some(answer) => Ok(answer),
                    None => self.enter(&current, before).await,
                };
            }
        }
        let next = match input {
            Input::Silence if node.step == Step::SayName => self.give_details(None).await?,
            Input::Silence => Next::Miss(self.t("no_input", &[])),
            input => self.answer_step(&node, input).await?,
        };
        match next {
            Next::Go(target, before) => {
                self.state.misses = 0;
                self.enter(&target, before).await
            }
            Next::Again(before) => self.enter(&current, before).await,
            Next::Miss(sentence) => {
                self.state.misses += 1;
                if self.state.misses > MISSES_ALLOWED {
                    return Ok(self.give_up());
                }
                self.enter(&current, vec![sentence]).await
            }
            Next::Answer(answer) => Ok(answer),
        }
    }

    fn give_up(&mut self) -> VoiceAnswer {
        let (answer, _) = self.transfer(Vec::new(), "");
        if let Some(answer) = answer.filter(|a| a.dial.is_some()) {
            return answer;
        }
        self.state.outcome.get_or_insert_with(|| "failed".into());
        VoiceAnswer {
            say: vec![self.t("give_up", &[])],
            hangup: true,
            ..VoiceAnswer::default()
        }
    }

    async fn answer_step(&mut self, node: &Node, input: Input) -> Result<Next> {
        let digits = match &input {
            Input::Digits(d) => d.clone(),
            Input::Speech(s) => s.clone(),
            _ => String::new(),
        };
        Ok(match node.step {
            Step::Menu => match digits.chars().next().and_then(|c| node.keys.get(&c)) {
                Some(target) if digits.len() == 1 => Next::Go(target.clone(), Vec::new()),
                _ => Next::Miss(self.t("wrong_key", &[])),
            },
            Step::Goodbye | Step::Transfer => Next::Go(self.flow.start.clone(), Vec::new()),
            Step::ChooseService => {
                let services = self.phone_services().await?;
                let page = self.service_page(&services);
                match digits.parse::<usize>() {
                    Ok(4) if services.len() > 4 => {
                        self.state.service_page += 1;
                        Next::Again(Vec::new())
                    }
                    Ok(k) => match page.iter().find(|(key, _)| *key == k) {
                        Some((_, (id, _))) => {
                            self.choose_service(*id);
                            Next::Go(node.exit("next").to_owned(), Vec::new())
                        }
                        None => Next::Miss(self.t("wrong_key", &[])),
                    },
                    Err(_) => Next::Miss(self.t("wrong_key", &[])),
                }
            }
            Step::Persons => {
                let max = self.service().await?.max_persons;
                match digits.parse::<i32>() {
                    Ok(n) if (1..=max).contains(&n) => {
                        self.state.persons = Some(n as u32);
                        Next::Go(node.exit("next").to_owned(), Vec::new())
                    }
                    _ => Next::Miss(self.t("wrong_key", &[])),
                }
            }
            Step::ChooseLocation => {
                let locations = self.locations().await?;
                match digits.parse::<usize>() {
                    Ok(1) => {
                        self.state.location = None;
                        Next::Go(node.exit("next").to_owned(), Vec::new())
                    }
                    Ok(k) if k >= 2 && k - 2 < locations.len().min(3) => {
                        self.state.location = Some(locations[k - 2].0);
                        Next::Go(node.exit("next").to_owned(), Vec::new())
                    }
                    _ => Next::Miss(self.t("wrong_key", &[])),
                }
            }
            Step::HearSlots => self.choose_slot(node, &digits).await?,
            Step::OtherDay => match (self.state.sub, digits.as_str()) {
                (0, "1" | "2") => {
                    self.state.part = digits.parse().ok();
                    self.state.after = None;
                    Next::Go(node.exit("next").to_owned(), Vec::new())
                }
                (0, "3") => {
                    self.state.sub = 1;
                    Next::Again(Vec::new())
                }
                (0, _) => Next::Miss(self.t("wrong_key", &[])),
                _ => match self.typed_date(&digits).await? {
                    Some(date) => {
                        self.state.from = Some(date);
                        self.state.after = None;
                        self.state.part = None;
                        Next::Go(node.exit("next").to_owned(), Vec::new())
                    }
                    None => Next::Miss(self.t("bad_date", &[])),
                },
            },
            Step::ConfirmMobile => match (self.state.sub, digits.as_str()) {
                (0, "1") => {
                    self.state.mobile = Some(
                        PhoneE164::parse(&self.state.caller)
                            .map(|p| p.as_str().to_owned())
                            .unwrap_or_default(),
                    );
                    Next::Go(node.exit("next").to_owned(), Vec::new())
                }
                (0, "2") => {
                    self.state.sub = 1;
                    Next::Again(Vec::new())
                }
                (0, _) => Next::Miss(self.t("wrong_key", &[])),
                _ => match PhoneE164::parse(&digits)
                    .ok()
                    .filter(|p| p.is_french_mobile())
                {
                    Some(phone) => {
                        self.state.mobile = Some(phone.as_str().to_owned());
                        Next::Go(node.exit("next").to_owned(), Vec::new())
                    }
                    None => Next::Miss(self.t("mobile_invalid", &[])),
                },
            },
            Step::SayName => {
                let heard = digits.trim().to_owned();
                self.give_details(Some(heard).filter(|h| !h.is_empty()))
                    .await?
            }
            Step::EnterCode => self.enter_code(node, &digits).await?,
            Step::FindAppointment if self.state.sub == 2 => {
                self.check_found_code(node, &digits).await?
            }
            Step::FindAppointment => {
                // Typing a number to look up.
                match PhoneE164::parse(&digits)
                    .ok()
                    .filter(|p| p.is_french_mobile())
                {
                    Some(phone) => {
                        self.state.mobile = Some(phone.as_str().to_owned());
                        self.state.sub = 3;
                        Next::Again(Vec::new())
                    }
                    None => Next::Miss(self.t("mobile_invalid", &[])),
                }
            }
            Step::Cancel | Step::Move => self.confirm_and_act(node, &digits).await?,
        })
    }

    // --- Services, persons, places --------------------------------------------------------

    async fn phone_services(&self) -> Result<Vec<(i64, String)>> {
        let config = self.ivr.engine.config(self.commune.id).await?;
        Ok(config
            .services
            .iter()
            .filter(|s| s.active && s.channels.phone)
            .map(|s| (s.id, s.spoken_name.clone()))
            .collect())
    }

    /// The services read on the current page, with their keys: all of them when four or
    /// fewer, otherwise three per page and 4 for the others.
    fn service_page(&self, services: &[(i64, String)]) -> Vec<(usize, (i64, String))> {
        if services.len() <= 4 {
            return services
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, s)| (i + 1, s))
                .collect();
        }
        let pages = services.len().div_ceil(3);
        let page = self.state.service_page % pages;
        services
            .iter()
            .skip(page * 3)
            .take(3)
            .cloned()
            .enumerate()
            .map(|(i, s)| (i + 1, s))
            .collect()
    }

    fn choose_service(&mut self, id: i64) {
        self.state.service = Some(id);
        self.state.persons = None;
        self.state.location = None;
        self.state.from = None;
        self.state.part = None;
        self.state.after = None;
    }

    async fn service(&self) -> Result<crate::domain::Service> {
        let id = self.state.service.ok_or(BookingError::ServiceNotFound)?;
        let config = self.ivr.engine.config(self.commune.id).await?;
        config
            .services
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or(BookingError::ServiceNotFound)
    }

    async fn locations(&self) -> Result<Vec<(i64, String)>> {
        let config = self.ivr.engine.config(self.commune.id).await?;
        Ok(config
            .locations
            .iter()
            .filter(|l| l.active)
            .map(|l| (l.id, l.name.clone()))
            .collect())
    }

    // --- Slots ----------------------------------------------------------------------------

    /// The service, persons and place the slots are for: the booking's, or those of the
    /// appointment being moved.
    async fn slot_request(&self) -> Result<(i64, u32, Option<i64>)> {
        if let Some(target) = self.state.target {
            let a = self.appointment(target).await?;
            return Ok((a.service_id, a.persons as u32, None));
        }
        let service = self.state.service.ok_or(BookingError::ServiceNotFound)?;
        Ok((
            service,
            self.state.persons.unwrap_or(1),
            self.state.location,
        ))
    }

    async fn appointment(&self, id: AppointmentId) -> Result<Appointment> {
        self.ivr
            .store()
            .appointment(id)
            .await?
            .ok_or(BookingError::AppointmentNotFound)
    }

    /// The next slots to read, and whether more follow.
    async fn next_slots(&self) -> Result<(Vec<FreeSlot>, bool)> {
        let (service, persons, location) = self.slot_request().await?;
        let today = self.commune.local_date(self.now);
        let from = self.state.from.unwrap_or(today).max(today);
        let ctx = self
            .ivr
            .engine
            .slot_context(self.commune.id, service, today, today)
            .await?;
        let (_, last) = ctx.search(self.now).bookable_dates();
        let after = self.state.after.unwrap_or(i64::MIN);
        let part = self.state.part;
        let wanted = |s: &FreeSlot| {
            let hour = s.start.with_timezone(&self.commune.timezone).hour();
            s.start.timestamp() > after
                && match part {
                    Some(1) => hour < 12,
                    Some(2) => hour >= 12,
                    _ => true,
                }
        };
        let slots = self
            .ivr
            .engine
            .free_slots(
                self.commune.id,
                service,
                SlotFilter {
                    persons,
                    location,
                    from,
                    to: last.max(from),
                    limit: Some(400),
                },
            )
            .await?;
        let wanted_slots: Vec<FreeSlot> = slots.into_iter().filter(wanted).collect();
        // Slots another caller is hearing right now come last.
        let chosen: Vec<FreeSlot> = {
            let mut offered = self.ivr.offered.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            offered.retain(|_, listeners| {
                listeners.retain(|(_, at)| now.duration_since(*at) < OFFER_KEPT);
                !listeners.is_empty()
            });
            // Busy: as many other callers are hearing it as it has free seats.
            let busy = |s: &FreeSlot| {
                let others = offered
                    .get(&(s.start.timestamp(), s.location_id))
                    .map_or(0, |l| l.iter().filter(|(sid, _)| sid != self.sid).count());
                others >= s.planning_ids.len().max(1)
            };
            let mut chosen: Vec<FreeSlot> = wanted_slots
                .iter()
                .filter(|s| !busy(s))
                .take(SLOTS_AT_ONCE)
                .cloned()
                .collect();
            for s in wanted_slots.iter().filter(|s| busy(s)) {
                if chosen.len() >= SLOTS_AT_ONCE {
                    break;
                }
                chosen.push(s.clone());
            }
            chosen.sort_by_key(|s| s.start);
            for s in &chosen {
                let listeners = offered
                    .entry((s.start.timestamp(), s.location_id))
                    .or_default();
                listeners.retain(|(sid, _)| sid != self.sid);
                listeners.push((self.sid.to_owned(), now));
            }
            chosen
        };
        let more = wanted_slots.len() > chosen.len();
        Ok((chosen, more))
    }

    async fn place_name(&self, location: i64) -> Result<String> {
        let config = self.ivr.engine.config(self.commune.id).await?;
        Ok(config
            .locations
            .iter()
            .find(|l| l.id == location)
            .map(|l| l.name.clone())
            .unwrap_or_default())
    }

    async fn hear_slots_at(
        &mut self,
        node: &Node,
        before: Vec<String>,
    ) -> Result<Option<VoiceAnswer>> {
        let (slots, more) = self.next_slots().await?;
        let mut say = before;
        if slots.is_empty() {
            let filtered = self.state.from.is_some()
                || self.state.part.is_some()
                || self.state.after.is_some();
            if !filtered {
                say.push(self.t("slots_none_at_all", &[]));
                return Ok(Some(self.goodbye(say)));
            }
            say.push(self.t("slots_none", &[]));
            self.state.after = None;
            let other = node.exit("other").to_owned();
            return self.enter(&other, say).await.map(Some);
        }
        self.state.offered = slots
            .iter()
            .map(|s| (s.start.timestamp(), s.location_id))
            .collect();
        let intro = if self.state.after.is_some() {
            "slots_next"
        } else {
            "slots_intro"
        };
        // The place once when the slots share it, otherwise with each slot.
        let first_place = slots[0].location_id;
        let one_place = slots.iter().all(|s| s.location_id == first_place);
        let place = if one_place {
            self.place_name(first_place).await?
        } else {
            String::new()
        };
        let mut question = vec![
            self.t(intro, &[("place", &place)])
                .replace(",  :", " :")
                .replace(", :", " :"),
        ];
        for (i, slot) in slots.iter().enumerate() {
            let mut when = self.spoken_at(slot.start);
            if !one_place {
                when = format!("{when}, {}", self.place_name(slot.location_id).await?);
            }
            question.push(self.t(
                "slot_choice",
                &[("slot", &when), ("key", &(i + 1).to_string())],
            ));
        }
        self.state.more = more;
        if more {
            question.push(self.t("slots_later", &[]));
        }
        question.push(self.t("slots_other", &[]));
        Ok(Some(self.ask(say, question, Expect::Digits(1))))
    }

    async fn choose_slot(&mut self, node: &Node, digits: &str) -> Result<Next> {
        match digits {
            "3" if self.state.more => {
                self.state.after = self.state.offered.last().map(|(start, _)| *start);
                Ok(Next::Again(Vec::new()))
            }
            "4" => Ok(Next::Go(node.exit("other").to_owned(), Vec::new())),
            _ => {
                let Some(&(start, location)) = digits
                    .parse::<usize>()
                    .ok()
                    .filter(|k| *k >= 1)
                    .and_then(|k| self.state.offered.get(k - 1))
                else {
                    return Ok(Next::Miss(self.t("wrong_key", &[])));
                };
                let at = DateTime::from_timestamp(start, 0).unwrap_or(self.now);
                let when = self.spoken_at(at);
                let place = self.place_name(location).await?;
                if self.state.target.is_some() {
                    // Moving: the slot is taken with the move itself, after the code.
                    self.state.chosen = Some((start, location));
                    return Ok(Next::Go(node.exit("next").to_owned(), Vec::new()));
                }
                let (service, persons, _) = self.slot_request().await?;
                match self
                    .ivr
                    .engine
                    .hold_for_details(
                        crate::domain::Channel::Phone,
                        self.commune.id,
                        service,
                        at,
                        Some(location),
                        persons,
                    )
                    .await
                {
                    Ok(appointment) => {
                        // A caller choosing again drops the slot held before.
                        if let Some(previous) = self.state.appointment.replace(appointment.id) {
                            let _ = self.ivr.engine.release_hold(previous).await;
                        }
                        let minutes = (appointment.hold_expires_at.unwrap_or(self.now) - self.now)
                            .num_minutes()
                            .max(1)
                            .to_string();
                        let held = self.t(
                            "slot_held",
                            &[("slot", &when), ("place", &place), ("minutes", &minutes)],
                        );
                        Ok(Next::Go(node.exit("next").to_owned(), vec![held]))
                    }
                    Err(BookingError::SlotTaken | BookingError::SlotUnavailable) => {
                        Ok(Next::Again(vec![self.t("slot_taken", &[])]))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// "0312" → the 3rd of December, this year or next, if the service can be booked then.
    async fn typed_date(&self, digits: &str) -> Result<Option<NaiveDate>> {
        if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Ok(None);
        }
        let (day, month) = (digits[..2].parse::<u32>(), digits[2..].parse::<u32>());
        let (Ok(day), Ok(month)) = (day, month) else {
            return Ok(None);
        };
        let today = self.commune.local_date(self.now);
        let date = NaiveDate::from_ymd_opt(today.year(), month, day)
            .filter(|d| *d >= today)
            .or_else(|| NaiveDate::from_ymd_opt(today.year() + 1, month, day));
        let Some(date) = date else {
            return Ok(None);
        };
        let (service, _, _) = self.slot_request().await?;
        let ctx = self
            .ivr
            .engine
            .slot_context(self.commune.id, service, today, today)
            .await?;
        let (first, last) = ctx.search(self.now).bookable_dates();
        Ok((first..=last).contains(&date).then_some(date))
    }

    // --- Details and code -----------------------------------------------------------------

    async fn give_details(&mut self, heard: Option<String>) -> Result<Next> {
        let Some(id) = self.state.appointment else {
            return Ok(Next::Go(self.flow.start.clone(), Vec::new()));
        };
        let phone = self
            .state
            .mobile
            .as_deref()
            .and_then(|m| PhoneE164::parse(m).ok());
        let name = heard
            .as_deref()
            .and_then(|h| CitizenName::parse(h).ok())
            .unwrap_or_else(|| CitizenName::from_trusted("Nom non donné (appel)".into()));
        self.state.name = heard;
        let citizen = Citizen {
            name,
            phone,
            email: None,
            ants_application_ids: Vec::new(),
        };
        match self.ivr.engine.provide_details(id, &citizen).await {
            Ok(_) => {
                let next = self
                    .node(&self.state.node)
                    .map(|n| n.exit("next").to_owned())
                    .unwrap_or_default();
                Ok(Next::Go(next, vec![self.t("name_thanks", &[])]))
            }
            Err(BookingError::HoldExpired | BookingError::SlotTaken) => Ok(self.hold_lost()),
            Err(
                e @ (BookingError::Duplicate(_)
                | BookingError::TooManyCodes
                | BookingError::SmsBudgetExhausted),
            ) => {
                let _ = self.ivr.engine.release_hold(id).await;
                self.state.appointment = None;
                // Said, not written: and where the other appointment is goes by SMS to its
                // owner, never to whoever typed the number.
                let key = match e {
                    BookingError::Duplicate(_) => "duplicate",
                    BookingError::TooManyCodes => "too_many_codes",
                    _ => "sms_unavailable",
                };
                Ok(Next::Go(self.flow.start.clone(), vec![self.t(key, &[])]))
            }
            Err(e) => Err(e),
        }
    }

    /// The slot chosen could not be kept: back to the slots, saying so.
    fn hold_lost(&mut self) -> Next {
        self.state.appointment = None;
        let back = if self.node(&self.state.slots_node).is_some() {
            self.state.slots_node.clone()
        } else {
            self.flow.start.clone()
        };
        self.state.after = None;
        Next::Go(back, vec![self.t("hold_lost", &[])])
    }

    async fn enter_code(&mut self, node: &Node, digits: &str) -> Result<Next> {
        let Some(id) = self.state.appointment else {
            return Ok(Next::Go(self.flow.start.clone(), Vec::new()));
        };
        if digits == "9" {
            // 9 then #: another code.
            return match self.ivr.engine.resend_code(id).await {
                Ok(_) => Ok(Next::Again(vec![self.t("code_resent", &[])])),
                Err(BookingError::TooManyCodes) => {
                    Ok(Next::Again(vec![self.t("too_many_codes", &[])]))
                }
                Err(BookingError::SmsBudgetExhausted) => {
                    Ok(Next::Again(vec![self.t("sms_unavailable", &[])]))
                }
                Err(BookingError::HoldExpired) => Ok(self.hold_lost()),
                Err(e) => Err(e),
            };
        }
        let Ok(code) = OtpCode::parse(digits) else {
            return Ok(self.wrong_code());
        };
        match self.ivr.engine.confirm_with_code(id, &code).await {
            Ok((appointment, _)) => {
                self.state.outcome = Some("booked".into());
                let details = self.ivr.engine.details(&appointment).await?;
                let when = self.spoken_at(appointment.starts_at);
                let address = format!("{}, {}", details.location.address, details.location.city);
                let mut say = vec![self.t(
                    "confirmed",
                    &[
                        ("service", &details.service.spoken_name),
                        ("slot", &when),
                        ("place", &details.location.name),
                        ("address", &address),
                    ],
                )];
                if !details.service.what_to_bring.is_empty() {
                    say.push(self.t(
                        "bring",
                        &[("what_to_bring", &details.service.what_to_bring)],
                    ));
                }
                say.push(self.t("confirmation_sms", &[]));
                tracing::info!(appointment = %appointment.id, "booked by telephone");
                Ok(Next::Go(node.exit("next").to_owned(), say))
            }
            Err(BookingError::WrongCode { .. }) => Ok(self.wrong_code()),
            Err(BookingError::CodeExpired) => Ok(Next::Again(vec![self.t("code_expired", &[])])),
            Err(BookingError::CodeBurnt) => Ok(Next::Answer(
                self.goodbye(vec![self.t("code_too_many", &[])]),
            )),
            Err(BookingError::HoldExpired | BookingError::SlotTaken) => Ok(self.hold_lost()),
            Err(e) => Err(e),
        }
    }

    fn wrong_code(&mut self) -> Next {
        self.state.code_tries += 1;
        if self.state.code_tries >= CODE_TRIES {
            return Next::Answer(self.goodbye(vec![self.t("code_too_many", &[])]));
        }
        Next::Again(vec![self.t("code_wrong", &[])])
    }

    // --- Existing appointments -------------------------------------------------------------

    /// Finds the caller's next appointment here (by their number, or one typed), sends a
    /// code to its mobile and reads it out only once the code is typed: a number typed or
    /// shown on a call proves nothing.
    async fn find_appointment(
        &mut self,
        node: &Node,
        before: Vec<String>,
    ) -> Result<Option<VoiceAnswer>> {
        let mut say = before;
        if self.state.sub == 2 {
            let phone = spoken::phone(self.state.mobile.as_deref().unwrap_or(""));
            return Ok(Some(self.ask(
                say,
                vec![self.t("find_code", &[("phone", &phone)])],
                Expect::Digits(6),
            )));
        }
        let phone = match self.state.sub {
            0 => PhoneE164::parse(&self.state.caller)
                .ok()
                .filter(|p| p.is_french_mobile())
                .map(|p| p.as_str().to_owned()),
            3 => self.state.mobile.clone(),
            _ => None,
        };
        if let Some(phone) = &phone {
            let found = self
                .ivr
                .store()
                .upcoming_appointments_of(Some(phone), None, self.now, 10)
                .await?
                .into_iter()
                .find(|a| a.commune_id == self.commune.id);
            if let Some(a) = found {
                match self.ivr.engine.send_check_code(a.id).await {
                    Ok(_) => {}
                    Err(BookingError::TooManyCodes) => {
                        say.push(self.t("too_many_codes", &[]));
                        return Ok(Some(self.goodbye(say)));
                    }
                    Err(BookingError::SmsBudgetExhausted | BookingError::CannotReceiveSms) => {
                        say.push(self.t("sms_unavailable", &[]));
                        return Ok(Some(self.goodbye(say)));
                    }
                    Err(e) => return Err(e),
                }
                self.state.target = Some(a.id);
                self.state.verified = false;
                self.state.mobile = Some(phone.clone());
                self.state.code_tries = 0;
                self.state.sub = 2;
                return Ok(Some(self.ask(
                    say,
                    vec![self.t("find_code", &[("phone", &spoken::phone(phone))])],
                    Expect::Digits(6),
                )));
            }
            say.push(self.t("found_none", &[("phone", &spoken::phone(phone))]));
            if self.state.sub == 3 {
                let none = node.exit("none").to_owned();
                return self.enter(&none, say).await.map(Some);
            }
        }
        self.state.sub = 1;
        Ok(Some(self.ask(
            say,
            vec![self.t("find_enter", &[])],
            Expect::Digits(10),
        )))
    }

    /// The code typed to hear an appointment found.
    async fn check_found_code(&mut self, node: &Node, digits: &str) -> Result<Next> {
        let Some(target) = self.state.target else {
            return Ok(Next::Go(self.flow.start.clone(), Vec::new()));
        };
        if digits == "9" {
            return match self.ivr.engine.send_check_code(target).await {
                Ok(_) => Ok(Next::Again(vec![self.t("code_resent", &[])])),
                Err(BookingError::TooManyCodes) => {
                    Ok(Next::Again(vec![self.t("too_many_codes", &[])]))
                }
                Err(e) => Err(e),
            };
        }
        let Ok(code) = OtpCode::parse(digits) else {
            return Ok(self.wrong_code());
        };
        match self.ivr.engine.check_code(target, &code).await {
            Ok(()) => {}
            Err(BookingError::WrongCode { .. }) => return Ok(self.wrong_code()),
            Err(BookingError::CodeExpired) => {
                return Ok(Next::Again(vec![self.t("code_expired", &[])]));
            }
            Err(BookingError::CodeBurnt) => {
                return Ok(Next::Answer(
                    self.goodbye(vec![self.t("code_too_many", &[])]),
                ));
            }
            Err(e) => return Err(e),
        }
        self.state.verified = true;
        self.state.from = None;
        self.state.part = None;
        self.state.after = None;
        let a = self.appointment(target).await?;
        let details = self.ivr.engine.details(&a).await?;
        let found = self.t(
            "found",
            &[
                ("slot", &self.spoken_at(a.starts_at)),
                ("place", &details.location.name),
                ("service", &details.service.spoken_name),
            ],
        );
        Ok(Next::Go(node.exit("next").to_owned(), vec![found]))
    }

    /// Cancel or move: the caller proved the appointment is theirs; one key confirms.
    async fn ask_confirmation(
        &mut self,
        node: &Node,
        before: Vec<String>,
    ) -> Result<Option<VoiceAnswer>> {
        if self.state.target.is_none() || !self.state.verified {
            let start = self.flow.start.clone();
            return self.enter(&start, before).await.map(Some);
        }
        let question = match node.step {
            Step::Move => {
                let (start, _) = self.state.chosen.unwrap_or((0, 0));
                let when = self.spoken_at(DateTime::from_timestamp(start, 0).unwrap_or(self.now));
                self.t("move_confirm", &[("slot", &when)])
            }
            _ => self.t("cancel_confirm", &[]),
        };
        Ok(Some(self.ask(before, vec![question], Expect::Digits(1))))
    }

    async fn confirm_and_act(&mut self, node: &Node, digits: &str) -> Result<Next> {
        let Some(target) = self.state.target.filter(|_| self.state.verified) else {
            return Ok(Next::Go(self.flow.start.clone(), Vec::new()));
        };
        match digits {
            "1" => {}
            "2" => return Ok(Next::Go(self.flow.start.clone(), vec![self.t("kept", &[])])),
            _ => return Ok(Next::Miss(self.t("wrong_key", &[]))),
        }
        let next = node.exit("next").to_owned();
        if node.step == Step::Cancel {
            self.ivr
                .engine
                .cancel(target, &Cancellation::ByCitizen)
                .await?;
            self.state.outcome = Some("cancelled".into());
            self.state.verified = false;
            return Ok(Next::Go(next, vec![self.t("cancelled", &[])]));
        }
        let Some((start, location)) = self.state.chosen else {
            return Ok(Next::Go(self.flow.start.clone(), Vec::new()));
        };
        let at = DateTime::from_timestamp(start, 0).unwrap_or(self.now);
        match self.ivr.engine.move_to(target, at, Some(location)).await {
            Ok(moved) => {
                self.state.outcome = Some("moved".into());
                self.state.target = Some(moved.id);
                let place = self.place_name(location).await?;
                let when = self.spoken_at(at);
                Ok(Next::Go(
                    next,
                    vec![self.t("moved", &[("slot", &when), ("place", &place)])],
                ))
            }
            Err(BookingError::SlotTaken | BookingError::SlotUnavailable) => Ok(self.hold_lost()),
            Err(e) => Err(e),
        }
    }

    // --- The switchboard ------------------------------------------------------------------

    /// A transfer when the switchboard is open (the answer), otherwise its hours said before
    /// going on to `then`.
    fn transfer(&mut self, before: Vec<String>, then: &str) -> (Option<VoiceAnswer>, Vec<String>) {
        let mut say = before;
        let Some(number) = self.commune.switchboard_number.clone() else {
            say.push(self.t("switchboard_none", &[]));
            return (None, say);
        };
        let local = self.now.with_timezone(&self.commune.timezone);
        let minute = MinuteOfDay((local.hour() * 60 + local.minute()) as u16);
        if self
            .commune
            .switchboard_hours
            .is_open(local.weekday(), minute)
        {
            self.state.outcome = Some("transferred".into());
            say.push(self.t("transfer", &[]));
            return (
                Some(VoiceAnswer {
                    say,
                    dial: Some((number, format!("{}&dial=1", self.action()))),
                    ..VoiceAnswer::default()
                }),
                Vec::new(),
            );
        }
        say.push(self.t(
            "switchboard_closed",
            &[("hours", &spoken_hours(self.commune))],
        ));
        let _ = then;
        (None, say)
    }
}

/// "du lundi au vendredi de 8 heures 30 à 12 heures, et de 13 heures 30 à 17 heures".
fn spoken_hours(commune: &Commune) -> String {
    let ranges = &commune.switchboard_hours.0;
    if ranges.is_empty() {
        return "aux heures d'ouverture de la mairie".to_owned();
    }
    let time = |m: MinuteOfDay| {
        spoken::time(
            chrono::NaiveTime::from_hms_opt(u32::from(m.0 / 60) % 24, u32::from(m.0 % 60), 0)
                .unwrap_or_default(),
        )
    };
    let days = |w: crate::domain::Weekdays| {
        if w == crate::domain::Weekdays::MONDAY_TO_FRIDAY {
            return "du lundi au vendredi".to_owned();
        }
        let names: Vec<&str> = [
            chrono::Weekday::Mon,
            chrono::Weekday::Tue,
            chrono::Weekday::Wed,
            chrono::Weekday::Thu,
            chrono::Weekday::Fri,
            chrono::Weekday::Sat,
            chrono::Weekday::Sun,
        ]
        .into_iter()
        .filter(|d| w.contains(*d))
        .map(crate::domain::wording::weekday_name)
        .collect();
        format!("le {}", names.join(", le "))
    };
    let mut parts = Vec::new();
    let mut last_days = None;
    for r in ranges {
        let span = format!("de {} à {}", time(r.start), time(r.end));
        if last_days == Some(r.weekdays) {
            parts.push(format!("et {span}"));
        } else {
            parts.push(format!("{} {span}", days(r.weekdays)));
        }
        last_days = Some(r.weekdays);
    }
    parts.join(", ")
}

/// How long a text lasts when spoken at about 150 words per minute.
pub fn spoken_seconds(answer: &VoiceAnswer) -> f64 {
    let words: String = answer
        .say
        .iter()
        .chain(answer.gather.iter().flat_map(|(texts, _, _)| texts.iter()))
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    spoken::spoken_seconds(&words, 150.0)
}
