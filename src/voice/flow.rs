//! Call flows (`voice-flows/*.toml`) and spoken texts (`prompts/*.toml`) as data. The default
//! ones are compiled in; a directory given in the configuration (`voice_dir`) adds or replaces
//! files, so that a commune can have its own flow or wording without a new binary.
//!
//! Loading checks everything a call could trip on later — an unknown step, a transition to a
//! node that does not exist, a node no path reaches, a menu with more than four choices, a
//! prompt the flow needs but the prompts file lacks — and refuses with a message naming the
//! file and the node.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;

/// The built-in steps a node can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Menu,
    ChooseService,
    Persons,
    ChooseLocation,
    HearSlots,
    OtherDay,
    ConfirmMobile,
    SayName,
    EnterCode,
    FindAppointment,
    Cancel,
    Move,
    Transfer,
    Goodbye,
}

impl Step {
    fn parse(name: &str) -> Option<Step> {
        Some(match name {
            "menu" => Step::Menu,
            "choose_service" => Step::ChooseService,
            "persons" => Step::Persons,
            "choose_location" => Step::ChooseLocation,
            "hear_slots" => Step::HearSlots,
            "other_day" => Step::OtherDay,
            "confirm_mobile" => Step::ConfirmMobile,
            "say_name" => Step::SayName,
            "enter_code" => Step::EnterCode,
            "find_appointment" => Step::FindAppointment,
            "cancel" => Step::Cancel,
            "move" => Step::Move,
            "transfer" => Step::Transfer,
            "goodbye" => Step::Goodbye,
            _ => return None,
        })
    }

    /// The transitions the step needs besides `keys`.
    fn exits(self) -> &'static [&'static str] {
        match self {
            Step::Menu | Step::Goodbye => &[],
            Step::HearSlots => &["next", "other"],
            Step::FindAppointment => &["next", "none"],
            _ => &["next"],
        }
    }

    /// The prompts the step says.
    fn prompts(self) -> &'static [&'static str] {
        match self {
            Step::Menu | Step::Goodbye => &[],
            Step::ChooseService => &[
                "service_intro",
                "service_choice",
                "service_more",
                "service_only",
            ],
            Step::Persons => &["persons"],
            Step::ChooseLocation => &["location_intro", "location_any", "location_choice"],
            Step::HearSlots => &[
                "slots_intro",
                "slots_next",
                "slot_choice",
                "slots_later",
                "slots_other",
                "slots_none",
                "slots_none_at_all",
                "slot_taken",
                "slot_held",
                "hold_lost",
            ],
            Step::OtherDay => &["other_day", "enter_date", "bad_date"],
            Step::ConfirmMobile => &["mobile_confirm", "mobile_enter", "mobile_invalid"],
            Step::SayName => &[
                "say_name",
                "name_thanks",
                "duplicate",
                "too_many_codes",
                "sms_unavailable",
                "hold_lost",
            ],
            Step::EnterCode => &[
                "code_sent",
                "code_enter",
                "code_wrong",
                "code_expired",
                "too_many_codes",
                "sms_unavailable",
                "hold_lost",
                "code_resent",
                "code_too_many",
                "confirmed",
                "bring",
                "confirmation_sms",
            ],
            Step::FindAppointment => &[
                "found",
                "found_none",
                "find_enter",
                "find_code",
                "mobile_invalid",
                "code_wrong",
                "code_expired",
                "code_resent",
                "code_too_many",
                "too_many_codes",
                "sms_unavailable",
            ],
            Step::Cancel => &["cancel_confirm", "cancelled", "kept"],
            Step::Move => &["move_confirm", "moved", "kept", "hold_lost"],
            Step::Transfer => &[
                "transfer",
                "switchboard_closed",
                "switchboard_none",
                "switchboard_unanswered",
            ],
        }
    }
}

/// Prompts every flow uses, whatever its nodes.
const COMMON_PROMPTS: &[&str] = &[
    "transfer",
    "switchboard_closed",
    "switchboard_none",
    "switchboard_unanswered",
    "repeat_hint",
    "no_input",
    "wrong_key",
    "give_up",
    "error",
    "unknown_number",
    "au_revoir",
];

#[derive(Debug, Clone)]
pub struct Node {
    pub step: Step,
    pub prompt: Option<String>,
    /// Menu keys: the digit pressed → the node it leads to.
    pub keys: BTreeMap<char, String>,
    /// Named exits (`next`, `other`, `none`).
    pub exits: HashMap<String, String>,
}

impl Node {
    pub fn exit(&self, name: &str) -> &str {
        self.exits.get(name).map_or("", String::as_str)
    }
}

#[derive(Debug, Clone)]
pub struct Flow {
    pub start: String,
    pub nodes: HashMap<String, Node>,
}

impl Flow {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }
}

pub type Prompts = HashMap<String, String>;

/// Every flow and every language's prompts, checked.
#[derive(Debug, Clone)]
pub struct VoiceData {
    pub flows: HashMap<String, Flow>,
    pub prompts: HashMap<String, Prompts>,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FlowError {
    pub file: String,
    pub message: String,
}

fn error(file: &str, message: impl Into<String>) -> FlowError {
    FlowError {
        file: file.to_owned(),
        message: message.into(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    start: String,
    nodes: BTreeMap<String, RawNode>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    step: String,
    prompt: Option<String>,
    #[serde(default)]
    keys: BTreeMap<String, String>,
    next: Option<String>,
    other: Option<String>,
    none: Option<String>,
}

const DEFAULT_FLOW: &str = include_str!("../../voice-flows/default.toml");
const DEFAULT_PROMPTS: &str = include_str!("../../prompts/fr.toml");

/// Parses and checks one flow against the prompts of a language.
pub fn parse_flow(file: &str, text: &str, prompts: &Prompts) -> Result<Flow, FlowError> {
    let raw: RawFlow = toml::from_str(text).map_err(|e| error(file, e.to_string()))?;
    let mut nodes = HashMap::new();
    for (name, raw_node) in &raw.nodes {
        let at = |message: String| error(file, format!("node « {name} »: {message}"));
        let step = Step::parse(&raw_node.step)
            .ok_or_else(|| at(format!("unknown step « {} »", raw_node.step)))?;
        let mut keys = BTreeMap::new();
        for (key, target) in &raw_node.keys {
            let mut chars = key.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return Err(at(format!("key « {key} » is not one keypad key")));
            };
            if !c.is_ascii_digit() || c == '0' {
                return Err(at(format!(
                    "key « {key} »: menus use 1 to 9 (0 is the switchboard, * repeats)"
                )));
            }
            keys.insert(c, target.clone());
        }
        if step == Step::Menu {
            if keys.is_empty() {
                return Err(at("a menu needs keys".into()));
            }
            if keys.len() > 4 {
                return Err(at(format!(
                    "{} choices: a menu offers 4 at most besides * and 0",
                    keys.len()
                )));
            }
        } else if !keys.is_empty() {
            return Err(at("only a menu has keys".into()));
        }
        if matches!(step, Step::Menu | Step::Goodbye) {
            let prompt = raw_node
                .prompt
                .as_ref()
                .ok_or_else(|| at("a menu or goodbye needs a prompt".into()))?;
            if !prompts.contains_key(prompt) {
                return Err(at(format!(
                    "prompt « {prompt} » is missing from the prompts"
                )));
            }
        }
        let mut exits = HashMap::new();
        for (exit, value) in [
            ("next", &raw_node.next),
            ("other", &raw_node.other),
            ("none", &raw_node.none),
        ] {
            match (value, step.exits().contains(&exit)) {
                (Some(target), true) => {
                    exits.insert(exit.to_owned(), target.clone());
                }
                (None, true) => return Err(at(format!("step {} needs `{exit}`", raw_node.step))),
                (Some(_), false) => {
                    return Err(at(format!("step {} has no `{exit}`", raw_node.step)));
                }
                (None, false) => {}
            }
        }
        for key in step.prompts() {
            if !prompts.contains_key(*key) {
                return Err(at(format!("prompt « {key} » is missing from the prompts")));
            }
        }
        nodes.insert(
            name.clone(),
            Node {
                step,
                prompt: raw_node.prompt.clone(),
                keys,
                exits,
            },
        );
    }
    for key in COMMON_PROMPTS {
        if !prompts.contains_key(*key) {
            return Err(error(
                file,
                format!("prompt « {key} » is missing from the prompts"),
            ));
        }
    }
    if !nodes.contains_key(&raw.start) {
        return Err(error(
            file,
            format!("start node « {} » does not exist", raw.start),
        ));
    }
    for (name, node) in &nodes {
        for target in node.keys.values().chain(node.exits.values()) {
            if !nodes.contains_key(target) {
                return Err(error(
                    file,
                    format!("node « {name} »: leads to « {target} », which does not exist"),
                ));
            }
        }
    }
    // Every node must be reachable from the start (a forgotten node is a mistake).
    let mut seen = HashSet::from([raw.start.clone()]);
    let mut queue = VecDeque::from([raw.start.clone()]);
    while let Some(name) = queue.pop_front() {
        if let Some(node) = nodes.get(&name) {
            for target in node.keys.values().chain(node.exits.values()) {
                if seen.insert(target.clone()) {
                    queue.push_back(target.clone());
                }
            }
        }
    }
    let mut unreachable: Vec<&String> = nodes.keys().filter(|n| !seen.contains(*n)).collect();
    unreachable.sort();
    if let Some(name) = unreachable.first() {
        return Err(error(
            file,
            format!("node « {name} »: no path from « {} » reaches it", raw.start),
        ));
    }
    Ok(Flow {
        start: raw.start,
        nodes,
    })
}

pub fn parse_prompts(file: &str, text: &str) -> Result<Prompts, FlowError> {
    toml::from_str::<Prompts>(text).map_err(|e| error(file, e.to_string()))
}

impl VoiceData {
    /// The compiled-in flow and prompts, and those of `dir` (`dir/voice-flows/*.toml`,
    /// `dir/prompts/*.toml`) which add to or replace them.
    pub fn load(dir: Option<&Path>) -> Result<Self, FlowError> {
        let mut prompt_texts: Vec<(String, String, String)> = vec![(
            "fr".into(),
            "prompts/fr.toml".into(),
            DEFAULT_PROMPTS.into(),
        )];
        let mut flow_texts: Vec<(String, String, String)> = vec![(
            "default".into(),
            "voice-flows/default.toml".into(),
            DEFAULT_FLOW.into(),
        )];
        if let Some(dir) = dir {
            read_dir(&dir.join("prompts"), &mut prompt_texts)?;
            read_dir(&dir.join("voice-flows"), &mut flow_texts)?;
        }
        let mut prompts = HashMap::new();
        for (name, file, text) in prompt_texts {
            prompts.insert(name, parse_prompts(&file, &text)?);
        }
        let french = prompts
            .get("fr")
            .cloned()
            .ok_or_else(|| error("prompts/fr.toml", "French prompts are required"))?;
        let mut flows = HashMap::new();
        for (name, file, text) in flow_texts {
            // A flow must work in every language offered.
            let flow = parse_flow(&file, &text, &french)?;
            for (language, p) in &prompts {
                parse_flow(&format!("{file} ({language})"), &text, p)?;
            }
            flows.insert(name, flow);
        }
        Ok(Self { flows, prompts })
    }
}

/// Adds (or replaces, by name) every `*.toml` of `dir`, if it exists.
fn read_dir(dir: &Path, into: &mut Vec<(String, String, String)>) -> Result<(), FlowError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let file = path.display().to_string();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let text = std::fs::read_to_string(&path).map_err(|e| error(&file, e.to_string()))?;
        into.retain(|(n, _, _)| *n != name);
        into.push((name, file, text));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn french() -> Prompts {
        parse_prompts("fr", DEFAULT_PROMPTS).unwrap()
    }

    #[test]
    fn the_default_flow_and_prompts_load() {
        let data = VoiceData::load(None).unwrap();
        assert!(data.flows["default"].node("accueil").is_some());
    }

    fn refused(text: &str) -> String {
        parse_flow("voice-flows/x.toml", text, &french())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn mistakes_are_refused_naming_the_file_and_the_node() {
        let e = refused("start = \"a\"\n[nodes.a]\nstep = \"dance\"\n");
        assert_eq!(e, "voice-flows/x.toml: node « a »: unknown step « dance »");
        let e = refused(
            "start = \"a\"\n[nodes.a]\nstep = \"goodbye\"\nprompt = \"au_revoir\"\n[nodes.b]\nstep = \"goodbye\"\nprompt = \"au_revoir\"\n",
        );
        assert_eq!(
            e,
            "voice-flows/x.toml: node « b »: no path from « a » reaches it"
        );
        let e = refused("start = \"a\"\n[nodes.a]\nstep = \"goodbye\"\nprompt = \"nowhere\"\n");
        assert!(
            e.contains("node « a »: prompt « nowhere » is missing"),
            "{e}"
        );
        let e = refused("start = \"a\"\n[nodes.a]\nstep = \"persons\"\nnext = \"zz\"\n");
        assert!(e.contains("node « a »: leads to « zz »"), "{e}");
        let e = refused(
            "start = \"a\"\n[nodes.a]\nstep = \"menu\"\nprompt = \"accueil\"\nkeys = { 1 = \"a\", 2 = \"a\", 3 = \"a\", 4 = \"a\", 5 = \"a\" }\n",
        );
        assert!(e.contains("5 choices"), "{e}");
        let e = refused("start = \"a\"\n[nodes.a]\nstep = \"hear_slots\"\nnext = \"a\"\n");
        assert!(e.contains("needs `other`"), "{e}");
    }

    #[test]
    fn a_prompts_file_without_a_needed_sentence_is_refused() {
        let mut prompts = french();
        prompts.remove("persons");
        let e = parse_flow("voice-flows/default.toml", DEFAULT_FLOW, &prompts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("node « personnes »: prompt « persons » is missing"),
            "{e}"
        );
    }
}
